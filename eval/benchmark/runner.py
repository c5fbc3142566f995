"""The grid: tasks x folds x (baselines + backbones x modes) x seeds, one cell at a time, resumable.

Each cell writes ``cells/<task>/fold<i>/<backbone>/<mode>/seed<s>/`` with ``predictions.safetensors`` (validation
and test predictions and targets, calibrated test logits) and, when it finished, ``done.json`` (its results entry).
A rerun skips every cell whose ``done.json`` carries the same settings fingerprint; a cell that raised is recorded
with its error (``failed.json``) and retried on the next run, while the grid goes on. Baselines are deterministic
and run once per fold (with the first seed). A report-only run (``report_only``) runs nothing: it reports the
finished cells of the grid and lists the others as not run, so a grid finished in parts (some modes with fewer
seeds, a cluster job cut short) gets one report.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import subprocess
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from backbones import get_pretrained_cfg
from backbones.checkpoints import cache_dir, resolve_checkpoint
from finetune.data.registry import DataConfig, TaskData, get_dataset

from ..timing import machine_info
from .baselines import BASELINES
from .data import Fold, cap_split
from .features import BackboneFeatures, FeatureCache, file_sha256
from .modes import MODES, run_baseline
from .probes import ProbeConfig
from .protocols import get_protocol
from .scoring import score_predictions
from .tasks import BenchmarkTask

__all__ = ["BASELINE", "NOT_RUN", "BenchmarkOptions", "Cell", "RunContext", "plan_cells", "run_benchmark"]

logger = logging.getLogger(__name__)

BASELINE = "baseline"
"""The backbone column of baseline rows."""

NOT_RUN = "not_run"
"""The status of a cell a report-only run found unfinished."""

BASELINE_SAMPLE_RATE = 16000
"""The rate baselines read audio at when no backbone is benchmarked; otherwise they share the first backbone's
decoded (or rendered) data, so nothing is decoded or rendered twice (their features resample to 16 kHz)."""


@dataclass
class BenchmarkOptions:
    """One benchmark run (what ``python -m eval benchmark`` parses its options into).

    Attributes:
        backbones, tasks, modes, seeds: the grid (modes as :data:`~.modes.MODES` names).
        out: the run directory.
        folds: folds to run (None: all of each task's folds).
        checkpoints: backbone -> checkpoint (anything ``load_backbone`` accepts); others use random weights.
        limit: at most this many clips per split (after the protocol's split).
        clips_per_class: generated data sets: clips per class; real single-label data: at most this many per
            class and split.
        steps, workers, device: fine-tuning steps, data-loading workers (capped at the core count) and device
            (``auto``, ``cpu``, ``cuda``).
        recipe: ``key.sub=value`` overrides of the lora/full cells' recipe configs (model and train keys).
        bootstrap: bootstrap replicates of the confidence intervals.
        cache: feature cache folder (None: ``$MUSICFT_CACHE/benchmark_features``).
        baselines: whether to add the tasks' baseline rows.
        probe: the probes' hyper-parameter grids.
        plots: draw the figures.
        progress: show progress bars.
        report_only: run no cell; report the finished ones and list the rest as not run.
        command: the command line, recorded in the results.
    """

    backbones: Sequence[str]
    tasks: Sequence[BenchmarkTask]
    modes: Sequence[str]
    seeds: Sequence[int]
    out: Path
    folds: Sequence[int] | None = None
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    limit: int | None = None
    clips_per_class: int | None = None
    steps: int | None = None
    workers: int | None = None
    device: str = "auto"
    recipe: Sequence[str] = ()
    bootstrap: int = 1000
    cache: Path | None = None
    baselines: bool = True
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    plots: bool = True
    progress: bool = True
    report_only: bool = False
    command: str = ""


@dataclass(frozen=True)
class Cell:
    """One (task, fold, backbone, mode, seed) point of the grid; baselines have backbone :data:`BASELINE` and
    their baseline name as the mode."""

    task: BenchmarkTask
    fold: int
    backbone: str
    mode: str
    seed: int

    @property
    def path(self) -> Path:
        return Path(self.task.slug, f"fold{self.fold}", self.backbone, self.mode, f"seed{self.seed}")

    @property
    def name(self) -> str:
        return "/".join(self.path.parts)

    @property
    def is_baseline(self) -> bool:
        return self.backbone == BASELINE

    @property
    def model(self) -> str:
        """The table row this cell belongs to."""
        if self.is_baseline:
            return f"baseline: {BASELINES[self.mode].label}"
        return f"{self.backbone} {MODES[self.mode].label}"

    def entry(self) -> dict[str, Any]:
        """The fields that name this cell in every results entry (finished, failed or not run)."""
        return {
            "cell": self.name,
            "task": self.task.name,
            "fold": self.fold,
            "backbone": self.backbone,
            "mode": self.mode,
            "model": self.model,
            "seed": self.seed,
        }


def plan_cells(options: BenchmarkOptions) -> list[Cell]:
    """Every cell of the grid, grouped so that cells sharing data and embeddings run one after another."""
    cells = []
    for task in options.tasks:
        folds = (
            range(task.n_folds) if options.folds is None else [f for f in options.folds if f < task.n_folds]
        )
        for fold in folds:
            if options.baselines:
                cells += [Cell(task, fold, BASELINE, name, options.seeds[0]) for name in task.baselines]
            for backbone in options.backbones:
                for seed in options.seeds:
                    cells += [Cell(task, fold, backbone, mode, seed) for mode in options.modes]
    return cells


def _git_revision() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def _library_version() -> str:
    try:
        return importlib.metadata.version("musicft")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RunContext:
    """What cells share during a run: data sets and folds (built once), featurizers, the feature cache and the
    options."""

    def __init__(self, options: BenchmarkOptions) -> None:
        self.options = options
        self.run_dir = Path(options.out)
        self.cache = FeatureCache(
            options.cache if options.cache is not None else cache_dir() / "benchmark_features"
        )
        self.probe_config = options.probe
        self.checkpoints = dict(options.checkpoints)
        self.steps, self.workers, self.progress = options.steps, options.workers, options.progress
        self.recipe = tuple(options.recipe)
        self.device = (
            options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        # the current task's data and folds, and the current backbone: cells come grouped, so one of each
        # is enough, and a large grid does not hold every data set and backbone in memory
        self._task: str | None = None
        self._data: dict[tuple[str, int], TaskData | Exception] = {}
        self._folds: dict[tuple[int, int], Fold] = {}
        self._features: tuple[tuple[str, str, int], BackboneFeatures] | None = None

    def cell_dir(self, cell: Cell) -> Path:
        return self.run_dir / "cells" / cell.path

    def data(self, task: BenchmarkTask, overrides: Mapping[str, Any], sample_rate: int) -> TaskData:
        """The task's data set with ``overrides``, at ``sample_rate``; built once per run (a failed build is
        remembered and raised again)."""
        self._enter(task)
        key = (json.dumps(dict(overrides), sort_keys=True), sample_rate)
        if key not in self._data:
            try:
                config = DataConfig.from_dict(
                    {"name": task.dataset, **task.settings, **overrides, "progress": self.progress}, "data"
                )
                self._data[key] = get_dataset(task.dataset)(config, sample_rate)
            except Exception as e:  # noqa: BLE001 - kept and raised for every cell of the task
                self._data[key] = e
        found = self._data[key]
        if isinstance(found, Exception):
            raise found
        return found

    def _enter(self, task: BenchmarkTask) -> None:
        if task.name != self._task:
            self._task, self._data, self._folds = task.name, {}, {}

    def sample_rate(self, cell: Cell) -> int:
        """The rate a cell's data is decoded at: its backbone's (baselines: the first backbone's)."""
        backbone = self.options.backbones[0] if cell.is_baseline and self.options.backbones else cell.backbone
        return BASELINE_SAMPLE_RATE if backbone == BASELINE else get_pretrained_cfg(backbone).sample_rate

    def fold(self, cell: Cell) -> Fold:
        """The cell's fold of its task at :meth:`sample_rate`."""
        rate = self.sample_rate(cell)
        self._enter(cell.task)
        key = (cell.fold, rate)
        if key not in self._folds:
            fold = get_protocol(cell.task.protocol)(
                cell.task, lambda overrides: self.data(cell.task, overrides, rate), cell.fold
            )
            caps = {"limit": self.options.limit, "per_class": self.options.clips_per_class}
            capped = {
                name: cap_split(fold.split(name), seed=i, **caps)
                for i, name in enumerate(("train", "validation", "test"))
            }
            self._folds[key] = Fold(
                fold.index, capped["train"], capped["validation"], capped["test"], fold.task, fold.names
            )
        return self._folds[key]

    def backbone_features(self, cell: Cell) -> BackboneFeatures:
        """The cell's frozen-backbone featurizer (random weights differ per seed; a checkpoint's do not)."""
        checkpoint = self.checkpoints.get(cell.backbone)
        key = (cell.task.name, cell.backbone, cell.seed if checkpoint is None else -1)
        if self._features is None or self._features[0] != key:
            features = BackboneFeatures(
                cell.backbone, checkpoint, {}, cell.task.settings, seed=cell.seed, device=self.device
            )
            self._features = (key, features)
        return self._features[1]

    def checkpoint_sha256(self, backbone: str) -> str | None:
        checkpoint = self.checkpoints.get(backbone)
        if checkpoint is None:
            return None
        return file_sha256(resolve_checkpoint(checkpoint, get_pretrained_cfg(backbone)))

    def fingerprint(self, cell: Cell) -> str:
        """sha256 of everything a cell's result depends on; a done cell is reused only when it matches."""
        o = self.options
        trains = cell.mode in ("lora", "full")
        settings = {
            "task": {
                "dataset": cell.task.dataset,
                "settings": dict(cell.task.settings),
                "protocol": cell.task.protocol,
            },
            "n_folds": cell.task.n_folds,
            "sample_rate": self.sample_rate(cell),
            "checkpoint": None if cell.is_baseline else o.checkpoints.get(cell.backbone),
            "limit": o.limit,
            "clips_per_class": o.clips_per_class,
            "steps": o.steps if trains else None,
            "probe": o.probe.to_dict(),
            "bootstrap": o.bootstrap,
        }
        if o.recipe and trains:  # absent otherwise, so earlier runs' cells still match
            settings["recipe"] = list(o.recipe)
        return hashlib.sha256(
            json.dumps([cell.name, settings], sort_keys=True, default=str).encode()
        ).hexdigest()


def _save_predictions(path: Path, result: Mapping[str, Any], calibrated: np.ndarray | None) -> None:
    arrays = {}
    for split in ("validation", "test"):
        pred, targets = result[split]
        arrays[f"{split}_predictions"] = np.ascontiguousarray(pred, dtype=np.float32)
        arrays[f"{split}_targets"] = np.ascontiguousarray(targets, dtype=np.float32)
    if calibrated is not None:
        arrays["test_calibrated"] = np.ascontiguousarray(calibrated, dtype=np.float32)
    save_file(arrays, str(path))


def run_cell(cell: Cell, context: RunContext) -> dict[str, Any]:
    """Run one cell and write its files; returns its results entry (``status`` ``ok``)."""
    t0 = time.perf_counter()
    out = context.cell_dir(cell)
    out.mkdir(parents=True, exist_ok=True)
    fold = context.fold(cell)
    runner = run_baseline if cell.is_baseline else MODES[cell.mode].run
    result = runner(cell, fold, context)
    metrics, calibrated = score_predictions(
        fold.task, fold.names, result["test"], result["validation"], context.options.bootstrap
    )
    _save_predictions(out / "predictions.safetensors", result, calibrated)
    info = dict(result["info"])
    return {
        **cell.entry(),
        "task_kind": fold.task.name,
        "status": "ok",
        "metrics": metrics,
        "clips": {name: len(fold.split(name)) for name in ("train", "validation", "test")},
        "names": list(fold.names),
        "config": {
            "data": {"name": cell.task.dataset, **cell.task.settings},
            "protocol": cell.task.protocol,
            "checkpoint": None if cell.is_baseline else context.checkpoints.get(cell.backbone),
            **{k: v for k, v in info.items() if k not in ("checkpoint_sha256",)},
        },
        "checkpoint_sha256": info.get("checkpoint_sha256"),
        "library_version": _library_version(),
        "git_revision": _git_revision(),
        "machine": machine_info(),
        "wall_seconds": time.perf_counter() - t0,
        "fingerprint": context.fingerprint(cell),
    }


def _failure(cell: Cell, error: BaseException, context: RunContext, seconds: float) -> dict[str, Any]:
    return {
        **cell.entry(),
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        "wall_seconds": seconds,
        "fingerprint": context.fingerprint(cell),
    }


def _not_run(cell: Cell) -> dict[str, Any]:
    return {
        **cell.entry(),
        "status": NOT_RUN,
        "error": "not run (no finished cell with these settings)",
    }


def _finished(cell: Cell, context: RunContext) -> dict[str, Any] | None:
    done = context.cell_dir(cell) / "done.json"
    if not done.is_file():
        return None
    try:
        entry = json.loads(done.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if entry.get("fingerprint") != context.fingerprint(cell):
        logger.info("%s: settings changed since it ran; running it again", cell.name)
        return None
    return entry


def run_benchmark(options: BenchmarkOptions) -> dict[str, Any]:
    """Run (or resume) the grid and write ``results.json``, ``results.md`` and the plots under ``options.out``.

    Returns:
        The results payload (``cells``: one entry per cell, ``summary``: per task and model).
    """
    from .report import write_report

    context = RunContext(options)
    context.run_dir.mkdir(parents=True, exist_ok=True)
    cells = plan_cells(options)
    entries = []
    bar = tqdm(cells, desc="benchmark", unit="cell", disable=not options.progress)
    for cell in bar:
        bar.set_postfix_str(cell.name, refresh=False)
        entry = _finished(cell, context)
        if entry is not None:
            entries.append({**entry, "resumed": True})
            continue
        if options.report_only:
            entries.append(_not_run(cell))
            continue
        t0 = time.perf_counter()
        failed = context.cell_dir(cell) / "failed.json"
        try:
            entry = run_cell(cell, context)
        except Exception as e:  # noqa: BLE001 - one failing cell never stops the grid
            entry = _failure(cell, e, context, time.perf_counter() - t0)
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(json.dumps(entry, indent=2) + "\n")
            logger.warning("cell %s failed: %s", cell.name, entry["error"])
        else:
            failed.unlink(missing_ok=True)
            (context.cell_dir(cell) / "done.json").write_text(
                json.dumps(entry, indent=2, default=float) + "\n"
            )
        entries.append(entry)
    bar.close()
    return write_report(options, entries)
