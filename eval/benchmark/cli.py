"""``python -m eval benchmark``: the command line of the benchmark suite (see :mod:`eval.benchmark`)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from backbones import list_backbones
from backbones.config import ConfigError
from finetune.data.registry import DataConfig

from .finetuning import check_recipe_overrides
from .modes import expand_modes
from .probes import ProbeConfig
from .runner import NOT_RUN, BenchmarkOptions, run_benchmark
from .tasks import BENCHMARK_TASKS, TASK_FACTORIES, BenchmarkTask, get_benchmark_task

__all__ = ["build_parser", "main", "parse_options"]

EPILOG = """examples:
  python -m eval benchmark --backbones ast.tiny,passt_s.tiny,cnn14.tiny --task synthetic_genres --mode probe --out runs/bench
  python -m eval benchmark --backbones passt_s.audioset_swa --checkpoint passt_s.audioset_swa=pretrained \\
      --task gtzan --data root=/data/gtzan --mode probe,lora,full --seeds 3 --device cuda --out runs/gtzan
  python -m eval benchmark --task folder:/data/my_genres --backbones cnn14.audioset_32k --out runs/mine

seeds: N runs seeds 0..N-1; a comma list (e.g. 3,7) runs those seeds.
a grid run in parts (e.g. full fine-tuning with fewer seeds than the probes) gets one report: rerun the whole
grid's command with --report-only.
exit status: 0 when every cell finished, 1 when some failed or were not run (listed in results.json and results.md)."""


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m eval benchmark",
        description="Backbones x tasks x modes x seeds (x folds), with baselines, bootstrap intervals and "
        "calibration; writes results.json, results.md and plots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--backbones", default="ast.tiny,passt_s.tiny,cnn14.tiny", help="comma-separated backbones"
    )
    p.add_argument(
        "--task", action="append", help="task name, folder:/path or manifest:/file (repeatable; commas)"
    )
    p.add_argument(
        "--mode", action="append", help="probe (= linear_probe,mlp_probe), lora, full (repeatable; commas)"
    )
    p.add_argument("--seeds", default="3", help="number of seeds, or a comma list of seeds (default 3)")
    p.add_argument("--folds", default="all", help="'all' or a comma list of fold indices")
    p.add_argument("--out", required=False, help="run directory (results.json, results.md, plots/, cells/)")
    p.add_argument(
        "--checkpoint", action="append", default=[], metavar="BACKBONE=SOURCE", help="backbone weights"
    )
    p.add_argument(
        "--data", action="append", default=[], metavar="[TASK.]KEY=VALUE", help="data setting override"
    )
    p.add_argument("--probe", action="append", default=[], metavar="KEY=VALUE", help="probe grid setting")
    p.add_argument(
        "--clips-per-class", type=int, help="generated sets: clips per class; real: cap per class/split"
    )
    p.add_argument("--limit", type=int, help="at most this many clips per split")
    p.add_argument("--steps", type=int, help="training steps of lora/full cells (default: the recipe's)")
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the lora/full cells' recipe configs (model.* and train.*, e.g. train.lr=3e-3)",
    )
    p.add_argument("--workers", type=int, help="data-loading workers (capped at the core count)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (1 is fastest for small models on a busy CPU)"
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the intervals")
    p.add_argument("--cache", help="feature cache folder (default $MUSICFT_CACHE/benchmark_features)")
    p.add_argument("--no-baselines", action="store_true", help="leave out the baseline rows")
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run no cell: report the grid's finished cells under --out and list the rest as not run",
    )
    p.add_argument("--list", action="store_true", help="list the registered tasks and modes, then exit")
    return p


def _split(values: Sequence[str] | None, default: str) -> list[str]:
    out: list[str] = []
    for value in values or [default]:
        prefix = value.partition(":")[0]
        out += [value] if prefix in TASK_FACTORIES else [v.strip() for v in value.split(",") if v.strip()]
    return out


def _key_values(items: Sequence[str], what: str) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r} is not of the form KEY=VALUE")
        out.append((key, yaml.safe_load(raw) if raw else None))
    return out


def _seeds(text: str) -> list[int]:
    if "," in text:
        return [int(s) for s in text.split(",") if s.strip()]
    if int(text) < 1:
        raise ValueError(f"--seeds {text}: need at least one seed")
    return list(range(int(text)))


def _tasks(args: argparse.Namespace) -> list[BenchmarkTask]:
    tasks = [get_benchmark_task(spec) for spec in _split(args.task, "synthetic_genres")]
    overrides = _key_values(args.data, "--data")
    names = sorted(
        {*BENCHMARK_TASKS, *(t.name for t in tasks)}, key=len, reverse=True
    )  # longest prefix first
    out = []
    for task in tasks:
        settings: dict[str, Any] = {}
        if args.clips_per_class is not None and task.size_key is not None:
            settings[task.size_key] = args.clips_per_class * task.size_per_class
        for key, value in overrides:
            # TASK.KEY sets KEY of that task only; the other tasks (of this run or not) ignore it
            target = next((n for n in names if key.startswith(f"{n}.")), None)
            if target is None:
                settings[key] = value
            elif target == task.name:
                settings[key[len(target) + 1 :]] = value
        task = task.with_settings(**settings)
        DataConfig.from_dict({"name": task.dataset, **task.settings}, f"data ({task.name})")  # fail early
        out.append(task)
    return out


def parse_options(argv: Sequence[str] | None = None) -> BenchmarkOptions:
    """Parse the command line into :class:`~.runner.BenchmarkOptions`; bad values exit with a usage error."""
    parser = build_parser()
    return _options(parser, parser.parse_args(argv), argv)


def _options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> BenchmarkOptions:
    if args.out is None:
        parser.error("--out is required (the run directory)")
    try:
        backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
        unknown = [b for b in backbones if b not in list_backbones()]
        if unknown:
            raise ValueError(
                f"unknown backbone(s) {', '.join(unknown)}; known: {', '.join(list_backbones())}"
            )
        checkpoints = dict(_key_values(args.checkpoint, "--checkpoint"))
        stray = sorted(set(checkpoints) - set(backbones))
        if stray:
            raise ValueError(f"--checkpoint names {', '.join(stray)}, which --backbones does not list")
        probe = ProbeConfig.from_dict(dict(_key_values(args.probe, "--probe")), "probe")
        options = BenchmarkOptions(
            backbones=backbones,
            tasks=_tasks(args),
            modes=expand_modes(_split(args.mode, "probe")),
            seeds=_seeds(args.seeds),
            out=Path(args.out),
            folds=None if args.folds == "all" else [int(f) for f in args.folds.split(",")],
            checkpoints={k: str(v) for k, v in checkpoints.items()},
            limit=args.limit,
            clips_per_class=args.clips_per_class,
            steps=args.steps,
            recipe=check_recipe_overrides(args.recipe),
            workers=None if args.workers is None else max(0, min(args.workers, os.cpu_count() or 1)),
            device=args.device,
            bootstrap=args.bootstrap,
            cache=Path(args.cache) if args.cache else None,
            baselines=not args.no_baselines,
            probe=probe,
            plots=not args.no_plots,
            progress=not args.no_progress,
            report_only=args.report_only,
            command=shlex.join(
                ["python", "-m", "eval", "benchmark", *(argv if argv is not None else sys.argv[2:])]
            ),
        )
    except (ValueError, KeyError, ConfigError) as e:
        parser.error(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    return options


def _listing() -> str:
    from .modes import MODE_ALIASES, MODES

    lines = ["tasks:"]
    lines += [f"  {name:<22} {task.description}" for name, task in sorted(BENCHMARK_TASKS.items())]
    lines += [
        f"  {prefix}:PATH{'':<{17 - len(prefix)}} {fn.__doc__.splitlines()[0]}"
        for prefix, fn in TASK_FACTORIES.items()
    ]
    lines += ["modes:"] + [f"  {name:<22} {mode.label}" for name, mode in MODES.items()]
    lines += [f"  {name:<22} = {', '.join(modes)}" for name, modes in MODE_ALIASES.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every cell finished, 1 when some failed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(_listing())
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = _options(parser, args, argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    payload = run_benchmark(options)
    failed = [c for c in payload["cells"] if c["status"] == "failed"]
    not_run = [c for c in payload["cells"] if c["status"] == NOT_RUN]
    done = len(payload["cells"]) - len(failed) - len(not_run)
    print(
        f"{done} cell(s) finished, {len(failed)} failed"
        + (f", {len(not_run)} not run" if not_run else "")
        + f"; wrote {options.out / 'results.json'} and {options.out / 'results.md'}"
    )
    for cell in failed:
        print(f"  failed: {cell['cell']}: {cell['error']}")
    return 1 if failed or not_run else 0
