"""Speed benchmarks: ``python -m eval.speed SUITE [options]``.

Each suite lives in its own module ``eval/speed_<suite>.py`` exposing ``add_arguments(parser)`` and
``run(args) -> dict``; this file only dispatches, through the table below.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUITES = {
    "frontends": "eval.speed_frontends",
    "backbones": "eval.speed_backbones",
    "training": "eval.speed_training",
    "input": "eval.speed_input",
    "streaming": "eval.speed_streaming",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUITES:
        print(
            f"usage: python -m eval.speed {{{','.join(SUITES)}}} [options]   (--help after a suite for its options)"
        )
        return 2
    mod = importlib.import_module(SUITES[argv[0]])
    parser = argparse.ArgumentParser(prog=f"python -m eval.speed {argv[0]}", description=mod.__doc__)
    parser.add_argument("--out", default="bench/results", help="directory for the JSON result")
    mod.add_arguments(parser)
    mod.run(parser.parse_args(argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
