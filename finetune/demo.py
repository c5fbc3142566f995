"""``python -m finetune demo``: the README's main job, on a fresh machine with no data and no weights.

It generates the synthetic 10-genre set, fine-tunes a small randomly initialised backbone on it, evaluates on
the held-out split (accuracy, macro-F1, confusion matrix), then streams a synthetic "radio" of several styles back
to back through the streaming engine (:func:`stream_radio`) and prints its decision segments against the true
styles. ``--backbone``, ``--checkpoint`` and ``--data``
run the same job on real weights and data. Its settings are ``recipes/configs/demo.yaml``, read from the installed
``recipes`` package.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import RecipeConfig, load_config

if TYPE_CHECKING:
    from .data.synthetic import Segment
    from .streaming import HopResult

__all__ = ["RADIO_POSTPROCESS", "RADIO_WINDOWS", "add_arguments", "demo_config", "run_demo", "stream_radio"]

DEMO_CONFIG = "demo.yaml"  # in the configs of the ``recipes`` package
RADIO_STYLES = ("rock", "classical", "disco", "jazz", "metal")
RADIO_SECONDS = 8.0
RADIO_HOP = 0.5
RADIO_WINDOWS = (2.0, 4.0, 6.0)
"""The demo's window ensemble: half, once and 1.5 times its 4 s training crop (the best hop accuracy in
``docs/results/streaming-quality.md``)."""
RADIO_POSTPROCESS: Mapping[str, Any] = MappingProxyType(
    {"top_k": 3, "decisions": {"min_hops": 2, "margin": 0.2}}
)
"""The decision layer: a new label after it leads by 0.2 for 2 hops (fewest flips at small cost in that study)."""


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


def stream_radio(
    model: Any,
    waveform: np.ndarray,
    sample_rate: int,
    windows: Sequence[float] = RADIO_WINDOWS,
    hop_s: float = RADIO_HOP,
    postprocess: Mapping[str, Any] | None = None,
    chunk_s: float = 0.25,
) -> tuple[list[HopResult], list[tuple[float, float, str]]]:
    """Stream ``waveform`` through a :class:`~finetune.streaming.StreamingEngine` in ``chunk_s`` chunks, as a
    live radio would arrive, with right-aligned ``windows`` averaged (start policy ``"partial"``: hops from the
    first ``hop_s`` on) and the ``postprocess`` chain (default: :data:`RADIO_POSTPROCESS`).

    Returns:
        The hops and the decision layer's segments ``(start, end, label)`` (closed at the last hop).

    Shapes:
        waveform: [N] mono at ``sample_rate``.
    """
    from .streaming import StreamingEngine

    engine = StreamingEngine(
        model,
        hop_s=hop_s,
        windows=windows,
        start="partial",
        postprocess=dict(RADIO_POSTPROCESS if postprocess is None else postprocess),
    )
    session = engine.open_session(sample_rate)
    x, step = np.asarray(waveform, dtype=np.float32), max(1, round(chunk_s * sample_rate))
    hops = [hop for i in range(0, x.shape[-1], step) for hop in session.push(x[i : i + step])]
    end = session.flush()
    hops += end.hops
    segments, opened = [], None
    for event in [e for hop in hops for e in hop.events] + list(end.events):
        if opened is not None and event.kind == "end":
            segments.append((opened[0], event.time, opened[1]))
            opened = None
        elif event.kind == "start":
            opened = (event.time, event.label)
    session.close()
    return hops, segments


def _true_style(segments: Sequence[Segment], t: float) -> str:
    """The style playing at stream time ``t`` (the window's end)."""
    return next((s.style for s in segments if s.start < t <= s.end), segments[-1].style)


def _overlapping_style(segments: Sequence[Segment], start: float, end: float) -> str:
    """The style that fills most of ``[start, end]``."""
    return max(segments, key=lambda s: min(end, s.end) - max(start, s.start)).style


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
    """Stream the synthetic radio through the engine; print the hops, the decision segments and the hop
    accuracy; save ``timeline.json`` and ``timeline.png``."""
    from .data.synthetic import synthetic_radio
    from .model import AudioModel
    from .plots import StreamTrack, plot_stream_timeline

    model = AudioModel.from_pretrained(out / "model")
    names = list(model.labels)
    wave, truth = synthetic_radio(RADIO_STYLES, RADIO_SECONDS, model.sample_rate, seed=cfg.data.seed + 1000)
    hops, segments = stream_radio(model, wave, model.sample_rate)
    shown = "+".join(f"{w:g}" for w in RADIO_WINDOWS)
    rule = RADIO_POSTPROCESS["decisions"]
    print(
        f"\nSynthetic radio ({' -> '.join(RADIO_STYLES)}, {RADIO_SECONDS:g} s each) streamed through the "
        f"engine: windows {shown} s averaged, hop {RADIO_HOP:g} s, a new label once it leads by {rule['margin']} for "
        f"{rule['min_hops']} hops"
    )
    records = []
    for hop in hops:
        true = _true_style(truth, hop.time)
        top = names[int(hop.smoothed.argmax())]
        records.append(
            {
                "time": hop.time,
                "top": top,
                "label": hop.label,
                "true": true,
                "smoothed": hop.smoothed.tolist(),
            }
        )
        if hop.index % 2 == 1:
            value = float(hop.smoothed.max())
            print(f"  {hop.time:5.1f} s  {top:<10} {value:.2f}   label {hop.label or '-':<10} true {true}")
    print("Decision segments:")
    for start, end, label in segments:
        print(f"  {start:5.1f}-{end:5.1f} s  {label:<10} (true: {_overlapping_style(truth, start, end)})")
    if not segments:
        print(f"  none: no genre led by {rule['margin']} for {rule['min_hops']} hops (an undertrained model)")
    accuracy = sum(r["label"] == r["true"] for r in records) / len(records)
    print(
        f"Hop accuracy {accuracy:.2f} over {len(records)} hops (reported label vs the style playing; chance 0.10)"
    )
    (out / "timeline.json").write_text(
        json.dumps({"hop_accuracy": accuracy, "segments": segments, "hops": records}, indent=1)
    )
    track = StreamTrack(
        np.array([r["time"] for r in records]),
        np.stack([h.smoothed.numpy() for h in hops]),
        segments,
        [(s.start, s.end, s.style) for s in truth],
    )
    plot_stream_timeline(
        {"synthetic radio": track}, names, out / "timeline.png", ylabel="probability (windows averaged)"
    )
