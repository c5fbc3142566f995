"""Augmentations: exact mask widths, convex mixing with the stated lambda, gain/SNR/EQ in dB, pitch and tempo
ratios, identity IR, and seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from finetune.data.augment import (
    AddNoise,
    Compose,
    ConvolveIR,
    Eq,
    EqConfig,
    Gain,
    GainConfig,
    Mixup,
    MixupConfig,
    NoiseConfig,
    PitchShift,
    PitchShiftConfig,
    RandomApply,
    SpecAugment,
    SpecAugmentConfig,
    SpecMix,
    SpecMixConfig,
    TimeStretch,
    TimeStretchConfig,
    fft_convolve,
    pitch_shift,
    time_stretch,
)
from tests.audio_signals import music, noise

SR = 16000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tone(freq: float, n: int = SR, batch: int = 1) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / SR
    return torch.sin(2 * math.pi * freq * t).float().repeat(batch, 1)


def peak_hz(x: torch.Tensor) -> float:
    spec = torch.fft.rfft(x * torch.hann_window(x.shape[-1])).abs()
    return int(spec.argmax()) * SR / x.shape[-1]


def rms_db(x: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(x.double().square().mean(-1))


@pytest.mark.parametrize(("fw", "tw"), [(5, 7), (0, 12), (19, 0)])
def test_specaugment_masks_exactly_the_stated_widths(fw: int, tw: int) -> None:
    aug = SpecAugment(SpecAugmentConfig(freq_masks=1, freq_width=(fw, fw), time_masks=1, time_width=(tw, tw)))
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


def test_gain_changes_rms_by_the_drawn_db() -> None:
    x = noise(4, 2000, seed=1)
    aug = Gain(GainConfig(-9.0, 9.0))
    db = aug.draw(x, gen(4))
    torch.testing.assert_close(rms_db(aug.augment(x, db)) - rms_db(x), db.double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        rms_db(Gain(GainConfig(6.0, 6.0))(x)) - rms_db(x),
        torch.full((4,), 6.0, dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_noise_reaches_the_target_snr(color: str) -> None:
    x = music(3, 4000, SR, seed=2)
    aug = AddNoise(NoiseConfig((0.0, 30.0), color))
    snr, n = aug.draw(x, gen(5))
    y = aug.augment(x, (snr, n))
    achieved = rms_db(x) - rms_db(y - x)
    assert (achieved - snr.double()).abs().max() < 0.5
    assert torch.equal(AddNoise()(torch.zeros(2, 100), gen(0)), torch.zeros(2, 100))  # silence stays silent


@pytest.mark.parametrize(("color", "octave_ratio"), [("white", 2.0), ("pink", 1.0), ("brown", 0.5)])
def test_noise_colour_sets_the_power_per_octave(color: str, octave_ratio: float) -> None:
    x = tone(500, batch=4)
    added = AddNoise(NoiseConfig((0.0, 0.0), color))(x, gen(0)) - x
    power = torch.fft.rfft(added).abs().square().sum(0)  # 1 Hz bins
    ratio = power[4000:8000].sum() / power[2000:4000].sum()  # one octave up
    assert abs(float(ratio) - octave_ratio) < 0.15 * octave_ratio


def test_eq_peak_gain_at_the_centre_and_tilt_per_octave() -> None:
    x = tone(1000, batch=1)
    peak = Eq(
        EqConfig(
            SR, peak_db=(7.5, 7.5), peak_hz=(1000.0, 1000.0), q=(1.0, 1.0), tilt_db_per_octave=(0.0, 0.0)
        )
    )
    assert abs(float(rms_db(peak(x)) - rms_db(x)) - 7.5) < 0.01
    far = tone(6000)
    assert abs(float(rms_db(peak(far)) - rms_db(far))) < 0.5  # a bell, not a shelf
    tilt = Eq(EqConfig(SR, peak_db=(0.0, 0.0), tilt_db_per_octave=(3.0, 3.0)))
    assert (
        abs(float(rms_db(tilt(tone(4000)))) - float(rms_db(tone(4000))) - 6.0) < 0.01
    )  # 2 octaves above 1 kHz
    with pytest.raises(ValueError, match="peak_hz"):
        Eq(EqConfig(SR, peak_hz=(100.0, 9000.0)))


@pytest.mark.parametrize("semitones", [2.0, -1.5, 0.5])
def test_pitch_shift_moves_the_peak_by_the_ratio(semitones: float) -> None:
    x = tone(1000)
    y = pitch_shift(x, semitones)
    assert y.shape == x.shape
    assert abs(peak_hz(y[0]) - 1000 * 2 ** (semitones / 12)) <= SR / x.shape[-1]  # within one bin
    module = PitchShift(PitchShiftConfig((semitones, semitones)))
    torch.testing.assert_close(module(x), y)


@pytest.mark.parametrize("rate", [0.9, 1.07])
def test_time_stretch_changes_length_by_the_ratio_and_keeps_pitch(rate: float) -> None:
    x = tone(1000, batch=2)
    y = time_stretch(x, rate)
    assert y.shape == (2, round(SR / rate))
    assert abs(peak_hz(y[0]) - 1000) <= SR / y.shape[-1]
    steady = y[0, 2000:-2000].abs().unfold(0, 64, 64).amax(-1)
    assert steady.min() > 0.98 and steady.max() < 1.02  # phase locking keeps a tone's amplitude
    fixed = TimeStretch(TimeStretchConfig((rate, rate)))(x)
    assert fixed.shape == x.shape
    n = min(SR, y.shape[-1])
    torch.testing.assert_close(fixed[:, :n], y[:, :n])


def test_time_stretch_slows_an_onset_pattern() -> None:
    x = torch.zeros(1, SR)
    x[0, ::4000] = 1.0  # clicks every 0.25 s
    y = time_stretch(x, 0.8)
    env = y[0].abs().unfold(0, 256, 256).amax(-1)
    peaks = [
        i for i in range(1, len(env) - 1) if env[i] > 0.3 and env[i] >= env[i - 1] and env[i] >= env[i + 1]
    ]
    gaps = torch.diff(torch.tensor(peaks, dtype=torch.float32)) * 256 / SR
    torch.testing.assert_close(gaps.mean(), torch.tensor(0.25 / 0.8), atol=0.02, rtol=0)


def test_ir_convolution_identity_delay_and_wet_mix() -> None:
    x = music(2, 4000, SR, seed=3)
    unit = torch.zeros(64)
    unit[0] = 1.0
    torch.testing.assert_close(ConvolveIR(unit)(x, gen(0)), x, atol=1e-6, rtol=0)
    delayed = torch.zeros(64)
    delayed[10] = 1.0
    torch.testing.assert_close(fft_convolve(x, delayed)[:, 10:], x[:, :-10], atol=1e-6, rtol=0)
    aug = ConvolveIR(torch.stack([unit, delayed]), wet=(0.0, 1.0))
    params = aug.draw(x, gen(6))
    ir = torch.stack([unit, delayed])[params[:, 0].long()]
    wet = params[:, 1:2]
    torch.testing.assert_close(
        aug.augment(x, params), (1 - wet) * x + wet * fft_convolve(x, ir), atol=1e-6, rtol=0
    )
    with pytest.raises(ValueError, match="irs must be a non-empty float tensor"):
        ConvolveIR(torch.zeros(2, 0))


def _augmentations() -> dict[str, nn.Module]:
    return {
        "gain": Gain(),
        "eq": Eq(EqConfig(SR)),
        "noise": AddNoise(),
        "stretch": TimeStretch(),
        "pitch": PitchShift(),
        "ir": ConvolveIR(torch.randn(3, 200) * torch.exp(-torch.arange(200) / 40.0), wet=(0.2, 0.8)),
        "specaugment": SpecAugment(),
        "random_apply": RandomApply(Gain(), 0.5),
        "compose": Compose(Gain(), AddNoise()),
    }


@pytest.mark.parametrize("name", list(_augmentations()))
def test_same_seed_same_output_different_seed_different(name: str) -> None:
    aug = _augmentations()[name]
    x = torch.rand(4, 64, 100) if name == "specaugment" else music(4, 8000, SR, seed=4)
    a, b, c = aug(x, gen(10)), aug(x, gen(10)), aug(x, gen(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape


def test_mixers_are_seeded() -> None:
    x, y = torch.randn(6, 8, 20), torch.arange(6) % 3
    for aug in (Mixup(MixupConfig(num_classes=3)), SpecMix(SpecMixConfig(num_classes=3))):
        a, b, c = aug(x, y, gen(1)), aug(x, y, gen(1)), aug(x, y, gen(2))
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
        assert not torch.equal(a.inputs, c.inputs)


def test_random_apply_and_compose() -> None:
    x = noise(64, 100, seed=0)
    gain = Gain(GainConfig(6.0, 6.0))
    assert torch.equal(RandomApply(gain, 0.0)(x, gen(0)), x)
    torch.testing.assert_close(RandomApply(gain, 1.0)(x, gen(0)), gain(x))
    half = RandomApply(gain, 0.5)(x, gen(0))
    changed = (half != x).any(-1).float().mean()
    assert 0.2 < changed < 0.8
    pipeline = Compose(Gain(), AddNoise())
    g1, g2 = gen(3), gen(3)
    torch.testing.assert_close(pipeline(x, g1), AddNoise()(Gain()(x, g2), g2))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        RandomApply(gain, 1.5)


def test_wave_augmentations_reject_non_batches() -> None:
    with pytest.raises(ValueError, match=r"expected a float waveform batch \[B, N\]"):
        Gain()(torch.zeros(100))
    with pytest.raises(ValueError, match=r"expected features \[B, ..., F, T\]"):
        SpecAugment()(torch.zeros(4, 100))
    with pytest.raises(ValueError, match="rate must be > 0"):
        time_stretch(torch.zeros(1, 1000), 0.0)


def test_build_wave_augment_from_config_and_collate_wiring():
    from finetune.data.augment import build_wave_augment
    from finetune.data.collate import CropCollate

    aug = build_wave_augment(
        {"gain": {"min_db": -12.0, "max_db": -12.0}, "eq": {"p": 0.0}}, sample_rate=16000
    )
    rows = [{"audio": np.full(8000, 0.5, dtype=np.float32), "sample_rate": 16000, "label": 1}]
    plain = CropCollate(16000, 1.0, train=True, seed=0, min_context_seconds=0.25)(rows)
    augmented = CropCollate(16000, 1.0, train=True, seed=0, min_context_seconds=0.25, augment=aug)(rows)
    gain = 10 ** (-12 / 20)
    assert torch.allclose(augmented["waveform"], plain["waveform"] * gain, atol=1e-6)
    assert (
        torch.equal(augmented["mask"], plain["mask"])
        and (augmented["waveform"][~augmented["mask"]] == 0).all()
    )
    evaluation = CropCollate(16000, 0.25, train=False, augment=aug)(rows)
    assert torch.allclose(evaluation["waveform"], torch.full((1, 4000), 0.5))  # evaluation is never augmented
    with pytest.raises(ValueError, match="unknown waveform augmentation 'reverb'; known: gain, eq, noise"):
        build_wave_augment({"reverb": {}}, sample_rate=16000)
    with pytest.raises(ValueError, match="augmentation 'gain'.*unexpected keyword argument 'db'"):
        build_wave_augment({"gain": {"db": 3}}, sample_rate=16000)
