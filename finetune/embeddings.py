"""Cached backbone embeddings for linear probes: run a frozen backbone once per crop instead of every epoch.

A frozen backbone in eval mode maps a fixed crop to a fixed ``pooled`` vector, so a head with
``pooling="pooled"`` trains on cached vectors exactly as it would on waveforms
(``AudioModel.forward_embeddings``, which ``AudioModel.forward(embeddings=...)`` calls). Crops are
deterministic (an evaluation-mode :class:`CropCollate` with ``crops_per_clip`` windows per clip); waveform
augmentation cannot be cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .data.collate import CropCollate
from .model import AudioModel

__all__ = ["EmbeddingDataset", "cache_embeddings", "collate_embeddings"]


class EmbeddingDataset(Dataset):
    """One item per clip: ``embeddings`` ``[k, D]`` (its k crops) and the clip's targets under the task's
    ``target_key`` (``labels`` or ``ratings``)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


@torch.inference_mode()
def cache_embeddings(
    model: AudioModel,
    dataset: Dataset,
    collate: CropCollate,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> EmbeddingDataset:
    """The backbone's ``pooled`` vector of every crop ``collate`` makes from ``dataset``, grouped by clip.

    Raises:
        ValueError: the backbone is not frozen, or the collate draws random (training) crops.
        KeyError: the batches lack the targets of the model's task (``model.task.target_key``).
    """
    if any(p.requires_grad for p in model.backbone.parameters()):
        raise ValueError(
            "cached embeddings need a frozen backbone (freeze='backbone'): its outputs must not change"
        )
    if collate.train:
        raise ValueError(
            "cached embeddings need deterministic crops: pass an evaluation collate (train=False)"
        )
    key = model.task.target_key
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.backbone.training
    model.backbone.eval()
    items: list[dict[str, Any]] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in tqdm(loader, desc="caching embeddings", unit="batch", disable=not progress):
        if key not in batch:
            raise KeyError(
                f"the batches have no {key!r}, where the {model.task.name} task keeps its targets; "
                f"got keys {sorted(batch)}"
            )
        pooled = model.backbone(batch["waveform"].to(device)).pooled.float().cpu()
        for clip in range(len(batch["ids"])):
            rows = batch["clip_index"] == clip
            item = {"embeddings": pooled[rows].clone(), key: batch[key][rows][0].clone()}
            if "descriptors" in batch:  # a hybrid head's clip descriptors travel with the clip
                item["descriptors"] = batch["descriptors"][rows][0].clone()
            items.append(item)
    model.backbone.train(was_training)
    return EmbeddingDataset(items)


def collate_embeddings(items: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Batch :class:`EmbeddingDataset` items: every crop is a row, each with its clip's targets (every key but
    ``embeddings``); ``clip_index`` maps rows to clips.

    Shapes:
        -> embeddings [M, D], targets [M, ...], clip_index [M] for M crops in all.
    """
    counts = torch.tensor([len(item["embeddings"]) for item in items])
    batch = {"embeddings": torch.cat([item["embeddings"] for item in items])}
    for key in [k for k in items[0] if k != "embeddings"]:
        batch[key] = torch.stack([item[key] for item in items]).repeat_interleave(counts, dim=0)
    batch["clip_index"] = torch.repeat_interleave(torch.arange(len(items)), counts)
    return batch
