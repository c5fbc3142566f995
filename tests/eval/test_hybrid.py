"""The hybrid-head study's embedding step: one backbone pass per clip, shared by every fold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import eval.hybrid as hybrid
from finetune.data.audio import AudioLoadError
from finetune.embeddings import EmbeddingDataset, cache_embeddings

NAMES = ["a", "b", "c", "d", "e"]


def _row(i: int, name: str) -> dict[str, Any]:
    t = np.arange(hybrid.SAMPLE_RATE // 2) / hybrid.SAMPLE_RATE  # 0.5 s: one tone per clip
    wave = (0.1 * (i + 1) * np.sin(2 * np.pi * 220.0 * (i + 1) * t)).astype(np.float32)
    return {
        "name": name,
        "audio": wave,
        "sample_rate": hybrid.SAMPLE_RATE,
        "ratings": np.full(19, i / 10, np.float32),
        "descriptors": np.arange(3, dtype=np.float32) + i,
    }


ROWS = {name: _row(i, name) for i, name in enumerate(NAMES)}


def _splits(train: list[str], validation: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {"train": [ROWS[n] for n in train], "validation": [ROWS[n] for n in validation]}


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of clips each backbone pass embeds."""
    calls: list[int] = []

    def counting(model: Any, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(dataset))
        return cache_embeddings(model, dataset, *args, **kwargs, progress=False)

    monkeypatch.setattr(hybrid, "cache_embeddings", counting)
    return calls


def test_embed_runs_the_backbone_once_per_clip_across_folds(embedded: list[int]) -> None:
    memo: dict[str, torch.Tensor] = {}
    first = hybrid.embed(_splits(["a", "b", "c"], ["d"]), window=0.4, crops=2, memo=memo)
    second = hybrid.embed(_splits(["d", "c", "e"], ["a", "b"]), window=0.4, crops=2, memo=memo)
    assert embedded == [4, 1]  # the second fold embeds only "e"
    assert sorted(memo) == NAMES and all(v.shape == (2, memo["a"].shape[1]) for v in memo.values())
    # each clip keeps its own embedding, ratings and descriptors, whatever split it lands in
    assert second["validation"][0]["embeddings"] is first["train"][0]["embeddings"] is memo["a"]
    assert second["train"][0]["embeddings"] is first["validation"][0]["embeddings"] is memo["d"]
    item = second["train"][2]
    torch.testing.assert_close(item["ratings"], torch.full((19,), 0.4))
    torch.testing.assert_close(item["descriptors"], torch.tensor([4.0, 5.0, 6.0]))


def test_embed_gives_each_clip_the_embedding_of_its_own_row(monkeypatch: pytest.MonkeyPatch) -> None:
    # a stand-in backbone pass that embeds each clip as its first rating, in the data set's order
    def by_rating(model: Any, dataset: Any, *args: Any, **kwargs: Any) -> EmbeddingDataset:
        return EmbeddingDataset([{"embeddings": torch.tensor([[float(r["ratings"][0])]])} for r in dataset])

    monkeypatch.setattr(hybrid, "cache_embeddings", by_rating)
    memo: dict[str, torch.Tensor] = {}
    hybrid.embed(_splits(["c", "a"], ["e"]), window=0.4, crops=1, memo=memo)
    out = hybrid.embed(_splits(["e", "b"], ["d", "c"]), window=0.4, crops=1, memo=memo)
    assert {name: float(v) for name, v in memo.items()} == pytest.approx(
        {"a": 0.0, "b": 0.1, "c": 0.2, "d": 0.3, "e": 0.4}
    )
    assert [float(item["embeddings"]) for item in out["validation"].items] == pytest.approx([0.3, 0.2])


def test_embed_stops_at_a_clip_it_cannot_read(embedded: list[int], tmp_path: Path) -> None:
    # a skipped clip would shift every later clip onto another's embedding: the study stops instead
    missing = {**ROWS["b"], "path": str(tmp_path / "b.flac")}
    del missing["audio"]
    with pytest.raises(AudioLoadError, match=r"cannot load audio '.*b\.flac'"):
        hybrid.embed({"train": [ROWS["a"], missing, ROWS["c"]]}, window=0.4, crops=1, memo={})


def test_standardise_embeddings_uses_the_training_statistics_only() -> None:
    def data(*crops: list[float]) -> EmbeddingDataset:
        return EmbeddingDataset(
            [{"embeddings": torch.tensor([c]), "ratings": torch.zeros(19)} for c in crops]
        )

    # dimension 0 varies by 1e-5 around 0.03 (as the random backbone's does); dimension 1 is constant
    cached = {"train": data([0.03, 5.0], [0.03002, 5.0]), "test": data([0.03003, 7.0])}
    out = hybrid.standardise_embeddings(cached)
    torch.testing.assert_close(
        torch.cat([item["embeddings"] for item in out["train"].items]),
        torch.tensor([[-1.0, 0.0], [1.0, 0.0]]),
    )
    torch.testing.assert_close(out["test"][0]["embeddings"], torch.tensor([[2.0, 2.0]]), rtol=0, atol=2e-3)
    assert out["test"][0]["ratings"] is cached["test"][0]["ratings"]
