"""Command line: ``python -m finetune {info,demo,predict,...}``.

Each sub-command is a small function registered in ``COMMANDS``; it imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["main"]


def _info(args: argparse.Namespace) -> int:
    """List the registered backbones with their input contract and where their weights live."""
    from backbones import get_pretrained_cfg, list_backbones

    rows = [("backbone", "rate", "seconds", "mels", "licence", "weights")]
    for name in list_backbones():
        cfg = get_pretrained_cfg(name)
        where = cfg.hub_id or cfg.url or "random init only"
        mels = str(cfg.frontend.get("n_mels", ""))
        rows.append((name, str(cfg.sample_rate), f"{cfg.input_seconds:g}", mels, cfg.license, where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Fine-tune a small backbone on synthetic genres, evaluate, and classify a synthetic radio stream."""
    from .demo import run_demo

    return run_demo(args)


def _demo_args(p: argparse.ArgumentParser) -> None:
    from .demo import add_arguments

    add_arguments(p)


def _predict(args: argparse.Namespace) -> int:
    """Predict whole audio files with a saved model: top-k classes with probabilities, or ratings, per file."""
    from .predict import run_predict

    return run_predict(args)


def _predict_args(p: argparse.ArgumentParser) -> None:
    from .predict import add_arguments

    add_arguments(p)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]] = {
    "info": (_info, lambda p: None),
    "demo": (_demo, _demo_args),
    "predict": (_predict, _predict_args),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0])
        add_args(p)
        p.set_defaults(_fn=fn)
    args = parser.parse_args(argv)
    return args._fn(args)
