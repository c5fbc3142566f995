"""Streaming soak: one session, a long synthetic stream in random chunk sizes, through a tiny model.

``python -m eval.soak_streaming [--minutes 60]`` checks, and writes to ``bench/results/soak-streaming-cpu.json``:

- memory: the process RSS (``/proc/self/status``) once a minute of stream, and ``session.state_bytes()`` after
  every chunk; both must stay flat after the first minutes (no growth with stream length);
- hop times: every hop's ``time`` equals its grid value ``k * hop`` exactly (no drift of the clock over the
  hour), and the compute time per hop in the last minutes is not above the first minutes' (no slow-down);
- exactness: sampled hops spread over the stream equal the offline model on their window. The stream repeats a
  ``--period`` s synthetic clip whose length is a whole number of the resampler's polyphase periods, so the
  resampled stream repeats too and the offline window of any hop is cut from the first periods (resampled once).

Input at 44.1 kHz (resampled to the model's rate), chunks of 1 to ``--max-chunk`` samples drawn log-uniformly.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eval.speed_streaming import RawOnly, _audio, _model
from eval.timing import write_result
from finetune.data.resample import resample
from finetune.streaming import StreamingEngine


def rss_bytes() -> int | None:
    """The process's resident memory now (Linux ``/proc``), or None where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _PeriodicStream:
    """``x[t] = clip[t mod period]``, handed out in chunks without materialising the whole stream."""

    def __init__(self, clip: Tensor) -> None:
        self.clip, self.position = clip, 0

    def take(self, n: int) -> Tensor:
        idx = torch.arange(self.position, self.position + n) % self.clip.shape[-1]
        self.position += n
        return self.clip[idx]


def soak(
    backbone: str = "passt_s.tiny",
    minutes: float = 60.0,
    window_s: float = 10.0,
    hop_s: float = 0.5,
    rate: int = 44100,
    period_s: float = 20.0,
    max_chunk: int = 88200,
    samples: int = 24,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the soak and return its figures (see the module docstring)."""
    model = _model(backbone)
    engine = StreamingEngine(model, window_s=window_s, hop_s=hop_s, postprocess=RawOnly)
    session = engine.open_session(rate)
    clip = _audio(period_s, rate, seed=seed)
    stream = _PeriodicStream(clip)
    total = round(minutes * 60 * rate)
    g = torch.Generator().manual_seed(seed)
    expected_hops = int(minutes * 60 / hop_s) - math.ceil(window_s / hop_s) + 1
    sample_at = set(torch.linspace(0, expected_hops - 2, samples).round().long().tolist())
    kept: dict[int, tuple[float, Tensor]] = {}
    # O(1) bookkeeping, so that the soak measures the engine's memory and not its own lists
    span, end = minutes * 6.0, minutes * 60.0  # a tenth of the stream; its end
    first_ms: list[float] = []  # compute time per hop (ms) in the first tenth after the first hop ...
    last_ms: list[float] = []  # ... and in the last tenth
    rss: list[tuple[float, int | None, int]] = []  # once a minute: (stream s, RSS, state bytes)
    state_range = [math.inf, -math.inf]  # state bytes after the warm-up
    warm = max(60.0, span)
    grid_error, count, fed, next_rss = 0.0, 0, 0, 0.0
    started = time.perf_counter()
    while fed < total or session.time > 0:
        if fed < total:
            n = min(total - fed, int(math.exp(float(torch.rand(1, generator=g)) * math.log(max_chunk))) + 1)
            t0 = time.perf_counter()
            hops = session.push(stream.take(n))
            fed += n
        else:  # the end of the stream: the hops the resampler's look-ahead held back
            t0 = time.perf_counter()
            hops = session.flush().hops
        elapsed = 1000 * (time.perf_counter() - t0)
        for hop in hops:
            grid_error = max(grid_error, abs(hop.time - (math.ceil(window_s / hop_s) + count) * hop_s))
            if count in sample_at:
                kept[count] = (hop.time, hop.outputs[window_s])
            if hop.time <= window_s + hop_s + span:
                first_ms.append(elapsed / len(hops))
            elif hop.time >= end - span:
                last_ms.append(elapsed / len(hops))
            count += 1
        now = fed / rate
        if session.time > 0:  # not after the final flush, which resets the session
            size = session.state_bytes()
            if now >= warm:
                state_range = [min(state_range[0], size), max(state_range[1], size)]
            if now >= next_rss:
                rss.append((now, rss_bytes(), size))
                next_rss += 60.0
    wall = time.perf_counter() - started
    after = [b for t, b, _ in rss if t >= warm and b is not None]
    return {
        "hops": count,
        "expected_hops": expected_hops,
        "wall_s": wall,
        "hop_time_max_error_s": grid_error,
        "per_minute": [
            {"stream_s": round(t), "rss_mb": None if b is None else b / 1e6, "state_bytes": z}
            for t, b, z in rss
        ],
        "rss_growth_mb_after_warmup": (max(after) - after[0]) / 1e6 if after else None,
        "state_bytes_after_warmup": {"min": state_range[0], "max": state_range[1]},
        "hop_ms_median_first": statistics.median(first_ms),
        "hop_ms_median_last": statistics.median(last_ms),
        "hop_ms_last_over_first": statistics.median(last_ms) / statistics.median(first_ms),
        "exactness": _exactness(model, clip, rate, period_s, window_s, kept),
    }


def _exactness(
    model: Any,
    clip: Tensor,
    rate: int,
    period_s: float,
    window_s: float,
    kept: dict[int, tuple[float, Tensor]],
) -> dict[str, Any]:
    """Sampled hops against the offline model on the window cut from the first periods, resampled once."""
    base_s = period_s + window_s + 2.0
    reps = math.ceil(base_s / period_s)
    x = clip.repeat(reps)[: round(base_s * rate)]
    y = resample(x[None], rate, model.sample_rate)[0]
    sr, n = model.sample_rate, round(window_s * model.sample_rate)
    worst = 0.0
    for t, value in kept.values():
        shift = (
            max(0, math.floor((t - window_s - 1.0) / period_s)) * period_s
        )  # the same audio, one period back
        end = round((t - shift) * sr)
        with torch.inference_mode():
            ref = getattr(model(waveform=y[None, end - n : end]), model.task.output_field)[0]
        worst = max(worst, float((value - ref).abs().max()))
    return {"sampled_hops": sorted(kept), "max_abs_deviation": worst}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.soak_streaming", description=__doc__)
    parser.add_argument("--backbone", default="passt_s.tiny")
    parser.add_argument("--minutes", type=float, default=60.0, help="stream length")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--hop", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--out", default="bench/results", help="directory for the JSON result")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    figures = soak(args.backbone, args.minutes, args.window, args.hop)
    checks = {
        "every_hop_on_the_grid": figures["hop_time_max_error_s"] == 0.0,
        "all_hops": figures["hops"] == figures["expected_hops"],
        "rss_flat": (figures["rss_growth_mb_after_warmup"] or 0.0) < 1.0,
        "no_slow_down": figures["hop_ms_last_over_first"] < 1.5,
        "exact": figures["exactness"]["max_abs_deviation"] <= 1e-5,
    }
    payload = {
        "config": vars(args),
        "checks": checks,
        "figures": figures,
        "notes": [
            "RSS growth: the largest RSS after the warm-up minus the RSS at the end of the warm-up (the first "
            "tenth of the stream, at least a minute); rss_flat allows 1 MB of allocator noise. The soak keeps "
            "O(1) bookkeeping. Hop compute times come from one shared CPU and are compared first vs last tenth "
            "only (speed figures are in streaming-cpu.json)."
        ],
    }
    for key, ok in checks.items():
        print(f"{key:<24} {'ok' if ok else 'FAILED'}")
    print(f"wrote {write_result('soak-streaming', payload, Path(args.out))}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
