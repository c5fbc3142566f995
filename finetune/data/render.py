"""Render piano MIDI to audio with a small SoundFont (SF2) sample player written in numpy, cache the renders, and
describe their spectrum.

pretty_midi's ``fluidsynth()`` needs pyfluidsynth and the system libfluidsynth; this module needs neither. It plays
one preset of any SoundFont (:mod:`finetune.data.soundfont` reads it; by default ``TimGM6mb.sf2``, the General MIDI
font inside the ``pretty_midi`` package) by resampling each zone's sample, the way a SoundFont synthesiser does:

- every zone whose key and velocity ranges match sounds (a stereo font's left and right samples are mixed to mono
  with a linear pan law, so pan does not change a zone's level); root key, coarse/fine tuning and the sample's pitch
  correction;
- sample loops (``sampleModes``), the volume envelope (delay, attack, hold, decay, sustain, release; key-scaled hold
  and decay), ``initialAttenuation``;
- velocity: amplitude ~ velocity squared (the effect of SF2's default velocity-to-attenuation modulator, 40 log10(v/127)
  dB) and a darker tone for soft notes (the default velocity-to-filter modulator, -2400 cents at velocity 0), through
  a static 12 dB/octave low-pass at the zone's cutoff with its modulation envelope at the peak;
- the sustain pedal (CC64 >= 64 holds released notes until the pedal lifts); re-striking a held key releases the old
  voice;
- one fixed output gain (files are never normalised: loudness is rated), with other fonts level-matched to the
  default on reference notes (:class:`PianoRenderer`).

Not modelled (documented simplifications): the time-varying filter and modulation envelopes, filter resonance,
LFOs, reverb/chorus sends, stereo (the output is mono), the soft pedal (CC67), a font's own modulators, linear rather
than higher-order interpolation. Every instrument is played with the chosen piano preset.

The sound font decides much of what a model hears: TimGM6mb's piano filter sits near 2.5 kHz (1.2 kHz for soft
notes), so its renders carry almost no energy above 4 kHz; :func:`finetune.data.spectrum.spectrum` measures that. Renders are cached per
sound font and file (:func:`render_cached`), each with its spectrum and peak beside it, so a data set's spectrum is
known without decoding its audio again (:func:`render_info`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter
from tqdm.auto import tqdm

from .midi import midi_notes
from .soundfont import Zone, default_soundfont, load_zones, soundfont_sha256
from .spectrum import Spectrum, spectrum

__all__ = [
    "RENDERER_VERSION",
    "PianoRenderer",
    "RenderSettings",
    "default_soundfont",
    "midi_notes",
    "render_cached",
    "render_many",
    "RenderInfo",
    "render_info",
]

RENDERER_VERSION = "sf2-2"
_MASTER_GAIN = 1.8  # fixed (loudness is rated, files are never normalised); PercePiano peaks at 0.96
# Other fonts are level-matched to the default on these notes (key, velocity), each held for its first second.
_REFERENCE_NOTES = tuple((key, vel) for key in (36, 48, 60, 72, 84) for vel in (40, 80, 120))
_SILENCE_DBFS = -84.0  # voices end once they fall below this output level (16-bit LSB is -96 dBFS)
_BLOCK = 32  # envelope control period in samples


@dataclass(frozen=True)
class RenderSettings:
    """What a render depends on besides the MIDI file: rate, sound font (and its sha256) and preset.

    Small and picklable: worker processes receive these and load the sound font once each.

    Args:
        sample_rate: output rate in Hz.
        soundfont: the ``.sf2`` file.
        soundfont_sha256: its hex sha256 (see :meth:`of`).
        bank: SoundFont bank of the preset.
        program: SoundFont program (0 = Acoustic Grand Piano).
    """

    sample_rate: int
    soundfont: Path
    soundfont_sha256: str
    bank: int = 0
    program: int = 0

    @classmethod
    def of(
        cls,
        sample_rate: int = 22050,
        soundfont: str | os.PathLike[str] | None = None,
        bank: int = 0,
        program: int = 0,
    ) -> RenderSettings:
        """Settings for ``soundfont`` (None: :func:`default_soundfont`), hashing the file once.

        Raises:
            ValueError: ``sample_rate`` is below 4000 Hz.
            FileNotFoundError: the sound font does not exist.
        """
        if sample_rate < 4000:
            raise ValueError(f"sample_rate must be at least 4000 Hz, got {sample_rate}")
        path = Path(soundfont).expanduser() if soundfont is not None else default_soundfont()
        if not path.is_file():
            raise FileNotFoundError(f"sound font {path} does not exist; pass the path of an .sf2 file")
        return cls(int(sample_rate), path, soundfont_sha256(path), bank, program)

    @property
    def font_label(self) -> str:
        """The font's file name and the start of its sha256, e.g. ``FluidR3_GM.sf2 (sha256 74594e8f4250)``."""
        return f"{self.soundfont.name} (sha256 {self.soundfont_sha256[:12]})"

    def cache_path(self, midi_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
        """Where the render of ``midi_path`` lives: one folder per sound font, one file per MIDI content.

        The file name holds a key over the MIDI file's bytes, :data:`RENDERER_VERSION`, the rate, the font's
        sha256 and the preset, so changing any of them renders again.
        """
        midi_path = Path(midi_path)
        h = hashlib.sha256(midi_path.read_bytes())
        h.update(
            f"|{RENDERER_VERSION}|{self.sample_rate}|{self.soundfont_sha256}|{self.bank}:{self.program}".encode()
        )
        folder = Path(cache_dir) / f"{self.soundfont.stem}-{self.soundfont_sha256[:12]}"
        return folder / f"{midi_path.stem.strip()}.{h.hexdigest()[:20]}.flac"


def _seconds(timecents: float) -> float:
    return 2.0 ** (timecents / 1200.0)


class PianoRenderer:
    """Plays MIDI files with one SoundFont preset (default: General MIDI piano, bank 0 program 0).

    Any other font or preset is level-matched to the default: its gain moves by :attr:`level_offset_db` so that
    a set of reference notes (five keys from C2 to C6, velocities 40/80/120, first second of each) has the same
    mean power, and loudness keeps one scale whatever the font.

    Args:
        sample_rate: output rate in Hz.
        soundfont: an ``.sf2`` file; None uses :func:`default_soundfont`.
        bank: SoundFont bank of the preset.
        program: SoundFont program (0 = Acoustic Grand Piano).
    """

    def __init__(
        self,
        sample_rate: int = 22050,
        soundfont: str | os.PathLike[str] | None = None,
        bank: int = 0,
        program: int = 0,
    ) -> None:
        self._setup(RenderSettings.of(sample_rate, soundfont, bank, program))

    @classmethod
    def from_settings(cls, settings: RenderSettings) -> PianoRenderer:
        """The renderer for ``settings`` (no second pass over the sound font to hash it)."""
        renderer = cls.__new__(cls)
        renderer._setup(settings)
        return renderer

    def _setup(self, settings: RenderSettings) -> None:
        self.settings = settings
        self.sample_rate = settings.sample_rate
        self.soundfont = settings.soundfont
        self.soundfont_sha256 = settings.soundfont_sha256
        self._zones = load_zones(settings.soundfont, settings.bank, settings.program)
        self.level_offset_db = 0.0
        default = RenderSettings.of(settings.sample_rate)
        if (settings.soundfont_sha256, settings.bank, settings.program) != (default.soundfont_sha256, 0, 0):
            self.level_offset_db = PianoRenderer.from_settings(default)._reference_db() - self._reference_db()

    def _reference_db(self) -> float:
        """Mean power (dB) of the reference notes' first seconds: what level matching compares."""
        n = self.sample_rate
        power = [
            np.mean(np.square(self.render_notes(np.array([[0.0, 1.0, k, v]]), 1.0)[:n], dtype=np.float64))
            for k, v in _REFERENCE_NOTES
        ]
        return 10.0 * math.log10(max(float(np.mean(power)), 1e-20))

    def _voice(self, key: int, velocity: int, held: float) -> np.ndarray | None:
        """One note: ``held`` seconds until release, then its release tail (every matching zone, summed).

        Shapes: returns [N] float32.
        """
        if velocity <= 0:
            return None
        layers = [self._layer(z, key, velocity, held) for z in self._zones if z.plays(key, velocity)]
        if not layers:
            return None
        out = np.zeros(max(len(v) for v in layers), dtype=np.float32)
        for v in layers:
            out[: len(v)] += v
        return out

    def _layer(self, z: Zone, key: int, velocity: int, held: float) -> np.ndarray:
        gain_db = z.gain_db + 40.0 * math.log10(velocity / 127.0) + 20.0 * math.log10(_MASTER_GAIN)
        gain_db += self.level_offset_db
        amp = _envelope(z, key, held, self.sample_rate, floor_db=min(_SILENCE_DBFS - gain_db, -1.0))
        wave = _play(z, key, len(amp), self.sample_rate)
        amp = amp[: len(wave)]
        gain = 10.0 ** (gain_db / 20.0)
        cutoff_hz = 8.176 * 2.0 ** ((z.cutoff_cents - 2400.0 * (1.0 - velocity / 127.0)) / 1200.0)
        return _lowpass(wave, cutoff_hz, self.sample_rate) * (amp * np.float32(gain))

    def render_notes(self, notes: np.ndarray, duration: float | None = None) -> np.ndarray:
        """Render notes given as rows ``(start_s, release_s, key, velocity)``; ``release_s`` already pedal-extended.

        Shapes: notes [K, 4] -> returns [N] float32.
        """
        voices = []
        for start, end, key, vel in notes:
            v = self._voice(int(key), int(vel), max(float(end - start), 0.0))
            if v is not None:
                voices.append((int(round(start * self.sample_rate)), v))
        n = max([s + len(v) for s, v in voices] + [int(math.ceil((duration or 0.0) * self.sample_rate))])
        out = np.zeros(n, dtype=np.float32)
        for s, v in voices:
            out[s : s + len(v)] += v
        return out

    def render(self, midi_path: str | os.PathLike[str]) -> np.ndarray:
        """Render a MIDI file (all non-drum tracks, with the sustain pedal).

        Shapes: returns [N] float32 at :attr:`sample_rate`, N covering the file's end time plus release tails.
        """
        return self.render_notes(*midi_notes(midi_path))


def _envelope(z: Zone, key: int, held: float, sr: int, floor_db: float) -> np.ndarray:
    """The SF2 volume envelope of a note held ``held`` seconds, until it falls below ``floor_db`` (dB re. peak).

    Attack is linear in amplitude, decay and release linear in dB. Computed every ``_BLOCK`` samples and linearly
    interpolated in between (the steps are far below audibility).

    Shapes: returns [N] float32.
    """
    delay, attack, hold, decay, sustain_cb, release = z.env
    delay, attack, release = _seconds(delay), _seconds(attack), _seconds(release)
    hold = _seconds(hold + z.key_to_hold * (60 - key))
    decay = _seconds(decay + z.key_to_decay * (60 - key))
    sustain_db = -max(sustain_cb, 0.0) / 10.0
    if sustain_db <= floor_db:  # the note fades out while held: no need to play past that
        held = min(held, delay + attack + hold + decay * (-floor_db / 100.0))
    n = int(math.ceil((held + release * (-floor_db / 100.0)) * sr)) + 1
    t = np.arange(0, n + _BLOCK, _BLOCK, dtype=np.float64) / sr
    db = np.maximum(-100.0 * np.clip(t - (delay + attack + hold), 0.0, None) / decay, sustain_db)
    level_off = float(np.interp(held, t, db))
    db = np.where(t < held, db, level_off - 100.0 * (t - held) / release)
    amp = np.where(db > floor_db, 10.0 ** (db / 20.0), 0.0) * np.clip((t - delay) / attack, 0.0, 1.0)
    ramp = np.arange(_BLOCK, dtype=np.float64) / _BLOCK
    full = (amp[:-1, None] + (amp[1:] - amp[:-1])[:, None] * ramp[None, :]).reshape(-1)
    return full[:n].astype(np.float32)


def _play(z: Zone, key: int, n: int, sr: int) -> np.ndarray:
    """Up to ``n`` samples of the zone's sample resampled to ``key`` (linear interpolation, looping if it loops).

    Shapes: returns [M] float32, M <= n (shorter when an unlooped sample ends).
    """
    semitones = key - z.root_key + z.tune_cents / 100.0
    pos = np.arange(n, dtype=np.float64) * (2.0 ** (semitones / 12.0) * z.sample_rate / sr)
    if z.loop is not None:
        ls, le = z.loop
        i = int(np.searchsorted(pos, le))
        pos[i:] = ls + np.mod(pos[i:] - ls, le - ls)
    else:
        pos = pos[: int(np.searchsorted(pos, len(z.data) - 1))]
    idx = pos.astype(np.int64)
    frac = (pos - idx).astype(np.float32)
    data = z.data
    left = data[idx]
    return left + frac * (data[np.minimum(idx + 1, len(data) - 1)] - left)


def _lowpass(x: np.ndarray, cutoff_hz: float, sr: int) -> np.ndarray:
    """Second-order Butterworth low-pass (bilinear transform); a no-op when the cutoff is near Nyquist."""
    if cutoff_hz >= 0.45 * sr:
        return x
    k = math.tan(math.pi * cutoff_hz / sr)
    norm = 1.0 / (1.0 + math.sqrt(2.0) * k + k * k)
    b = np.array([k * k, 2 * k * k, k * k]) * norm
    a = np.array([1.0, 2.0 * (k * k - 1.0) * norm, (1.0 - math.sqrt(2.0) * k + k * k) * norm])
    return lfilter(b, a, x).astype(np.float32)


def _sidecar(audio_path: Path) -> Path:
    return audio_path.with_suffix(".info.json")


def _write_atomic(target: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=target.suffix)
    os.close(fd)
    write(tmp)
    Path(tmp).replace(target)


@dataclass(frozen=True)
class RenderInfo:
    """What is kept beside a cached render.

    Attributes:
        spectrum: the render's :class:`~finetune.data.spectrum.Spectrum`.
        peak: its largest absolute sample before the file was clipped to [-1, 1]; above 1 the render clipped.
    """

    spectrum: Spectrum
    peak: float


def _save_info(audio_path: Path, info: RenderInfo) -> None:
    spec = info.spectrum
    fields = {"energy": spec.energy, "moment": spec.moment, "above": spec.above, "nyquist": spec.nyquist}
    text = json.dumps({"spectrum": fields, "peak": info.peak})
    _write_atomic(_sidecar(audio_path), lambda tmp: Path(tmp).write_text(text))


def render_info(audio_path: str | os.PathLike[str]) -> RenderInfo:
    """The :class:`RenderInfo` of a cached render, read from beside it (measured from the audio if missing).

    Raises:
        soundfile.LibsndfileError: the information is missing and the audio cannot be read.
    """
    audio_path = Path(audio_path)
    try:
        raw = json.loads(_sidecar(audio_path).read_text())
        spec = raw["spectrum"]
        return RenderInfo(
            Spectrum(spec["energy"], spec["moment"], tuple(spec["above"]), spec["nyquist"]),
            float(raw["peak"]),
        )
    except (OSError, ValueError, KeyError, TypeError):  # missing or damaged: measure again
        wave, sr = sf.read(audio_path, dtype="float32", always_2d=True)
        mono = wave.mean(axis=1)
        info = RenderInfo(spectrum(mono, sr), float(np.abs(mono).max(initial=0.0)))
        _save_info(audio_path, info)
        return info


def render_cached(
    midi_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str], renderer: PianoRenderer
) -> Path:
    """Render ``midi_path`` to a 16-bit FLAC under ``cache_dir`` unless an identical render is cached.

    Renders live in one folder per sound font (:meth:`RenderSettings.cache_path`), each with its
    :class:`RenderInfo` (spectrum, peak) beside it. Writes are atomic.
    """
    target = renderer.settings.cache_path(midi_path, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = renderer.render(midi_path)
    wave = np.clip(raw, -1.0, 1.0)
    _save_info(target, RenderInfo(spectrum(wave, renderer.sample_rate), float(np.abs(raw).max(initial=0.0))))
    _write_atomic(
        target, lambda tmp: sf.write(tmp, wave, renderer.sample_rate, format="FLAC", subtype="PCM_16")
    )
    return target


def _render_or_error(
    midi_path: Path, cache_dir: str | os.PathLike[str], renderer: PianoRenderer
) -> Path | ValueError:
    try:
        return render_cached(midi_path, cache_dir, renderer)
    except ValueError as e:  # an unparsable MIDI file: reported by the caller, the others still render
        return e


@lru_cache(maxsize=1)
def _process_renderer(settings: RenderSettings) -> PianoRenderer:
    """The renderer of a worker process, built once per process (a font's samples reach 140 MB: never pickled)."""
    return PianoRenderer.from_settings(settings)


def _render_in_worker(
    midi_path: Path, cache_dir: str | os.PathLike[str], settings: RenderSettings
) -> Path | ValueError:
    return _render_or_error(midi_path, cache_dir, _process_renderer(settings))


def render_many(
    midi_paths: Sequence[Path],
    cache_dir: str | os.PathLike[str],
    settings: RenderSettings | None = None,
    num_workers: int = 1,
    progress: bool = True,
) -> list[Path | ValueError]:
    """Render (or find cached) audio for each MIDI file, in order, with a progress bar that moves per file.

    Cached renders are found first (they count as done at once); the sound font is loaded only if something is
    left to render, once per worker process.

    Args:
        midi_paths: MIDI files.
        cache_dir: where the FLAC renders live (one folder per sound font inside).
        settings: rate, sound font and preset (:meth:`RenderSettings.of`); None renders at 22050 Hz with
            pretty_midi's General MIDI font.
        num_workers: processes to render with (1 renders in this process).
        progress: show the progress bar.

    Returns:
        Per file, the rendered audio's path, or the ``ValueError`` that says why the MIDI file could not be read.
    """
    settings = settings if settings is not None else RenderSettings.of()
    out: list[Path | ValueError | None] = []
    for path in midi_paths:
        try:
            target = settings.cache_path(path, cache_dir)
        except OSError as e:  # unreadable: reported by the caller, the others still render
            out.append(ValueError(f"could not read MIDI file {path}: {e}"))
            continue
        out.append(target if target.is_file() else None)
    todo = [i for i, p in enumerate(out) if p is None]
    desc = f"rendering MIDI with {settings.soundfont.name}"
    with tqdm(
        total=len(out), initial=len(out) - len(todo), desc=desc, unit="file", disable=not progress
    ) as bar:
        if todo and (num_workers <= 1 or len(todo) == 1):
            renderer = PianoRenderer.from_settings(settings)
            for i in todo:
                out[i] = _render_or_error(midi_paths[i], cache_dir, renderer)
                bar.update()
        elif todo:
            with ProcessPoolExecutor(min(num_workers, len(todo))) as pool:
                jobs = {pool.submit(_render_in_worker, midi_paths[i], cache_dir, settings): i for i in todo}
                for done in as_completed(jobs):
                    out[jobs[done]] = done.result()
                    bar.update()
    return out
