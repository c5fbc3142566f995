"""Waveform augmentations: gain/SNR/EQ in dB, pitch and tempo modules equal to the DSP functions, identity IR,
seeding, RandomApply/Compose, the per-clip stretch of the training collate, and the builders recipes use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from finetune.data.augment import (
    AddNoise,
    ClipStretch,
    Compose,
    ConvolveIR,
    Eq,
    EqConfig,
    Gain,
    GainConfig,
    NoiseConfig,
    PitchShift,
    PitchShiftConfig,
    RandomApply,
    TimeStretch,
    TimeStretchConfig,
    build_data_augment,
    build_wave_augment,
    check_data_augment,
)
from finetune.data.collate import CropCollate
from finetune.data.dsp import fft_convolve, pitch_shift, time_stretch
from tests.audio_signals import music, noise, rms_db, tone

SR = 16000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    x = tone(500, SR, SR, batch=4)
    added = AddNoise(NoiseConfig((0.0, 0.0), color))(x, gen(0)) - x
    power = torch.fft.rfft(added).abs().square().sum(0)  # 1 Hz bins
    ratio = power[4000:8000].sum() / power[2000:4000].sum()  # one octave up
    assert abs(float(ratio) - octave_ratio) < 0.15 * octave_ratio


def test_eq_peak_gain_at_the_centre_and_tilt_per_octave() -> None:
    x = tone(1000, SR, SR, batch=1)
    peak = Eq(
        EqConfig(
            SR, peak_db=(7.5, 7.5), peak_hz=(1000.0, 1000.0), q=(1.0, 1.0), tilt_db_per_octave=(0.0, 0.0)
        )
    )
    assert abs(float(rms_db(peak(x)) - rms_db(x)) - 7.5) < 0.01
    far = tone(6000, SR, SR)
    assert abs(float(rms_db(peak(far)) - rms_db(far))) < 0.5  # a bell, not a shelf
    tilt = Eq(EqConfig(SR, peak_db=(0.0, 0.0), tilt_db_per_octave=(3.0, 3.0)))
    assert (
        abs(float(rms_db(tilt(tone(4000, SR, SR)))) - float(rms_db(tone(4000, SR, SR))) - 6.0) < 0.01
    )  # 2 octaves above 1 kHz
    with pytest.raises(ValueError, match="peak_hz"):
        Eq(EqConfig(SR, peak_hz=(100.0, 9000.0)))


@pytest.mark.parametrize("semitones", [2.0, -1.5])
def test_pitch_shift_module_applies_the_drawn_shift(semitones: float) -> None:
    x = tone(1000, SR, SR, batch=2)
    module = PitchShift(PitchShiftConfig((semitones, semitones)))
    torch.testing.assert_close(module(x, gen(0)), pitch_shift(x, semitones))


@pytest.mark.parametrize("rate", [0.9, 1.07])
def test_time_stretch_module_keeps_the_length(rate: float) -> None:
    x = tone(1000, SR, SR, batch=2)
    y = time_stretch(x, rate)
    fixed = TimeStretch(TimeStretchConfig((rate, rate)))(x, gen(0))
    assert fixed.shape == x.shape
    n = min(SR, y.shape[-1])
    torch.testing.assert_close(fixed[:, :n], y[:, :n])
    assert torch.equal(fixed[:, n:], torch.zeros_like(fixed[:, n:]))  # a shorter stretch is zero-padded


def test_ir_convolution_identity_and_wet_mix() -> None:
    x = music(2, 4000, SR, seed=3)
    unit = torch.zeros(64)
    unit[0] = 1.0
    torch.testing.assert_close(ConvolveIR(unit)(x, gen(0)), x, atol=1e-6, rtol=0)
    delayed = torch.zeros(64)
    delayed[10] = 1.0
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
        "random_apply": RandomApply(Gain(), 0.5),
        "compose": Compose(Gain(), AddNoise()),
    }


@pytest.mark.parametrize("name", list(_augmentations()))
def test_same_seed_same_output_different_seed_different(name: str) -> None:
    aug = _augmentations()[name]
    x = music(4, 8000, SR, seed=4)
    a, b, c = aug(x, gen(10)), aug(x, gen(10)), aug(x, gen(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape


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
    with pytest.raises(
        ValueError, match=r"expected a float waveform batch \[B, N\], got torch.float32 \[100\]"
    ):
        Gain()(torch.zeros(100))
    with pytest.raises(
        ValueError, match=r"expected a float waveform batch \[B, N\], got torch.int64 \[2, 100\]"
    ):
        AddNoise()(torch.zeros(2, 100, dtype=torch.long))


def test_build_wave_augment_from_config_and_collate_wiring() -> None:
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
    with pytest.raises(
        ValueError,
        match="unknown waveform augmentation 'reverb'; known: gain, eq, noise, pitch_shift, time_stretch",
    ):
        build_wave_augment({"reverb": {}}, sample_rate=16000)
    with pytest.raises(ValueError, match="augmentation 'gain'.*unexpected keyword argument 'db'"):
        build_wave_augment({"gain": {"db": 3}}, sample_rate=16000)


@pytest.mark.parametrize(("rate", "start"), [(0.93, 6000), (1.07, 20000), (1.25, -3000)])
def test_clip_stretch_window_is_that_window_of_the_stretched_clip(rate: float, start: int) -> None:
    clip = torch.zeros(3 * SR)
    clip[2000::4000] = 1.0  # clicks every 0.25 s: in the stretched clip they fall at (2000 + 4000 k) / rate
    n = SR
    window = ClipStretch(TimeStretchConfig((rate, rate))).window(clip, start, n, rate)
    assert window.shape == (n,)
    clicks = [(2000 + 4000 * k) / rate - start for k in range(12)]
    clicks = [c for c in clicks if 1000 < c < n - 1000]
    assert len(clicks) >= 3
    energy = window.abs()
    for c in clicks:  # each click's energy peaks where the stretched clip has it (within two STFT hops, the
        lo = (
            round(c) - 1000
        )  # vocoder's own precision: stretching the whole clip misses by up to 230 samples)
        assert abs(lo + int(energy[lo : lo + 2000].argmax()) - c) <= 2 * 256
    far = torch.ones(n, dtype=torch.bool)  # ... and nothing else stands out
    for c in [(2000 + 4000 * k) / rate - start for k in range(12)]:
        far[max(0, round(c) - 1000) : max(0, round(c) + 1000)] = False
    assert energy[far].max() < 0.2 * energy.max()
    if start < 0:
        assert torch.equal(window[: -start - 1024], torch.zeros(-start - 1024))  # before the clip: silence


def test_clip_stretch_draws_rates_in_range_p_and_seeding() -> None:
    stretch = ClipStretch(TimeStretchConfig((0.95, 1.05)), p=0.5)
    rates = [stretch.draw(gen(i)) for i in range(200)]
    unstretched = sum(r == 1.0 for r in rates)
    assert 70 <= unstretched <= 130 and all(0.95 <= r <= 1.05 for r in rates)
    assert stretch.draw(gen(3)) == stretch.draw(gen(3))
    assert ClipStretch.stretched_length(16000, 1.07) == round(16000 / 1.07)
    torch.testing.assert_close(
        stretch.window(torch.arange(10.0), -2, 6, 1.0), torch.tensor([0, 0, 0, 1, 2, 3.0])
    )
    with pytest.raises(
        ValueError, match=r"rate must be \(low, high\) with 0 < low <= high, got \(1.1, 0.9\)"
    ):
        ClipStretch(TimeStretchConfig((1.1, 0.9)))


def test_build_data_augment_splits_stretch_from_batch_augmentations() -> None:
    both = build_data_augment({"time_stretch": {"rate": [0.95, 1.05], "p": 0.3}, "gain": {}}, SR)
    assert both.stretch.config.rate == (0.95, 1.05) and both.stretch.p == 0.3
    assert [type(m) for m in both.wave.members] == [Gain]
    assert build_data_augment({}, SR) == (None, None)
    with pytest.raises(
        ValueError, match="'time_stretch' changes the length: the training collate applies it"
    ):
        build_wave_augment({"time_stretch": {}}, SR)
    with pytest.raises(
        ValueError, match="augmentation 'time_stretch': .*unexpected keyword argument 'rates'"
    ):
        build_data_augment({"time_stretch": {"rates": [0.9, 1.1]}}, SR)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"gian": {}}, "unknown augmentation 'gian' (did you mean 'gain'?); known: gain, eq, noise, pitch_shift, "),
        ({"gain": {"max_dB": 3}}, "augmentation 'gain': unknown option 'max_dB' (did you mean 'max_db'?); it takes: "
         "min_db, max_db, p"),
        ({"time_stretch": {"rates": [0.9, 1.1]}}, "augmentation 'time_stretch': unknown option 'rates' (did you mean "
         "'rate'?); it takes: rate, n_fft, hop, p"),
        ({"noise": 0.5}, "augmentation 'noise': expected a mapping of options, got 0.5"),
    ],
)  # fmt: skip
def test_check_data_augment_names_the_typo_without_a_sample_rate(spec: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_data_augment(spec)
    assert str(info.value).startswith(message)


def test_check_data_augment_takes_what_build_data_augment_builds() -> None:
    spec = {
        "time_stretch": {"rate": [0.95, 1.05], "p": 0.3},
        "eq": {"p": 0.5},
        "gain": None,
        "pitch_shift": {},
    }
    check_data_augment(spec)  # nothing to refuse: the same spec builds
    assert build_data_augment(spec, SR).stretch.p == 0.3
