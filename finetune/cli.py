"""Command line: ``python -m finetune [--debug] {info,demo,predict,stream,...}``.

Each sub-command is a small function registered in ``COMMANDS``; it imports what it needs when it runs. Every
command (and every recipe script, through :func:`run_command`) shares one error policy: a user error (a bad
config, a missing or unfitting checkpoint, bad data, a diverged run) prints ``error: <message>`` and exits 2
for configuration and usage errors, 1 for the others; ``--debug`` or ``MUSICFT_DEBUG=1`` adds the traceback.
Anything else is a bug and keeps its traceback. Ctrl-C exits 130; SIGTERM during training exits 143 after
saving a checkpoint. The library's log messages (resuming, validation passes, downloads) are shown on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator

__all__ = ["EXIT_CONFIG", "EXIT_ERROR", "add_debug_argument", "main", "run_command", "user_error_types"]

EXIT_ERROR = 1
"""Exit status of a run stopped by a user error other than a configuration error."""
EXIT_CONFIG = 2
"""Exit status of a configuration or usage error (argparse uses 2 as well)."""
_PACKAGES = ("backbones", "heads", "finetune", "eval")


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the input was wrong" rather than "the library has a bug": the library's
    named errors (most are ``ValueError`` subclasses), unknown registry names (``KeyError``), files that cannot
    be read (``OSError``), and running out of accelerator memory."""
    import torch

    from backbones.state_dict import CheckpointError

    from .monitor import TrainingDivergedError

    return (ValueError, KeyError, OSError, CheckpointError, TrainingDivergedError, torch.OutOfMemoryError)


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]  # str(KeyError) would quote the message
    return str(error) or type(error).__name__


class _TqdmHandler(logging.Handler):
    """Writes log records through tqdm, so that they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging must never raise)
            self.handleError(record)


@contextlib.contextmanager
def _library_logs(debug: bool) -> Iterator[None]:
    """While inside, show the library's INFO messages (DEBUG with ``debug``) on stderr."""
    handler = _TqdmHandler(logging.DEBUG if debug else logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s"))
    loggers = [logging.getLogger(name) for name in _PACKAGES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(min(handler.level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


def run_command(body: Callable[[], int], debug: bool = False) -> int:
    """Run a command-line ``body`` under the shared error policy (see the module docstring) and return its
    exit status. ``debug`` (or the environment variable ``MUSICFT_DEBUG=1``) prints tracebacks of user errors."""
    from backbones.config import ConfigError

    from .monitor import TrainingInterrupted

    debug = debug or os.environ.get("MUSICFT_DEBUG", "").strip() not in ("", "0")
    try:
        with _library_logs(debug):
            return body()
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return int(e.code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except user_error_types() as e:
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug or MUSICFT_DEBUG=1 for the traceback)"
        print(f"error: {_message(e)}{hint}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_ERROR


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


def _stream(args: argparse.Namespace) -> int:
    """Stream files, stdin or a microphone through a saved model: one line per hop, segments, JSONL, timeline."""
    from .streaming.cli import run_stream

    return run_stream(args)


def _stream_args(p: argparse.ArgumentParser) -> None:
    from .streaming.cli import add_arguments

    add_arguments(p)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]] = {
    "info": (_info, lambda p: None),
    "demo": (_demo, _demo_args),
    "predict": (_predict, _predict_args),
    "stream": (_stream, _stream_args),
}


def add_debug_argument(parser: argparse.ArgumentParser, default: object = False) -> None:
    """``--debug``: show tracebacks of user errors (see :func:`run_command`)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="print the full traceback of errors (or set MUSICFT_DEBUG=1)",
    )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command under :func:`run_command`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__.splitlines()[0])
    add_debug_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0])
        add_args(p)
        add_debug_argument(p, default=argparse.SUPPRESS)  # also after the command: demo --debug
        p.set_defaults(_fn=fn)
    args = parser.parse_args(argv)
    return run_command(lambda: args._fn(args), debug=args.debug)
