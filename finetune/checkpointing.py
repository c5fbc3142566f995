"""Training checkpoints on disk: atomic writing, pruning, finding the latest complete one, and the loop's state.

A checkpoint ``<root>/step_N`` holds accelerate's state (model, optimizer, scheduler, grad scaler, every RNG;
written by accelerate, model weights as safetensors) and ``trainer_state.json`` (:class:`TrainerState`: the
loop's position, best metric, history, the settings the run was started with and the health of its loss). It is
written to ``<root>/.tmp_step_N`` and renamed into place, and ``trainer_state.json`` is written last, so a
directory named ``step_N`` is always complete: a crash while saving leaves only a temporary directory, which the
next save of that step replaces. Pruning keeps the newest ``keep`` checkpoints and the last good one (finite,
not exploding loss), so a diverging run never prunes away the checkpoint worth going back to.

Starting a run in a used directory (:func:`resume_point`, :func:`set_aside`): a run resumes from the latest
checkpoint only when the settings that shape training match the ones recorded in it (otherwise
:class:`ResumeMismatchError` names each differing key, old -> new); a run that starts over moves the previous
run's outputs to ``<output_dir>/previous/<UTC time>/`` instead of mixing old and new checkpoints and logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backbones.config import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = [
    "PREVIOUS_DIR",
    "STATE_FILE",
    "TRAINING_OUTPUTS",
    "ResumeMismatchError",
    "TrainerState",
    "flatten_settings",
    "list_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "read_state",
    "resume_point",
    "save_checkpoint",
    "set_aside",
    "write_state",
]

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
TRAINING_OUTPUTS = ("checkpoints", "best", "metrics.jsonl", "tb")
"""What :func:`finetune.train.train` writes in its output directory (moved aside when a run starts over)."""
PREVIOUS_DIR = "previous"
"""The folder of an output directory that holds the outputs of runs that were started over."""
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
        settings: the settings that shape training (flat ``section.key`` names, see :func:`flatten_settings`),
            compared by :func:`resume_point` before a run resumes (None in checkpoints written before).
        train_loss: mean training loss over the steps since the previous checkpoint.
        last_good_step: the newest checkpoint step whose ``train_loss`` was finite and not exploding (see
            :mod:`finetune.monitor`); pruning never deletes it.
    """

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    metric: str | None = None
    settings: dict[str, Any] | None = None
    train_loss: float | None = None
    last_good_step: int | None = None


class ResumeMismatchError(ConfigError):
    """The run directory holds a checkpoint written with other settings (or for another model), so resuming
    would silently continue another run; the message names each differing key, old -> new."""


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
    ``keep`` complete checkpoints plus ``step_<state.last_good_step>``. Every process must call it (accelerate
    saves per-process RNG states).

    Raises:
        ValueError: ``keep`` < 1 (nothing could resume).
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the newest checkpoint is what a run resumes from), got {keep}")
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
            if _step(old) != state.last_good_step:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | Path) -> TrainerState:
    """Restore accelerate's state from the checkpoint ``path`` and return the loop's :class:`TrainerState`.

    Raises:
        ResumeMismatchError: the saved model, optimizer or scheduler state does not fit the prepared ones (a
            checkpoint of another model, typically one written before settings were recorded).
    """
    try:
        accelerator.load_state(str(path))
    except (RuntimeError, KeyError, ValueError, IndexError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        detail = " ".join(lines[:3])
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise ResumeMismatchError(
            f"cannot resume from {path}: its saved state does not fit this model or optimizer ({detail}). It was "
            "written by another run; start over with train.resume=false (the old outputs are moved to "
            f"{PREVIOUS_DIR}/) or use a new train.output_dir"
        ) from e
    return read_state(Path(path) / STATE_FILE)


def flatten_settings(sections: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one flat dict of ``section.key`` names, values as JSON writes them back (tuples as
    lists), so that settings from a config and from a saved state compare equal when they are.

    >>> flatten_settings({"model": {"backbone": "cnn14.tiny", "lora": {"r": 8}}})
    {'model.backbone': 'cnn14.tiny', 'model.lora.r': 8}
    """
    flat: dict[str, Any] = {}
    for key, value in sections.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_settings(value, f"{name}."))
        else:
            flat[name] = json.loads(json.dumps(value, default=_json_default))
    return flat


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for each differing setting; a section switched on or off (``model.mixup: None`` on one
    side, its ``model.mixup.*`` keys on the other) is one line under the section's name."""

    def shown(settings: Mapping[str, Any], key: str) -> str:
        if key in settings:
            return repr(settings[key])
        section = {k[len(key) + 1 :]: v for k, v in settings.items() if k.startswith(f"{key}.")}
        return repr(section) if section else "(not set)"

    keys = sorted(set(saved) | set(current))
    switched = [
        k
        for k in keys
        if (k in saved) != (k in current)
        and any(o.startswith(f"{k}.") for o in (current if k in saved else saved))
    ]
    return [
        f"{k}: {shown(saved, k)} -> {shown(current, k)}"
        for k in keys
        if not any(k.startswith(f"{s}.") for s in switched)
        and (k not in saved or k not in current or saved[k] != current[k])
    ]


def resume_point(root: str | Path, settings: Mapping[str, Any]) -> Path | None:
    """The checkpoint under ``root`` to resume from, after checking that it was written with ``settings``
    (flat names, :func:`flatten_settings`); None when there is none. Reads only: nothing is written or moved.

    A checkpoint written before settings were recorded resumes with a warning.

    Raises:
        ResumeMismatchError: the latest checkpoint was written with other settings; the message lists every
            differing key (old -> new) and the two ways out (``train.resume=false`` or a new output directory).
    """
    latest = latest_checkpoint(root)
    if latest is None:
        return None
    saved = read_state(latest / STATE_FILE).settings
    if saved is None:
        warnings.warn(
            f"{latest} does not record the settings it was written with, so they cannot be checked before "
            "resuming; if you changed the model, data or optimizer settings, start over with train.resume=false",
            stacklevel=2,
        )
        return latest
    diff = _differences(saved, flatten_settings(settings))
    if diff:
        lines = "\n  ".join(diff)
        raise ResumeMismatchError(
            f"cannot resume from {latest}: these settings differ from the run that wrote it:\n  {lines}\n"
            "Resuming would continue the old run's weights, optimizer and schedule. Start over in this "
            f"directory with train.resume=false (the old checkpoints, best model and logs are moved to "
            f"{Path(root).parent / PREVIOUS_DIR}/<time>/), or use a new train.output_dir."
        )
    return latest


def set_aside(out_dir: str | Path, names: tuple[str, ...] = TRAINING_OUTPUTS) -> Path | None:
    """Move a previous run's outputs ``names`` (those that exist) from ``out_dir`` to
    ``out_dir/previous/<UTC time>/``, so that a run that starts over never mixes its checkpoints and logs with
    the old ones; returns where they went, or None when there was nothing to move. Call it on one process."""
    out_dir = Path(out_dir)
    present = [out_dir / n for n in names if (out_dir / n).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = out_dir / PREVIOUS_DIR / stamp
    n = 1
    while target.exists():
        n += 1
        target = out_dir / PREVIOUS_DIR / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for path in present:
        path.rename(target / path.name)
    logger.warning(
        "%s held a previous run's outputs; moved %s to %s",
        out_dir,
        ", ".join(p.name for p in present),
        target,
    )
    return target
