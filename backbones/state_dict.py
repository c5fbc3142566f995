"""Read a checkpoint file's tensors safely and load them strictly, with errors that say what does not fit.

Nothing here unpickles arbitrary objects: PyTorch files go through ``torch.load(weights_only=True)``, safetensors
files through safetensors. The format is read from the file's first bytes, not from its extension.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "file_format",
    "read_state_dict",
    "load_strict",
]

# Keys under which training scripts nest the weights.
_NESTED_KEYS = ("model", "state_dict", "model_state_dict")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) container
_PICKLE_PROTO = b"\x80"  # pickle protocol >= 2: torch.save's legacy container starts with it


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, fetched, read or understood."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the model; lists every missing, unexpected and mis-shaped key."""

    def __init__(
        self,
        model_name: str,
        source_format: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f"checkpoint does not fit {model_name} (detected format: {source_format})"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        for key, got, want in mismatched:
            lines.append(f"  shape mismatch for {key}: checkpoint {list(got)} vs model {list(want)}")
        super().__init__("\n".join(lines))


def file_format(path: str | os.PathLike[str]) -> str:
    """``"torch"`` or ``"safetensors"``, from the file's first bytes (a zip or pickle header, or safetensors'
    8-byte header length followed by its JSON header).

    Raises:
        CheckpointError: the file is empty or neither format.
    """
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO):
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    raise CheckpointError(
        f"{path} is neither a PyTorch checkpoint (zip or pickle) nor a safetensors file "
        f"(it starts with {head!r}); pass the weights file itself"
    )


def _numpy_safe_globals() -> list[object]:
    """numpy array/scalar rebuilders (no code execution) for ``weights_only`` loads: training scripts store numpy
    state next to the weights (PANNs' ``'sampler'`` holds int64 arrays), which plain ``weights_only`` rejects."""
    import numpy as np

    kinds = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16, np.float32, np.float64)
    rebuild_array = np.zeros(1).__reduce__()[0]  # numpy(._core).multiarray._reconstruct, any numpy version
    rebuild_scalar = np.float64(0).__reduce__()[0]  # numpy(._core).multiarray.scalar
    return [rebuild_array, rebuild_scalar, np.ndarray, np.dtype, *(type(np.dtype(k)) for k in kinds)]


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read the tensors of a checkpoint file, unwrapping ``{'model': ...}``-style containers.

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, or holds non-tensor objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    fmt = file_format(path)
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, corrupt header, disallowed pickle globals
        raise CheckpointError(
            f"could not read checkpoint {path} ({fmt} format): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. The file may be truncated or not a PyTorch/safetensors "
            "checkpoint (only tensors are read, never arbitrary pickled objects)."
        ) from e
    for key in _NESTED_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"checkpoint {path} does not hold a state dict (got {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint {path} holds no tensors")
    return tensors


def _check_finite(state: Mapping[str, Tensor], source_format: str, model_name: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"checkpoint for {model_name} (format: {source_format}) holds NaN or Inf values in {len(bad)} "
            f"tensor(s): {', '.join(bad)}. The file is corrupt or comes from a diverged run: fetch it again or "
            "use an earlier checkpoint."
        )


def load_strict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source_format: str,
    model_name: str,
    side: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, Tensor]:
    """``module.load_state_dict(state, strict=True)`` with a readable error listing every mismatch.

    ``num_batches_tracked`` buffers may be absent from the checkpoint (they are counters, not weights). ``side``
    names tensors a checkpoint may carry for something outside ``module.state_dict()`` (a front-end's fixed
    tensors) with the shapes they must have: they are taken out of ``state``, must be all present or all
    absent, and are returned (empty when absent) for the caller to use once this load has succeeded. Every
    floating tensor must be finite. Nothing is loaded unless everything fits.

    Raises:
        CheckpointMismatchError: keys are missing, unexpected or mis-shaped (all of them are listed).
        CheckpointError: some tensors hold NaN or Inf.
    """
    side = dict(side or {})
    taken = {k: v for k, v in state.items() if k in side}
    rest = {k: v for k, v in state.items() if k not in side}
    own = module.state_dict()
    missing = [k for k in own if k not in rest and not k.endswith("num_batches_tracked")]
    if taken:
        missing += [k for k in side if k not in taken]
    unexpected = [k for k in rest if k not in own]
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in rest.items()
        if k in own and v.shape != own[k].shape
    ]
    mismatched += [(k, tuple(v.shape), tuple(side[k])) for k, v in taken.items() if tuple(v.shape) != side[k]]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(model_name, source_format, missing, unexpected, mismatched)
    _check_finite(state, source_format, model_name)
    full = dict(rest)
    for k, v in own.items():
        full.setdefault(k, v)  # only num_batches_tracked can be filled in here
    module.load_state_dict(full, strict=True)
    return taken
