"""PasstMel (PaSST's front-end) against hear21passt's AugmentMelSTFT, in eval and in train mode."""

from __future__ import annotations

import functools

import pytest
import torch

from backbones.frontends import PasstMel
from eval import references
from tests.backbones.frontends.helpers import SECONDS, SIGNALS, signal

pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def hear21passt_mel(train: bool = False) -> torch.nn.Module:
    """The reference, its SpecAugment masks off in train mode (to compare the fmin/fmax jitter alone)."""
    return references.passt_mel(masks=(0, 0) if train else (48, 192)).train(train)


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("kind", list(SIGNALS))
def test_passt_mel_matches_hear21passt(kind: str, seconds: float) -> None:
    x = signal(kind, seconds, 32000)
    ours = PasstMel().eval()(x)
    assert ours.shape == (x.shape[0], 128, 1 + (x.shape[-1] - 1) // 320)
    assert (ours - hear21passt_mel()(x)).abs().max() <= 1e-3


def test_passt_train_mode_jitters_like_hear21passt() -> None:
    x = signal("music", 1.0, 32000)
    ours = PasstMel().train()
    outs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        outs.append(ours(x))
        torch.manual_seed(seed)
        assert (outs[-1] - hear21passt_mel(train=True)(x)).abs().max() <= 1e-3
    assert (outs[0] - outs[1]).abs().max() > 1e-2  # a different draw, a different filterbank
    evaluated = ours.eval()(x)
    assert torch.equal(evaluated, ours(x))  # eval is deterministic
    assert (outs[0] - evaluated).abs().max() > 1e-2


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"f_max=17000"
    ):  # the jitter would reach 15 kHz + 4000 // 2 > Nyquist
        PasstMel(f_max=15000.0, fmax_aug_range=4000)
