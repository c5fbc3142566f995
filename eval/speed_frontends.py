"""Front-end speed: our batched front-ends against their reference implementations run item by item.

Each case times one call of ours on a batch of clips and the reference on the same clips one at a time (how the
originals are used), interleaved in one process, and records the parity error on that batch:

- ``kaldi_ast``: KaldiFbank vs torchaudio ``kaldi.fbank`` + padding to 1024 frames + AST normalisation;
- ``passt``: PasstMel vs hear21passt ``AugmentMelSTFT`` (eval);
- ``panns_32k`` / ``panns_16k``: PannsLogMel (default ``dft="matrix"``, PANNs-exact conv-DFT) vs torchlibrosa
  ``Spectrogram`` + ``LogmelFilterBank``;
- ``panns_32k_fft`` / ``panns_16k_fft``: PannsLogMel with ``dft="fft"`` (faster, parity only above -30 dB);
- ``panns_32k_official``: PannsLogMel with the checkpoint's conv-DFT and mel tensors vs torchlibrosa.

The references are built by :mod:`eval.references` (test/benchmark-only dependencies, never imported by the
library).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from backbones.frontends import KaldiFbank, PannsLogMel, PasstMel
from eval import references
from eval.timing import time_interleaved, write_result

Case = tuple[nn.Module, Callable[[Tensor], Tensor]]


def _music(batch: int, n: int, sample_rate: int) -> Tensor:
    """Random notes plus clicks; the same recipe as the tests' signals, without importing the test package."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n) / sample_rate
    out = torch.zeros(batch, n)
    for b in range(batch):
        for _ in range(12):
            f = 440.0 * 2 ** ((40 + float(torch.randint(0, 40, (1,), generator=g)) - 69) / 12)
            onset = float(torch.rand(1, generator=g)) * n / sample_rate * 0.9
            env = torch.where(t >= onset, torch.exp(-(t - onset) * 3.0), torch.zeros(()))
            for h in range(1, 6):
                out[b] += 0.08 / h * env * torch.sin(2 * torch.pi * f * h * (t - onset))
        out[b, torch.randint(0, n, (12,), generator=g)] += 0.5
    return out.clamp(-1, 1)


def _kaldi_case() -> Case:
    return KaldiFbank(), references.kaldi_fbank


def _passt_case() -> Case:
    ref = references.passt_mel()
    return PasstMel(), lambda x: torch.cat([ref(item[None]) for item in x])


def _panns_case(
    sample_rate: int, n_fft: int, hop: int, f_max: float, dft: str, official: bool = False
) -> Case:
    settings = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, f_max=f_max)
    ref = references.TorchlibrosaLogmel(**settings)
    ours = PannsLogMel(**settings, dft=dft)
    if official:
        ours.use_official_tensors(*ref.stored_tensors())
    return ours, lambda x: torch.cat([ref(item[None]) for item in x])


CASES: dict[str, Callable[[], Case]] = {
    "kaldi_ast": _kaldi_case,
    "passt": _passt_case,
    "panns_32k": lambda: _panns_case(32000, 1024, 320, 14000.0, "matrix"),
    "panns_32k_fft": lambda: _panns_case(32000, 1024, 320, 14000.0, "fft"),
    "panns_32k_official": lambda: _panns_case(32000, 1024, 320, 14000.0, "matrix", official=True),
    "panns_16k": lambda: _panns_case(16000, 512, 160, 8000.0, "matrix"),
    "panns_16k_fft": lambda: _panns_case(16000, 512, 160, 8000.0, "fft"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}"
    )
    parser.add_argument("--batch", type=int, default=16, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    names = [n for n in args.cases.split(",") if n]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {list(CASES)}")
    fns: dict[str, Callable[[], Any]] = {}
    parity: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the references' deprecation warnings
        for name in names:
            ours, reference = CASES[name]()
            ours = ours.eval().to(args.device)
            x = _music(args.batch, int(args.seconds * ours.sample_rate), ours.sample_rate).to(args.device)
            with torch.inference_mode():
                parity[name] = float((ours(x) - reference(x)).abs().max())
            fns[f"{name}/ours"] = lambda m=ours, x=x: m(x)
            fns[f"{name}/reference"] = lambda r=reference, x=x: r(x)
        timings = time_interleaved(fns, repeats=args.repeats, warmup=args.warmup)
    rows = []
    print(f"{'front-end':<20} {'ours ms':>9} {'ref ms':>9} {'ref/ours':>9} {'max |diff|':>11}")
    for name in names:
        ours_s, ref_s = timings[f"{name}/ours"]["median_s"], timings[f"{name}/reference"]["median_s"]
        rows.append(
            {
                "case": name,
                "ours_median_s": ours_s,
                "reference_median_s": ref_s,
                "speedup": ref_s / ours_s,
                "max_abs_diff": parity[name],
                "ours": timings[f"{name}/ours"],
                "reference": timings[f"{name}/reference"],
            }
        )
        print(f"{name:<20} {ours_s * 1e3:9.1f} {ref_s * 1e3:9.1f} {ref_s / ours_s:9.2f} {parity[name]:11.2e}")
    payload = {
        "config": {
            k: getattr(args, k) for k in ("batch", "seconds", "threads", "repeats", "warmup", "device")
        },
        "results": rows,
    }
    print(f"wrote {write_result('frontends', payload, args.out)}")
    return payload
