"""Honest timing for the speed benchmarks: warm-up, interleaved repeats, medians, and a machine description."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

__all__ = ["time_interleaved", "machine_info", "write_result", "RESULTS_DIR"]

RESULTS_DIR = Path("bench/results")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]], repeats: int = 7, warmup: int = 2
) -> dict[str, dict]:
    """Time several callables round-robin (A, B, A, B, ...) so that machine load hits all of them alike.

    Returns per name: ``median_s``, ``min_s``, ``max_s`` and the raw ``samples_s``.
    """
    samples: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                _sync()
                t0 = time.perf_counter()
                fn()
                _sync()
                samples[name].append(time.perf_counter() - t0)
    return {
        k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "samples_s": v}
        for k, v in samples.items()
    }


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": "cpu",
    }
    with contextlib.suppress(OSError):
        info["load_avg_1m"] = os.getloadavg()[0]
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def write_result(
    name: str, payload: dict[str, Any], out_dir: Path | None = None, suffix: str | None = None
) -> Path:
    """Write ``payload`` plus the machine description as ``<out_dir>/<name>-<suffix>.json`` (the suffix is the
    device kind, ``cpu`` or ``cuda``, unless given)."""
    out_dir = Path(out_dir or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    device = suffix or ("cuda" if machine["device"] != "cpu" else "cpu")
    path = out_dir / f"{name}-{device}.json"
    payload = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
