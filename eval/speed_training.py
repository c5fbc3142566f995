"""Training-step speed and memory: full fine-tune vs LoRA (r=8) vs linear probe, per backbone.

One step = forward + loss + backward + AdamW step on a batch of ``--batch`` clips of ``--seconds`` seconds
(bf16 autocast on CUDA). Tiny configs on CPU by default; ``--full`` for the released architectures (random
weights). Memory: on CUDA the peak allocated during a step (``torch.cuda.max_memory_allocated``); on CPU the
peak resident set size during one step minus the resident set before it (Linux ``VmHWM`` after resetting it;
``ru_maxrss`` growth elsewhere), measured in a fresh process per case so that memory freed by earlier cases
cannot hide it. With AST, ``--hf-trainer`` also times a Hugging Face ``Trainer`` step of
``ASTForAudioClassification`` (same architecture, same precomputed features, same batch size) against ours.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from backbones import build_backbone
from finetune import AudioModel, build_model, param_groups

from . import references
from .timing import time_interleaved, write_result

TINY = ("ast.tiny", "passt_s.tiny", "cnn14.tiny")
FULL = ("ast.audioset", "passt_s.audioset_swa", "cnn14.audioset_32k")
MODES: dict[str, dict[str, Any]] = {
    "full": {"freeze": "none"},
    "lora": {"lora": {"r": 8}, "freeze": "lora"},
    "probe": {"freeze": "backbone"},
}
NUM_CLASSES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbones", default=None, help="comma-separated names (default: the three families)"
    )
    parser.add_argument(
        "--full", action="store_true", help="full-size architectures instead of the tiny ones"
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--hf-trainer", action="store_true", help="AST only: also time a transformers Trainer step"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _case(
    name: str, mode: str, batch: int, seconds: float, device: torch.device
) -> tuple[AudioModel, Callable]:
    """A model in train mode and a function running one optimizer step on a fixed batch."""
    torch.manual_seed(0)
    model = build_model(build_backbone(name), head="linear", num_outputs=NUM_CLASSES, **MODES[mode])
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-4, weight_decay=0.05))
    g = torch.Generator().manual_seed(1)
    wave = (torch.randn(batch, int(seconds * model.sample_rate), generator=g) * 0.1).to(device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)

    def step() -> None:
        with torch.inference_mode(False), torch.enable_grad(), _autocast(device):
            loss = model(wave, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def _step_memory_mib(name: str, mode: str, batch: int, seconds: float, threads: int | None) -> float:
    """Extra memory one training step needs (MiB); runs in the calling process (see ``_memory``)."""
    if threads:
        torch.set_num_threads(threads)
    device = _device()
    _, step = _case(name, mode, batch, seconds, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resting = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - resting) / 2**20
    if _reset_peak_rss():  # Linux: peak RSS since the reset, minus the resident set before the step
        before = _proc_status_kib("VmRSS")
        step()
        return (_proc_status_kib("VmHWM") - before) / 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # elsewhere: growth of the lifetime peak
    step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # ru_maxrss is in KiB


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory(name: str, mode: str, args: argparse.Namespace) -> float:
    """Measure :func:`_step_memory_mib` in a fresh process on CPU (the peak RSS never goes down)."""
    call = (name, mode, args.batch, args.seconds, args.threads)
    if _device().type == "cuda":
        return _step_memory_mib(*call)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_step_memory_mib, call)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _hf_trainer_comparison(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Median step time of transformers' Trainer + ASTForAudioClassification vs ours, on the same features."""
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device = _device()
    model, _ = _case(name, "full", args.batch, args.seconds, device)
    g = torch.Generator().manual_seed(1)
    wave = (torch.randn(args.batch, int(args.seconds * model.sample_rate), generator=g) * 0.1).to(device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch,), generator=g).to(device)
    with torch.no_grad():
        features = model.compute_features(wave)  # [B, n_mels, T]; transformers takes [B, T, n_mels]
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-4, weight_decay=0.05))

    def ours() -> None:
        with torch.inference_mode(False), torch.enable_grad(), _autocast(device):
            loss = model(features=features, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    steps = args.warmup + args.repeats

    class Repeated(Dataset):
        def __len__(self) -> int:
            return args.batch * steps

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            j = i % args.batch
            return {"input_values": features[j].T.cpu(), "labels": labels[j].cpu()}

    class InterleavedTimer(TrainerCallback):
        """Times each Trainer step (on_step_begin -> on_step_end), then one of our steps right after it."""

        def __init__(self) -> None:
            self.hf: list[float] = []
            self.ours: list[float] = []
            self.t0 = 0.0

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            _sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            _sync(device)
            self.hf.append(time.perf_counter() - self.t0)
            t0 = time.perf_counter()
            ours()
            _sync(device)
            self.ours.append(time.perf_counter() - t0)

    torch.manual_seed(0)
    hf_model = references.ast_model(model.backbone.pretrained_cfg.arch, num_labels=NUM_CLASSES)
    timer = InterleavedTimer()
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch, max_steps=steps, learning_rate=1e-4,
            weight_decay=0.05, max_grad_norm=0.0, report_to=[], save_strategy="no", logging_strategy="no",
            disable_tqdm=True, use_cpu=device.type != "cuda", bf16=device.type == "cuda",
            dataloader_num_workers=0, seed=0,
        )  # fmt: skip
        Trainer(model=hf_model, args=training_args, train_dataset=Repeated(), callbacks=[timer]).train()
    hf_median = statistics.median(timer.hf[args.warmup :])
    ours_median = statistics.median(timer.ours[args.warmup :])
    return {
        "backbone": name,
        "input": "the same precomputed fbank features and labels, same batch size, AdamW, no gradient clipping",
        "ours_step_s": ours_median,
        "hf_trainer_step_s": hf_median,
        "ours_clips_per_s": args.batch / ours_median,
        "hf_trainer_clips_per_s": args.batch / hf_median,
        "hf_over_ours_time": hf_median / ours_median,
        "note": "steps interleaved (one Trainer step, then one of ours); the Trainer step is timed from "
        "on_step_begin to on_step_end, so its data loading is excluded, like ours (batch already in memory)",
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = args.backbones.split(",") if args.backbones else list(FULL if args.full else TINY)
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    device = _device()
    with _threads(args.threads):  # the machine description written below records the thread count too
        rows, hf = _measure(names, modes, args, device)
        return _report(rows, hf, args, device)


def _measure(
    names: list[str], modes: list[str], args: argparse.Namespace, device: torch.device
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    hf: list[dict[str, Any]] = []
    for name in names:
        cases = {mode: _case(name, mode, args.batch, args.seconds, device) for mode in modes}
        timings = time_interleaved({m: step for m, (_, step) in cases.items()}, args.repeats, args.warmup)
        for mode, (model, _) in cases.items():
            median = timings[mode]["median_s"]
            rows.append({
                "backbone": name, "mode": mode, "step_median_s": median, "step_min_s": timings[mode]["min_s"],
                "clips_per_s": args.batch / median,
                "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "total_params": sum(p.numel() for p in model.parameters()),
                "step_memory_mib": None if args.no_memory else _memory(name, mode, args),
            })  # fmt: skip
        del cases
        if args.hf_trainer and name.startswith("ast."):
            hf.append(_hf_trainer_comparison(name, args))
    return rows, hf


def _report(
    rows: list[dict[str, Any]], hf: list[dict[str, Any]], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    print(f"training step, batch {args.batch} x {args.seconds:g} s, device {device.type}")
    print(f"{'backbone':<22}{'mode':<7}{'step s':>9}{'clips/s':>9}{'trainable':>12}{'mem MiB':>9}")
    for r in rows:
        mem = "-" if r["step_memory_mib"] is None else f"{r['step_memory_mib']:.0f}"
        print(
            f"{r['backbone']:<22}{r['mode']:<7}{r['step_median_s']:>9.3f}{r['clips_per_s']:>9.2f}"
            f"{r['trainable_params']:>12,}{mem:>9}"
        )
    for h in hf:
        print(
            f"{h['backbone']}: ours {h['ours_clips_per_s']:.2f} clips/s vs HF Trainer "
            f"{h['hf_trainer_clips_per_s']:.2f} clips/s (HF step takes {h['hf_over_ours_time']:.2f}x ours)"
        )
    payload = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "autocast": "bf16" if device.type == "cuda" else "none (fp32)",
        "memory_method": "cuda max_memory_allocated over a step"
        if device.type == "cuda"
        else "peak RSS during one step minus RSS before it (VmHWM reset), fresh process per case",
        "results": rows,
        "hf_trainer": hf,
    }
    path = write_result("training-full" if args.full else "training", payload, out_dir=args.out)
    print(f"wrote {path}")
    return payload
