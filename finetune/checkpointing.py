"""Training checkpoints on disk: atomic writing, pruning, finding the latest complete one, and the loop's state.

A checkpoint ``<root>/step_N`` holds accelerate's state (model, optimizer, scheduler, grad scaler, every RNG;
written by accelerate, model weights as safetensors) and ``trainer_state.json`` (:class:`TrainerState`: the
loop's position, best metric and history). It is written to ``<root>/.tmp_step_N`` and renamed into place,
and ``trainer_state.json`` is written last, so a directory named ``step_N`` is always complete: a crash while
saving leaves only a temporary directory, which the next save of that step replaces.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = [
    "STATE_FILE",
    "TrainerState",
    "list_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "read_state",
    "save_checkpoint",
    "write_state",
]

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"step_(\d+)")


@dataclass
class TrainerState:
    """The training loop's own state, saved with every checkpoint.

    Attributes:
        step: optimizer steps done.
        best: best value of the selection metric so far (None before the first evaluation).
        best_step: the step that reached ``best``.
        bad_evals: evaluations since the last improvement (for early stopping).
        history: the logged records (training losses and ``eval/...`` metrics), in order.
        metric: the selection metric ``best`` refers to (None in checkpoints written before it was recorded).
    """

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    metric: str | None = None


def _step(path: Path) -> int | None:
    match = _STEP_DIR.fullmatch(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def list_checkpoints(root: str | Path) -> list[Path]:
    """The complete checkpoints under ``root`` (``step_N`` directories holding a state file), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if _step(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: _step(p) or 0)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root``, or None."""
    done = list_checkpoints(root)
    return done[-1] if done else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def write_state(path: str | Path, state: TrainerState) -> None:
    """Write ``state`` as JSON to ``path``."""
    Path(path).write_text(json.dumps(dataclasses.asdict(state), default=_json_default))


def read_state(path: str | Path) -> TrainerState:
    """Read a :class:`TrainerState` written by :func:`write_state`.

    Raises:
        ValueError: the file holds keys a trainer state does not have.
    """
    raw = json.loads(Path(path).read_text())
    known = {f.name for f in dataclasses.fields(TrainerState)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(
            f"{path} is not a trainer state written by this library: unknown key(s) {', '.join(unknown)}"
        )
    return TrainerState(**raw)


def save_checkpoint(accelerator: Accelerator, root: str | Path, state: TrainerState, keep: int) -> Path:
    """Write ``root/step_<state.step>`` atomically (temporary directory, then rename) and keep only the newest
    ``keep`` complete checkpoints. Every process must call it (accelerate saves per-process RNG states)."""
    root = Path(root)
    final = root / f"step_{state.step}"
    tmp = root / f".tmp_step_{state.step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_state(tmp / STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        done = list_checkpoints(root)
        for old in done[: max(0, len(done) - keep)]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | Path) -> TrainerState:
    """Restore accelerate's state from the checkpoint ``path`` and return the loop's :class:`TrainerState`."""
    accelerator.load_state(str(path))
    return read_state(Path(path) / STATE_FILE)
