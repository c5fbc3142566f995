"""Cached embeddings for linear probes: exactly what the waveform path computes, with clear errors otherwise."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from finetune.config import load_config
from finetune.data import CropCollate, synthetic_genres
from finetune.embeddings import cache_embeddings, collate_embeddings
from finetune.evaluation import predict
from finetune.model import AudioModel, build_model
from finetune.recipe import DATASETS, run_recipe


@pytest.fixture(scope="module")
def clips():
    return synthetic_genres(n_per_class=1, seconds=2.0, sample_rate=32000, seed=0).select(range(5))


def test_cached_embeddings_give_the_waveform_path_predictions(clips):
    torch.manual_seed(0)
    model = build_model("cnn14.tiny", head="linear", num_outputs=10, freeze="backbone")
    collate = CropCollate(32000, 1.0, train=False, crops_per_clip=3)
    cached = cache_embeddings(model, clips, collate, batch_size=2, progress=False)
    assert len(cached) == 5 and cached[0]["embeddings"].shape == (3, model.backbone.embed_dim)
    batch = collate_embeddings([cached[i] for i in range(5)])
    wave = collate([clips[i] for i in range(5)])
    assert torch.equal(batch["clip_index"], wave["clip_index"]) and torch.equal(
        batch["labels"], wave["labels"]
    )
    with torch.no_grad():
        from_cache = model(embeddings=batch["embeddings"], labels=batch["labels"])
        from_wave = model(waveform=wave["waveform"], labels=wave["labels"])
    torch.testing.assert_close(from_cache.logits, from_wave.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_cache.loss, from_wave.loss, rtol=1e-5, atol=1e-6)


def test_descriptors_travel_with_cached_embeddings_and_crops(clips):
    """A hybrid head on cached embeddings sees each clip's descriptors, as on waveforms."""
    from finetune.descriptors import WithDescriptors

    torch.manual_seed(0)
    model = build_model(
        "cnn14.tiny",
        head="hybrid",
        task="single_label",
        num_outputs=10,
        descriptor_names=("x", "y"),
        freeze="backbone",
    ).eval()
    rows = WithDescriptors(clips, np.arange(10, dtype=np.float32).reshape(5, 2))
    collate = CropCollate(32000, 1.0, train=False, crops_per_clip=2)
    cached = cache_embeddings(model, rows, collate, batch_size=2, progress=False)
    batch = collate_embeddings([cached[i] for i in range(5)])
    wave = collate([rows[i] for i in range(5)])
    assert torch.equal(wave["descriptors"], torch.arange(10.0).reshape(5, 2).repeat_interleave(2, 0))
    assert torch.equal(batch["descriptors"], wave["descriptors"])
    with torch.no_grad():
        from_cache = model(embeddings=batch["embeddings"], descriptors=batch["descriptors"])
        from_wave = model(waveform=wave["waveform"], descriptors=wave["descriptors"])
    torch.testing.assert_close(from_cache.logits, from_wave.logits, rtol=1e-5, atol=1e-5)


def test_cache_refuses_what_it_cannot_reproduce(clips):
    trainable = build_model("cnn14.tiny", head="linear", num_outputs=10, freeze="none")
    with pytest.raises(ValueError, match="need a frozen backbone"):
        cache_embeddings(trainable, clips, CropCollate(32000, 1.0, train=False), progress=False)
    frozen = build_model("cnn14.tiny", head="linear", num_outputs=10, freeze="backbone")
    with pytest.raises(ValueError, match="need deterministic crops"):
        cache_embeddings(frozen, clips, CropCollate(32000, 1.0, train=True, seed=0), progress=False)
    mean_pooling = build_model("cnn14.tiny", head="linear", num_outputs=10, freeze="backbone", pooling="mean")
    with pytest.raises(ValueError, match="pools with 'mean', which needs the token sequence"):
        mean_pooling(embeddings=torch.zeros(2, mean_pooling.backbone.embed_dim))
    with pytest.raises(ValueError, match="exactly one of waveform"):
        frozen(waveform=torch.zeros(1, 32000), embeddings=torch.zeros(1, frozen.backbone.embed_dim))


def test_recipe_linear_probe_on_cached_embeddings_matches_the_saved_model(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(
        None,
        [
            "model.backbone=cnn14.tiny",
            "model.freeze=backbone",
            "data.cache_embeddings=true",
            "data.n_per_class=3",
            "data.clip_seconds=2.0",
            "data.crop_seconds=1.0",
            "data.eval_crops=2",
            "train.max_steps=4",
            "train.batch_size=4",
            "train.eval_every=2",
            "train.save_every=4",
            "train.progress=false",
            f"train.output_dir={out}",
            "train.lr=0.01",
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "frozen backbone runs every batch" warning
        metrics = run_recipe(cfg)
    # the saved model, run on waveforms, reproduces the test predictions made from cached embeddings
    model = AudioModel.from_pretrained(out / "model")
    test = DATASETS["synthetic_genres"](cfg.data, model.sample_rate).splits["test"]
    loader = DataLoader(
        test, batch_size=4, collate_fn=CropCollate(model.sample_rate, 1.0, train=False, crops_per_clip=2)
    )
    preds, targets, _ = predict(model, loader)
    assert json.loads((out / "metrics.json").read_text())["confusion_matrix"] == metrics["confusion_matrix"]
    assert metrics["accuracy"] == pytest.approx(float((preds.argmax(1) == targets).mean()))
    assert np.array_equal(np.asarray(metrics["confusion_matrix"]).sum(1), np.bincount(targets, minlength=10))
