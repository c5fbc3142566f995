"""SpecAugment: exact mask widths, per-example masks, the fill value, and seeding."""

from __future__ import annotations

import pytest
import torch

from finetune.data.augment import SpecAugment, SpecAugmentConfig


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("fw", "tw"), [(5, 7), (0, 12), (19, 0)])
def test_specaugment_masks_exactly_the_stated_widths(fw: int, tw: int) -> None:
    aug = SpecAugment(
        SpecAugmentConfig(freq_masks=1, freq_width=(fw, fw), time_masks=1, time_width=(tw, tw), fill=0.0)
    )
    x = torch.rand(6, 20, 50) + 1.0
    y = aug(x, gen(0))
    zero = y == 0
    assert (zero.all(-1).sum(-1) == fw).all()  # frequency rows masked over all frames
    assert (zero.all(-2).sum(-1) == tw).all()
    assert zero.sum() == (6 * (fw * 50 + tw * 20 - fw * tw)) and torch.equal(y[~zero], x[~zero])


def test_specaugment_masks_differ_per_example_and_fill_is_used() -> None:
    aug = SpecAugment(SpecAugmentConfig(1, (4, 4), 0, (0, 0), fill=-3.0))
    y = aug(torch.zeros(8, 2, 30, 10), gen(1))  # extra channel dim is masked alike
    rows = (y[:, 0, :, 0] == -3.0).float()
    assert (
        (rows.sum(-1) == 4).all()
        and torch.equal(y[:, 0], y[:, 1])
        and len({tuple(r.tolist()) for r in rows}) > 1
    )


def test_specaugment_is_seeded_and_rejects_waveforms() -> None:
    aug, x = SpecAugment(), torch.rand(4, 64, 100)
    a, b, c = aug(x, gen(10)), aug(x, gen(10)), aug(x, gen(11))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    with pytest.raises(ValueError, match=r"expected features \[B, ..., F, T\], got shape \[4, 100\]"):
        aug(torch.zeros(4, 100))
