"""``python -m finetune predict``: what a saved model says about whole audio files, one row per file.

    python -m finetune predict --model runs/genre/model song.ogg live-set.opus
    python -m finetune predict --model runs/genre/model --manifest music.csv --out predictions.jsonl

Each file is covered by windows (the model's ``windows.json`` plan from its recipe run, else windows of the
backbone's input length back to back), read one at a time and averaged (:func:`finetune.inference.predict_clips`),
so a 14-minute track needs one batch of windows in memory. Classifiers give their top-k classes with
probabilities (calibrated when the model directory holds ``calibration.json``), raters their ratings. Output is
CSV or JSONL, to stdout or a file; a file that cannot be read gets a row with its error and the others go on
(exit status 1 then). Multi-label (tagging) models give their top-k tags, each with its own probability. A
hybrid head's model is refused: its per-clip descriptors are not computed here.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["add_arguments", "prediction_record", "run_predict"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a saved model directory (e.g. runs/<name>/model)")
    p.add_argument("files", nargs="*", help="audio files to predict")
    p.add_argument("--manifest", help="a CSV/TSV/JSONL list of files (instead of or besides FILES)")
    p.add_argument(
        "--path-column", default="path", help="the manifest's column of file paths (default: path)"
    )
    p.add_argument("--root", help="folder the manifest's relative paths start from (default: its folder)")
    p.add_argument("--out", help="output file (default: stdout)")
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: from --out's suffix, else csv")
    p.add_argument("--top-k", type=int, default=3, help="classes per file for classifiers (default 3)")
    p.add_argument("--window", type=float, help="window length in seconds (default: the model's)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--crops", type=int, help="this many windows evenly spaced over each file")
    how.add_argument("--hop", type=float, help="a window every HOP seconds over each file")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from .data.manifest import read_table

    rows = [{"path": str(Path(f).expanduser()), "name": f} for f in args.files]
    if args.manifest:
        manifest = Path(args.manifest).expanduser()
        base = Path(args.root).expanduser() if args.root else manifest.parent
        for line, row in read_table(manifest):
            if args.path_column not in row:
                raise SystemExit(
                    f"{manifest}, line {line}: no {args.path_column!r} column (use --path-column)"
                )
            rel = str(row[args.path_column]).strip()
            rows.append({"path": str(base / rel), "name": rel})
    return rows


def prediction_record(model: Any, clip: Any, top_k: int) -> dict[str, Any]:
    """One output row: ``path``, ``windows``, ``error``, then ``label_i``/``p_i`` for the top-k classes of a
    classifier or one value per rating dimension."""
    record: dict[str, Any] = {"path": clip.name, "windows": clip.windows, "error": clip.error or ""}
    if clip.output is None:
        return record
    values = model.probabilities(torch.from_numpy(clip.output))
    if not model.task.is_classification:
        return record | {name: float(v) for name, v in zip(model.labels, values)}
    top = values.topk(min(top_k, len(model.labels)))
    for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        record |= {f"label_{rank}": model.labels[i], f"p_{rank}": p}
    return record


def _jsonl(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: record[k] for k in ("path", "windows")}
    if record["error"]:
        return out | {"error": record["error"]}
    ranks = sorted(int(k[6:]) for k in record if k.startswith("label_"))
    if ranks:
        return out | {"top": [{"label": record[f"label_{r}"], "p": record[f"p_{r}"]} for r in ranks]}
    return out | {"ratings": {k: v for k, v in record.items() if k not in ("path", "windows", "error")}}


def _write(records: Iterator[dict[str, Any]], fields: list[str], fmt: str, stream: IO[str]) -> int:
    """Write records as they come; returns how many had an error."""
    errors = 0
    writer = csv.DictWriter(stream, fieldnames=fields) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for record in records:
        errors += bool(record["error"])
        if writer is not None:
            writer.writerow(record)
        else:
            stream.write(json.dumps(_jsonl(record)) + "\n")
        stream.flush()
    return errors


def run_predict(args: argparse.Namespace) -> int:
    """Predict every file of ``args`` and write the rows; returns 0, or 1 when some file could not be read."""
    from heads import HybridHead

    from .inference import WindowPlan, predict_clips
    from .model import AudioModel

    rows = _rows(args)
    if not rows:
        print("nothing to predict: give audio files and/or --manifest", file=sys.stderr)
        return 2
    model = AudioModel.from_pretrained(args.model)
    if isinstance(model.head, HybridHead):
        raise ValueError(
            f"{args.model}: its hybrid head needs each clip's descriptors "
            f"({', '.join(model.head.config.descriptor_names[:3])}, ...), which predict does not compute; "
            "predict it in code with finetune.inference.predict_clips over rows that carry 'descriptors' "
            "(finetune.descriptors.DescriptorExtractor, the groups it was trained with)"
        )
    model.to(torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    saved = WindowPlan.load(args.model)
    window = args.window or (saved.window_seconds if saved else model.backbone.pretrained_cfg.input_seconds)
    if args.crops is not None or args.hop is not None:
        plan = WindowPlan(window, crops=args.crops, hop_seconds=args.hop)
    elif saved is not None:
        plan = WindowPlan(window, crops=saved.crops, hop_seconds=saved.hop_seconds)
    else:
        plan = WindowPlan(window)
    print(f"{args.model}: {len(rows)} file(s), {plan.describe()}", file=sys.stderr)
    if model.task.is_classification:
        k = min(args.top_k, len(model.labels))
        fields = ["path", "windows", "error", *[f"{c}_{r}" for r in range(1, k + 1) for c in ("label", "p")]]
    else:
        fields = ["path", "windows", "error", *model.labels]
    clips = predict_clips(
        model, rows, plan, batch_size=args.batch_size, progress=not args.no_progress, total=len(rows)
    )
    records = (prediction_record(model, clip, args.top_k) for clip in clips)
    fmt = args.format or ("jsonl" if args.out and Path(args.out).suffix in (".jsonl", ".ndjson") else "csv")
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            errors = _write(records, fields, fmt, f)
    else:
        errors = _write(records, fields, fmt, sys.stdout)
    if errors:
        print(f"{errors} of {len(rows)} file(s) could not be read (see the error column)", file=sys.stderr)
    return 1 if errors else 0
