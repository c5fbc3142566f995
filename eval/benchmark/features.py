"""Per-clip features for probes and baselines, cached on disk.

A featurizer turns a :class:`~.data.ClipSplit` into one float32 array ``[k, D]`` per clip (``k`` crops). Its
:meth:`spec` says everything the values depend on; the cache (:class:`FeatureCache`) files each clip's array under
the sha256 of that spec and the clip's identity (:meth:`~.data.ClipSplit.identities`: path, size and mtime of a
file, or a hash of in-memory samples). For a backbone the spec holds its name, the sha256 of its weights (of the
checkpoint file, and of the built state dict, which also covers random initialisation), its architecture and
front-end settings, the sample rate and the window and crop settings; so a changed checkpoint, front-end option,
window or audio file is never served stale values.

Arrays are stored in append-only safetensors shards (one per batch of newly computed clips, written to a temporary
file and renamed), so an interrupted run keeps what it computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from torch.utils.data import DataLoader

from backbones import Backbone, get_pretrained_cfg, load_backbone
from backbones.checkpoints import resolve_checkpoint
from backbones.frontends import PannsLogMel
from finetune import build_model
from finetune.data import CropCollate
from finetune.embeddings import cache_embeddings

from .data import ClipSplit, TaskCollate

__all__ = [
    "BackboneFeatures",
    "FeatureCache",
    "SpectralStats",
    "file_sha256",
    "window_seconds",
    "weights_sha256",
]

_SHARD_CLIPS = 256


def _digest(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """Per-clip feature arrays on disk, by featurizer spec and clip identity (see the module docstring).

    Args:
        root: the cache folder; None disables caching (everything is computed).
    """

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None

    def features(self, featurizer: Any, split: ClipSplit, progress: bool = False) -> list[np.ndarray]:
        """``featurizer``'s arrays for every clip of ``split``: read where cached, computed and stored otherwise."""
        spec = featurizer.spec()
        if self.root is None or spec is None:
            return featurizer.compute(split, progress)
        folder = self.root / _digest(spec)[:24]
        folder.mkdir(parents=True, exist_ok=True)
        spec_file = folder / "spec.json"
        if not spec_file.is_file():
            spec_file.write_text(json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n")
        keys = split.identities()
        found = self._index(folder)
        missing = sorted({i for i, k in enumerate(keys) if k not in found}, key=int)
        for start in range(0, len(missing), _SHARD_CLIPS):
            chunk = missing[start : start + _SHARD_CLIPS]
            arrays = featurizer.compute(split.select(chunk), progress)
            shard = {keys[i]: np.ascontiguousarray(a, dtype=np.float32) for i, a in zip(chunk, arrays)}
            path = self._write(folder, shard)
            found.update(dict.fromkeys(shard, path))
        out = []
        handles: dict[Path, Any] = {}
        for key in keys:
            path = found[key]
            if path not in handles:
                handles[path] = safe_open(str(path), framework="np")
            out.append(handles[path].get_tensor(key))
        return out

    @staticmethod
    def _index(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in sorted(folder.glob("shard-*.safetensors")):
            with safe_open(str(path), framework="np") as f:
                found.update(dict.fromkeys(f.keys(), path))
        return found

    @staticmethod
    def _write(folder: Path, shard: dict[str, np.ndarray]) -> Path:
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        tmp = folder / f".{name}.tmp"
        save_file(shard, str(tmp))
        os.replace(tmp, folder / name)
        return folder / name


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for the process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and values, in name order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def window_seconds(settings: Mapping[str, Any], backbone_seconds: float) -> float:
    """The crop window: ``crop_seconds``, else the backbone's input length capped at ``clip_seconds`` (the rule
    recipes use)."""
    crop = settings.get("crop_seconds")
    return (
        float(crop) if crop else float(min(settings.get("clip_seconds", backbone_seconds), backbone_seconds))
    )


# head and its settings per task, for the stand-in model that caches embeddings (its head is never used)
_PROBE_HEADS: Mapping[str, tuple[str, dict[str, Any]]] = {
    "single_label": ("linear", {}),
    "multi_label": ("linear", {"multi_label": True}),
    "rating": ("rating", {}),
}


@dataclass
class BackboneFeatures:
    """Pooled embeddings of each evaluation crop of a frozen backbone.

    Args:
        backbone: a registered name. checkpoint: anything :func:`backbones.load_backbone` accepts, or None for
        random weights (drawn from ``seed``). overrides: backbone options. settings: the task's data settings
        (window and crops). device: where the backbone runs. batch_size: clips per forward pass.
    """

    backbone: str
    checkpoint: str | None
    overrides: Mapping[str, Any]
    settings: Mapping[str, Any]
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 16
    _built: Backbone | None = field(default=None, init=False, repr=False)
    _spec: dict[str, Any] | None = field(default=None, init=False, repr=False)

    @property
    def model(self) -> Backbone:
        """The frozen backbone, built on first use (random weights are drawn from ``seed``)."""
        if self._built is None:
            torch.manual_seed(self.seed)
            self._built = load_backbone(self.backbone, checkpoint=self.checkpoint, **dict(self.overrides))
        return self._built

    @property
    def checkpoint_sha256(self) -> str | None:
        """sha256 of the checkpoint file (None for random weights)."""
        if self.checkpoint is None:
            return None
        return file_sha256(resolve_checkpoint(self.checkpoint, get_pretrained_cfg(self.backbone)))

    @property
    def window(self) -> float:
        return window_seconds(self.settings, self.model.pretrained_cfg.input_seconds)

    def spec(self) -> dict[str, Any]:
        if self._spec is None:
            cfg = self.model.pretrained_cfg
            self._spec = {
                "kind": "backbone_pooled",
                "version": 1,
                "backbone": self.backbone,
                "checkpoint_sha256": self.checkpoint_sha256,
                "weights_sha256": weights_sha256(self.model),
                "arch": dict(cfg.arch),
                "frontend": dict(cfg.frontend),
                "overrides": dict(self.overrides),
                "sample_rate": cfg.sample_rate,
                "window_seconds": self.window,
                "eval_crops": int(self.settings.get("eval_crops", 1)),
            }
        return self._spec

    def compute(self, split: ClipSplit, progress: bool = False) -> list[np.ndarray]:
        head, head_config = _PROBE_HEADS[split.task.name]
        targets = split.targets
        n_out = targets.shape[1] if targets.ndim == 2 else max(2, int(targets.max(initial=0)) + 1)
        stand_in = build_model(self.model, head=head, num_outputs=n_out, freeze="backbone", **head_config)
        stand_in.to(self.device)
        crops = CropCollate(
            self.model.sample_rate,
            self.window,
            train=False,
            crops_per_clip=int(self.settings.get("eval_crops", 1)),
        )
        items = cache_embeddings(
            stand_in, split, TaskCollate(crops, split.task), self.batch_size, self.device, progress
        )
        self.model.cpu()
        return [item["embeddings"].numpy() for item in items]


@dataclass
class SpectralStats:
    """Mean and standard deviation over time of each log-mel band (64 bands: 128 values) of the whole clip (up
    to ``clip_seconds``), from the library's PANNs log-mel front-end at 16 kHz."""

    settings: Mapping[str, Any]
    sample_rate: int = 16000
    n_mels: int = 64

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "logmel_stats",
            "version": 1,
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "clip_seconds": float(self.settings.get("clip_seconds", 30.0)),
        }

    def compute(self, split: ClipSplit, progress: bool = False) -> list[np.ndarray]:
        front = PannsLogMel(
            self.sample_rate,
            n_fft=512,
            hop_length=160,
            n_mels=self.n_mels,
            f_min=50.0,
            f_max=8000.0,
            dft="fft",
        )
        whole = CropCollate(self.sample_rate, self.spec()["clip_seconds"], train=False, crops_per_clip=1)
        loader = DataLoader(split, batch_size=8, collate_fn=TaskCollate(whole, split.task))
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for batch in loader:
                for wave, mask in zip(batch["waveform"], batch["mask"]):
                    audio = wave[mask]
                    if audio.numel() < front.min_samples:
                        audio = torch.nn.functional.pad(audio, (0, front.min_samples - audio.numel()))
                    mel = front(audio[None])[0]
                    out.append(torch.cat([mel.mean(dim=1), mel.std(dim=1, unbiased=False)])[None].numpy())
        return out


def stack_crops(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip ``[k_i, D]`` arrays as crop rows ``[sum k_i, D]`` and the clip of each row ``[sum k_i]``."""
    rows = np.concatenate([np.asarray(a, dtype=np.float32).reshape(len(a), -1) for a in arrays])
    clip = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
    return rows, clip
