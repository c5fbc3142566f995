"""Training input pipeline on full-length tracks: clips per second that ``CropCollate`` delivers on one CPU core
from 3-14 minute files, before and after windowed decoding, and from the decode cache.

Modes, each a training collate (random windows of ``--window`` seconds at ``--rate`` Hz, ``--batch`` rows per
batch drawn at random from the tracks of one format):

- ``whole_file`` (before): every row decodes and resamples its whole file (what the loaders' rows did), then the
  window is cut from it;
- ``windowed`` (after): rows carry the header facts and the collate decodes only each window's frames;
- ``cached``: the collate reads windows from the decode cache (``data.decode_cache``); the one-off cost of
  building it is reported as ``cache_build_s_per_audio_min``.

The tracks are generated once into ``--workdir`` (44.1 kHz stereo, Opus 48 kHz; music-like tones and noise) and
reused by later runs. One process, one torch thread: the figures are per core. The result says how many such
cores (data-loader workers) feed ``--target`` clips/s, and whether the workers of a ``--cores``-core machine
(one core left to the training process) do. ``--workers N`` also times a ``DataLoader`` with N worker processes
over the windowed mode.

    python -m eval.speed input                                      # 3, 7, 14 minutes; every format
    python -m eval.speed input --minutes 3,14 --formats ogg,opus --budget 20
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from backbones.checkpoints import cache_dir
from finetune.data.audio import audio_info, load_audio
from finetune.data.collate import CropCollate
from finetune.data.decoded import DecodedCache

from .timing import write_result

# name -> (libsndfile format, subtype, file rate)
FORMATS = {
    "wav": ("WAV", "PCM_16", 44100),
    "flac": ("FLAC", "PCM_16", 44100),
    "ogg": ("OGG", "VORBIS", 44100),
    "opus": ("OGG", "OPUS", 48000),
    "mp3": ("MP3", "MPEG_LAYER_III", 44100),
}
MODES = ("whole_file", "windowed", "cached")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--formats", default=",".join(FORMATS), help=f"comma-separated subset of {list(FORMATS)}"
    )
    parser.add_argument("--minutes", default="3,7,14", help="track lengths in minutes, one track each")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {list(MODES)}")
    parser.add_argument(
        "--rate", type=int, default=32000, help="the model's sample rate (CNN14, PaSST: 32 kHz)"
    )
    parser.add_argument("--window", type=float, default=10.0, help="training window in seconds")
    parser.add_argument("--batch", type=int, default=8, help="rows per batch")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timing per format and mode")
    parser.add_argument(
        "--min-batches", type=int, default=2, help="batches timed at least, whatever the budget"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="also time a DataLoader with this many workers"
    )
    parser.add_argument("--target", type=float, default=200.0, help="clips/s a GPU should be fed")
    parser.add_argument("--cores", type=int, default=16, help="cores of the machine the arithmetic is for")
    parser.add_argument(
        "--workdir", default=None, help="generated tracks (default: $MUSICFT_CACHE/speed_input)"
    )
    parser.add_argument("--seed", type=int, default=0)


def _track(path: Path, fmt: str, minutes: float, seed: int) -> Path:
    """Generate one stereo track (written in 10 s blocks: libsndfile's Vorbis encoder takes no minutes at once)."""
    if path.is_file():
        return path
    major, subtype, rate = FORMATS[fmt]
    rng = np.random.default_rng(seed)
    n, block = int(minutes * 60 * rate), 10 * rate
    tmp = path.with_suffix(".part" + path.suffix)
    with sf.SoundFile(tmp, "w", rate, 2, format=major, subtype=subtype) as f:
        for start in range(0, n, block):
            t = np.arange(start, min(n, start + block)) / rate
            pitch = 110.0 * 2 ** (int(rng.integers(0, 36)) / 12)
            tone = 0.25 * np.sin(2 * np.pi * pitch * t) * np.exp(-(t % 0.5) * 3)
            left = tone + 0.03 * rng.standard_normal(len(t))
            f.write(np.stack([left, 0.8 * tone], axis=1).astype(np.float32))
    tmp.replace(path)
    return path


def _rows(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for label, path in enumerate(paths):
        info = audio_info(path)
        rows.append(
            {"path": str(path), "name": path.stem, "frames": info.frames, "file_rate": info.sample_rate}
        )
        rows[-1]["label"] = label
    return rows


def _whole_file(rate: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def decode(row: dict[str, Any]) -> dict[str, Any]:
        wave, _ = load_audio(row["path"], sample_rate=rate)
        return {"audio": wave[0], "sample_rate": rate, "name": row["name"], "label": row["label"]}

    return decode


def _time(step: Callable[[], int], budget: float, min_batches: int) -> dict[str, Any]:
    """Run ``step`` (returns the clips it made) until ``budget`` seconds and ``min_batches`` calls have passed."""
    step()  # warm-up: filter banks, file caches, imports
    clips, batches, t0 = 0, 0, time.perf_counter()
    while batches < min_batches or time.perf_counter() - t0 < budget:
        clips += step()
        batches += 1
    elapsed = time.perf_counter() - t0
    return {"clips": clips, "batches": batches, "seconds": elapsed, "clips_per_s": clips / elapsed}


def _measure(fmt: str, paths: list[Path], args: argparse.Namespace, cache_root: Path) -> dict[str, Any]:
    rows = _rows(paths)
    pick = random.Random(args.seed)
    collate = CropCollate(args.rate, args.window, train=True, seed=args.seed)
    modes = [m for m in args.modes.split(",") if m]
    out: dict[str, Any] = {
        "format": fmt,
        "tracks_min": [round(r["frames"] / r["file_rate"] / 60, 2) for r in rows],
    }
    batch = lambda: [pick.choice(rows) for _ in range(args.batch)]  # noqa: E731
    if "whole_file" in modes:
        decode = _whole_file(args.rate)
        out["whole_file"] = _time(
            lambda: len(collate([decode(r) for r in batch()])["ids"]), args.budget, args.min_batches
        )
    if "windowed" in modes:
        out["windowed"] = _time(lambda: len(collate(batch())["ids"]), args.budget, args.min_batches)
    if "cached" in modes:
        cache = DecodedCache(args.rate, root=cache_root)
        t0 = time.perf_counter()
        cache.build([r["path"] for r in rows], progress=False)
        minutes = sum(r["frames"] / r["file_rate"] for r in rows) / 60
        out["cache_build_s_per_audio_min"] = (time.perf_counter() - t0) / minutes
        cached = CropCollate(args.rate, args.window, train=True, seed=args.seed, cache=cache)
        out["cached"] = _time(lambda: len(cached(batch())["ids"]), args.budget, args.min_batches)
    if args.workers:
        loader = DataLoader(
            rows * 1000, batch_size=args.batch, shuffle=True, collate_fn=collate, num_workers=args.workers
        )
        it = iter(loader)
        out[f"windowed_{args.workers}_workers"] = _time(
            lambda: len(next(it)["ids"]), args.budget, args.min_batches
        )
    if "whole_file" in out and "windowed" in out:
        out["speedup"] = out["windowed"]["clips_per_s"] / out["whole_file"]["clips_per_s"]
    return out


def _arithmetic(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Cores needed for ``--target`` clips/s at the measured per-core rate, per format and mode."""
    workers = args.cores - 1
    out = {}
    for r in results:
        for mode in MODES:
            if mode in r:
                rate = r[mode]["clips_per_s"]
                out[f"{r['format']}/{mode}"] = {
                    "clips_per_s_per_core": rate,
                    "cores_for_target": math.ceil(args.target / rate),
                    f"clips_per_s_with_{workers}_workers": rate * workers,
                    "feeds_target": rate * workers >= args.target,
                }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    workdir = Path(args.workdir) if args.workdir else cache_dir() / "speed_input"
    workdir.mkdir(parents=True, exist_ok=True)
    minutes = [float(m) for m in args.minutes.split(",") if m]
    results = []
    with tempfile.TemporaryDirectory() as cache_root:
        for i, fmt in enumerate(f for f in args.formats.split(",") if f):
            paths = [
                _track(workdir / f"{m:g}min.{fmt}", fmt, m, seed=100 * i + j) for j, m in enumerate(minutes)
            ]
            results.append(_measure(fmt, paths, args, Path(cache_root) / fmt))
            print(_line(results[-1]))
    payload = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "workdir")},
        "notes": [
            "one process, one torch thread: clips/s are per core",
            f"arithmetic: {args.cores} cores, one for the training process, {args.cores - 1} data-loader workers; "
            f"a format feeds {args.target:g} clips/s when per-core clips/s x {args.cores - 1} >= {args.target:g}",
        ],
        "results": results,
        "arithmetic": _arithmetic(results, args),
    }
    print(f"wrote {write_result('input', payload, args.out)}")
    return payload


def _line(r: dict[str, Any]) -> str:
    parts = [f"{r['format']:>5} ({', '.join(f'{m:g}' for m in r['tracks_min'])} min)"]
    parts += [f"{m} {r[m]['clips_per_s']:8.2f} clips/s" for m in MODES if m in r]
    if "speedup" in r:
        parts.append(f"windowed/whole {r['speedup']:.0f}x")
    return "   ".join(parts)
