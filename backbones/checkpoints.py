"""Resolve a checkpoint source (local file or directory, hub id, URL, the config's own weights) to a local file.

Downloads land in a cache directory (``$MUSICFT_CACHE``, default ``~/.cache/musicft``) under their final name
only once complete, and are verified against the config's sha256 when known. Reading and loading the file's
tensors is :mod:`backbones.state_dict`'s job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .pretrained import PretrainedCfg
from .state_dict import CheckpointError

__all__ = ["cache_dir", "check_checkpoint_source", "resolve_checkpoint"]

logger = logging.getLogger(__name__)

# File names looked for, in order, inside a directory (HF layout first).
_DIR_CANDIDATES = ("model.safetensors", "pytorch_model.bin")
# Extensions of checkpoint files: a source ending in one of them names a file, never a hub repository.
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def cache_dir() -> Path:
    """Directory for downloaded checkpoints: ``$MUSICFT_CACHE`` or ``~/.cache/musicft``."""
    return Path(os.environ.get("MUSICFT_CACHE", Path.home() / ".cache" / "musicft"))


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
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


def _hub_download(repo_id: str, name: str, user_given: bool = False) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    def unreachable(e: Exception) -> CheckpointError:
        local = f" (there is no local file or directory {repo_id!r} either)" if user_given else ""
        return CheckpointError(
            f"could not fetch {name} weights from the Hugging Face hub ({repo_id}){local}: {e}. If you are "
            f"offline, download the repository elsewhere and pass its local directory or file: "
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


def _is_hub_id(source: str) -> bool:
    """Whether ``source`` is a Hugging Face repository id ``owner/name`` (the hub's own character rules: letters,
    digits, ``-``, ``_`` and ``.``; dots inside names, as in ``MIT/ast-finetuned-audioset-10-10-0.4593``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if source.count("/") != 1 or source.startswith(("/", ".", "~")):
        return False
    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def check_checkpoint_source(source: str | os.PathLike[str], cfg: PretrainedCfg) -> str:
    """Say what kind of source ``source`` is for ``cfg`` without downloading anything: ``"file"``,
    ``"directory"``, ``"url"``, ``"hub"`` or ``"pretrained"`` (see :func:`resolve_checkpoint` for the rules), so
    that a bad path fails before any work is done.

    Raises:
        CheckpointError: the source is empty, a missing file, a directory without weights, ``"pretrained"`` for a
            config without released weights, or of no known kind.
    """
    src = os.fspath(source)
    if not src.strip():
        raise CheckpointError(
            f"empty checkpoint source for {cfg.name}: pass a file, an HF-layout directory, a hub id "
            "('owner/name'), an http(s) URL or 'pretrained' (checkpoint=None builds random weights)"
        )
    if src == "pretrained":
        if cfg.hub_id is None and cfg.url is None:
            raise CheckpointError(f"{cfg.name} has no released weights; pass a checkpoint file instead")
        return "pretrained"
    if src.startswith(("http://", "https://")):
        return "url"
    path = Path(src).expanduser()
    if path.is_file():
        return "file"
    if path.is_dir():
        if not any((path / candidate).is_file() for candidate in _DIR_CANDIDATES):
            raise CheckpointError(f"directory {path} holds none of {', '.join(_DIR_CANDIDATES)}")
        return "directory"
    if path.suffix.lower() in _FILE_SUFFIXES:
        raise CheckpointError(f"checkpoint file {path} for {cfg.name} does not exist; check the path")
    if _is_hub_id(src):
        return "hub"
    raise CheckpointError(
        f"checkpoint {src!r} for {cfg.name} is neither an existing file/directory, a URL nor a hub id "
        "('owner/name'); check the path"
    )


def resolve_checkpoint(source: str | os.PathLike[str], cfg: PretrainedCfg) -> Path:
    """Turn ``source`` into a local file: a file path, a directory (HF layout), an http(s) URL or a hub id.

    The special value ``"pretrained"`` means the config's own location (hub id or URL). A source that exists on
    disk is always taken as a path; a missing one ending in a checkpoint extension (``.pt``, ``.pth``, ``.bin``,
    ``.ckpt``, ``.safetensors``) is reported as a missing file, anything else of the form ``owner/name`` is
    fetched from the hub.

    Raises:
        CheckpointError: the source is empty, missing, unreachable or of no known kind.
    """
    src = os.fspath(source)
    kind = check_checkpoint_source(src, cfg)
    if kind == "pretrained":
        if cfg.hub_id is not None:
            return _hub_download(cfg.hub_id, cfg.name)
        assert cfg.url is not None  # checked above
        return _download(cfg.url, cfg.sha256, cfg.name)
    if kind == "url":
        return _download(src, cfg.sha256 if src == cfg.url else None, cfg.name)
    if kind == "hub":
        return _hub_download(src, cfg.name, user_given=True)
    path = Path(src).expanduser()
    if kind == "directory":
        return next(path / c for c in _DIR_CANDIDATES if (path / c).is_file())
    return path
