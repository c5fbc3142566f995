"""``python -m eval COMMAND [options]``: ``benchmark`` (the benchmark suite) or ``speed`` (the speed benchmarks,
also reachable as ``python -m eval.speed``). Each command's module is imported only when it runs."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "benchmark": (
        "eval.benchmark.cli",
        "backbones x tasks x modes x seeds, with baselines, intervals, calibration",
    ),
    "speed": ("eval.speed", "speed benchmarks: frontends | backbones | training"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        lines = [f"usage: python -m eval {{{','.join(COMMANDS)}}} [options]   (--help after a command)"]
        lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
        print("\n".join(lines))
        return 2
    return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
