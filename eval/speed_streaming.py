"""Streaming speed: hops/s, real-time streams, latency and memory of :mod:`finetune.streaming` against re-running
every window, on CPU (``python -m eval.speed streaming``) or on a GPU (``--gpu``).

CPU, per backbone at W = ``--window`` s and H = ``--hop`` s (tiny configs by default, so it finishes in minutes;
``--full`` for the released architectures, written as ``streaming-full``), all variants timed round-robin in one
process (:func:`eval.timing.time_interleaved`), medians of ``--repeats``:

- ``naive/N``: the model re-run on each window (the last W s of each of N streams, one batched forward pass);
- ``cached/N``: the engine, N sessions, one ``push_many`` of H s of audio per session per call (one hop each): the
  front-end and tokenize on the new audio only, the window's edge columns recomputed, then ``encode`` batched;
- ``activations/1`` (CNN14 only): the engine with ``encoder_cache="activations"``, at H and at ``--cnn14-hops``.

One call = one hop of every session. ``hops_per_s`` = N / median call time; ``streams`` = hops_per_s x H (the
real-time streams this rate sustains); ``p50_ms`` / ``p99_ms``: call times (the latency of a hop from the push that
completes it to its result; with few repeats p99 is the slowest call); ``state_bytes``: per session
(``session.state_bytes()``; naive: the W s of audio it must keep); ``vs_naive1``: hops/s over ``naive/1``'s from the
same run. Audio is fed at the model's rate (the resampler's cost is the same for every variant).

GPU (``--gpu``; :func:`gpu_figures`): full-size AST, PaSST and CNN14 in bf16 autocast, N sessions doubling up to
``--max-sessions`` or the memory limit: hops/s, real-time streams, latency, memory, and the fraction of the GPU's
peak FLOP rate reached, from the encoder FLOPs of one hop counted with ``FlopCounterMode``. ``--dry-run`` runs the
same code on the CPU with tiny configs (the test suite does, in seconds).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from eval.timing import time_interleaved, write_result
from finetune import AudioModel, build_model
from finetune.streaming import HopResult, RawHop, StreamingEngine, WindowSpec

TINY = ("ast.tiny", "passt_s.tiny", "cnn14.tiny")
FULL = ("ast.audioset", "passt_s.audioset_swa", "cnn14.audioset_32k")
PEAK_TFLOPS_BF16 = 989.0  # H100 SXM / H200 dense bf16 spec sheet


class RawOnly:
    """A post-processor that only passes the raw outputs on (the benchmark times the engine, not smoothing)."""

    def __init__(
        self,
        task: Any,
        labels: Sequence[str],
        windows: Sequence[WindowSpec],
        calibration: Any,
        *,
        session: str,
    ) -> None:
        self.session = session

    def step(self, raw: RawHop) -> HopResult:
        value = next(iter(raw.outputs.values()))
        return HopResult(
            self.session, raw.index, raw.time, raw.outputs, value, value, (), None, (), raw.partial
        )

    def flush(self) -> tuple:
        return ()

    def reset(self) -> None:
        pass


def _model(name: str, device: str | torch.device = "cpu") -> AudioModel:
    torch.manual_seed(0)
    return build_model(name, head="linear", num_outputs=10).to(device).eval()


def _audio(seconds: float, sample_rate: int, seed: int = 0) -> Tensor:
    """Tones with decaying envelopes and clicks, ``[n]`` (the timing does not depend on content)."""
    g = torch.Generator().manual_seed(seed)
    n = round(seconds * sample_rate)
    t = torch.arange(n) / sample_rate
    f = 110.0 * 2 ** (torch.randint(0, 36, (4, 1), generator=g) / 12)
    x = (0.2 * torch.sin(2 * torch.pi * f * t) * torch.exp(-(t % 0.5) * 4)).sum(0)
    x[torch.randint(0, n, (max(1, n // 8000),), generator=g)] += 0.3
    return x.clamp(-1, 1)


class _Feed:
    """N streams cut from one long buffer at different offsets; ``next(k)`` gives each stream's next ``k`` samples."""

    def __init__(self, streams: int, sample_rate: int, seconds: float = 30.0) -> None:
        self.audio = _audio(seconds, sample_rate)
        self.offsets = [(i * 7919) % self.audio.shape[-1] for i in range(streams)]

    def next(self, k: int) -> list[Tensor]:
        out = []
        for i, start in enumerate(self.offsets):
            idx = (torch.arange(start, start + k)) % self.audio.shape[-1]
            out.append(self.audio[idx])
            self.offsets[i] = (start + k) % self.audio.shape[-1]
        return out

    def windows(self, k: int) -> Tensor:
        """The last ``k`` samples given out of each stream, ``[N, k]`` (the windows a naive re-run reads)."""
        idx = torch.stack([torch.arange(o - k, o) % self.audio.shape[-1] for o in self.offsets])
        return self.audio[idx]


class _EngineDriver:
    """N sessions of one engine, warmed up so that each call pushes one hop of audio to each and returns N hops."""

    def __init__(
        self, model: AudioModel, sessions: int, window_s: float, hop_s: float, **options: Any
    ) -> None:
        self.engine = StreamingEngine(model, window_s=window_s, hop_s=hop_s, postprocess=RawOnly, **options)
        self.sessions = [self.engine.open_session(model.sample_rate) for _ in range(sessions)]
        self.feed = _Feed(sessions, model.sample_rate)
        warm = self.engine._first_hop_end - self.engine.hop_samples
        self.engine.push_many(dict(zip(self.sessions, self.feed.next(warm))))

    def __call__(self) -> int:
        results = self.engine.push_many(dict(zip(self.sessions, self.feed.next(self.engine.hop_samples))))
        hops = sum(len(r) for r in results.values())  # type: ignore[arg-type]
        assert hops == len(self.sessions), f"expected one hop per session, got {hops}"
        return hops

    def state_bytes(self) -> float:
        return statistics.mean(s.state_bytes() for s in self.sessions)


class _NaiveDriver:
    """The model re-run on the last W s of each of N streams per hop (one batched forward pass)."""

    def __init__(
        self, model: AudioModel, sessions: int, window_s: float, hop_s: float, device: torch.device
    ) -> None:
        self.model, self.device = model, device
        self.window, self.hop = round(window_s * model.sample_rate), round(hop_s * model.sample_rate)
        self.feed = _Feed(sessions, model.sample_rate)
        self.feed.next(self.window)

    def __call__(self) -> int:
        self.feed.next(self.hop)
        x = self.feed.windows(self.window).to(self.device)
        with torch.inference_mode():
            self.model(waveform=x)
        return x.shape[0]

    def state_bytes(self) -> float:
        return 4.0 * self.window


def _row(name: str, variant: str, sessions: int, hop_s: float, timing: dict, state: float) -> dict[str, Any]:
    samples = sorted(timing["samples_s"])
    p99 = samples[min(len(samples) - 1, math.ceil(0.99 * len(samples)) - 1)]
    hops_per_s = sessions / timing["median_s"]
    return {
        "backbone": name,
        "variant": variant,
        "sessions": sessions,
        "hop_s": hop_s,
        "hops_per_s": hops_per_s,
        "streams": hops_per_s * hop_s,
        "p50_ms": 1000 * timing["median_s"],
        "p99_ms": 1000 * p99,
        "state_bytes": state,
        "timing": timing,
    }


def cpu_rows(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every variant of one backbone, interleaved; ratios to ``naive/1`` of the same run."""
    model = _model(name)
    device = torch.device("cpu")
    counts = [int(n) for n in str(args.sessions).split(",") if n]
    drivers: dict[tuple[str, int, float], Callable[[], int]] = {}
    for n in counts:
        drivers[("naive", n, args.hop)] = _NaiveDriver(model, n, args.window, args.hop, device)
        drivers[("cached", n, args.hop)] = _EngineDriver(model, n, args.window, args.hop)
    if name.startswith("cnn14"):
        for hop in [args.hop, *(float(h) for h in str(args.cnn14_hops).split(",") if h)]:
            drivers.setdefault(("naive", 1, hop), _NaiveDriver(model, 1, args.window, hop, device))
            drivers.setdefault(("cached", 1, hop), _EngineDriver(model, 1, args.window, hop))
            drivers[("activations", 1, hop)] = _EngineDriver(
                model, 1, args.window, hop, encoder_cache="activations"
            )
    timings = time_interleaved(
        {f"{v}/{n}/{h}": d for (v, n, h), d in drivers.items()}, repeats=args.repeats, warmup=args.warmup
    )
    rows = [
        _row(name, v, n, h, timings[f"{v}/{n}/{h}"], d.state_bytes())  # type: ignore[attr-defined]
        for (v, n, h), d in drivers.items()
    ]
    base = next(r for r in rows if r["variant"] == "naive" and r["sessions"] == 1)["hops_per_s"]
    for r in rows:
        r["vs_naive1"] = r["hops_per_s"] / base
        print(
            f"{name:<20} {r['variant']:<12} {r['sessions']:>4} {r['hop_s']:>5} {r['hops_per_s']:>10.1f} "
            f"{r['streams']:>9.1f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {r['state_bytes'] / 1e6:>8.3f} "
            f"{r['vs_naive1']:>7.2f}"
        )
    return rows


def encoder_flops_per_hop(model: AudioModel, window_s: float, device: torch.device) -> int:
    """FLOPs of ``encode`` + head on one window's tokens (what a hop must recompute), counted by
    ``FlopCounterMode`` with the math attention kernel (so that attention's matmuls are counted on every device)."""
    bb = model.backbone
    x = _audio(window_s, model.sample_rate)[None].to(device)
    with torch.inference_mode():
        tokens = bb.tokenize(bb.frontend(x))
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            out = bb.encode(tokens)
            model.head.project(model.head.pool(out))
    return int(counter.get_total_flops())


def gpu_figures(
    backbones: Sequence[str] = FULL,
    *,
    window_s: float = 10.0,
    hop_s: float = 0.5,
    device: str = "cuda",
    dtype: torch.dtype | None = torch.bfloat16,
    start_sessions: int = 8,
    max_sessions: int = 1024,
    rounds: int = 5,
    memory_fraction: float = 0.8,
    budget_s: float = 420.0,
    peak_tflops: float | None = PEAK_TFLOPS_BF16,
) -> dict[str, Any]:
    """Real-time streams per device for each backbone: N sessions doubling from ``start_sessions`` until
    ``max_sessions``, ``memory_fraction`` of the device's memory, or ``budget_s`` seconds in all.

    Returns ``{"rows": [...], "best": {backbone: row}}``; a row holds sessions, hops/s, streams, round latency
    (median and max over ``rounds``), the naive re-run of the same N windows in one batch (its round time and
    the cached engine's speed-up over it), peak memory, encoder GFLOP per hop, achieved TFLOP/s and its fraction of
    ``peak_tflops``. With ``device="cpu"`` and tiny configs this is a dry run of the same code.
    """
    dev = torch.device(device)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in backbones:
        model = _model(name, dev)
        flops = encoder_flops_per_hop(model, window_s, dev)
        n = start_sessions
        while n <= max_sessions and time.perf_counter() - started < budget_s:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                driver = _EngineDriver(model, n, window_s, hop_s, device=dev, dtype=dtype, max_batch=n)
                times = []
                for _ in range(rounds + 1):
                    _sync(dev)
                    t0 = time.perf_counter()
                    driver()
                    _sync(dev)
                    times.append(time.perf_counter() - t0)
            except torch.OutOfMemoryError:
                rows.append({"backbone": name, "sessions": n, "out_of_memory": True})
                break
            median = statistics.median(times[1:])
            hops_per_s = n / median
            naive = _NaiveDriver(model, n, window_s, hop_s, dev)
            naive_times = []
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                for _ in range(rounds + 1):
                    _sync(dev)
                    t0 = time.perf_counter()
                    naive()
                    _sync(dev)
                    naive_times.append(time.perf_counter() - t0)
            naive_median = statistics.median(naive_times[1:])
            row = {
                "backbone": name,
                "sessions": n,
                "hops_per_s": hops_per_s,
                "streams": hops_per_s * hop_s,
                "round_ms_median": 1000 * median,
                "round_ms_max": 1000 * max(times[1:]),
                "real_time": median <= hop_s,
                "naive_round_ms_median": 1000 * naive_median,
                "cached_vs_naive": naive_median / median,
                "state_bytes_per_session": driver.state_bytes(),
                "encoder_gflop_per_hop": flops / 1e9,
                "achieved_tflops": hops_per_s * flops / 1e12,
                "fraction_of_peak": hops_per_s * flops / 1e12 / peak_tflops if peak_tflops else None,
            }
            if dev.type == "cuda":
                peak = torch.cuda.max_memory_allocated(dev)
                row["peak_memory_gb"] = peak / 1e9
            rows.append(row)
            print(_gpu_line(row))
            del driver
            if (
                dev.type == "cuda"
                and 2 * peak > memory_fraction * torch.cuda.get_device_properties(dev).total_memory
            ):
                break  # twice the sessions would pass the memory limit
            n *= 2
        del model
    best = {}
    for r in rows:
        if (
            "streams" in r
            and r["real_time"]
            and r["streams"] > best.get(r["backbone"], {}).get("streams", 0.0)
        ):
            best[r["backbone"]] = r
    return {"rows": rows, "best": best}


def _gpu_line(row: dict[str, Any]) -> str:
    return (
        f"{row['backbone']:<22} {row['sessions']:>5} {row['hops_per_s']:>10.1f} {row['streams']:>9.1f} "
        f"{row['round_ms_median']:>9.1f} {row['cached_vs_naive']:>7.2f}x "
        + ("" if row["fraction_of_peak"] is None else f"{row['fraction_of_peak']:>7.3f}")
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbones",
        default="",
        help=f"comma-separated registered names (default: {','.join(TINY)}; --full or --gpu: {','.join(FULL)})",
    )
    parser.add_argument(
        "--full", action="store_true", help="CPU: the full-size architectures (random weights)"
    )
    parser.add_argument("--window", type=float, default=10.0, help="window length W in seconds")
    parser.add_argument("--hop", type=float, default=0.5, help="hop H in seconds")
    parser.add_argument("--sessions", default="1,8,64", help="CPU: comma-separated session counts")
    parser.add_argument(
        "--cnn14-hops", default="0.32,0.64", help="CPU: extra hops for CNN14's activation cache"
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--gpu", action="store_true", help="the GPU figures (full-size backbones, bf16)")
    parser.add_argument(
        "--dry-run", action="store_true", help="with --gpu: tiny configs on the CPU, in seconds"
    )
    parser.add_argument("--max-sessions", type=int, default=1024, help="--gpu: the most sessions tried")
    parser.add_argument(
        "--peak-tflops", type=float, default=PEAK_TFLOPS_BF16, help="--gpu: the device's peak"
    )
    parser.add_argument("--budget", type=float, default=420.0, help="--gpu: seconds for all backbones")


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    full = args.full or (args.gpu and not args.dry_run)
    names = [n for n in args.backbones.split(",") if n] or list(FULL if full else TINY)
    if args.gpu:
        dry = args.dry_run
        payload = gpu_figures(
            names,
            window_s=args.window,
            hop_s=args.hop,
            device="cpu" if dry else "cuda",
            dtype=None if dry else torch.bfloat16,
            start_sessions=1 if dry else 8,
            max_sessions=2 if dry else args.max_sessions,
            rounds=2 if dry else 5,
            budget_s=args.budget,
            peak_tflops=args.peak_tflops,
        )
        payload["notes"] = [
            "hops_per_s = sessions / median round time; streams = hops_per_s x hop; encoder FLOPs of one hop "
            "(encode + head on one window, FlopCounterMode, math attention), fraction of peak = achieved / "
            f"{args.peak_tflops} TFLOP/s; bf16 autocast; random weights"
            + ("; DRY RUN on CPU with tiny configs" if dry else "")
        ]
        name = "streaming-dryrun" if dry else "streaming"
    else:
        print(
            f"{'backbone':<20} {'variant':<12} {'N':>4} {'hop':>5} {'hops/s':>10} {'streams':>9} {'p50 ms':>9} "
            f"{'p99 ms':>9} {'MB/sess':>8} {'vs (a)':>7}"
        )
        payload = {"results": [row for name in names for row in cpu_rows(name, args)]}
        payload["notes"] = [__doc__.split("\n\n")[1].strip(), __doc__.split("\n\n")[2].strip()]
        name = "streaming-full" if args.full else "streaming"
    payload["config"] = {
        **{k: getattr(args, k) for k in ("window", "hop", "sessions", "repeats", "warmup", "threads")},
        "backbones": names,
    }
    print(f"wrote {write_result(name, payload, args.out)}")
    return payload


if __name__ == "__main__":
    import sys

    from eval.speed import main

    sys.exit(main(["streaming", *sys.argv[1:]]))
