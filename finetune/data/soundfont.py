"""Read one preset of a SoundFont 2 (SF2) file into playable zones, for :mod:`finetune.data.render`.

Any SF2 file works: the General MIDI font that ships inside ``pretty_midi`` (TimGM6mb, the default), Debian's
FluidR3_GM (``apt-get install fluid-soundfont-gm``) or a commercial piano font. A zone is what a synthesiser plays
for one key and velocity: a sample (mono; stereo fonts give one zone per side, and all of a key's zones sound
together), its root key and tuning, loop points, attenuation, volume envelope and filter cutoff. Preset generators
add to the instrument's, and key/velocity ranges intersect (SoundFont 2.04, sections 8.1 and 9.4). Modulators
other than SF2's default ones are not read.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Zone", "default_soundfont", "load_zones", "soundfont_sha256"]

# SF2 generator numbers (SoundFont 2.04, section 8.1.2).
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
_CHUNKS = (b"smpl", b"phdr", b"pbag", b"pgen", b"inst", b"ibag", b"igen", b"shdr")


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


def soundfont_sha256(path: str | Path) -> str:
    """Hex sha256 of a sound font file (read in blocks: General MIDI fonts reach 150 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Zone:
    """One playable zone of a preset: its key/velocity ranges and everything needed to play its sample.

    Envelope times are SF2 timecents, the sustain level centibels of attenuation, the cutoff absolute cents.
    """

    keys: tuple[int, int]
    vels: tuple[int, int]
    data: np.ndarray  # float32 sample data from the zone's start up to (not including) its end
    sample_rate: int
    root_key: int
    tune_cents: float
    loop: tuple[int, int] | None  # loop start and end, relative to ``data``
    gain_db: float
    env: tuple[float, float, float, float, float, float]  # delay, attack, hold, decay, sustain (cB), release
    key_to_hold: float
    key_to_decay: float
    cutoff_cents: float

    def plays(self, key: int, velocity: int) -> bool:
        """Whether this zone sounds for ``key`` at ``velocity``."""
        return self.keys[0] <= key <= self.keys[1] and self.vels[0] <= velocity <= self.vels[1]


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
    """Generators of the zones ``first..last-1``; ranges as (low, high), other amounts as signed integers."""
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
    """(global zone, local zones): the first zone is global when it names no instrument/sample (``terminal``)."""
    if zones and terminal not in zones[0]:
        return zones[0], [z for z in zones[1:] if terminal in z]
    return {}, [z for z in zones if terminal in z]


def _intersect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return max(a[0], b[0]), min(a[1], b[1])


def load_zones(path: str | Path, bank: int = 0, program: int = 0) -> list[Zone]:
    """The zones of preset ``bank:program`` of the SoundFont at ``path`` (0:0 is General MIDI's grand piano).

    Raises:
        ValueError: the file is not a SoundFont 2 file, lacks a required chunk, or has no such preset.
    """
    path = Path(path)
    buf = path.read_bytes()
    if buf[:4] != b"RIFF" or buf[8:12] != b"sfbk":
        raise ValueError(f"{path} is not a SoundFont 2 file (no RIFF/sfbk header)")
    c = _chunks(buf, 12, len(buf))
    missing = [k.decode() for k in _CHUNKS if k not in c]
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


def _make_zone(g: dict[int, int], pz: dict[int, int], sh: tuple, smpl: np.ndarray) -> Zone:
    _, start, end, loop_start, loop_end, rate, pitch, correction, _, _ = sh

    def ofs(fine: int, coarse: int) -> int:
        return g.get(fine, 0) + 32768 * g.get(coarse, 0)

    start += ofs(_START_OFS, _START_COARSE)
    end += ofs(_END_OFS, _END_COARSE)
    loop_start += ofs(_LOOP_START_OFS, _LOOP_START_COARSE)
    loop_end += ofs(_LOOP_END_OFS, _LOOP_END_COARSE)
    looped = g.get(_SAMPLE_MODES, 0) in (1, 3) and start <= loop_start < loop_end <= end
    root = g.get(_ROOT_KEY, -1)
    return Zone(
        keys=_intersect(g.get(_KEY_RANGE, (0, 127)), pz.get(_KEY_RANGE, (0, 127))),
        vels=_intersect(g.get(_VEL_RANGE, (0, 127)), pz.get(_VEL_RANGE, (0, 127))),
        data=smpl[start:end].astype(np.float32) / 32768.0,  # end: the first point past the sample
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
        # the modulation envelope held at its peak (1): the level a note's body hears, whichever its sign
        cutoff_cents=float(g[_FILTER_FC] + g.get(_MOD_ENV_TO_FC, 0)),
    )
