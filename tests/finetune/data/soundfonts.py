"""Tiny SoundFont 2 files written from scratch for the renderer's tests: one preset (bank 0, program 0) whose
instrument has the given zones, all playing one 16-bit mono sample."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

KEY_RANGE, VEL_RANGE, PAN, ATTENUATION, SAMPLE_MODES, SAMPLE_ID = 43, 44, 17, 48, 54, 53
FILTER_FC, MOD_ENV_TO_FC, INSTRUMENT, RELEASE = 8, 11, 41, 38


def _chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _gens(zone: Mapping[int, int | tuple[int, int]]) -> list[bytes]:
    out = []
    for oper, amount in zone.items():
        if isinstance(amount, tuple):
            out.append(struct.pack("<HBB", oper, amount[0], amount[1]))
        else:
            out.append(struct.pack("<Hh", oper, amount))
    return out


def write_sf2(
    path: Path,
    sample: np.ndarray,
    sample_rate: int,
    root_key: int,
    zones: Sequence[Mapping[int, int | tuple[int, int]]],
    preset_zone: Mapping[int, int | tuple[int, int]] | None = None,
    loop: tuple[int, int] | None = None,
) -> Path:
    """Write an SF2 file whose preset 0:0 plays ``zones`` (generator -> amount; ranges as (low, high)).

    ``sample`` (float in [-1, 1]) is sample 0, recorded at ``root_key``; ``loop`` is its loop (start, end).
    ``preset_zone`` holds generators added at preset level.
    """
    pcm = np.round(np.clip(sample, -1, 1) * 32767).astype("<i2").tobytes() + b"\0\0" * 46
    loop_start, loop_end = loop if loop is not None else (0, 0)
    shdr = struct.pack(
        "<20sIIIIIBbHH", b"s", 0, len(sample), loop_start, loop_end, sample_rate, root_key, 0, 0, 1
    )
    shdr += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    igen, ibag = [], []
    for zone in zones:
        ibag.append(struct.pack("<HH", len(igen), 0))
        igen += _gens({**zone, SAMPLE_ID: 0})
    ibag.append(struct.pack("<HH", len(igen), 0))
    pgen = _gens({**(preset_zone or {}), INSTRUMENT: 0})
    pdta = _list(
        b"pdta",
        _chunk(
            b"phdr",
            struct.pack("<20sHHHIII", b"p", 0, 0, 0, 0, 0, 0)
            + struct.pack("<20sHHHIII", b"EOP", 0, 0, 1, 0, 0, 0),
        ),
        _chunk(b"pbag", struct.pack("<HH", 0, 0) + struct.pack("<HH", len(pgen), 0)),
        _chunk(b"pmod", b"\0" * 10),
        _chunk(b"pgen", b"".join(pgen) + b"\0" * 4),
        _chunk(b"inst", struct.pack("<20sH", b"i", 0) + struct.pack("<20sH", b"EOI", len(zones))),
        _chunk(b"ibag", b"".join(ibag)),
        _chunk(b"imod", b"\0" * 10),
        _chunk(b"igen", b"".join(igen) + b"\0" * 4),
        _chunk(b"shdr", shdr),
    )
    info = _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 2, 1)))
    body = b"sfbk" + info + _list(b"sdta", _chunk(b"smpl", pcm)) + pdta
    path.write_bytes(_chunk(b"RIFF", body))
    return path


def sine(freq: float, seconds: float, sample_rate: int) -> np.ndarray:
    """A 0.5-amplitude sine of ``freq`` Hz."""
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sample_rate)) / sample_rate)
