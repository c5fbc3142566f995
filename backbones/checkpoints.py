"""Resolve a checkpoint source (local file or directory, hub id, URL) and load its tensors safely.

Nothing here unpickles arbitrary objects: ``.pt``/``.pth``/``.bin`` files go through
``torch.load(weights_only=True)``; ``.safetensors`` through safetensors. Downloads land in a cache directory
(``$MUSICFT_CACHE``, default ``~/.cache/musicft``) and are verified against the config's sha256 when known.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .base import PretrainedCfg

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "cache_dir",
    "resolve_checkpoint",
    "read_state_dict",
    "load_strict",
]

logger = logging.getLogger(__name__)

# File names looked for, in order, inside a directory (HF layout first).
_DIR_CANDIDATES = ("model.safetensors", "pytorch_model.bin")
# Keys under which training scripts nest the weights.
_NESTED_KEYS = ("model", "state_dict", "model_state_dict")


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, fetched, read or understood."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the model; lists missing, unexpected and mis-shaped keys."""

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
            lines.append(f"  missing keys ({len(missing)}): {_abbrev(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_abbrev(unexpected)}")
        for key, got, want in mismatched[:10]:
            lines.append(f"  shape mismatch for {key}: checkpoint {list(got)} vs model {list(want)}")
        if len(mismatched) > 10:
            lines.append(f"  ... and {len(mismatched) - 10} more shape mismatches")
        super().__init__("\n".join(lines))


def _abbrev(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")


def cache_dir() -> Path:
    """Directory for downloaded checkpoints: ``$MUSICFT_CACHE`` or ``~/.cache/musicft``."""
    return Path(os.environ.get("MUSICFT_CACHE", Path.home() / ".cache" / "musicft"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, sha256: str | None, name: str) -> Path:
    target = cache_dir() / "downloads" / Path(url.split("?")[0]).name
    if target.exists() and (sha256 is None or sha256_of(target) == sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    try:
        with (
            urllib.request.urlopen(url, timeout=60) as resp,
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp,
        ):
            shutil.copyfileobj(resp, tmp)
            tmp_path = Path(tmp.name)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise CheckpointError(
            f"could not download {name} weights from {url} ({e}). If you are offline, download the file "
            f"elsewhere and pass its local path: load_backbone({name!r}, checkpoint='/path/to/{target.name}')"
        ) from e
    if sha256 is not None and (got := sha256_of(tmp_path)) != sha256:
        tmp_path.unlink()
        raise CheckpointError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}")
    tmp_path.replace(target)  # atomic: a crashed download never leaves a partial file under the final name
    return target


def _hub_download(repo_id: str, name: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    def unreachable(e: Exception) -> CheckpointError:
        return CheckpointError(
            f"could not fetch {name} weights from the Hugging Face hub ({repo_id}): {e}. If you are offline, "
            f"download the repository elsewhere and pass its local directory or file: "
            f"load_backbone({name!r}, checkpoint='/path/to/dir_or_file')"
        )

    last_error: Exception | None = None
    for filename in _DIR_CANDIDATES:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir() / "hub"))
        except LocalEntryNotFoundError as e:  # offline and not cached (a subclass of EntryNotFoundError)
            raise unreachable(e) from e
        except EntryNotFoundError as e:  # the repository has no such file: try the next name
            last_error = e
        except Exception as e:  # unreachable, unknown repo, refused: all end the same way for the user
            raise unreachable(e) from e
    raise CheckpointError(f"hub repository {repo_id} has none of {_DIR_CANDIDATES}") from last_error


def resolve_checkpoint(source: str | os.PathLike[str], cfg: PretrainedCfg) -> Path:
    """Turn ``source`` into a local file: a file path, a directory (HF layout), an http(s) URL or a hub id.

    The special value ``"pretrained"`` means the config's own location (hub id or URL).
    """
    src = str(source)
    if src == "pretrained":
        if cfg.hub_id is not None:
            return _hub_download(cfg.hub_id, cfg.name)
        if cfg.url is not None:
            return _download(cfg.url, cfg.sha256, cfg.name)
        raise CheckpointError(f"{cfg.name} has no released weights; pass a checkpoint file instead")
    if src.startswith(("http://", "https://")):
        return _download(src, cfg.sha256 if src == cfg.url else None, cfg.name)
    path = Path(src).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in _DIR_CANDIDATES:
            if (path / candidate).is_file():
                return path / candidate
        raise CheckpointError(f"directory {path} holds none of {', '.join(_DIR_CANDIDATES)}")
    looks_like_hub_id = src.count("/") == 1 and not src.startswith((".", "/", "~")) and not Path(src).suffix
    if looks_like_hub_id:
        return _hub_download(src, cfg.name)
    raise CheckpointError(
        f"checkpoint {src!r} for {cfg.name} is neither an existing file/directory, a URL nor a hub id"
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
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a checkpoint, disallowed pickle globals
        raise CheckpointError(
            f"could not read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            "The file may be truncated or not a PyTorch/safetensors checkpoint (only tensors are read, never "
            "arbitrary pickled objects)."
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


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source_format: str, model_name: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a readable error listing every mismatch.

    ``num_batches_tracked`` buffers may be absent from the checkpoint (they are counters, not weights).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(model_name, source_format, missing, unexpected, mismatched)
    full = dict(state)
    for k, v in own.items():
        full.setdefault(k, v)  # only num_batches_tracked can be filled in here
    module.load_state_dict(full, strict=True)
