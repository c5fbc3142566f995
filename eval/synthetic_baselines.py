"""How hard are the synthetic data sets? ``python -m eval.synthetic_baselines [--quick]``.

Two baselines per task, trained from scratch on CPU:

- a linear probe (logistic regression for genres, ridge for the 19 piano ratings) on eight global statistics
  of each clip: frame loudness (RMS dB) and spectral centroid, each as mean, std, 10th and 90th percentile;
- a small CNN (four conv blocks, global pooling) on log-mels, trained on random crops.

If the probe came close to the CNN, a style would be identifiable from loudness or brightness alone. Also
measures generation speed (x real time, one thread, interleaved timing). Prints a table and writes
``bench/results/synthetic-baselines-<device>.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from backbones.frontends import PannsLogMel
from eval.timing import time_interleaved, write_result
from finetune.data.synthetic import (
    GENRES,
    PERCEPIANO_DIMENSIONS,
    piano_ratings,
    render_genre_clip,
    render_piano_clip,
    sample_piano_performance,
    synthetic_genres_splits,
    synthetic_piano,
)


def global_features(waves: Tensor, sample_rate: int) -> np.ndarray:
    """Loudness and centroid statistics per clip.

    Shapes:
        waves ``[B, N]`` -> ``[B, 8]``.
    """
    n_fft, hop = 1024, 512
    spec = torch.stft(waves, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs().square()
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    power = spec.sum(1)  # [B, T]
    loud = 10 * torch.log10(power.clamp(min=1e-10))
    centroid = (spec * freqs[:, None]).sum(1) / power.clamp(min=1e-10)
    stats = []
    for v in (loud, centroid):
        q = torch.quantile(v, torch.tensor([0.1, 0.9]), dim=1)
        stats += [v.mean(1), v.std(1), q[0], q[1]]
    return torch.stack(stats, 1).numpy()


class SmallCNN(nn.Module):
    """Four conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool), mean over frequency, mean+max over time.

    Shapes:
        ``[B, M, T]`` log-mel -> ``[B, out]``.
    """

    def __init__(self, out: int, width: int = 16) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
            for a, b in zip(chans[:-1], chans[1:])
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(2 * chans[-1], out))

    def forward(self, x: Tensor) -> Tensor:
        h = x[:, None]
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.blocks) - 1:
                h = F.max_pool2d(h, 2)
        h = h.mean(2)  # over frequency
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], 1))


def _train_cnn(
    feats: dict[str, Tensor],
    targets: dict[str, Tensor],
    out: int,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    score: Callable[[Tensor, Tensor], float],
    crop_seconds: float,
    args: argparse.Namespace,
) -> tuple[nn.Module, dict[str, float]]:
    """Train on random crops of the training features; keep the epoch with the best validation score."""
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = SmallCNN(out)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, 3e-3, total_steps=args.epochs * math.ceil(len(feats["train"]) / 16)
    )
    crop = min(feats["train"].shape[-1], int(crop_seconds * args.sample_rate / args.hop))
    best, best_state, t0 = -math.inf, None, time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(feats["train"]), generator=g).split(16):
            start = torch.randint(0, feats["train"].shape[-1] - crop + 1, (len(idx),), generator=g)
            x = torch.stack(
                [feats["train"][i, :, s : s + crop] for i, s in zip(idx.tolist(), start.tolist())]
            )
            loss = loss_fn(model(x), targets["train"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            val = score(model(feats["validation"]), targets["validation"])
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return model, {"train_seconds": time.perf_counter() - t0, "best_validation": best}


def _log_mels(waves: Tensor, args: argparse.Namespace) -> Tensor:
    front = PannsLogMel(
        args.sample_rate, n_fft=512, hop_length=args.hop, n_mels=64, f_min=30.0, f_max=args.sample_rate / 2
    )
    with torch.no_grad():
        return torch.cat([front(w) for w in waves.split(32)])


def _normalise(feats: dict[str, Tensor]) -> dict[str, Tensor]:
    mean, std = feats["train"].mean(), feats["train"].std()
    return {k: (v - mean) / std for k, v in feats.items()}


def _pearson(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    p, t = pred - pred.mean(0), true - true.mean(0)
    return (p * t).sum(0) / np.sqrt((p**2).sum(0) * (t**2).sum(0) + 1e-12)


def genre_task(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    splits = synthetic_genres_splits(args.n_per_class, args.seconds, args.sample_rate, args.seed)
    gen_s = time.perf_counter() - t0
    waves = {k: torch.from_numpy(np.stack(ds["audio"])) for k, ds in splits.items()}
    labels = {k: torch.as_tensor(np.asarray(ds["label"])) for k, ds in splits.items()}
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    probe.fit(global_features(waves["train"], args.sample_rate), labels["train"].numpy())
    probe_pred = probe.predict(global_features(waves["test"], args.sample_rate))
    feats = _normalise({k: _log_mels(w, args) for k, w in waves.items()})
    model, info = _train_cnn(
        feats,
        labels,
        len(GENRES),
        F.cross_entropy,
        lambda o, y: float((o.argmax(1) == y).float().mean()),
        args.crop_seconds,
        args,
    )
    with torch.no_grad():
        cnn_pred = model(feats["test"]).argmax(1).numpy()
    y = labels["test"].numpy()
    return {
        "clips": {k: len(v) for k, v in splits.items()},
        "generation_seconds": gen_s,
        "probe": {
            "accuracy": accuracy_score(y, probe_pred),
            "macro_f1": f1_score(y, probe_pred, average="macro"),
        },
        "cnn": {
            "accuracy": accuracy_score(y, cnn_pred),
            "macro_f1": f1_score(y, cnn_pred, average="macro"),
            **info,
        },
        "chance": 1 / len(GENRES),
    }


def piano_task(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds = synthetic_piano(args.piano_n, args.piano_seconds, args.sample_rate, args.seed)
    gen_s = time.perf_counter() - t0
    performers = np.asarray(ds["performer"])
    order = np.random.default_rng(args.seed).permutation(np.unique(performers))
    groups = {"test": order[:5], "validation": order[5:8], "train": order[8:]}
    idx = {k: np.flatnonzero(np.isin(performers, v)) for k, v in groups.items()}
    audio, ratings = np.stack(ds["audio"]), np.stack(ds["ratings"])
    waves = {k: torch.from_numpy(audio[i]) for k, i in idx.items()}
    targets = {k: torch.from_numpy(ratings[i]) for k, i in idx.items()}
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    probe.fit(global_features(waves["train"], args.sample_rate), targets["train"].numpy())
    probe_r = _pearson(
        probe.predict(global_features(waves["test"], args.sample_rate)), targets["test"].numpy()
    )
    feats = _normalise({k: _log_mels(w, args) for k, w in waves.items()})
    model, info = _train_cnn(
        feats,
        targets,
        len(PERCEPIANO_DIMENSIONS),
        lambda o, y: F.mse_loss(torch.sigmoid(o), y),
        lambda o, y: float(np.mean(_pearson(torch.sigmoid(o).numpy(), y.numpy()))),
        args.piano_seconds,  # whole clips: dynamic range and phrasing span the clip
        args,
    )
    with torch.no_grad():
        cnn_r = _pearson(torch.sigmoid(model(feats["test"])).numpy(), targets["test"].numpy())
    return {
        "clips": {k: len(i) for k, i in idx.items()},
        "generation_seconds": gen_s,
        "probe": {
            "mean_pearson_r": float(probe_r.mean()),
            "per_dimension_r": dict(zip(PERCEPIANO_DIMENSIONS, probe_r.tolist())),
        },
        "cnn": {
            "mean_pearson_r": float(cnn_r.mean()),
            "per_dimension_r": dict(zip(PERCEPIANO_DIMENSIONS, cnn_r.tolist())),
            **info,
        },
        "rater_noise_ceiling_r": rater_noise_ceiling(),
    }


def rater_noise_ceiling(n: int = 2000, seed: int = 0) -> float:
    """Mean over dimensions of the Pearson r between noise-free and rater-noisy ratings of random
    performances: what a perfect model of the performance parameters would score."""
    rng = np.random.default_rng(seed)
    perfs = [sample_piano_performance(rng) for _ in range(n)]
    clean = np.stack([piano_ratings(p) for p in perfs])
    noisy = np.stack([piano_ratings(p, rng) for p in perfs])
    return float(_pearson(clean, noisy).mean())


def generation_speed(repeats: int) -> dict[str, Any]:
    """x real time at 32 kHz: one 10 s clip of every genre, and five 8 s piano performances."""
    sr = 32000
    perfs = [sample_piano_performance(np.random.default_rng(i)) for i in range(5)]
    fns = {
        "genres": lambda: [
            render_genre_clip(g, 10.0, sr, np.random.default_rng(i)) for i, g in enumerate(GENRES)
        ],
        "piano": lambda: [
            render_piano_clip(p, 8.0, sr, np.random.default_rng(i)) for i, p in enumerate(perfs)
        ],
    }
    audio_s = {"genres": 10.0 * len(GENRES), "piano": 8.0 * len(perfs)}
    timing = time_interleaved(fns, repeats=repeats, warmup=1)
    cpu = {}
    for k, fn in fns.items():  # CPU time as well: on a shared, loaded machine wall time also counts waiting
        t0 = time.process_time()
        fn()
        cpu[k] = time.process_time() - t0
    return {
        k: {
            "x_real_time": audio_s[k] / v["median_s"],
            "x_real_time_cpu": audio_s[k] / cpu[k],
            "cpu_s": cpu[k],
            "audio_seconds": audio_s[k],
            **v,
        }
        for k, v in timing.items()
    }


_QUICK = {"n_per_class": 6, "seconds": 2.0, "piano_n": 30, "piano_seconds": 2.0, "epochs": 2, "repeats": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.synthetic_baselines", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--n-per-class", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--piano-n", type=int, default=200)
    parser.add_argument("--piano-seconds", type=float, default=6.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--hop", type=int, default=256)
    parser.add_argument("--crop-seconds", type=float, default=3.0, help="CNN training crops (genres)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats for the generation speed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help="tiny run to check the script (numbers meaningless)"
    )
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(_QUICK)
    torch.set_num_threads(args.threads)
    speed = generation_speed(args.repeats)
    genres, piano = genre_task(args), piano_task(args)
    print(f"generation speed (32 kHz, {args.threads} thread), x real time by wall clock (by CPU time):")
    for k, v in speed.items():
        print(f"  {k:<8}{v['x_real_time']:>6.0f}x ({v['x_real_time_cpu']:.0f}x)")
    print(
        f"\ngenres: {genres['clips']} clips of {args.seconds:g} s at {args.sample_rate} Hz "
        f"(chance {genres['chance']:.2f})"
    )
    print(f"{'model':<34}{'accuracy':>10}{'macro-F1':>10}")
    for name, key in (("probe: loudness+centroid stats", "probe"), ("CNN on log-mels (from scratch)", "cnn")):
        print(f"{name:<34}{genres[key]['accuracy']:>10.3f}{genres[key]['macro_f1']:>10.3f}")
    print(f"\npiano ratings: {piano['clips']} clips of {args.piano_seconds:g} s, split by performer")
    print(f"{'model':<34}{'mean Pearson r':>16}")
    for name, key in (("probe: ridge on the same stats", "probe"), ("CNN on log-mels (from scratch)", "cnn")):
        print(f"{name:<34}{piano[key]['mean_pearson_r']:>16.3f}")
    print(f"{'ceiling (noise-free ratings)':<34}{piano['rater_noise_ceiling_r']:>16.3f}")
    path = write_result(
        "synthetic-baselines" + ("-quick" if args.quick else ""),
        {
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "generation_speed": speed,
            "genres": genres,
            "piano": piano,
        },
        out_dir=args.out,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
