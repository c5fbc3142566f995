"""The hybrid head: standardised descriptors fused with the embedding (concat and gated), every task's loss,
the statistics it keeps, and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backbones.config import ConfigError
from heads import PERCEPIANO_DIMENSIONS, build_head
from heads.classification import classification_loss
from tests.heads.helpers import random_output

NAMES = ("tempo", "loudness", "brightness")


def hybrid(**config: object):
    torch.manual_seed(0)
    return build_head("hybrid", 8, **{"num_outputs": 2, "descriptor_names": NAMES, "dropout": 0.0, **config})


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_descriptors_are_standardised_with_the_stored_training_statistics(fusion: str) -> None:
    head = hybrid(fusion=fusion).eval()
    pooled, d = torch.randn(4, 8), torch.randn(4, 3) * 10 + 50
    mean, std = d.mean(0), d.std(0)
    raw = head.project(pooled, (d - mean) / std)  # identity statistics on standardised input
    head.set_descriptor_stats(mean, std)
    torch.testing.assert_close(head.project(pooled, d), raw, rtol=1e-5, atol=1e-6)
    assert set(head.state_dict()) >= {"descriptor_mean", "descriptor_std"}  # saved with the weights
    head.set_descriptor_stats(torch.zeros(3), torch.tensor([1.0, 0.0, 2.0]))  # a constant descriptor
    torch.testing.assert_close(head.descriptor_std, torch.tensor([1.0, 1.0, 2.0]))


def test_concat_uses_the_embedding_and_the_descriptors_and_gated_mixes_them_per_feature() -> None:
    for fusion in ("concat", "gated"):
        head = hybrid(fusion=fusion).eval()
        pooled, d = torch.randn(2, 8), torch.randn(2, 3)
        ref = head.project(pooled, d)
        assert (head.project(pooled + 1, d) - ref).abs().max() > 1e-4
        assert (head.project(pooled, d + 1) - ref).abs().max() > 1e-4
    gated = hybrid(fusion="gated").eval()
    with torch.no_grad():
        gated.gate.weight.zero_()
        gated.gate.bias.fill_(-30.0)  # gate closed: only the descriptor branch reaches the trunk
    pooled, d = torch.randn(2, 8), torch.randn(2, 3)
    torch.testing.assert_close(gated.project(pooled * 5, d), gated.project(pooled, d), rtol=0, atol=1e-6)
    fused = gated.descriptor_branch(d)
    torch.testing.assert_close(gated.project(pooled, d), gated.out(gated.trunk(fused)), rtol=0, atol=1e-6)


def test_each_task_gets_its_loss_and_outputs() -> None:
    logits, d = torch.randn(3, 2), torch.randn(3, 3)
    single = hybrid(task="single_label", label_smoothing=0.1)
    assert single.task.name == "single_label" and single.labels == ("class_0", "class_1")
    soft = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]])
    torch.testing.assert_close(single.loss(logits, soft), classification_loss(logits, soft, False, 0.1))
    tags = hybrid(task="multi_label")
    hot = torch.tensor([[1.0, 0.0], [0.4, 0.6], [1.0, 1.0]])
    torch.testing.assert_close(tags.loss(logits, hot), F.binary_cross_entropy_with_logits(logits, hot))
    rater = hybrid(task="rating", num_outputs=19, label_range=(0.0, 1.0), loss="l1")
    assert rater.labels == PERCEPIANO_DIMENSIONS and rater.output_field == "ratings"
    out = rater(random_output(batch=3, dim=8), d)
    assert out.shape == (3, 19) and out.min() >= 0 and out.max() <= 1
    target = torch.rand(3, 19)
    torch.testing.assert_close(rater.loss(out, target), (out - target).abs().mean())


def test_the_hybrid_head_learns_from_descriptors_the_embedding_lacks() -> None:
    torch.manual_seed(1)
    n = 256
    pooled, d = torch.randn(n, 8), torch.randn(n, 3) * torch.tensor([2.0, 30.0, 0.5]) + 100
    target = ((d[:, 1] - 100) / 30 > 0).long()  # decided by one descriptor alone, on its own scale
    head = hybrid(task="single_label", fusion="gated", hidden_sizes=[16])
    head.set_descriptor_stats(d.mean(0), d.std(0))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        head.loss(head.project(pooled, d), target).backward()
        opt.step()
    accuracy = (head.project(pooled, d).argmax(1) == target).float().mean()
    assert accuracy > 0.95


@pytest.mark.parametrize(
    ("descriptors", "message"),
    [
        (None, r"the hybrid head needs descriptors \[B, 3\] with every batch"),
        (torch.zeros(2, 4), r"descriptors must be \[B, K\] = \[2, 3\], got \[2, 4\]"),
        (torch.tensor([[0.0, float("nan"), 1.0]] * 2), r"descriptors hold NaN or Inf"),
    ],
)
def test_bad_descriptors_are_refused(descriptors, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hybrid().project(torch.zeros(2, 8), descriptors)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"fusion": "sum"}, r"fusion must be one of concat, gated, got 'sum'"),
        ({"task": "regression"}, r"task must be one of single_label, multi_label, rating, got 'regression'"),
        (
            {"task": "single_label", "label_range": [0, 1]},
            r"label_range bounds ratings; the single_label task",
        ),
        ({"descriptor_names": ["a", "a"]}, r"descriptor_names must be unique"),
        ({"descriptor_names": []}, r"the hybrid head needs descriptor_names \(a recipe fills them in from"),
        ({"fuson": "gated"}, r"unknown key\(s\) fuson \(did you mean 'fusion'\?\)"),
    ],
)
def test_config_errors(config: dict, message: str) -> None:
    with pytest.raises((ValueError, ConfigError), match=message):
        hybrid(**config)


def test_statistics_must_fit() -> None:
    head = hybrid()
    with pytest.raises(ValueError, match="descriptor statistics must have 3 values, got 2 and 3"):
        head.set_descriptor_stats(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="descriptor statistics must be finite, with std >= 0"):
        head.set_descriptor_stats(torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]))
