"""Does fusing hand-made descriptors with a backbone embedding pay? ``python -m eval.hybrid [--quick]``.

On the synthetic piano set and on PercePiano (MIDI rendered by :mod:`finetune.data.render`, cached under
``$MUSICFT_CACHE``; performer and piece folds, fold 0 validates, the fixed test set scores), for each split:

- descriptors alone: a ridge regression (alpha chosen on the validation split) on the audio descriptors, the
  MIDI descriptors (PercePiano only) and both (:mod:`finetune.descriptors`);
- backbone alone: a ridge on the clip embedding, and the ``rating`` head trained on it;
- hybrid: the ``hybrid`` head (``concat`` and ``gated``) on the embedding and the descriptors, and a ridge on
  all of them.

The backbone is a randomly initialised, frozen ``cnn14.tiny`` (no pretrained weights are downloaded here):
its embedding of each clip's evaluation windows is cached once, and the heads train on the cached vectors with
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
from finetune.embeddings import cache_embeddings, collate_embeddings
from finetune.evaluation import predict
from finetune.model import AudioModel, build_model
from finetune.train import TrainConfig, train
from heads import RATING

SAMPLE_RATE = 32000
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
        root / LABELS_FILE, midi_dir=midi_dir, fold=fold, fold_index=0, sample_rate=SAMPLE_RATE
    )
    midi = {p.stem.strip(): p for p in midi_dir.glob("*.mid")}
    return {name: _MidiColumn(ds, midi) for name, ds in splits.items()}


def _embed(splits: dict[str, Any], window: float, crops: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(BACKBONE, head="rating", num_outputs=19, freeze="backbone")
    collate = CropCollate(SAMPLE_RATE, window, train=False, crops_per_clip=crops)
    return {k: cache_embeddings(model, ds, collate, batch_size=8) for k, ds in splits.items()}


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
    name: str, splits: dict[str, Any], groups: tuple[str, ...], args: argparse.Namespace
) -> list[dict[str, Any]]:
    extractor = DescriptorExtractor(groups)
    described = with_descriptors(splits, extractor)
    descriptor_stats(described["train"])  # every descriptor present in training
    cached = _embed(described, args.window, args.crops)
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
    parser.add_argument("--folds", nargs="+", default=["performer", "piece"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--synthetic-items", type=int, default=300)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per embedding window")
    parser.add_argument("--crops", type=int, default=3, help="windows per clip, embeddings averaged")
    parser.add_argument("--head-steps", type=int, default=400)
    parser.add_argument(
        "--quick", action="store_true", help="synthetic only, 60 items, 1 seed, nothing written"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.folds, args.seeds, args.synthetic_items, args.head_steps = [], args.seeds[:1], 60, 50
    rows = []
    synthetic = build_synthetic_piano(
        SyntheticPianoConfig(n_items=args.synthetic_items, clip_seconds=8.0), SAMPLE_RATE
    )
    rows += study("synthetic piano", dict(synthetic.splits), ("audio",), args)
    for fold in args.folds:
        rows += study(
            f"PercePiano {fold} fold 0",
            percepiano_splits(args.percepiano_root, fold),
            ("audio", "midi"),
            args,
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
