"""Features: the on-disk cache (reuse, recompute only what changed, keyed by the featurizer's spec), weight and
checkpoint hashes, backbone embeddings and the spectral statistics."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from backbones import build_backbone
from backbones.frontends import PannsLogMel
from eval.benchmark.data import ClipSplit
from eval.benchmark.features import (
    BackboneFeatures,
    FeatureCache,
    SpectralStats,
    file_sha256,
    weights_sha256,
    window_seconds,
)
from heads.tasks import SINGLE_LABEL


def _split(values: list[float], rate: int = 8000, n: int = 4000) -> ClipSplit:
    audio = [np.full(n, v, dtype=np.float32) for v in values]
    ds = datasets.Dataset.from_dict(
        {"audio": audio, "label": [0] * len(values), "sample_rate": [rate] * len(values)}
    ).with_format("numpy")
    return ClipSplit.of(ds, SINGLE_LABEL)


class _Counting:
    """A featurizer that returns each clip's first sample and counts the clips it computed."""

    def __init__(self, version: int = 1) -> None:
        self.version, self.computed = version, 0

    def spec(self) -> dict[str, Any]:
        return {"kind": "first", "version": self.version}

    def compute(self, split: ClipSplit, progress: bool = False) -> list[np.ndarray]:
        self.computed += len(split)
        return [np.array([[split[i]["audio"][0], self.version]], np.float32) for i in range(len(split))]


def test_cache_reuses_stored_clips_and_computes_only_new_ones(tmp_path: Path) -> None:
    cache, featurizer = FeatureCache(tmp_path), _Counting()
    first = cache.features(featurizer, _split([0.25, 0.5]))
    assert featurizer.computed == 2 and [a.tolist() for a in first] == [[[0.25, 1.0]], [[0.5, 1.0]]]
    again = cache.features(featurizer, _split([0.5, 0.25, 0.75]))  # one new clip (new audio)
    assert featurizer.computed == 3
    assert np.concatenate(again)[:, 0].tolist() == [0.5, 0.25, 0.75]
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and len(list(folders[0].glob("shard-*.safetensors"))) == 2
    assert (folders[0] / "spec.json").is_file()
    other = _Counting(version=2)  # another spec: another folder, nothing reused
    assert cache.features(other, _split([0.25]))[0].tolist() == [[0.25, 2.0]] and other.computed == 1
    uncached = _Counting()
    FeatureCache(None).features(uncached, _split([0.1]))
    FeatureCache(None).features(uncached, _split([0.1]))
    assert uncached.computed == 2


def test_weight_and_file_hashes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = build_backbone("cnn14.tiny")
    torch.manual_seed(0)
    b = build_backbone("cnn14.tiny")
    torch.manual_seed(1)
    c = build_backbone("cnn14.tiny")
    assert weights_sha256(a) == weights_sha256(b) != weights_sha256(c)
    path = tmp_path / "w.bin"
    path.write_bytes(b"weights")
    assert file_sha256(path) == hashlib.sha256(b"weights").hexdigest()


def test_window_rule() -> None:
    assert window_seconds({"crop_seconds": 4.0, "clip_seconds": 30.0}, 10.0) == 4.0
    assert window_seconds({"clip_seconds": 6.0}, 10.0) == 6.0
    assert window_seconds({"clip_seconds": 30.0}, 10.0) == 10.0


def test_backbone_features_are_the_pooled_crops_and_their_spec_names_the_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = build_backbone("cnn14.tiny")
    save_file(saved.state_dict(), str(tmp_path / "weights.safetensors"))
    settings = {"clip_seconds": 1.0, "crop_seconds": 0.4, "eval_crops": 2}
    feats = BackboneFeatures("cnn14.tiny", str(tmp_path / "weights.safetensors"), {}, settings)
    spec = feats.spec()
    assert spec["checkpoint_sha256"] == file_sha256(tmp_path / "weights.safetensors")
    assert spec["weights_sha256"] == weights_sha256(saved)
    assert (spec["window_seconds"], spec["eval_crops"], spec["sample_rate"]) == (0.4, 2, 32000)
    split = _split([0.05, -0.05], rate=32000, n=32000)
    arrays = feats.compute(split)
    assert [a.shape for a in arrays] == [(2, 64), (2, 64)]
    with torch.no_grad():
        want = saved.eval()(torch.full((1, 12800), 0.05)).pooled  # a constant clip: every crop alike
    np.testing.assert_allclose(arrays[0][0], want[0].numpy(), rtol=1e-5, atol=1e-6)
    random_init = BackboneFeatures("cnn14.tiny", None, {}, settings, seed=3)
    assert (
        random_init.checkpoint_sha256 is None
        and random_init.spec()["weights_sha256"] != spec["weights_sha256"]
    )


def test_spectral_stats_are_band_means_and_deviations_over_the_whole_clip() -> None:
    t = np.arange(8000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t) * np.linspace(0, 1, 8000)).astype(
        np.float32
    )  # a swelling tone
    ds = datasets.Dataset.from_dict({"audio": [tone], "label": [0], "sample_rate": [16000]}).with_format(
        "numpy"
    )
    feats = SpectralStats({"clip_seconds": 0.5}).compute(ClipSplit.of(ds, SINGLE_LABEL))
    mel = PannsLogMel(16000, n_fft=512, hop_length=160, n_mels=64, f_min=50.0, f_max=8000.0, dft="fft")(
        torch.from_numpy(tone)[None]
    )[0]
    assert feats[0].shape == (1, 128)
    np.testing.assert_allclose(feats[0][0, :64], mel.mean(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(feats[0][0, 64:], mel.std(dim=1, unbiased=False).numpy(), rtol=1e-5)
    assert int(feats[0][0, :64].argmax()) == int(mel[:, 25].argmax())  # the tone's band is the loudest
    with pytest.raises(KeyError):
        SpectralStats({}).compute(ClipSplit.of(datasets.Dataset.from_dict({"label": [0]}), SINGLE_LABEL))
