"""Does the sound font change what PercePiano's audio says? ``python -m eval.percepiano_soundfont``.

Renders PercePiano's MIDI with each sound font (cached per font), reports the renders' spectrum (centroid,
energy above 2/4/8 kHz, clipped renders) and fits a ridge on log-mel statistics (mean and standard deviation of
64 log-mel bands over the clip: 128 numbers) to the 19 ratings, per fold protocol and validation fold: the ridge's
penalty is chosen on the validation fold, the score is on the fixed test set. Prints a table, writes it as
Markdown (``--out-md``) and the figures as JSON under ``bench/results/``.

Example (the figures in ``docs/results/percepiano-soundfont.md``; Debian: ``apt-get install fluid-soundfont-gm``)::

    python -m eval.percepiano_soundfont --root ../shared/data/percepiano \\
        --soundfont default --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 --workers 2 \\
        --out-md docs/results/percepiano-soundfont.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from backbones.frontends import PannsLogMel
from eval.timing import write_result
from finetune.data import load_audio, load_percepiano
from finetune.data.percepiano import LABELS_FILE
from finetune.data.render import PianoRenderer, RenderSettings, render_info
from finetune.data.spectrum import SPECTRUM_EDGES_HZ, Spectrum

ALPHAS = tuple(10.0**k for k in range(-2, 5))


def features(paths: list[str], sample_rate: int) -> np.ndarray:
    """Log-mel mean and std per band (64 + 64) of each clip.

    Shapes: returns [N, 128].
    """
    mel = PannsLogMel(sample_rate, n_fft=1024, hop_length=256, n_mels=64, f_max=sample_rate / 2, dft="fft")
    rows = []
    with torch.no_grad():
        for path in paths:
            wave, _ = load_audio(path, sample_rate=sample_rate, mono=True)
            m = mel(wave)[0]  # [64, T]
            rows.append(torch.cat([m.mean(-1), m.std(-1)]).numpy())
    return np.stack(rows)


def _pearson(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    pc, yc = pred - pred.mean(0), y - y.mean(0)
    return (pc * yc).sum(0) / np.sqrt((pc**2).sum(0) * (yc**2).sum(0) + 1e-12)


def ridge_scores(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, float]:
    """Ridge on standardised features, penalty chosen on validation R2; test R2, mean r and MAE."""
    scaler = StandardScaler().fit(x["train"])
    xs = {k: scaler.transform(v) for k, v in x.items()}
    fits = [Ridge(alpha=a).fit(xs["train"], y["train"]) for a in ALPHAS]
    val = [r2_score(y["validation"], f.predict(xs["validation"])) for f in fits]
    best = int(np.argmax(val))
    pred = fits[best].predict(xs["test"])
    return {
        "alpha": ALPHAS[best],
        "validation_r2": float(val[best]),
        "test_r2": float(r2_score(y["test"], pred)),
        "test_mean_r": float(_pearson(pred, y["test"]).mean()),
        "test_mae": float(np.abs(pred - y["test"]).mean()),
        "train_mean_test_r2": float(
            r2_score(y["test"], np.broadcast_to(y["train"].mean(0), y["test"].shape))
        ),
    }


def _midi_subset(midi_dir: Path, limit: int | None, tmp: Path) -> Path:
    """``midi_dir``, or a folder of links to its first ``limit`` files (a quick check of the script)."""
    if limit is None:
        return midi_dir
    for path in sorted(midi_dir.iterdir())[:limit]:
        (tmp / path.name).symlink_to(path.resolve())
    return tmp


def study_font(font: str | None, protocols: list[str], args: argparse.Namespace, midi_dir: Path) -> dict:
    """Spectrum and ridge scores of one sound font (None: the default) over the protocols and their folds."""
    load = {
        "labels": args.root / LABELS_FILE,
        "midi_dir": midi_dir,
        "sample_rate": args.sample_rate,
        "soundfont": font,
        "render_workers": args.workers,
        "render_cache": args.cache,
    }
    settings = RenderSettings.of(args.sample_rate, font)
    t0 = time.perf_counter()
    first = load_percepiano(fold=protocols[0], **load).with_format(None)
    render_s = time.perf_counter() - t0
    rows = {
        n: (p, r)
        for split in first.values()
        for n, p, r in zip(split["name"], split["path"], split["ratings"])
    }
    names = sorted(rows)
    feat = dict(zip(names, features([rows[n][0] for n in names], args.sample_rate)))
    infos = [render_info(rows[n][0]) for n in names]
    spec = Spectrum.pooled(i.spectrum for i in infos)
    peaks = np.array([i.peak for i in infos])
    out: dict[str, Any] = {
        "soundfont": settings.font_label,
        "segments": len(names),
        "load_and_render_seconds": render_s,
        "centroid_hz": spec.centroid_hz,
        "median_clip_centroid_hz": float(np.median([i.spectrum.centroid_hz for i in infos])),
        "level_offset_db": PianoRenderer.from_settings(settings).level_offset_db,
        "share_above": {f"{e:g}": spec.share_above(e) for e in SPECTRUM_EDGES_HZ},
        "clipped_renders": int((peaks > 1.0).sum()),
        "median_peak": float(np.median(peaks)),
        "protocols": {},
    }
    for protocol in protocols:
        folds = []
        for f in range(args.n_folds):
            ds = load_percepiano(fold=protocol, fold_index=f, n_folds=args.n_folds, **load).with_format(None)
            xs = {k: np.stack([feat[n] for n in v["name"]]) for k, v in ds.items()}
            ys = {k: np.array(v["ratings"], dtype=np.float64) for k, v in ds.items()}
            folds.append(
                {"fold_index": f, "sizes": {k: len(v) for k, v in ds.items()}, **ridge_scores(xs, ys)}
            )
        out["protocols"][protocol] = folds
    return out


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def markdown(results: dict[str, dict], args: argparse.Namespace) -> str:
    """The study's tables: spectrum per font, then ridge scores per protocol and font (mean ± std over folds)."""
    fonts = list(results)
    edges = "/".join(f"{e / 1000:g}" for e in SPECTRUM_EDGES_HZ)
    lines = [
        "# PercePiano: does the sound font change the results?",
        "",
        f"Rendered at {args.sample_rate} Hz by `finetune.data.render` (mono, one SoundFont preset: 0:0 grand piano).",
        "Spectrum: all renders pooled (one FFT per clip, energies summed); the median of the per-clip centroids",
        "beside it. Ridge: standardised log-mel statistics (mean and std of 64 log-mel bands, 128 numbers), penalty",
        "chosen on the validation fold, scored on the fixed test set; mean ± std over the "
        f"{args.n_folds} validation folds (the test set is the same in every fold). `train mean` predicts the",
        "training ratings' mean (R2 just below 0).",
        "",
        f"| sound font | level offset (dB) | segments | centroid (Hz) | median clip centroid (Hz) | "
        f"energy above {edges} kHz | clipped renders | median peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        shares = " / ".join("n/a" if s is None else f"{s:.1e}" for s in r["share_above"].values())
        lines.append(
            f"| {r['soundfont']} | {r['level_offset_db']:+.1f} | {r['segments']} | {r['centroid_hz']:.0f} | "
            f"{r['median_clip_centroid_hz']:.0f} | "
            f"{shares} | {r['clipped_renders']} | {r['median_peak']:.2f} |"
        )
    lines += ["", "| protocol | metric | " + " | ".join(fonts) + " | difference (last - first), per fold |"]
    lines.append("|---|---|" + "---|" * (len(fonts) + 1))
    for protocol in results[fonts[0]]["protocols"]:
        for metric, label in (
            ("test_r2", "test R2"),
            ("test_mean_r", "test mean r"),
            ("train_mean_test_r2", "train mean R2"),
        ):
            per_font = [[f[metric] for f in results[font]["protocols"][protocol]] for font in fonts]
            diff = np.array(per_font[-1]) - np.array(per_font[0])
            cells = " | ".join(_mean_std(v) for v in per_font)
            lines.append(f"| {protocol} | {label} | {cells} | {_mean_std(list(diff))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.percepiano_soundfont", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--root", type=Path, required=True, help="folder with the label JSON and midi/")
    parser.add_argument(
        "--soundfont",
        action="append",
        default=None,
        help="an .sf2 file, or 'default' (TimGM6mb); repeat to compare",
    )
    parser.add_argument("--protocols", default="performer,excerpt,composition")
    parser.add_argument("--n-folds", type=int, default=4)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--cache", type=Path, default=None, help="render cache (default $MUSICFT_CACHE/...)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N MIDI files (a quick check)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-md", type=Path, default=None)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fonts = [None if f == "default" else f for f in (args.soundfont or ["default"])]
    protocols = args.protocols.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        midi_dir = _midi_subset(args.root / "midi", args.limit, Path(tmp))
        results = {
            RenderSettings.of(args.sample_rate, f).soundfont.name: study_font(f, protocols, args, midi_dir)
            for f in fonts
        }
    text = markdown(results, args)
    print(text)
    if args.out_md is not None:
        args.out_md.parent.mkdir(parents=True, exist_ok=True)
        args.out_md.write_text(text)
    outputs = ("out", "out_md", "cache")  # where files went is not part of the experiment
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in outputs}
    path = write_result("percepiano-soundfont", {"config": config, "results": results}, Path(args.out))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
