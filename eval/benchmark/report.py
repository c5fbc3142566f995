"""Aggregation and reports: ``results.json`` (every cell, plus a summary per task and model), ``results.md`` (a
table per task) and the plots.

Per task and model (a backbone in a mode, or a baseline): each scalar metric's mean and standard deviation over
the cells (seeds x folds), and for the task's bootstrap metrics a pooled 95% interval over test clips
(:func:`.scoring.bootstrap`: each fold's test clips resampled within the fold, the metric averaged over every
cell). Tables read ``mean ± std [low, high]``; a row of one cell has no standard deviation.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file

from heads.tasks import get_task

from ..timing import machine_info
from .plots import plot_task, row_order
from .runner import NOT_RUN
from .scoring import BOOTSTRAP_METRICS, bootstrap

if TYPE_CHECKING:
    from .runner import BenchmarkOptions

__all__ = ["TABLE_COLUMNS", "format_cell", "summarise", "write_report"]

TABLE_COLUMNS: Mapping[str, tuple[tuple[str, str], ...]] = MappingProxyType(
    {
        "single_label": (("accuracy", "accuracy"), ("macro_f1", "macro-F1")),
        "multi_label": (("map", "mAP"), ("roc_auc", "ROC-AUC")),
        "rating": (("mean_r2", "mean R2"), ("mean_r", "mean r"), ("mae", "MAE")),
    }
)
"""Per task kind, the metrics of the results table (calibration columns are added for classification)."""


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"
    }
    cal = metrics.get("calibration")
    if cal:
        out.update(
            ece_before=cal["before"]["ece"],
            ece_after=cal["after"]["ece"],
            nll_before=cal["before"]["nll"],
            nll_after=cal["after"]["nll"],
            temperature=cal["temperature"],
        )
    return out


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    return {
        "mean": float(finite.mean()) if len(finite) else float("nan"),
        "std": float(finite.std(ddof=1)) if len(finite) > 1 else None,
        "n": int(len(v)),
        "values": [float(x) for x in v],
    }


def _predictions(run_dir: Path, entry: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return load_file(str(run_dir / "cells" / entry["cell"] / "predictions.safetensors"))


def summarise(run_dir: Path, entries: Sequence[Mapping[str, Any]], replicates: int) -> dict[str, Any]:
    """Per task and model: metric statistics over cells, pooled intervals, mean per-class F1 / per-dimension R2
    and the summed confusion matrix."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for entry in entries:
        if entry["status"] == "ok":
            groups[(entry["task"], entry["model"])].append(entry)
    summary: dict[str, dict[str, Any]] = defaultdict(dict)
    for (task_name, model), cells in groups.items():
        task = get_task(cells[0]["task_kind"])
        per_cell = [_scalars(c["metrics"]) for c in cells]
        keys = sorted(set().union(*per_cell))
        row: dict[str, Any] = {
            "backbone": cells[0]["backbone"],
            "mode": cells[0]["mode"],
            "cells": len(cells),
            "seeds": sorted({c["seed"] for c in cells}),
            "folds": sorted({c["fold"] for c in cells}),
            "checkpoint": cells[0]["config"].get("checkpoint"),
            "metrics": {k: _stats([p.get(k, float("nan")) for p in per_cell]) for k in keys},
            "wall_seconds": _stats([c.get("wall_seconds", float("nan")) for c in cells]),
        }
        by_fold: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
        for c in cells:
            by_fold[c["fold"]].append(c)
        folds = []
        for fold_cells in by_fold.values():
            arrays = [_predictions(run_dir, c) for c in fold_cells]
            targets = arrays[0]["test_targets"]
            folds.append(
                (
                    [a["test_predictions"] for a in arrays],
                    targets.astype(np.int64) if task.name == "single_label" else targets,
                )
            )
        row["ci95"] = {
            name: list(bootstrap(folds, fn, replicates)) for name, fn in BOOTSTRAP_METRICS[task.name].items()
        }
        detail = cells[0]["metrics"]
        if "per_class_f1" in detail:
            row["per_class_f1"] = {
                k: float(np.mean([c["metrics"]["per_class_f1"][k] for c in cells]))
                for k in detail["per_class_f1"]
            }
            row["confusion_matrix"] = np.sum(
                [c["metrics"]["confusion_matrix"] for c in cells], axis=0
            ).tolist()
        if "per_dimension" in detail:
            row["per_dimension_r2"] = {
                k: float(np.mean([c["metrics"]["per_dimension"][k]["r2"] for c in cells]))
                for k in detail["per_dimension"]
            }
        summary[task_name][model] = row
    return dict(summary)


def format_cell(stats: Mapping[str, Any], ci: Sequence[float] | None = None, digits: int = 3) -> str:
    """``mean ± std [low, high]`` (the ``± std`` part only with several cells, the interval only when given)."""
    text = f"{stats['mean']:.{digits}f}"
    if stats.get("std") is not None:
        text += f" ± {stats['std']:.{digits}f}"
    if ci is not None:
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def _weights(row: Mapping[str, Any]) -> str:
    if row["backbone"] == "baseline":
        return "-"
    return "random init" if row.get("checkpoint") is None else f"`{Path(str(row['checkpoint'])).name}`"


def _table(task_kind: str, rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    columns = TABLE_COLUMNS[task_kind]
    classification = task_kind != "rating"
    header = ["model", "weights", "cells", *(h for _, h in columns)]
    if classification:
        header += ["ECE raw → calibrated", "NLL raw → calibrated"]
    header.append("s / cell")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in row_order(rows):
        row = rows[model]
        m = row["metrics"]
        values = [model, _weights(row), str(row["cells"])]
        values += [format_cell(m[k], row["ci95"].get(k)) if k in m else "-" for k, _ in columns]
        if classification and "ece_before" in m:
            values += [
                f"{m['ece_before']['mean']:.3f} → {m['ece_after']['mean']:.3f}",
                f"{m['nll_before']['mean']:.3f} → {m['nll_after']['mean']:.3f}",
            ]
        elif classification:
            values += ["-", "-"]
        wall = row.get("wall_seconds")
        values.append(f"{wall['mean']:.0f}" if wall and np.isfinite(wall["mean"]) else "-")
        lines.append("| " + " | ".join(values) + " |")
    return lines


def _per_class(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    with_f1 = {m: r for m, r in rows.items() if "per_class_f1" in r}
    if not with_f1:
        return []
    classes = list(next(iter(with_f1.values()))["per_class_f1"])
    lines = ["", "Per-class F1 (mean over cells):", "", "| model | " + " | ".join(classes) + " |"]
    lines.append("|" + "---|" * (len(classes) + 1))
    for model in row_order(with_f1):
        row = with_f1[model]
        lines.append(f"| {model} | " + " | ".join(f"{row['per_class_f1'][c]:.2f}" for c in classes) + " |")
    return lines


def _figures(paths: Sequence[str]) -> list[str]:
    """The comparison chart and rating bars shown; confusion matrices and reliability diagrams linked."""
    shown = [p for p in paths if Path(p).stem.endswith(("comparison", "r2"))]
    linked = [p for p in paths if p not in shown]
    lines = [f"![{Path(p).stem}]({p})" for p in shown]
    if linked:
        lines += ["", "Per model: " + ", ".join(f"[{Path(p).stem}]({p})" for p in linked)]
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def write_report(options: BenchmarkOptions, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``plots/`` under ``options.out``; returns the payload."""
    run_dir = Path(options.out)
    summary = summarise(run_dir, entries, options.bootstrap)
    tasks = {t.name: t for t in options.tasks}
    plots: dict[str, list[str]] = {}
    for task_name, rows in summary.items() if options.plots else ():
        ok = [e for e in entries if e["task"] == task_name and e["status"] == "ok"]
        files = plot_task(run_dir, tasks[task_name], rows, ok, _slug)
        plots[task_name] = [str(p.relative_to(run_dir)) for p in files]
    payload = {
        "benchmark": "python -m eval benchmark",
        "command": options.command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "library_version": entries[0].get("library_version") if entries else None,
        "git_revision": next((e.get("git_revision") for e in entries if e.get("git_revision")), None),
        "cells": list(entries),
        "summary": summary,
        "plots": plots,
    }
    (run_dir / "results.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    lines = [
        "# Benchmark results",
        "",
        f"`{options.command}`" if options.command else "",
        "",
        f"{payload['date']}; musicft {payload['library_version']} ({payload['git_revision']}); "
        f"{payload['machine']['platform']}, {payload['machine']['device']}.",
        "",
        "Each value is the mean ± standard deviation over the cells (seeds x folds) [95% bootstrap interval over "
        f"test clips, {options.bootstrap} resamples, pooled over the cells]. Probes and fine-tuning select on the "
        "validation split only; calibration is temperature scaling fitted on validation and scored on test. "
        "s / cell: mean wall seconds of one cell (the first cell that reads a task at a sample rate also builds or "
        "renders that data; a linear probe cell also embeds the clips, which the MLP probe then reads from the cache).",
    ]
    for task_name, rows in summary.items():
        task = tasks[task_name]
        first = next(e for e in entries if e["task"] == task_name and e["status"] == "ok")
        kind = first["task_kind"]
        lines += [
            "",
            f"## {task_name}",
            "",
            f"{task.description}. Protocol: {task.protocol}, {task.n_folds} fold(s); headline metric {task.metric}; "
            f"clips (train/validation/test) {first['clips']['train']}/{first['clips']['validation']}/"
            f"{first['clips']['test']} (fold {first['fold']}).",
            "",
            *_table(kind, rows),
            *_per_class(rows),
            "",
            *_figures(plots.get(task_name, [])),
        ]
    for status, title in (("failed", "Failed cells"), (NOT_RUN, "Cells not run")):
        listed = [e for e in entries if e["status"] == status]
        if listed:
            lines += ["", f"## {title}", ""] + [f"- `{e['cell']}`: {e['error']}" for e in listed]
    (run_dir / "results.md").write_text("\n".join(lines) + "\n")
    return payload
