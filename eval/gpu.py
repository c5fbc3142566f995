"""Every GPU figure in one call: ``python -m eval.gpu [--parts ...] [--out bench/results] [--dry-run]``.

GPU time is scarce, so this script is prepared and tested on CPU (``--dry-run``: tiny configs, tiny batches, a
few seconds) and run once where a GPU is lent. Each part runs in its own process with its own time limit, so a
crash, an out-of-memory error or a slow compile in one part still leaves the other parts' JSON; the whole run is
sized to stay under 8 minutes on one H100/H200. Every JSON (``bench/results/<part>-gpu.json``) names the GPU,
its driver, torch and CUDA versions and the peak bf16 FLOP rate used for the utilisation figures.

Parts:

- ``training``: full-size AST, PaSST and CNN14 (random weights), bf16 autocast, batch 32 x 10 s, full fine-tune
  and LoRA: clips/s, peak memory, forward+backward FLOPs per clip (``FlopCounterMode``, attention counted through
  the math kernel) and the fraction of the peak FLOP rate; transformers' ``Trainer`` + ``ASTForAudioClassification``
  on the same features and batch as the baseline.
- ``compile``: the same training step under ``torch.compile``, reported separately (compilation time too).
- ``patchout``: PaSST training clips/s with structured patchout (40 time columns, 4 frequency rows, as in its
  AudioSet training) and without.
- ``frontends``: clips/s of each front-end on the GPU (one batch of 256 x 10 s) against its CPU reference run
  clip by clip, with the parity error.
- ``streaming``: the streaming engine's GPU figures (real-time streams per GPU, hop latency, utilisation), from
  :mod:`eval.speed_streaming`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .timing import machine_info, time_interleaved, write_result

__all__ = ["PARTS", "PEAK_BF16_TFLOPS", "gpu_info", "main"]

# Dense bf16 tensor-core peaks from the vendors' spec sheets (TFLOP/s), matched by substring of the device name;
# ``--peak-tflops`` overrides. The H100/H200 SXM figure is 989.4 (the PCIe H100's 756).
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.4,
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10": 125.0,
}
FULL = ("ast.audioset", "passt_s.audioset_swa", "cnn14.audioset_32k")
TINY = ("ast.tiny", "passt_s.tiny", "cnn14.tiny")


def gpu_info(peak_override: float | None = None) -> dict[str, Any]:
    """The device, its driver and the peak bf16 FLOP rate the utilisation figures divide by."""
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        return {**info, "device": "cpu", "peak_bf16_tflops": peak_override, "peak_source": "none (CPU)"}
    name = torch.cuda.get_device_name(0)
    info["device"] = name
    info["memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["driver"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    peak, source = peak_override, "--peak-tflops"
    if peak is None:
        match = next((k for k in PEAK_BF16_TFLOPS if k in name), None)
        peak, source = (PEAK_BF16_TFLOPS[match], f"spec sheet ({match})") if match else (None, "unknown GPU")
    return {**info, "peak_bf16_tflops": peak, "peak_source": source}


@contextlib.contextmanager
def _math_attention() -> Iterator[None]:
    """Route scaled-dot-product attention through the math kernel, whose matmuls the FLOP counter sees."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (forward + backward for a training step), at 2 FLOPs per multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with _math_attention(), counter:
        step()
    return int(counter.get_total_flops())


def _utilisation(flops_per_step: int, step_s: float, peak_tflops: float | None) -> float | None:
    return None if not peak_tflops else flops_per_step / step_s / (peak_tflops * 1e12)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        return {"names": TINY, "batch": 2, "seconds": 1.0, "repeats": 1, "warmup": 0, "fe_batch": 4}
    return {"names": FULL, "batch": 32, "seconds": 10.0, "repeats": 5, "warmup": 2, "fe_batch": 256}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _peak_memory_mib(fn: Callable[[], None]) -> float | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _training(args: argparse.Namespace, modes: tuple[str, ...], compiled: bool = False) -> dict[str, Any]:
    from . import speed_training

    s, device, peak = _settings(args), _device(), gpu_info(args.peak_tflops)["peak_bf16_tflops"]
    rows = []
    for name in s["names"]:
        for mode in modes:
            model, step = speed_training._case(name, mode, s["batch"], s["seconds"], device)
            flops = count_flops(step)
            compile_s = None
            if compiled:
                t0 = time.perf_counter()
                backend = (
                    "eager" if args.dry_run else args.compile_backend
                )  # the dry run checks the wiring only
                model.forward = torch.compile(model.forward, backend=backend)  # type: ignore[method-assign]
                step()  # the first call compiles
                compile_s = time.perf_counter() - t0
            timing = time_interleaved({"step": step}, repeats=s["repeats"], warmup=s["warmup"])["step"]
            median = timing["median_s"]
            rows.append(
                {
                    "backbone": name,
                    "mode": mode,
                    "compiled": compiled,
                    "compile_s": compile_s,
                    "step_median_s": median,
                    "clips_per_s": s["batch"] / median,
                    "flops_per_clip": flops / s["batch"],
                    "peak_fraction": _utilisation(flops, median, peak),
                    "peak_memory_mib": _peak_memory_mib(step),
                }
            )
            del model, step
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return {
        "settings": {k: v for k, v in s.items() if k != "names"},
        "autocast": "bf16 on CUDA",
        "results": rows,
    }


def part_training(args: argparse.Namespace) -> dict[str, Any]:
    """Full fine-tune and LoRA steps of each backbone, and the Hugging Face Trainer baseline for AST."""
    from . import speed_training

    payload = _training(args, ("full", "lora"))
    s = _settings(args)
    hf_args = argparse.Namespace(
        batch=s["batch"], seconds=s["seconds"], warmup=max(1, s["warmup"]), repeats=s["repeats"]
    )
    payload["hf_trainer"] = [speed_training._hf_trainer_comparison(s["names"][0], hf_args)]
    return payload


def part_compile(args: argparse.Namespace) -> dict[str, Any]:
    """The full fine-tune step under ``torch.compile`` (``--compile-backend``, inductor by default)."""
    payload = _training(args, ("full",), compiled=True)
    payload["compile_backend"] = args.compile_backend
    return payload


def part_patchout(args: argparse.Namespace) -> dict[str, Any]:
    """PaSST training clips/s with and without structured patchout."""
    from backbones import build_backbone, get_pretrained_cfg
    from finetune import build_model, param_groups

    s, device, peak = _settings(args), _device(), gpu_info(args.peak_tflops)["peak_bf16_tflops"]
    name = next(n for n in s["names"] if n.startswith("passt_s."))
    structured = (
        (2, 1) if args.dry_run else get_pretrained_cfg("passt_s.audioset_swa").extra["pretrain_patchout"]
    )
    rows = []
    for patchout in ((0, 0), structured):
        torch.manual_seed(0)
        model = build_model(build_backbone(name, patchout=tuple(patchout)), head="linear", num_outputs=10)
        model = model.to(device).train()
        optimizer = torch.optim.AdamW(param_groups(model, lr=1e-4, weight_decay=0.05))
        wave = (torch.randn(s["batch"], int(s["seconds"] * model.sample_rate)) * 0.1).to(device)
        labels = torch.randint(0, 10, (s["batch"],)).to(device)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda"
            else contextlib.nullcontext()
        )

        def step(model=model, optimizer=optimizer, wave=wave, labels=labels, autocast=autocast) -> None:
            with torch.inference_mode(False), torch.enable_grad(), autocast:
                loss = model(wave, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        flops = count_flops(step)
        median = time_interleaved({"step": step}, repeats=s["repeats"], warmup=s["warmup"])["step"][
            "median_s"
        ]
        rows.append(
            {
                "patchout": list(patchout),
                "step_median_s": median,
                "clips_per_s": s["batch"] / median,
                "flops_per_clip": flops / s["batch"],
                "peak_fraction": _utilisation(flops, median, peak),
            }
        )
    return {
        "backbone": name,
        "settings": {k: v for k, v in s.items() if k != "names"},
        "results": rows,
        "speedup": rows[1]["clips_per_s"] / rows[0]["clips_per_s"],
    }


def part_frontends(args: argparse.Namespace) -> dict[str, Any]:
    """Each front-end on the GPU (one batch) against its CPU reference run clip by clip."""
    from . import speed_frontends

    s, device = _settings(args), _device()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the references' deprecation warnings
        for case in ("kaldi_ast", "passt", "panns_32k", "panns_32k_fft"):
            ours, reference = speed_frontends.CASES[case]()
            ours = ours.eval().to(device)
            x = speed_frontends._music(s["fe_batch"], int(s["seconds"] * ours.sample_rate), ours.sample_rate)
            x_dev = x.to(device)
            with torch.inference_mode():
                diff = float((ours(x_dev).cpu() - reference(x)).abs().max())
            t = time_interleaved(
                {"ours": lambda m=ours, x=x_dev: m(x), "reference": lambda r=reference, x=x: r(x)},
                repeats=max(1, s["repeats"] // 2),
                warmup=min(1, s["warmup"]),
            )
            rows.append(
                {
                    "case": case,
                    "ours_device": device.type,
                    "ours_clips_per_s": s["fe_batch"] / t["ours"]["median_s"],
                    "reference_cpu_clips_per_s": s["fe_batch"] / t["reference"]["median_s"],
                    "speedup": t["reference"]["median_s"] / t["ours"]["median_s"],
                    "max_abs_diff": diff,
                }
            )
    return {
        "settings": {"batch": s["fe_batch"], "seconds": s["seconds"]},
        "cpu_threads": torch.get_num_threads(),
        "results": rows,
    }


def part_streaming(args: argparse.Namespace) -> dict[str, Any]:
    """The streaming engine's GPU figures (see :mod:`eval.speed_streaming`)."""
    from . import speed_streaming

    peak = gpu_info(args.peak_tflops)["peak_bf16_tflops"]
    if args.dry_run:  # the same code on tiny configs, a few sessions, on whatever device is here
        device = "cuda" if torch.cuda.is_available() else "cpu"
        figures = speed_streaming.gpu_figures(
            speed_streaming.TINY, device=device, dtype=None, start_sessions=2, max_sessions=4, rounds=1,
            budget_s=30.0, peak_tflops=peak,
        )  # fmt: skip
    else:
        figures = speed_streaming.gpu_figures(budget_s=100.0, rounds=10, peak_tflops=peak)
    return {"results": figures}


# part -> (function, time limit in seconds on the GPU)
PARTS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], int]] = {
    "training": (part_training, 150),
    "patchout": (part_patchout, 45),
    "frontends": (part_frontends, 60),
    "streaming": (part_streaming, 120),
    "compile": (part_compile, 150),
}


def run_part(name: str, args: argparse.Namespace) -> Path:
    """Run one part in this process and write its JSON."""
    fn, _ = PARTS[name]
    t0 = time.perf_counter()
    payload = fn(args)
    payload = {"part": name, "gpu": gpu_info(args.peak_tflops), "wall_s": time.perf_counter() - t0, **payload}
    suffix = "cpu-dryrun" if args.dry_run else ("gpu" if torch.cuda.is_available() else "cpu")
    return write_result(name, payload, Path(args.out), suffix=suffix)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    p.add_argument("--out", default="bench/results", help="directory for the JSON files")
    p.add_argument("--dry-run", action="store_true", help="tiny configs and batches, any device (seconds)")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s for utilisation figures"
    )
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend for the compile part")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every part's time limit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.part:
        print(f"wrote {run_part(args.part, args)}")
        return 0
    names = [n for n in args.parts.split(",") if n]
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        print(f"unknown parts {unknown}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    print(json.dumps(gpu_info(args.peak_tflops)) if torch.cuda.is_available() else json.dumps(machine_info()))
    status: dict[str, str] = {}
    for name in names:
        limit = PARTS[name][1] * args.scale * (4 if args.dry_run else 1)
        cmd = [sys.executable, "-m", "eval.gpu", "--part", name, "--out", args.out]
        cmd += ["--compile-backend", args.compile_backend] + (["--dry-run"] if args.dry_run else [])
        cmd += ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, timeout=limit)
            status[name] = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status[name] = f"timed out after {limit:.0f} s"
        print(f"== {name}: {status[name]} in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0 if all(v == "ok" for v in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
