"""SoundFont reading: pretty_midi's TimGM6mb as shipped, and small fonts written here (zones, layers, preset
generators, errors)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from finetune.data.soundfont import default_soundfont, load_zones, soundfont_sha256
from tests.finetune.data.soundfonts import (
    ATTENUATION,
    FILTER_FC,
    KEY_RANGE,
    MOD_ENV_TO_FC,
    PAN,
    RELEASE,
    SAMPLE_MODES,
    VEL_RANGE,
    sine,
    write_sf2,
)


def test_timgm6mb_piano_covers_the_keyboard_behind_a_2_5_khz_filter() -> None:
    zones = load_zones(default_soundfont())
    assert len(zones) == 33
    for key in range(21, 109):  # the piano's 88 keys: exactly one zone each, at any velocity
        assert sum(z.plays(key, 100) for z in zones) == 1
        assert sum(z.plays(key, 1) for z in zones) == 1
    # initialFilterFc 6900 cents plus a modulation envelope of 3009 cents: 9909 cents = 2.5 kHz at velocity 127
    assert {z.cutoff_cents for z in zones} == {9909.0, 10022.0}
    z = next(z for z in zones if z.plays(60, 100))
    assert (z.keys, z.sample_rate, z.root_key, z.tune_cents, z.gain_db) == ((60, 62), 22050, 80, 41.0, -13.5)
    assert z.loop is not None and 0 < z.loop[0] < z.loop[1] <= len(z.data)


def test_written_font_zones_layers_and_preset_generators(tmp_path: Path) -> None:
    sample = sine(440.0, 0.5, 16000)
    zones = [
        {KEY_RANGE: (0, 127), VEL_RANGE: (0, 63), PAN: -500, ATTENUATION: 60, SAMPLE_MODES: 1},
        {KEY_RANGE: (0, 127), VEL_RANGE: (0, 63), PAN: 500, ATTENUATION: 60, SAMPLE_MODES: 1},
        {KEY_RANGE: (60, 127), VEL_RANGE: (64, 127), FILTER_FC: 12000, MOD_ENV_TO_FC: -1000},
    ]
    path = write_sf2(
        tmp_path / "f.sf2",
        sample,
        16000,
        69,
        zones,
        preset_zone={ATTENUATION: 20, RELEASE: 300},
        loop=(100, 7900),
    )
    got = load_zones(path)
    assert len(got) == 3
    soft, _, loud = got
    assert [z.plays(60, 30) for z in got] == [True, True, False]
    assert [z.plays(59, 100) for z in got] == [False, False, False]  # below the loud layer's key range
    assert [z.plays(60, 100) for z in got] == [False, False, True]
    assert soft.gain_db == -8.0 and loud.gain_db == -2.0  # instrument + preset attenuation, in dB
    assert soft.env[5] == -12000 + 300  # preset release adds to the instrument's default
    assert soft.loop == (100, 7900) and loud.loop is None  # only sampleModes 1 or 3 loop
    assert loud.cutoff_cents == 11000.0  # a negative modulation envelope lowers the held cutoff
    assert soft.cutoff_cents == 13500.0  # the SF2 default cutoff (no filter)
    assert (soft.root_key, soft.sample_rate) == (69, 16000)
    np.testing.assert_allclose(soft.data, np.round(sample * 32767) / 32768, atol=1e-7)


def test_bad_fonts_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF\0\0\0\0WAVEfmt ")
    with pytest.raises(ValueError, match=r"bad\.sf2 is not a SoundFont 2 file \(no RIFF/sfbk header\)"):
        load_zones(bad)
    font = write_sf2(tmp_path / "f.sf2", sine(440.0, 0.1, 8000), 8000, 69, [{KEY_RANGE: (0, 127)}])
    with pytest.raises(ValueError, match=r"f\.sf2 has no preset 0:5"):
        load_zones(font, program=5)
    truncated = tmp_path / "t.sf2"
    truncated.write_bytes(font.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"t\.sf2 lacks the chunks \['phdr', 'pbag'"):
        load_zones(truncated)


def test_soundfont_sha256(tmp_path: Path) -> None:
    font = write_sf2(tmp_path / "f.sf2", sine(440.0, 0.1, 8000), 8000, 69, [{KEY_RANGE: (0, 127)}])
    assert soundfont_sha256(font) == hashlib.sha256(font.read_bytes()).hexdigest()
