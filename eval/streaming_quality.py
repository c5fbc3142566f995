"""Streaming quality of the post-processing options.

``python -m eval.streaming_quality [--run DIR] [--quick]``.

Which of the roadmap's live options (smoothing, window ensembles, two timescales, hysteresis, calibration) is
worth it? Each is scored on synthetic radios: the demo's styles back to back, with known boundaries.

1. The model is the demo's (``recipes/configs/demo.yaml``: a tiny CNN14 trained from random weights on the
   synthetic genres with 4 s crops): ``--run`` reuses a trained run directory (or a saved model directory),
   otherwise it is trained with the demo's settings into ``--work``.
2. Each seed plays one radio: ``--segments`` styles, none twice in a row, 8-14 s each, after a lead-in as
   long as the longest window. Every hop (``--hop`` s) from the end of that lead-in gets the model's raw
   logits for each window length, computed offline on the right-aligned window of the radio (the streaming
   engine reproduces these exactly). Slow windows (``every`` > 1) are fed at hops whose index is a multiple
   of it.
3. Every setting runs these hops through :func:`finetune.streaming.postprocess.build_postprocessor`; the
   reported label is the decision layer's (when the setting has one) or the smoothed top-1.
4. Metrics per radio: hop accuracy against the true style at the hop's end time (over all hops, and
   *steady*: hops at least the model's window after a boundary); reported-label flips per minute (a perfect
   reporter flips once per boundary); switch latency: seconds from a boundary until the reported label
   equals the new style and stays so until the segment ends (a boundary never followed counts as a miss,
   with the segment's length as its latency). Mean over boundaries per radio, then mean and spread over
   seeds; differences to the raw setting are paired by radio.

The calibrated settings use the model's ``calibration.json`` when it has one, otherwise a temperature
fitted on every hop of a held-out radio built like the others.

Writes ``bench/results/streaming-quality-<device>.json`` (with the machine), the table in
``docs/results/streaming-quality.md`` (between its generated-table markers) and the plot
``docs/results/streaming-quality.png`` (accuracy and flips per minute against switch latency).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from eval.timing import write_result
from finetune.calibration import Calibration, fit_calibration
from finetune.data.synthetic import GENRES, Segment, synthetic_radio
from finetune.model import AudioModel
from finetune.streaming.postprocess import build_postprocessor
from finetune.streaming.types import RawHop, WindowSpec

DOCS = Path("docs/results")
TABLE_START, TABLE_END = "<!-- generated table: start -->", "<!-- generated table: end -->"
METRICS = ("accuracy", "steady_accuracy", "flips_per_min", "latency_s", "missed")
RADIO_SEED = 1000  # radio i plays seed RADIO_SEED + i; the training clips use other seeds and clip indices
CALIBRATION_SEED = 9999


@dataclass(frozen=True)
class Setting:
    """One setting of the study: its windows, its chain config and whether it is calibrated."""

    name: str
    group: str
    windows: tuple[WindowSpec, ...]
    config: dict[str, Any] = field(default_factory=dict)
    calibrated: bool = False


def study_settings(window: float) -> list[Setting]:
    """The settings compared, for a model trained on ``window``-second crops."""
    w = (WindowSpec(window),)
    multi = tuple(WindowSpec(s) for s in (window / 2, window, 1.5 * window))
    two = (WindowSpec(window), WindowSpec(2 * window, every=4, weight=2.0))
    hyst = {"decisions": {"min_hops": 3}}
    margin = {"decisions": {"min_hops": 2, "margin": 0.2}}
    return [
        Setting("raw", "none", w),
        Setting("EMA 0.3", "smoothing", w, {"ema": 0.3}),
        Setting("EMA 0.1", "smoothing", w, {"ema": 0.1}),
        Setting("mean of last 4", "smoothing", w, {"mean_last": 4}),
        Setting("mean of last 8", "smoothing", w, {"mean_last": 8}),
        Setting("trend EMA 0.3", "smoothing", w, {"trend_ema": 0.3}),
        Setting("calibrated + EMA 0.3", "calibration", w, {"ema": 0.3}, calibrated=True),
        Setting(f"long window {2 * window:g} s", "windows", (WindowSpec(2 * window),)),
        Setting("multi-window " + "+".join(f"{x.seconds:g}" for x in multi) + " s", "windows", multi),
        Setting(
            f"two-timescale {window:g} s + {2 * window:g} s every 4 hops",
            "windows",
            two,
            {"fusion": "logits"},
        ),
        Setting(
            f"two-timescale {window / 2:g} s + {window:g} s every 4 hops",
            "windows",
            (WindowSpec(window / 2), WindowSpec(window, every=4, weight=2.0)),
            {"fusion": "logits"},
        ),
        Setting("hysteresis 3 hops", "decisions", w, hyst),
        Setting(
            "hysteresis 3 hops + min 4 s", "decisions", w, {"decisions": {"min_hops": 3, "min_duration": 4.0}}
        ),
        Setting("hysteresis margin 0.2, 2 hops", "decisions", w, margin),
        Setting("EMA 0.3 + hysteresis 3 hops", "combined", w, {"ema": 0.3, **hyst}),
        Setting("multi-window + EMA 0.3 + hysteresis 3 hops", "combined", multi, {"ema": 0.3, **hyst}),
        Setting("multi-window + hysteresis margin 0.2, 2 hops", "combined", multi, margin),
    ]


def radio_plan(seed: int, segments: int, lead_in: float) -> tuple[list[str], list[float]]:
    """Styles (none twice in a row) and durations (8-14 s, the first plus ``lead_in``) of one radio."""
    rng = np.random.default_rng([seed, 20261])
    styles: list[str] = []
    while len(styles) < segments:
        for i in rng.permutation(len(GENRES)):
            if len(styles) < segments and (not styles or GENRES[i] != styles[-1]):
                styles.append(GENRES[i])
    durations = np.round(rng.uniform(8.0, 14.0, segments), 1)
    durations[0] += lead_in
    return styles, [float(d) for d in durations]


def render_radio(
    seed: int, segments: int, lead_in: float, sample_rate: int, cache: Path
) -> tuple[np.ndarray, list[Segment]]:
    """The radio of ``seed`` (rendered once, then read from ``cache``)."""
    styles, durations = radio_plan(seed, segments, lead_in)
    path = cache / f"radio-{seed}-{segments}-{lead_in:g}-{sample_rate}.npz"
    if path.is_file():
        stored = np.load(path)
        wave, starts, stops = stored["wave"], stored["starts"], stored["stops"]
    else:
        wave, segs = synthetic_radio(styles, durations, sample_rate, seed=seed)
        starts, stops = np.array([g.start for g in segs]), np.array([g.end for g in segs])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, wave=wave, starts=starts, stops=stops)
    return wave, [Segment(float(a), float(b), s) for a, b, s in zip(starts, stops, styles)]


@torch.inference_mode()
def window_logits(model: AudioModel, wave: np.ndarray, ends: np.ndarray, seconds: float) -> torch.Tensor:
    """The model's raw logits on the right-aligned ``seconds`` window ending at each of ``ends`` (seconds).

    Shapes:
        wave [N] -> [len(ends), C].
    """
    sr = model.sample_rate
    n = round(seconds * sr)
    x = torch.from_numpy(wave)
    stops = [round(t * sr) for t in ends]
    out = []
    for i in range(0, len(stops), 32):
        batch = torch.stack([x[e - n : e] for e in stops[i : i + 32]])
        out.append(model(waveform=batch).logits.float())
    return torch.cat(out)


def play(
    setting: Setting,
    model: AudioModel,
    logits: dict[float, torch.Tensor],
    ends: np.ndarray,
    calibration: Calibration | None,
) -> list[str | None]:
    """The label a stream reports at each hop under ``setting``."""
    chain = build_postprocessor(
        setting.config, model.task, model.labels, setting.windows, calibration if setting.calibrated else None
    )
    decided = setting.config.get("decisions") is not None
    reported: list[str | None] = []
    for k, t in enumerate(ends):
        outputs = {w.seconds: logits[w.seconds][k] for w in setting.windows if k % w.every == 0}
        hop = chain.step(RawHop(k, float(t), outputs, False))
        reported.append(hop.label if decided else hop.top_k[0][0])
    return reported


def score(
    reported: Sequence[str | None], ends: np.ndarray, segments: Sequence[Segment], settle: float
) -> dict[str, float]:
    """One radio's metrics under one setting.

    Hop accuracy (all hops, and steady: hops at least ``settle`` seconds after their segment's start), flips
    per minute, mean switch latency and the fraction of boundaries never followed.
    """
    truth = truth_at(ends, segments)
    starts = [next(s.start for s in segments if t < s.end or s is segments[-1]) for t in ends]
    steady = [r == y for r, y, t, a in zip(reported, truth, ends, starts) if t - a >= settle]
    hop = float(ends[1] - ends[0])
    flips = sum(a is not None and b is not None and a != b for a, b in zip(reported, reported[1:]))
    latencies, missed = [], 0
    for seg in segments:
        inside = [k for k, t in enumerate(ends) if seg.start <= t < seg.end]
        if seg.start <= ends[0] or not inside:  # the lead-in segment has no boundary in view
            continue
        settled = None
        for k in reversed(inside):
            if reported[k] != seg.style:
                break
            settled = k
        if settled is None:
            missed += 1
            latencies.append(seg.end - seg.start)
        else:
            latencies.append(float(ends[settled]) - seg.start)
    return {
        "accuracy": float(np.mean([r == y for r, y in zip(reported, truth)])),
        "steady_accuracy": float(np.mean(steady)) if steady else float("nan"),
        "flips_per_min": flips / ((len(ends) * hop) / 60.0),
        "latency_s": float(np.mean(latencies)),
        "missed": missed / len(latencies),
        "true_switches_per_min": len(latencies) / ((len(ends) * hop) / 60.0),
    }


def truth_at(ends: np.ndarray, segments: Sequence[Segment]) -> list[str]:
    """The style playing at each hop's end time (the last segment's at the very end)."""
    return [next(s.style for s in segments if t < s.end or s is segments[-1]) for t in ends]


def fit_radio_temperature(
    model: AudioModel, window: float, hop: float, segments: int, lead_in: float, cache: Path
) -> Calibration:
    """A temperature fitted on every hop of a held-out radio built like the test radios.

    The target is the style at the hop's end time, as in the study: windows inside one segment alone are
    almost all right for the demo's model, and on such separable data the fitted temperature runs to zero.
    """
    wave, segs = render_radio(CALIBRATION_SEED, segments, lead_in, model.sample_rate, cache)
    ends = np.arange(lead_in, len(wave) / model.sample_rate + 1e-9, hop)
    labels = [model.labels.index(style) for style in truth_at(ends, segs)]
    logits = window_logits(model, wave, ends, window)
    return fit_calibration(logits.numpy(), np.asarray(labels), model.task, labels=model.labels)


def load_or_train(args: argparse.Namespace) -> tuple[AudioModel, Path, float]:
    """The demo's model (from ``--run``, or trained into ``--work``), its run directory and crop seconds."""
    if args.run:
        run = Path(args.run)
        run = run.parent if (run / "config.json").is_file() and run.name == "model" else run
    else:
        run = Path(args.work) / "demo"
        if not (run / "model" / "config.json").is_file():
            from finetune.demo import demo_config
            from finetune.recipe import run_recipe

            demo_args = argparse.Namespace(
                out=str(run), backbone=None, checkpoint=None, data=None, steps=args.steps, overrides=[]
            )
            print(f"training the demo's model into {run} (reuse it later with --run {run})")
            run_recipe(demo_config(demo_args))
    model_dir = run / "model" if (run / "model" / "config.json").is_file() else run
    model = AudioModel.from_pretrained(model_dir)
    config = run / "config.yaml"
    crop = yaml.safe_load(config.read_text())["data"].get("crop_seconds") if config.is_file() else None
    return model, run, float(crop or args.window)


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def run_study(args: argparse.Namespace) -> dict[str, Any]:
    """Play every setting on every radio; per-seed metrics and their spread over seeds."""
    t_start = time.perf_counter()
    torch.manual_seed(0)
    model, run, window = load_or_train(args)
    model.eval()
    cache = Path(args.work) / "radios"
    settings = study_settings(window)
    lengths = sorted({w.seconds for s in settings for w in s.windows})
    lead_in = max(lengths)
    calibration = model.calibration
    source = "calibration.json"
    if calibration is None:
        calibration = fit_radio_temperature(model, window, args.hop, args.segments, lead_in, cache)
        source = "temperature fitted on every hop of a held-out radio"
    per_seed: dict[str, list[dict[str, float]]] = {s.name: [] for s in settings}
    radios = []
    for i in range(args.seeds):
        seed = RADIO_SEED + i
        wave, segments = render_radio(seed, args.segments, lead_in, model.sample_rate, cache)
        ends = np.arange(lead_in, len(wave) / model.sample_rate + 1e-9, args.hop)
        logits = {s: window_logits(model, wave, ends, s) for s in lengths}
        radios.append(
            {"seed": seed, "segments": [[g.start, g.end, g.style] for g in segments], "hops": len(ends)}
        )
        for setting in settings:
            per_seed[setting.name].append(
                score(play(setting, model, logits, ends, calibration), ends, segments, settle=window)
            )
        print(f"radio {i + 1}/{args.seeds} (seed {seed}, {len(ends)} hops) scored")
    results = [
        {
            "setting": s.name,
            "group": s.group,
            "windows": [{"seconds": w.seconds, "every": w.every, "weight": w.weight} for w in s.windows],
            "config": s.config,
            "calibrated": s.calibrated,
            **{m: _spread([r[m] for r in per_seed[s.name]]) for m in METRICS},
            "delta_vs_raw": {  # paired by radio: the radios' own difficulty cancels
                m: _spread([r[m] - b[m] for r, b in zip(per_seed[s.name], per_seed["raw"])]) for m in METRICS
            },
            "per_seed": per_seed[s.name],
        }
        for s in settings
    ]
    metrics_file = run / "metrics.json"
    return {
        "model": {
            "trained_by_this_run": not args.run,
            "backbone": model.backbone.name,
            "window_s": window,
            "test_accuracy": json.loads(metrics_file.read_text()).get("accuracy")
            if metrics_file.is_file()
            else None,
        },
        "calibration": {
            "source": source,
            "temperature": calibration.temperature,
            "report": dict(calibration.report),
        },
        "protocol": {
            "hop_s": args.hop,
            "seeds": args.seeds,
            "segments_per_radio": args.segments,
            "segment_seconds": [8.0, 14.0],
            "lead_in_s": lead_in,
            "true_switches_per_min": statistics.fmean(r["true_switches_per_min"] for r in per_seed["raw"]),
        },
        "radios": radios,
        "results": results,
        "elapsed_s": time.perf_counter() - t_start,
    }


def _cell(stats: dict[str, float], fmt: str, sign: bool = False) -> str:
    return f"{stats['mean']:{'+' if sign else ''}{fmt}} ± {stats['std']:{fmt}}"


def markdown_table(payload: dict[str, Any]) -> str:
    """The results as a markdown table with a line on how they were measured."""
    p, m = payload["protocol"], payload["model"]
    lines = [
        f"Model: `{m['backbone']}` trained by the demo on {m['window_s']:g} s crops"
        + (f" (test accuracy {m['test_accuracy']:.3f})" if m["test_accuracy"] is not None else "")
        + f"; {p['seeds']} radios of {p['segments_per_radio']} segments (8-14 s each), hop {p['hop_s']:g} s; "
        f"mean ± std over radios; *vs raw*: the difference to the raw setting on the same radio; *steady*: "
        f"hops at least {m['window_s']:g} s after a boundary. A perfect reporter flips "
        f"{p['true_switches_per_min']:.1f} times per minute "
        f"(once per boundary). Calibration: {payload['calibration']['source']} "
        f"(T = {payload['calibration']['temperature']:.2f}).",
        "",
        "| setting | hop accuracy | vs raw | steady accuracy | flips / min | switch latency (s) | vs raw "
        "| boundaries missed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        d = r["delta_vs_raw"]
        cells = [
            r["setting"],
            _cell(r["accuracy"], ".3f"),
            _cell(d["accuracy"], ".3f", sign=True),
            _cell(r["steady_accuracy"], ".3f"),
            _cell(r["flips_per_min"], ".1f"),
            _cell(r["latency_s"], ".2f"),
            _cell(d["latency_s"], ".2f", sign=True),
            _cell(r["missed"], ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    """Put the table between the markers of ``path``, keeping the text around them (a new file: a stub)."""
    table = f"{TABLE_START}\n{markdown_table(payload)}\n{TABLE_END}"
    if path.is_file() and TABLE_START in (text := path.read_text()) and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + table + rest.split(TABLE_END, 1)[1]
    else:
        text = f"# Streaming quality of the post-processing options\n\n{table}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def plot(payload: dict[str, Any], path: Path) -> None:
    """Accuracy and flips per minute against switch latency: one numbered point per setting, named aside."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    results = payload["results"]
    groups = list(dict.fromkeys(r["group"] for r in results))
    colours = {g: plt.get_cmap("tab10")(i) for i, g in enumerate(groups)}
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    for ax, metric, label in (
        (axes[0], "accuracy", "hop accuracy"),
        (axes[1], "flips_per_min", "reported-label flips per minute"),
    ):
        for n, r in enumerate(results, 1):
            x, y = r["latency_s"], r[metric]
            colour = colours[r["group"]]
            ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], color=colour, alpha=0.25, lw=1)
            ax.plot(x["mean"], y["mean"], "o", color=colour)
            ax.annotate(str(n), (x["mean"], y["mean"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel("switch latency (s): boundary -> the reported label follows and stays")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].axhline(payload["protocol"]["true_switches_per_min"], color="k", lw=0.8, ls="--")
    axes[1].annotate(
        "true boundaries",
        (axes[1].get_xlim()[0], payload["protocol"]["true_switches_per_min"]),
        fontsize=7,
        xytext=(4, 3),
        textcoords="offset points",
    )
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=colours[r["group"]], label=f"{n} {r['setting']}")
        for n, r in enumerate(results, 1)
    ]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle("Streaming post-processing on synthetic radios (mean, bars: std over radios)")
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.streaming_quality", description=__doc__)
    parser.add_argument("--run", help="a trained demo run directory (or its model/ directory) to reuse")
    parser.add_argument("--work", default="runs/streaming-quality", help="where to train and cache radios")
    parser.add_argument("--steps", type=int, help="training steps when training (default: the demo's)")
    parser.add_argument(
        "--window", type=float, default=4.0, help="the model's window when its run has no config"
    )
    parser.add_argument("--hop", type=float, default=0.5, help="hop in seconds (default 0.5)")
    parser.add_argument("--seeds", type=int, default=5, help="radios, one per seed (default 5)")
    parser.add_argument("--segments", type=int, default=8, help="styles per radio (default 8)")
    parser.add_argument("--out", help="directory for the JSON result (default bench/results)")
    parser.add_argument("--docs", help=f"directory for the markdown table and the plot (default {DOCS})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a check of the script: 2 radios of 3 segments, 40 training steps, everything under --work",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.segments, args.steps = 2, 3, args.steps or 40
        args.work = f"{args.work}-quick"
        args.out, args.docs = args.out or args.work, args.docs or args.work
    args.out, args.docs = args.out or "bench/results", args.docs or str(DOCS)
    payload = run_study(args)
    path = write_result("streaming-quality", payload, Path(args.out))
    docs = Path(args.docs)
    write_markdown(payload, docs / "streaming-quality.md")
    plot(payload, docs / "streaming-quality.png")
    print(markdown_table(payload))
    print(f"\nwrote {path}, {docs / 'streaming-quality.md'} and {docs / 'streaming-quality.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
