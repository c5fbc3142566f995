"""Render piano MIDI to audio with a small SoundFont (SF2) sample player written in numpy.

pretty_midi's ``fluidsynth()`` needs pyfluidsynth and the system libfluidsynth; this module needs neither. It reads
the piano preset of a SoundFont (by default ``TimGM6mb.sf2``, the General MIDI font that ships inside the
``pretty_midi`` package) and plays every note by resampling the zone's sample, the way a SoundFont synthesiser does:

- zone selection by key and velocity, root key, coarse/fine tuning and the sample's pitch correction;
- sample loops (``sampleModes``), the volume envelope (delay, attack, hold, decay, sustain, release; key-scaled hold
  and decay), ``initialAttenuation``;
- velocity: amplitude ~ velocity squared (the effect of SF2's default velocity-to-attenuation modulator, 40 log10(v/127)
  dB) and a darker tone for soft notes (the default velocity-to-filter modulator, -2400 cents at velocity 0), through
  a static 12 dB/octave low-pass at the zone's cutoff plus its modulation-envelope peak;
- the sustain pedal (CC64 >= 64 holds released notes until the pedal lifts); re-striking a held key releases the old
  voice.

Not modelled (documented simplifications): the time-varying filter and modulation envelopes (the cutoff is held at its
peak), LFOs, reverb/chorus sends, pan (the output is mono), the soft pedal (CC67), linear rather than higher-order
interpolation. Every instrument is played with the chosen piano preset. The output is deterministic for a given
input, sound font, sample rate and :data:`RENDERER_VERSION`, which together key the on-disk cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter
from tqdm.auto import tqdm

__all__ = ["RENDERER_VERSION", "PianoRenderer", "default_soundfont", "render_cached", "render_many"]

RENDERER_VERSION = "sf2-1"
_MASTER_GAIN = 1.8  # fixed (loudness is rated, files are never normalised); PercePiano peaks at 0.96
_SILENCE_DBFS = -84.0  # voices end once they fall below this output level (16-bit LSB is -96 dBFS)
_SUSTAIN_CC = 64
_BLOCK = 32  # envelope control period in samples

# SF2 generator numbers (SoundFont 2.04 spec, section 8.1.2).
_START_OFS, _END_OFS, _LOOP_START_OFS, _LOOP_END_OFS = 0, 1, 2, 3
_START_COARSE, _END_COARSE, _LOOP_START_COARSE, _LOOP_END_COARSE = 4, 12, 45, 50
_FILTER_FC, _MOD_ENV_TO_FC = 8, 11
_VOL_DELAY, _VOL_ATTACK, _VOL_HOLD, _VOL_DECAY, _VOL_SUSTAIN, _VOL_RELEASE = 33, 34, 35, 36, 37, 38
_KEY_TO_HOLD, _KEY_TO_DECAY = 39, 40
_INSTRUMENT, _KEY_RANGE, _VEL_RANGE, _ATTENUATION = 41, 43, 44, 48
_COARSE_TUNE, _FINE_TUNE, _SAMPLE_ID, _SAMPLE_MODES, _ROOT_KEY = 51, 52, 53, 54, 58
_DEFAULTS = {
    _FILTER_FC: 13500,
    **{g: -12000 for g in (_VOL_DELAY, _VOL_ATTACK, _VOL_HOLD, _VOL_DECAY, _VOL_RELEASE)},
}
_RANGES = (_KEY_RANGE, _VEL_RANGE)
_NOT_ADDITIVE = (*_RANGES, _INSTRUMENT, _SAMPLE_ID, _SAMPLE_MODES, _ROOT_KEY)


def default_soundfont() -> Path:
    """The General MIDI sound font shipped inside the ``pretty_midi`` package (TimGM6mb.sf2)."""
    try:
        import pretty_midi
    except ImportError as e:
        raise ImportError("rendering MIDI needs pretty_midi: pip install 'musicft[midi]'") from e
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise FileNotFoundError(
            f"pretty_midi's sound font is missing at {path}; pass soundfont='/path/to/font.sf2'"
        )
    return path


@dataclass(frozen=True)
class _Zone:
    keys: tuple[int, int]
    vels: tuple[int, int]
    data: np.ndarray  # float32 sample data from the zone's start to its end
    sample_rate: int
    root_key: int
    tune_cents: float
    loop: tuple[int, int] | None  # loop start and end, relative to ``data``
    gain_db: float
    env: tuple[float, float, float, float, float, float]  # delay, attack, hold, decay, sustain (cB), release
    key_to_hold: float
    key_to_decay: float
    cutoff_cents: float


def _chunks(buf: bytes, start: int, end: int) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    while start + 8 <= end:
        cid, size = buf[start : start + 4], struct.unpack_from("<I", buf, start + 4)[0]
        body = buf[start + 8 : start + 8 + size]
        if cid == b"LIST":
            out.update(_chunks(body, 4, len(body)))
        else:
            out[cid] = body
        start += 8 + size + (size & 1)
    return out


def _records(body: bytes, fmt: str) -> list[tuple]:
    return list(struct.iter_unpack(fmt, body[: len(body) - len(body) % struct.calcsize(fmt)]))


def _zone_gens(bags: list[tuple], gens: list[tuple], first: int, last: int) -> list[dict[int, int]]:
    """Generators of the zones ``first..last-1``; the first zone is global when it names no instrument/sample."""
    zones = []
    for b in range(first, last):
        zone = {}
        for oper, amount in gens[bags[b][0] : bags[b + 1][0]]:
            zone[oper] = (
                (amount & 0xFF, amount >> 8)
                if oper in _RANGES
                else struct.unpack("<h", struct.pack("<H", amount))[0]
            )
        zones.append(zone)
    return zones


def _split_global(zones: list[dict[int, int]], terminal: int) -> tuple[dict[int, int], list[dict[int, int]]]:
    if zones and terminal not in zones[0]:
        return zones[0], [z for z in zones[1:] if terminal in z]
    return {}, [z for z in zones if terminal in z]


def _intersect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return max(a[0], b[0]), min(a[1], b[1])


def _load_zones(path: Path, bank: int, program: int) -> list[_Zone]:
    buf = path.read_bytes()
    if buf[:4] != b"RIFF" or buf[8:12] != b"sfbk":
        raise ValueError(f"{path} is not a SoundFont 2 file (no RIFF/sfbk header)")
    c = _chunks(buf, 12, len(buf))
    missing = [
        k.decode()
        for k in (b"smpl", b"phdr", b"pbag", b"pgen", b"inst", b"ibag", b"igen", b"shdr")
        if k not in c
    ]
    if missing:
        raise ValueError(f"SoundFont {path} lacks the chunks {missing}")
    smpl = np.frombuffer(c[b"smpl"], dtype="<i2")
    phdr, inst = _records(c[b"phdr"], "<20sHHHIII"), _records(c[b"inst"], "<20sH")
    pbag, ibag = _records(c[b"pbag"], "<HH"), _records(c[b"ibag"], "<HH")
    pgen, igen = _records(c[b"pgen"], "<HH"), _records(c[b"igen"], "<HH")
    shdr = _records(c[b"shdr"], "<20sIIIIIBbHH")
    found = [i for i, h in enumerate(phdr[:-1]) if h[1] == program and h[2] == bank]
    if not found:
        raise ValueError(f"SoundFont {path} has no preset {bank}:{program}")
    p = found[0]
    p_global, p_zones = _split_global(_zone_gens(pbag, pgen, phdr[p][3], phdr[p + 1][3]), _INSTRUMENT)
    zones = []
    for pz in p_zones:
        pz = {**p_global, **pz}
        i = pz[_INSTRUMENT]
        i_global, i_zones = _split_global(_zone_gens(ibag, igen, inst[i][1], inst[i + 1][1]), _SAMPLE_ID)
        for iz in i_zones:
            g = {**_DEFAULTS, **i_global, **iz}
            for oper, amount in pz.items():  # preset generators add to the instrument's (ranges intersect)
                if oper not in _NOT_ADDITIVE:
                    g[oper] = g.get(oper, 0) + amount
            zones.append(_make_zone(g, pz, shdr[g[_SAMPLE_ID]], smpl))
    return zones


def _make_zone(g: dict[int, int], pz: dict[int, int], sh: tuple, smpl: np.ndarray) -> _Zone:
    _, start, end, loop_start, loop_end, rate, pitch, correction, _, _ = sh

    def ofs(fine: int, coarse: int) -> int:
        return g.get(fine, 0) + 32768 * g.get(coarse, 0)

    start += ofs(_START_OFS, _START_COARSE)
    end += ofs(_END_OFS, _END_COARSE)
    loop_start += ofs(_LOOP_START_OFS, _LOOP_START_COARSE)
    loop_end += ofs(_LOOP_END_OFS, _LOOP_END_COARSE)
    looped = g.get(_SAMPLE_MODES, 0) in (1, 3) and start <= loop_start < loop_end <= end
    root = g.get(_ROOT_KEY, -1)
    return _Zone(
        keys=_intersect(g.get(_KEY_RANGE, (0, 127)), pz.get(_KEY_RANGE, (0, 127))),
        vels=_intersect(g.get(_VEL_RANGE, (0, 127)), pz.get(_VEL_RANGE, (0, 127))),
        data=smpl[start : end + 1].astype(np.float32) / 32768.0,
        sample_rate=int(rate),
        root_key=root if 0 <= root <= 127 else int(pitch),
        tune_cents=100.0 * g.get(_COARSE_TUNE, 0) + g.get(_FINE_TUNE, 0) + correction,
        loop=(loop_start - start, loop_end - start) if looped else None,
        gain_db=-g.get(_ATTENUATION, 0) / 10.0,
        env=tuple(
            float(g.get(k, 0))
            for k in (_VOL_DELAY, _VOL_ATTACK, _VOL_HOLD, _VOL_DECAY, _VOL_SUSTAIN, _VOL_RELEASE)
        ),
        key_to_hold=float(g.get(_KEY_TO_HOLD, 0)),
        key_to_decay=float(g.get(_KEY_TO_DECAY, 0)),
        cutoff_cents=float(g[_FILTER_FC] + max(g.get(_MOD_ENV_TO_FC, 0), 0)),
    )


def _seconds(timecents: float) -> float:
    return 2.0 ** (timecents / 1200.0)


class PianoRenderer:
    """Plays MIDI files with one SoundFont preset (default: General MIDI piano, bank 0 program 0).

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
        if sample_rate < 4000:
            raise ValueError(f"sample_rate must be at least 4000 Hz, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self.soundfont = Path(soundfont) if soundfont is not None else default_soundfont()
        self._zones = _load_zones(self.soundfont, bank, program)
        self.soundfont_sha256 = hashlib.sha256(self.soundfont.read_bytes()).hexdigest()

    def _zone(self, key: int, velocity: int) -> _Zone | None:
        for z in self._zones:
            if z.keys[0] <= key <= z.keys[1] and z.vels[0] <= velocity <= z.vels[1]:
                return z
        return None

    def _voice(self, key: int, velocity: int, held: float) -> np.ndarray | None:
        """One note: ``held`` seconds until release, then its release tail.

        Shapes: returns [N] float32.
        """
        z = self._zone(key, velocity)
        if z is None or velocity <= 0:
            return None
        gain_db = z.gain_db + 40.0 * math.log10(velocity / 127.0) + 20.0 * math.log10(_MASTER_GAIN)
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


def _envelope(z: _Zone, key: int, held: float, sr: int, floor_db: float) -> np.ndarray:
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


def _play(z: _Zone, key: int, n: int, sr: int) -> np.ndarray:
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


def midi_notes(midi_path: str | os.PathLike[str]) -> tuple[np.ndarray, float]:
    """Read a MIDI file's notes with their sustain-pedal-extended release times, and its end time.

    Shapes: returns notes [K, 4] (start_s, release_s, key, velocity), sorted by start.
    """
    try:
        import pretty_midi
    except ImportError as e:
        raise ImportError("rendering MIDI needs pretty_midi: pip install 'musicft[midi]'") from e
    with warnings.catch_warnings():  # files with tempo events on later tracks still parse correctly
        warnings.filterwarnings("ignore", message="Tempo, Key or Time signature change events found")
        try:
            midi = pretty_midi.PrettyMIDI(str(midi_path))
        except Exception as e:  # mido raises several types for malformed files
            raise ValueError(f"could not parse MIDI file {midi_path}: {type(e).__name__}: {e}") from e
    rows = []
    for inst in midi.instruments:
        if inst.is_drum:
            continue
        cc = sorted((c.time, c.value >= 64) for c in inst.control_changes if c.number == _SUSTAIN_CC)
        times = np.array([t for t, _ in cc])
        down = np.array([d for _, d in cc], dtype=bool)
        for note in inst.notes:
            rows.append((note.start, _pedal_release(note.end, times, down), note.pitch, note.velocity))
    notes = np.array(sorted(rows), dtype=np.float64).reshape(-1, 4)
    # Re-striking a key that still sounds (held by the pedal) releases the older voice at the new onset.
    for key in np.unique(notes[:, 2]):
        idx = np.flatnonzero(notes[:, 2] == key)
        notes[idx[:-1], 1] = np.minimum(notes[idx[:-1], 1], np.maximum(notes[idx[1:], 0], notes[idx[:-1], 0]))
    return notes, midi.get_end_time()


def _pedal_release(end: float, times: np.ndarray, down: np.ndarray) -> float:
    """When a key released at ``end`` stops sounding: ``end``, or the next pedal lift if the pedal is down."""
    i = int(np.searchsorted(times, end, side="right")) - 1
    if i < 0 or not down[i]:
        return end
    ups = np.flatnonzero(~down[i + 1 :])
    return float(times[i + 1 + ups[0]]) if len(ups) else max(end, float(times[-1]))


def _cache_key(midi_bytes: bytes, renderer: PianoRenderer) -> str:
    h = hashlib.sha256(midi_bytes)
    h.update(f"|{RENDERER_VERSION}|{renderer.sample_rate}|{renderer.soundfont_sha256}".encode())
    return h.hexdigest()[:20]


def render_cached(
    midi_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str], renderer: PianoRenderer
) -> Path:
    """Render ``midi_path`` to a 16-bit FLAC under ``cache_dir`` unless an identical render is cached.

    The cache key is the MIDI file's bytes, :data:`RENDERER_VERSION`, the sample rate and the sound font's sha256,
    so editing any of them renders again. Writes are atomic.
    """
    midi_path, cache_dir = Path(midi_path), Path(cache_dir)
    key = _cache_key(midi_path.read_bytes(), renderer)
    target = cache_dir / f"{midi_path.stem.strip()}.{key}.flac"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    wave = np.clip(renderer.render(midi_path), -1.0, 1.0)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".flac")
    os.close(fd)
    sf.write(tmp, wave, renderer.sample_rate, format="FLAC", subtype="PCM_16")
    Path(tmp).replace(target)
    return target


def _render_or_error(
    midi_path: Path, cache_dir: str | os.PathLike[str], renderer: PianoRenderer
) -> Path | ValueError:
    try:
        return render_cached(midi_path, cache_dir, renderer)
    except ValueError as e:  # an unparsable MIDI file: reported by the caller, the others still render
        return e


def render_many(
    midi_paths: Sequence[Path],
    cache_dir: str | os.PathLike[str],
    sample_rate: int = 22050,
    soundfont: str | os.PathLike[str] | None = None,
    num_workers: int = 1,
) -> list[Path | ValueError]:
    """Render (or find cached) audio for each MIDI file, in order, with a progress bar.

    Args:
        midi_paths: MIDI files.
        cache_dir: where the FLAC renders live.
        sample_rate: output rate in Hz.
        soundfont: ``.sf2`` file; None uses pretty_midi's General MIDI font.
        num_workers: processes to render with (1 renders in this process).

    Returns:
        Per file, the rendered audio's path, or the ``ValueError`` that says why the MIDI file could not be read.
    """
    job = partial(_render_or_error, cache_dir=cache_dir, renderer=PianoRenderer(sample_rate, soundfont))
    bar = partial(tqdm, total=len(midi_paths), desc="rendering MIDI", unit="file")
    if num_workers <= 1:
        return list(bar(map(job, midi_paths)))
    with ProcessPoolExecutor(
        num_workers
    ) as pool:  # the renderer (small: the preset's samples only) is pickled
        return list(bar(pool.map(job, midi_paths, chunksize=max(1, len(midi_paths) // (8 * num_workers)))))
