"""``python -m finetune demo``: the README's main job, on a fresh machine with no data and no weights.

It generates the synthetic 10-genre set, fine-tunes a small randomly initialised backbone on it, evaluates on
the held-out split (accuracy, macro-F1, confusion matrix), then plays a synthetic "radio" of several styles back
to back through a sliding window and prints the genre timeline. ``--backbone``, ``--checkpoint`` and ``--data``
run the same job on real weights and data. Its settings are ``recipes/configs/demo.yaml``, read from the installed
``recipes`` package.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RecipeConfig, load_config

__all__ = ["add_arguments", "demo_config", "run_demo", "sliding_window_timeline"]

DEMO_CONFIG = "demo.yaml"  # in the configs of the ``recipes`` package


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _existing_dir(text: str) -> str:
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory (pass the GTZAN root folder)")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options; those that can be checked on their own are checked as they are parsed."""
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument(
        "--backbone", help="registered backbone name, e.g. passt_s.audioset_swa (default: cnn14.tiny)"
    )
    p.add_argument("--checkpoint", help="backbone weights: local file/dir, hub id, URL or 'pretrained'")
    p.add_argument(
        "--data", type=_existing_dir, help="a GTZAN root folder to use instead of the synthetic genres"
    )
    p.add_argument("--steps", type=_positive_int, help="optimizer steps (default 400)")
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides (e.g. train.lr=1e-4)")


def sliding_window_timeline(
    model: Any, waveform: np.ndarray, sample_rate: int, window_s: float, hop_s: float, ema: float = 0.3
) -> list[dict[str, Any]]:
    """Classify right-aligned windows every ``hop_s`` seconds; smooth probabilities with an EMA.

    Returns one entry per hop: ``time`` (window end, seconds), ``probs`` (raw) and ``smoothed``.
    """
    win, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    x = torch.as_tensor(waveform, dtype=torch.float32)
    ends = list(range(win, x.shape[-1] + 1, hop))
    windows = torch.stack([x[e - win : e] for e in ends])
    model.eval()
    with torch.inference_mode():
        probs = torch.cat([model(waveform=w).logits.softmax(-1) for w in windows.split(16)]).numpy()
    smoothed, state = [], probs[0]
    for p in probs:
        state = ema * p + (1 - ema) * state
        smoothed.append(state)
    return [{"time": e / sample_rate, "probs": p, "smoothed": s} for e, p, s in zip(ends, probs, smoothed)]


def _plot_timeline(timeline: list[dict[str, Any]], names: list[str], segments: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t = np.array([e["time"] for e in timeline])
    sm = np.stack([e["smoothed"] for e in timeline])
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.stackplot(t, sm.T, labels=names, alpha=0.85)
    for seg in segments:
        ax.axvline(seg.start, color="k", lw=0.8)
        ax.text(max(seg.start, t[0]) + 0.1, 1.01, seg.style, fontsize=7, transform=ax.get_xaxis_transform())
    ax.set_xlabel("time (s)")
    ax.set_ylabel("smoothed probability")
    ax.set_xlim(t[0], t[-1])
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo_config(args: argparse.Namespace) -> RecipeConfig:
    """The demo's recipe config: ``recipes/configs/demo.yaml`` with the command line's options applied.

    The YAML's CNN14 dropout overrides belong to its tiny CNN14; ``--backbone`` drops them.
    """
    overrides = [f"train.output_dir={args.out}"]
    if args.backbone:
        overrides += [f"model.backbone={args.backbone}", "model.backbone_overrides={}"]
    if args.checkpoint:
        overrides.append(f"model.checkpoint={args.checkpoint}")
    if args.data:  # a new data section: the synthetic set's keys do not apply to GTZAN
        overrides += ["data={name: gtzan, clip_seconds: 30.0}", f"data.root={args.data}"]
    if args.steps is not None:
        overrides.append(f"train.max_steps={args.steps}")
    return load_config(files("recipes") / "configs" / DEMO_CONFIG, overrides + list(args.overrides))


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; the config is validated (:func:`finetune.recipe.validate_config`) before anything is
    printed or built."""
    from .recipe import run_recipe, validate_config

    cfg = demo_config(args)
    validate_config(cfg)
    if cfg.model.checkpoint is None:
        print(
            f"Training {cfg.model.backbone} from random initialisation (no weights are downloaded in the demo).\n"
            "With real weights: python -m finetune demo --backbone passt_s.audioset_swa "
            "--checkpoint /path/to/passt-s-f128-p16-s10-ap.476-swa.pt   (or --checkpoint pretrained)"
        )
    t0 = time.perf_counter()
    metrics = run_recipe(cfg)
    out = Path(cfg.train.output_dir)
    print(f"\nHeld-out synthetic test set ({metrics['n']} clips, {len(metrics['class_names'])} genres):")
    print(f"  accuracy {metrics['accuracy']:.3f}   macro-F1 {metrics['macro_f1']:.3f}   (chance 0.100)")
    for name, f1 in metrics["per_class_f1"].items():
        print(f"    {name:<10} F1 {f1:.2f}")
    if cfg.data.name == "synthetic_genres":
        _radio(cfg, out)
    print(
        f"\nDone in {time.perf_counter() - t0:.0f} s. Everything is in {out}/ (metrics.json, "
        "confusion_matrix.png, loss.png, reliability.png, timeline.png, model/)."
    )
    return 0


def _radio(cfg: RecipeConfig, out: Path) -> None:
    from .data.synthetic import synthetic_radio
    from .model import AudioModel

    model = AudioModel.from_pretrained(out / "model")
    names = list(model.labels)
    styles = ["rock", "classical", "disco", "jazz", "metal"]
    wave, segments = synthetic_radio(styles, 8.0, model.sample_rate, seed=cfg.data.seed + 1000)
    timeline = sliding_window_timeline(model, wave, model.sample_rate, cfg.data.crop_seconds or 4.0, 1.0)
    print("\nSynthetic radio (" + " -> ".join(styles) + ", 8 s each), window 4 s, hop 1 s, EMA 0.3:")
    for e in timeline:
        top = int(np.argmax(e["smoothed"]))
        print(f"  {e['time']:5.1f} s  {names[top]:<10} {e['smoothed'][top]:.2f}")
    (out / "timeline.json").write_text(
        json.dumps(
            [
                {
                    "time": e["time"],
                    "top": names[int(np.argmax(e["smoothed"]))],
                    "smoothed": e["smoothed"].tolist(),
                }
                for e in timeline
            ],
            indent=1,
        )
    )
    _plot_timeline(timeline, names, segments, out / "timeline.png")
