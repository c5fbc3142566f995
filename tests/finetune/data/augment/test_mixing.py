"""Mixup and SpecMix: convex mixing with the stated lambda, targets mixed alike, seeding."""

from __future__ import annotations

import pytest
import torch

from finetune.data.augment import Mixup, MixupConfig, SpecMix, SpecMixConfig


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mixup_is_a_convex_combination_with_the_same_lambda() -> None:
    x = torch.randn(8, 3, 5)
    labels = torch.arange(8) % 4
    out = Mixup(MixupConfig(alpha=0.4, num_classes=4))(x, labels, gen(2))
    lam = out.lam.float()
    assert ((lam >= 0) & (lam <= 1)).all() and lam.std() > 0
    torch.testing.assert_close(out.inputs, lam[:, None, None] * x + (1 - lam[:, None, None]) * x[out.perm])
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    torch.testing.assert_close(out.targets, lam[:, None] * onehot + (1 - lam[:, None]) * onehot[out.perm])
    torch.testing.assert_close(out.targets.sum(-1), torch.ones(8))
    ratings = torch.rand(8, 19)
    mixed = Mixup(MixupConfig(alpha=0.4))(x, ratings, gen(2))
    torch.testing.assert_close(mixed.targets, lam[:, None] * ratings + (1 - lam[:, None]) * ratings[out.perm])
    with pytest.raises(ValueError, match="integer labels need num_classes"):
        Mixup()(x, labels, gen(0))


def test_specmix_lambda_is_the_kept_fraction_and_targets_follow() -> None:
    x = torch.arange(4, dtype=torch.float32)[:, None, None].expand(4, 16, 40).clone()  # each example constant
    labels = torch.tensor([0, 1, 2, 0])
    out = SpecMix(SpecMixConfig(2, 0.3, 2, 0.3, num_classes=3))(x, labels, gen(3))
    moved = out.perm != torch.arange(4)
    kept = (out.inputs == x).float().mean(dim=(1, 2))
    torch.testing.assert_close(out.lam[moved], kept[moved])
    assert (out.lam[moved] < 1).any()
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    lam = out.lam[:, None]
    torch.testing.assert_close(out.targets, lam * onehot + (1 - lam) * onehot[out.perm])
    partner = out.inputs != x
    assert torch.equal(out.inputs[partner], x[out.perm][partner])


def test_mixers_are_seeded() -> None:
    x, y = torch.randn(6, 8, 20), torch.arange(6) % 3
    for aug in (Mixup(MixupConfig(num_classes=3)), SpecMix(SpecMixConfig(num_classes=3))):
        a, b, c = aug(x, y, gen(1)), aug(x, y, gen(1)), aug(x, y, gen(2))
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
        assert not torch.equal(a.inputs, c.inputs)
