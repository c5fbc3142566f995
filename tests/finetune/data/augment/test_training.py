"""TrainingAugment: where each augmentation runs, targets and extra inputs mixed alike, draws from torch's
default generator (so a checkpoint's RNG state replays them), and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backbones import InputTooLongError, NonFiniteInputError, build_backbone
from backbones.config import ConfigError
from finetune.data.augment import (
    Mixup,
    MixupConfig,
    SpecAugment,
    SpecAugmentConfig,
    SpecMix,
    SpecMixConfig,
    TrainingAugment,
)


def test_waveform_mixup_mixes_inputs_one_hot_targets_and_extra_with_one_draw() -> None:
    aug = TrainingAugment(mixup=MixupConfig(alpha=0.4), num_classes=4)
    x, labels, extra = torch.randn(6, 100), torch.tensor([0, 1, 2, 3, 0, 1]), torch.randn(6, 3)
    torch.manual_seed(5)
    out = aug.waveform(x, labels, extra)
    torch.manual_seed(5)
    ref = Mixup(MixupConfig(alpha=0.4, num_classes=4))(x, labels)
    assert torch.equal(out.inputs, ref.inputs) and torch.equal(out.targets, ref.targets)
    lam = ref.lam[:, None]
    torch.testing.assert_close(out.extra, lam * extra + (1 - lam) * extra[ref.perm], rtol=0, atol=0)
    torch.testing.assert_close(out.targets.sum(1), torch.ones(6))  # soft targets: class probabilities
    assert (ref.perm != torch.arange(6)).any() and ((ref.lam > 0) & (ref.lam < 1)).all()


def test_feature_stage_runs_mixup_then_specmix_then_specaugment() -> None:
    spec, mix, smix = SpecAugmentConfig(fill=0.0), MixupConfig(0.3, stage="features"), SpecMixConfig()
    aug = TrainingAugment(spec, mix, smix, num_classes=3)
    feats, labels = torch.randn(5, 16, 40), torch.tensor([0, 1, 2, 0, 1])
    torch.manual_seed(11)
    out = aug.features(feats, labels)
    torch.manual_seed(11)
    a = Mixup(MixupConfig(0.3, num_classes=3))(feats, labels)
    b = SpecMix(SpecMixConfig(num_classes=3))(a.inputs, a.targets)
    assert torch.equal(out.inputs, SpecAugment(spec)(b.inputs)) and torch.equal(out.targets, b.targets)
    wave = feats[:, 0]
    assert aug.waveform(wave, labels) == (wave, labels, None)  # nothing at the waveform stage


def test_without_targets_nothing_is_mixed_but_masks_still_apply() -> None:
    aug = TrainingAugment(SpecAugmentConfig(1, (3, 3), 0, (0, 0), fill=-1.0), MixupConfig(stage="features"))
    feats = torch.randn(4, 10, 20)
    out = aug.features(feats, None)
    assert out.targets is None and ((out.inputs == -1.0).all(-1).sum(-1) == 3).all()
    kept = out.inputs != -1.0
    assert torch.equal(out.inputs[kept], feats[kept])  # unmixed where unmasked


def test_multi_label_and_rating_targets_are_mixed_as_they_are() -> None:
    aug = TrainingAugment(mixup=MixupConfig(alpha=0.2))
    x = torch.randn(4, 50)
    for targets in (torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]), torch.rand(4, 19)):
        torch.manual_seed(2)
        out = aug.waveform(x, targets)
        torch.manual_seed(2)
        ref = Mixup(MixupConfig(alpha=0.2))(x, targets)
        lam = ref.lam[:, None]
        torch.testing.assert_close(out.targets, lam * targets + (1 - lam) * targets[ref.perm], rtol=0, atol=0)


def test_p_leaves_unchosen_examples_unmixed() -> None:
    x, labels = torch.randn(64, 20), torch.arange(64) % 2
    out = Mixup(MixupConfig(alpha=0.4, num_classes=2, p=0.25))(x, labels, torch.Generator().manual_seed(0))
    unmixed = out.lam == 1.0
    assert 36 <= int(unmixed.sum()) <= 60  # about three quarters (48 expected), never all
    assert torch.equal(out.inputs[unmixed], x[unmixed])
    torch.testing.assert_close(out.targets[unmixed], F.one_hot(labels[unmixed], 2).float())
    feats = torch.randn(64, 8, 30)
    mixed = SpecMix(SpecMixConfig(num_classes=2, p=0.0))(feats, labels, torch.Generator().manual_seed(0))
    assert torch.equal(mixed.inputs, feats) and (mixed.lam == 1.0).all()


def test_apply_runs_the_front_end_only_when_features_are_augmented() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("cnn14.tiny")
    wave, labels = torch.randn(2, 32000) * 0.1, torch.tensor([0, 1])
    only_wave = TrainingAugment(mixup=MixupConfig(), num_classes=2)
    w, f, t, _ = only_wave.apply(backbone, wave, None, labels)
    assert f is None and w.shape == wave.shape and t.shape == (2, 2)
    masks = TrainingAugment(SpecAugmentConfig(fill=0.0))
    torch.manual_seed(1)
    w, f, t, _ = masks.apply(backbone, wave, None, labels)
    torch.manual_seed(1)
    assert w is None and torch.equal(f, masks.spec_augment(backbone.frontend(wave))) and t is labels


def test_apply_keeps_the_backbone_length_rule() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("ast.tiny")
    too_long = torch.zeros(1, backbone.max_samples + 1)
    with pytest.raises(
        InputTooLongError,
        match=r"ast.tiny covers at most 10\.26 s of audio \(164239 samples at 16000 Hz\).*got 10\.27 s \(164240 samples\)",
    ):
        TrainingAugment(SpecAugmentConfig()).apply(backbone, too_long, None, None)


@pytest.mark.parametrize(
    "augment",
    [TrainingAugment(SpecAugmentConfig()), TrainingAugment(mixup=MixupConfig(alpha=0.4), num_classes=2)],
)
def test_apply_refuses_non_finite_waveforms_before_mixing(augment: TrainingAugment) -> None:
    """The front-end would turn a NaN sample into NaN features and mixup would spread it to a partner clip: the
    batch is refused with the items named, as ``Backbone.forward`` does."""
    torch.manual_seed(0)
    backbone = build_backbone("cnn14.tiny")
    wave = torch.zeros(3, backbone.sample_rate)
    wave[2, 7] = float("inf")
    with pytest.raises(
        NonFiniteInputError,
        match=r"^cnn14\.tiny: the waveform holds NaN or Inf samples \(batch items \[2\]\)",
    ):
        augment.apply(backbone, wave, None, torch.tensor([0, 1, 0]))


def test_apply_takes_one_numpy_waveform_like_the_backbone() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("cnn14.tiny")
    wave = torch.randn(backbone.sample_rate) * 0.1
    augment = TrainingAugment(SpecAugmentConfig(fill=0.0))
    torch.manual_seed(3)
    _, features, _, _ = augment.apply(backbone, wave.numpy(), None, None)
    torch.manual_seed(3)
    assert torch.equal(features, augment.spec_augment(backbone.frontend(wave[None])))


def test_settings_errors_name_the_key_and_the_fix() -> None:
    with pytest.raises(
        ValueError, match="TrainingAugment needs at least one of spec_augment, mixup, specmix"
    ):
        TrainingAugment()
    assert TrainingAugment.from_settings() is None
    with pytest.raises(ConfigError, match=r"unknown key\(s\) mixup.alpa \(did you mean 'alpha'\?\)"):
        TrainingAugment.from_settings(mixup={"alpa": 0.2})
    with pytest.raises(ConfigError, match=r"specmix: p must be in \[0, 1\], got 1.5"):
        TrainingAugment.from_settings(specmix={"p": 1.5})
    with pytest.raises(
        ConfigError, match=r"spec_augment: time_width must be \(low, high\) with 0 <= low <= high"
    ):
        TrainingAugment.from_settings(spec_augment={"time_width": [5, 2]})
    with pytest.raises(ValueError, match=r"mixup.num_classes=3 but the model has 4 classes; leave it unset"):
        TrainingAugment(mixup=MixupConfig(num_classes=3), num_classes=4)


def test_fill_mean_uses_each_examples_own_mean() -> None:
    feats = torch.stack([torch.full((6, 10), -80.0), torch.full((6, 10), 3.0)])
    feats[:, 0, 0] = 0.0
    out = SpecAugment(SpecAugmentConfig(1, (2, 2), 0, (0, 0)))(feats, torch.Generator().manual_seed(0))
    masked = out != feats
    means = feats.mean(dim=(1, 2))
    for b in range(2):
        assert masked[b].any() and torch.equal(out[b][masked[b]], means[b].expand(int(masked[b].sum())))
