"""Does fusing hand-made descriptors with a backbone embedding pay? ``python -m eval.hybrid [--quick]``.

On the synthetic piano set and on PercePiano (MIDI rendered at 22050 Hz by :mod:`finetune.data.render`, cached
under ``$MUSICFT_CACHE``; the ``performer`` and ``excerpt`` fold protocols by default, fold 0 validates, the fixed
test set scores), for each split:

- descriptors alone: a ridge regression (alpha chosen on the validation split) on the audio descriptors, the
  MIDI descriptors (PercePiano only) and both (:mod:`finetune.descriptors`);
- backbone alone: a ridge on the clip embedding, and the ``rating`` head trained on it;
- hybrid: the ``hybrid`` head (``concat`` and ``gated``) on the embedding and the descriptors, and a ridge on
  all of them.

The backbone is a randomly initialised, frozen ``cnn14.tiny`` (no pretrained weights are downloaded here):
its embedding of each clip's evaluation windows is computed once per clip (shared by every fold) and
standardised with the training split's statistics (:func:`standardise_embeddings` says why), and the heads
train on the cached vectors with
:func:`finetune.train.train` (several seeds). Reports test mean R2 and mean Pearson r over the 19 dimensions.
Prints a Markdown table and writes ``bench/results/hybrid-<device>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from eval.timing import write_result
from finetune.data import CropCollate
from finetune.data.percepiano import LABELS_FILE, load_percepiano
from finetune.data.synthetic.piano import SyntheticPianoConfig, build_synthetic_piano
from finetune.descriptors import DescriptorExtractor, descriptor_stats, with_descriptors
from finetune.embeddings import EmbeddingDataset, cache_embeddings, collate_embeddings
from finetune.evaluation import predict
from finetune.model import AudioModel, build_model
from finetune.train import TrainConfig, train
from heads import RATING

SAMPLE_RATE = 32000
RENDER_RATE = 22050  # the renders of the sound-font study; the embedding windows are read resampled to 32 kHz
BACKBONE = "cnn14.tiny"
ALPHAS = np.logspace(-1, 4, 11)


class _MidiColumn(torch.utils.data.Dataset):
    """PercePiano rows with ``midi``: the segment's performance MIDI file (for the MIDI descriptors)."""

    def __init__(self, dataset: Any, midi: dict[str, Path]) -> None:
        self.dataset, self.midi = dataset, midi

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.dataset[i]
        return {**row, "midi": str(self.midi[row["name"]])}


def percepiano_splits(root: Path, fold: str) -> dict[str, Any]:
    midi_dir = root / "midi"
    splits = load_percepiano(
        root / LABELS_FILE, midi_dir=midi_dir, fold=fold, fold_index=0, sample_rate=RENDER_RATE
    )
    midi = {p.stem.strip(): p for p in midi_dir.glob("*.mid")}
    return {name: _MidiColumn(ds, midi) for name, ds in splits.items()}


def _clip_name(row: Any) -> str:
    return str(row.get("name", row.get("id")))


class _Rows(torch.utils.data.Dataset):
    """The rows ``(split, index)`` of several splits, as one data set."""

    def __init__(self, splits: dict[str, Any], keys: list[tuple[str, int]]) -> None:
        self.splits, self.keys = splits, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Any:
        split, index = self.keys[i]
        return self.splits[split][index]


def embed(
    splits: dict[str, Any], window: float, crops: int, memo: dict[str, torch.Tensor]
) -> dict[str, EmbeddingDataset]:
    """Each split's clips as :class:`EmbeddingDataset` items (crop embeddings, ratings, descriptors).

    A clip is embedded once: ``memo`` maps clip names to their crop embeddings ``[crops, D]`` and is filled
    with the clips it lacks, so the folds of one data set share the backbone's work.

    Raises:
        AudioLoadError: a clip cannot be read (skipping it would shift later clips onto others' embeddings).
    """
    rows = {k: [ds[i] for i in range(len(ds))] for k, ds in splits.items()}
    todo: dict[str, tuple[str, int]] = {}
    for split, items in rows.items():
        for i, row in enumerate(items):
            if _clip_name(row) not in memo:
                todo.setdefault(_clip_name(row), (split, i))
    if todo:
        torch.manual_seed(0)  # the same random backbone for every data set
        model = build_model(BACKBONE, head="rating", num_outputs=19, freeze="backbone")
        collate = CropCollate(SAMPLE_RATE, window, train=False, crops_per_clip=crops, on_error="raise")
        cached = cache_embeddings(model, _Rows(splits, list(todo.values())), collate, batch_size=8)
        memo.update((name, item["embeddings"]) for name, item in zip(todo, cached.items))
    return {
        split: EmbeddingDataset(
            [
                {
                    "embeddings": memo[_clip_name(row)],
                    "ratings": torch.as_tensor(np.asarray(row["ratings"], np.float32)),
                    "descriptors": torch.as_tensor(row["descriptors"]),
                }
                for row in items
            ]
        )
        for split, items in rows.items()
    }


def standardise_embeddings(cached: dict[str, EmbeddingDataset]) -> dict[str, EmbeddingDataset]:
    """Every split's crop embeddings standardised with the training split's per-dimension mean and standard
    deviation (a dimension constant in training is only centred).

    Why: the random, frozen backbone's embedding is nearly constant (each dimension varies by ~1e-5 around a
    fixed value: the signal fades through the untrained convolutions and the last layer's bias dominates), so
    a head would see no signal in it; a ridge standardises its inputs anyway, and the heads now see the same.
    """
    train = torch.cat([item["embeddings"] for item in cached["train"].items]).double()
    mean, std = train.mean(0), train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {
        split: EmbeddingDataset(
            [{**item, "embeddings": ((item["embeddings"] - mean) / std).float()} for item in data.items]
        )
        for split, data in cached.items()
    }


def _matrix(cached: Any, what: str, names: tuple[str, ...], groups: tuple[str, ...]) -> np.ndarray:
    """Per-clip features: the mean crop embedding and/or the descriptors of ``groups``."""
    parts = []
    if "embedding" in what:
        parts.append(np.stack([item["embeddings"].mean(0).numpy() for item in cached.items]))
    for group in groups:
        if group in what:
            cols = [i for i, n in enumerate(names) if n.startswith(f"{group}.")]
            parts.append(np.stack([item["descriptors"].numpy()[cols] for item in cached.items]))
    return np.concatenate(parts, axis=1)


def _targets(cached: Any) -> np.ndarray:
    return np.stack([item["ratings"].numpy() for item in cached.items])


def _scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in RATING.metrics(pred, true).items() if k in ("mean_r2", "mean_r")}


def ridge(
    cached: dict[str, Any], what: str, names: tuple[str, ...], groups: tuple[str, ...]
) -> dict[str, Any]:
    """Standardise on train, choose alpha on validation (mean R2), score on test."""
    x = {k: _matrix(v, what, names, groups) for k, v in cached.items()}
    y = {k: _targets(v) for k, v in cached.items()}
    scaler = StandardScaler().fit(x["train"])
    x = {k: scaler.transform(v) for k, v in x.items()}
    best = max(
        ALPHAS,
        key=lambda a: _scores(
            Ridge(alpha=a).fit(x["train"], y["train"]).predict(x["validation"]), y["validation"]
        )["mean_r2"],
    )
    fit = Ridge(alpha=best).fit(x["train"], y["train"])
    return {
        **_scores(fit.predict(x["test"]), y["test"]),
        "alpha": float(best),
        "features": x["train"].shape[1],
    }


def head(
    cached: dict[str, Any], kind: str, names: tuple[str, ...], seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Train the rating head (``kind="rating"``) or a hybrid head (``hybrid_<fusion>``) on cached vectors."""
    torch.manual_seed(seed)
    settings: dict[str, Any] = {"hidden_sizes": (128,), "dropout": 0.1}
    if kind == "rating":
        model = build_model(
            BACKBONE, head="rating", num_outputs=19, freeze="backbone", label_range=(0.0, 1.0), **settings
        )
        data = {k: _without_descriptors(v) for k, v in cached.items()}
    else:
        model = build_model(
            BACKBONE,
            head="hybrid",
            num_outputs=19,
            freeze="backbone",
            task="rating",
            label_range=(0.0, 1.0),
            descriptor_names=names,
            fusion=kind.removeprefix("hybrid_"),
            **settings,
        )
        model.head.set_descriptor_stats(*_stats(cached["train"]))
        data = cached
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            output_dir=out,
            max_steps=args.head_steps,
            batch_size=32,
            lr=1e-3,
            weight_decay=0.01,
            eval_every=50,
            save_every=args.head_steps,
            seed=seed,
            progress=False,
            best_metric="mean_r2",
            warmup_ratio=0.05,
        )
        train(model, data["train"], data["validation"], cfg, collate_embeddings)
        best = AudioModel.from_pretrained(Path(out) / "best")
    loader = torch.utils.data.DataLoader(data["test"], batch_size=64, collate_fn=collate_embeddings)
    out = predict(best, loader)
    return _scores(out.predictions, out.targets)


def _without_descriptors(cached: Any) -> Any:
    return type(cached)([{k: v for k, v in item.items() if k != "descriptors"} for item in cached.items])


def _stats(cached: Any) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.stack([item["descriptors"] for item in cached.items]).double()
    return values.mean(0).float(), values.std(0, correction=0).float()


def study(
    name: str,
    splits: dict[str, Any],
    groups: tuple[str, ...],
    args: argparse.Namespace,
    memo: dict[str, torch.Tensor],
) -> list[dict[str, Any]]:
    """The ridge rows and the seeded head rows of one data set (``memo``: see :func:`embed`)."""
    extractor = DescriptorExtractor(groups)
    described = with_descriptors(splits, extractor)
    descriptor_stats(described["train"])  # every descriptor present in training
    cached = standardise_embeddings(embed(described, args.window, args.crops, memo))
    names = extractor.names
    rows = []
    ridge_sets = [*groups, "+".join(groups)] if len(groups) > 1 else list(groups)
    for what in [*ridge_sets, "embedding", "embedding+" + "+".join(groups)]:
        rows.append({"data": name, "model": f"ridge on {what}", **ridge(cached, what, names, groups)})
        print(rows[-1], flush=True)
    for kind in ("rating", "hybrid_concat", "hybrid_gated"):
        runs = [head(cached, kind, names, seed, args) for seed in args.seeds]
        label = (
            "rating head on embedding" if kind == "rating" else f"{kind} head on embedding+{'+'.join(groups)}"
        )
        row = {"data": name, "model": label, "seeds": len(runs)}
        for key in ("mean_r2", "mean_r"):
            values = [r[key] for r in runs]
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data | model | test mean R2 | test mean r |", "|---|---|---|---|"]
    for r in rows:
        r2 = f"{r['mean_r2']:.3f}" + (f" ± {r['mean_r2_std']:.3f}" if "mean_r2_std" in r else "")
        rr = f"{r['mean_r']:.3f}" + (f" ± {r['mean_r_std']:.3f}" if "mean_r_std" in r else "")
        lines.append(f"| {r['data']} | {r['model']} | {r2} | {rr} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--percepiano-root", type=Path, default=Path("../shared/data/percepiano"))
    parser.add_argument("--folds", nargs="+", default=["performer", "excerpt"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--synthetic-items", type=int, default=300)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per embedding window")
    parser.add_argument("--crops", type=int, default=3, help="windows per clip, embeddings averaged")
    parser.add_argument("--head-steps", type=int, default=400)
    parser.add_argument(
        "--quick", action="store_true", help="synthetic only, 60 items, 1 seed, nothing written"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a loaded machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.folds, args.seeds, args.synthetic_items, args.head_steps = [], args.seeds[:1], 60, 50
    rows = []
    synthetic = build_synthetic_piano(
        SyntheticPianoConfig(n_items=args.synthetic_items, clip_seconds=8.0), SAMPLE_RATE
    )
    rows += study("synthetic piano", dict(synthetic.splits), ("audio",), args, {})
    percepiano: dict[str, torch.Tensor] = {}
    for fold in args.folds:
        rows += study(
            f"PercePiano {fold} fold 0",
            percepiano_splits(args.percepiano_root, fold),
            ("audio", "midi"),
            args,
            percepiano,
        )
    print(table(rows))
    if args.quick:
        return 0
    path = write_result(
        "hybrid",
        {
            "backbone": f"{BACKBONE}, random initialisation, frozen; {args.crops} x {args.window} s windows averaged",
            "head_steps": args.head_steps,
            "seeds": args.seeds,
            "synthetic_items": args.synthetic_items,
            "rows": rows,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
