"""Do the training augmentations help? ``python -m eval.augmentations [--quick]``.

The demo's recipe (``recipes/configs/demo.yaml``: a tiny CNN14 from random weights on the synthetic genres, same
steps) once without augmentation and once with each of SpecAugment, mixup (on waveforms), SpecMix and
time-stretch, for several training seeds; the test accuracy, macro-F1 and ECE of each run (best validation
checkpoint), and their means and standard deviations per setting. The data set is generated once and shared by
every run. Prints a Markdown table and writes ``bench/results/augmentations-<device>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from eval.timing import write_result
from finetune.config import load_config
from finetune.data.registry import DATASETS, TaskData, register_dataset
from finetune.data.synthetic.genres import SyntheticGenresConfig, build_synthetic_genres
from finetune.recipe import run_recipe

# setting -> the recipe overrides that switch it on (the roadmap's values: SpecMix/mixup alpha 0.2-0.4,
# time-stretch +-5-8 %)
SETTINGS: dict[str, list[str]] = {
    "none": [],
    "spec_augment": [
        "model.spec_augment={freq_masks: 2, freq_width: [0, 8], time_masks: 2, time_width: [0, 40]}"
    ],
    "mixup": ["model.mixup={alpha: 0.3, stage: waveform}"],
    "specmix": [
        "model.specmix={freq_bands: 2, max_freq_fraction: 0.2, time_bands: 2, max_time_fraction: 0.2}"
    ],
    "time_stretch": ["data.augment={time_stretch: {rate: [0.93, 1.07], p: 0.5}}"],
}
_CACHED = "synthetic_genres_study"


@dataclasses.dataclass
class _StudyGenresConfig(SyntheticGenresConfig):
    name: str = _CACHED


def _register_cached_data(overrides: list[str]) -> None:
    """Generate the demo's data set once and register it under another name, so that runs share it."""
    if _CACHED in DATASETS:
        return
    cfg = load_config(files("recipes") / "configs/demo.yaml", overrides)
    cached: dict[int, TaskData] = {}

    @register_dataset(_CACHED, _StudyGenresConfig)
    def build(config: _StudyGenresConfig, sample_rate: int) -> TaskData:
        if sample_rate not in cached:
            cached[sample_rate] = build_synthetic_genres(cfg.data, sample_rate)
        return cached[sample_rate]


def run_one(setting: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One recipe run; returns its test metrics and timings."""
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"data.name={_CACHED}",
            f"train.seed={seed}",
            f"train.max_steps={args.steps}",
            f"train.eval_every={max(1, args.steps // 4)}",
            f"train.save_every={args.steps}",
            f"train.num_workers={args.workers}",
            "train.progress=false",
            f"train.output_dir={out}",
            *args.data_overrides,
            *SETTINGS[setting],
        ]
        cfg = load_config(files("recipes") / "configs/demo.yaml", overrides)
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = run_recipe(cfg)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "setting": setting,
        "seed": seed,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "best_step": metrics["best_step"],
        "wall_s": wall,
        "process_cpu_s": cpu,
        "overrides": SETTINGS[setting],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each metric per setting, and the accuracy change against
    ``none`` paired by seed (same data, initialisation and batch order): its mean and standard deviation over
    the seeds that have both runs."""
    out: dict[str, dict[str, float]] = {}
    base = {r["seed"]: r["accuracy"] for r in runs if r["setting"] == "none"}
    for setting in dict.fromkeys(r["setting"] for r in runs):
        rows = [r for r in runs if r["setting"] == setting]
        out[setting] = {"n": len(rows)}
        for key in ("accuracy", "macro_f1", "ece"):
            out[setting].update(_mean_std(key, [r[key] for r in rows]))
        changes = [r["accuracy"] - base[r["seed"]] for r in rows if r["seed"] in base]
        out[setting].update(
            _mean_std("accuracy_change", changes) if changes else {"accuracy_change_mean": float("nan")}
        )
    return out


def _mean_std(key: str, values: list[float]) -> dict[str, float]:
    return {
        f"{key}_mean": statistics.fmean(values),
        f"{key}_std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def table(summary: dict[str, dict[str, float]]) -> str:
    """The summary as a Markdown table (mean ± standard deviation over seeds)."""
    lines = [
        "| setting | runs | test accuracy | change vs none (paired by seed) | macro-F1 | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        change = f"{s['accuracy_change_mean']:+.3f}"
        if "accuracy_change_std" in s:
            change += f" ± {s['accuracy_change_std']:.3f}"
        lines.append(
            f"| {name} | {int(s['n'])} | {s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f} | {change} | "
            f"{s['macro_f1_mean']:.3f} ± {s['macro_f1_std']:.3f} | {s['ece_mean']:.3f} ± {s['ece_std']:.3f} |"
        )
    return "\n".join(lines)


def resummarise(path: Path) -> str:
    """Recompute the summary of a result file from its runs (rewriting the file) and return its table."""
    result = json.loads(path.read_text(encoding="utf-8"))
    result["summary"] = summarise(result["runs"])
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return table(result["summary"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=400, help="the demo's 400")
    parser.add_argument(
        "--workers", type=int, default=1, help="data loader processes (the collate stretches)"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="recipe overrides for every run, to scale the study (e.g. data.n_per_class=20)",
    )
    parser.add_argument(
        "--summarise",
        type=Path,
        metavar="JSON",
        help="run nothing: recompute the summary of a result file from its runs and print its table",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run (1 seed, 20 steps, 6 clips per class), nothing written",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a loaded machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.summarise is not None:
        print(resummarise(args.summarise))
        return 0
    args.data_overrides = list(args.set)
    if args.quick:
        args.seeds, args.steps = args.seeds[:1], 20
        args.data_overrides.append("data.n_per_class=6")
    _register_cached_data(args.data_overrides)
    runs = []
    for seed in args.seeds:  # seeds outermost: load drifts hit every setting alike
        for setting in args.settings:
            runs.append(run_one(setting, seed, args))
            r = runs[-1]
            print(
                f"{setting:<14} seed {seed}: accuracy {r['accuracy']:.3f}  ({r['wall_s']:.0f} s)", flush=True
            )
    summary = summarise(runs)
    print(table(summary))
    if args.quick:
        return 0
    path = write_result(
        "augmentations",
        {
            "task": "synthetic genres, demo recipe (recipes/configs/demo.yaml), test split, best validation step",
            "steps": args.steps,
            "data_overrides": args.data_overrides,
            "settings": {k: SETTINGS[k] for k in args.settings},
            "summary": summary,
            "runs": runs,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
