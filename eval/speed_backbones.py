"""Backbone speed: a whole forward pass (waveform in, front-end included) of our adapters against their reference
implementations, per clip, at several batch sizes, interleaved in one process.

References (built by :mod:`eval.references`; test/benchmark-only dependencies, never imported by the library):

- ``ast.*``: transformers ``ASTFeatureExtractor`` (Kaldi fbank per clip) + ``ASTForAudioClassification`` (SDPA);
- ``passt_s.audioset_swa``: hear21passt ``AugmentMelSTFT`` + ``get_model("passt_s_swa_p16_128_ap476")``;
- ``cnn14.*``: panns_inference ``Cnn14`` with the checkpoint's front-end settings.

Both sides are full-size, random init, fp32, eval mode; the timings do not depend on the weights' values
(the tests check parity on shared weights). Names without a reference, or not registered, are skipped with a note.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from backbones import PretrainedCfg, build_backbone, get_pretrained_cfg, list_backbones
from eval import references
from eval.timing import time_interleaved, write_result

Reference = Callable[[Tensor], Any]


def _ast_reference(cfg: PretrainedCfg) -> Reference:
    model = references.ast_model(cfg.arch, num_labels=cfg.num_classes)
    fe = cfg.frontend
    extractor = references.ast_feature_extractor(
        cfg.sample_rate, fe["n_mels"], fe["target_frames"], fe["norm_mean"], fe["norm_std"]
    )

    def run(x: Tensor) -> Tensor:
        feats = extractor(list(x.numpy()), sampling_rate=cfg.sample_rate, return_tensors="pt").input_values
        return model(feats).logits

    return run


def _passt_reference(cfg: PretrainedCfg) -> Reference:
    arch, fe = cfg.arch, cfg.frontend
    mel = references.passt_mel(
        hop_length=fe["hop_length"],
        n_mels=fe["n_mels"],
        sample_rate=cfg.sample_rate,
        win_length=fe["win_length"],
        n_fft=fe["n_fft"],
        f_min=fe["f_min"],
        fmin_aug_range=fe["fmin_aug_range"],
        fmax_aug_range=fe["fmax_aug_range"],
    )
    net = references.passt_model(
        "passt_s_swa_p16_128_ap476",
        input_tdim=arch["input_tdim"],
        stride=arch["stride"],
        num_classes=cfg.num_classes,
    )

    def run(x: Tensor) -> Tensor:
        with references.quiet():
            return net(mel(x).unsqueeze(1))[0]

    return run


def _cnn14_reference(cfg: PretrainedCfg) -> Reference:
    fe = cfg.frontend
    model = references.panns_cnn14(
        cfg.sample_rate,
        fe["n_fft"],
        fe["hop_length"],
        fe["f_max"],
        fe["n_mels"],
        fe["f_min"],
        cfg.num_classes,
    )
    return lambda x: model(x)["embedding"]


REFERENCES: dict[str, Callable[[PretrainedCfg], Reference]] = {
    "ast.audioset": _ast_reference,
    "passt_s.audioset_swa": _passt_reference,
    "cnn14.audioset_32k": _cnn14_reference,
    "cnn14.audioset_16k": _cnn14_reference,
}
DEFAULT = ("ast.audioset", "passt_s.audioset_swa", "cnn14.audioset_32k")


def _music(batch: int, n: int, sample_rate: int) -> Tensor:
    """Noise-free tonal clips with clicks (the timing does not depend on content; this keeps it realistic)."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n) / sample_rate
    f = 110.0 * 2 ** (torch.randint(0, 36, (batch, 1), generator=g) / 12)
    x = 0.3 * torch.sin(2 * torch.pi * f * t) * torch.exp(-(t % 0.5) * 4)
    x[:, torch.randint(0, n, (12,), generator=g)] += 0.5
    return x.clamp(-1, 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbones", default=",".join(DEFAULT), help=f"comma-separated subset of {list(REFERENCES)}"
    )
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)


def _select(names: list[str]) -> tuple[list[str], list[str]]:
    """The names that can be timed, and a note for each one that cannot."""
    registered = set(list_backbones())
    usable = [n for n in names if n in registered and n in REFERENCES]
    notes = [
        f"skipped {n}: " + ("not registered" if n not in registered else "no reference implementation here")
        for n in names
        if n not in usable
    ]
    return usable, notes


def _time_backbone(name: str, batches: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Interleaved timings of ours and the reference for one backbone at every batch size."""
    cfg = get_pretrained_cfg(name)
    torch.manual_seed(0)
    ours = build_backbone(name).eval()
    with references.quiet():
        reference = REFERENCES[name](cfg)
    fns: dict[str, Callable[[], Any]] = {}
    for b in batches:
        x = _music(b, int(args.seconds * cfg.sample_rate), cfg.sample_rate)
        fns[f"ours/{b}"] = lambda x=x: ours(x)
        fns[f"reference/{b}"] = lambda x=x: reference(x)
    timings = time_interleaved(fns, repeats=args.repeats, warmup=args.warmup)
    rows = []
    for b in batches:
        ours_t, ref_t = timings[f"ours/{b}"], timings[f"reference/{b}"]
        per_clip_ours, per_clip_ref = ours_t["median_s"] / b, ref_t["median_s"] / b
        rows.append(
            {
                "backbone": name,
                "batch": b,
                "ours_s_per_clip": per_clip_ours,
                "reference_s_per_clip": per_clip_ref,
                "speedup": per_clip_ref / per_clip_ours,
                "ours": ours_t,
                "reference": ref_t,
            }
        )
        print(
            f"{name:<22} {b:>5} {per_clip_ours:12.3f} {per_clip_ref:11.3f} {per_clip_ref / per_clip_ours:9.2f}"
        )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",") if b]
    names, notes = _select([n for n in args.backbones.split(",") if n])
    for note in notes:
        print(note)
    print(f"{'backbone':<22} {'batch':>5} {'ours s/clip':>12} {'ref s/clip':>11} {'ref/ours':>9}")
    rows = [row for name in names for row in _time_backbone(name, batches, args)]
    config = {
        k: getattr(args, k) for k in ("backbones", "batches", "seconds", "threads", "repeats", "warmup")
    }
    payload = {"config": config, "notes": notes, "results": rows}
    print(f"wrote {write_result('backbones', payload, args.out)}")
    return payload
