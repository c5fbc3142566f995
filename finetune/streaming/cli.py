"""``python -m finetune stream``: a saved model on live audio - files, stdin or a microphone - through the engine.

    python -m finetune stream --model runs/genre/model radio.ogg set.flac --jsonl hops.jsonl --timeline t.png
    ffmpeg -i http://... -f s16le -ac 1 -ar 32000 - | python -m finetune stream --model M - --format s16le --rate 32000
    python -m finetune stream --model M --mic --min-hops 3 --margin 0.1

Files are read block by block (``--chunk`` seconds at their own rate, never whole) and fed together, one chunk per
file per round, through :meth:`StreamingEngine.push_many`, so several files are several sessions batched on one
model. Each hop prints a line (time, raw top-1 and its probability, smoothed top-1; ``--every`` thins them) and
each decision-layer segment event a line; ``--jsonl`` writes every hop as one JSON object, ``--timeline`` plots
the values over time with the segments as bands. ``--realtime`` paces files at wall-clock speed and reports the
lag of each hop behind the stream; ``--compare-offline`` runs the offline model on each hop's window (decoded
from the file again) and reports the largest difference. A file that cannot be read is reported and the others go
on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import yaml

from backbones.config import ConfigError

from ..data.audio import AudioLoadError, load_audio_span
from .engine import START_POLICIES, StreamingEngine
from .postprocess import PostProcessConfig
from .session import StreamError, StreamingSession
from .sources import PCM_FORMATS, AudioSource, FileSource, open_microphone, open_stdin
from .types import HopResult, SegmentEvent

__all__ = ["add_arguments", "hop_record", "run_stream"]


def _seconds_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds separated by commas (5,10,15), got {text!r}"
        ) from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive seconds separated by commas, got {text!r}")
    return values


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The stream command's options; single values are checked as they are parsed."""
    p.add_argument("--model", required=True, help="a saved model directory (e.g. runs/<name>/model)")
    p.add_argument("inputs", nargs="*", metavar="FILE", help="audio files (one session each), or - for stdin")
    p.add_argument("--mic", action="store_true", help="stream the default input device (needs musicft[mic])")
    p.add_argument("--duration", type=_positive(float), help="with --mic: stop after this many seconds")
    raw = p.add_argument_group("stdin (-)")
    raw.add_argument("--format", choices=sorted(PCM_FORMATS), help="raw PCM on stdin (default: a WAV stream)")
    raw.add_argument("--rate", type=_positive(int), help="input rate in Hz (raw PCM; --mic)")
    raw.add_argument("--channels", type=_positive(int), default=1, help="interleaved channels (default 1)")
    eng = p.add_argument_group("engine")
    eng.add_argument("--window", type=_positive(float), help="window seconds (default: the model's)")
    eng.add_argument("--windows", type=_seconds_list, help="several windows, e.g. 5,10,15 (averaged)")
    eng.add_argument("--hop", type=_positive(float), default=0.5, help="seconds between hops (default 0.5)")
    eng.add_argument("--start", choices=START_POLICIES, default="wait", help="start-of-stream policy")
    eng.add_argument(
        "--chunk", type=_positive(float), default=0.25, help="seconds fed per chunk (default 0.25)"
    )
    eng.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    eng.add_argument("--bf16", action="store_true", help="bfloat16 autocast for tokenize and encode")
    post = p.add_argument_group("post-processing (override --postprocess)")
    post.add_argument("--postprocess", help="a YAML file of PostProcessConfig keys")
    post.add_argument("--ema", type=float, help="EMA weight of the newest hop, in (0, 1]")
    post.add_argument("--mean-last", type=int, help="average the last N hops")
    post.add_argument("--min-hops", type=int, help="decision layer: hops a new label must lead")
    post.add_argument("--margin", type=float, help="decision layer: lead needed in each of those hops")
    post.add_argument("--min-duration", type=float, help="decision layer: seconds a label is kept at least")
    post.add_argument("--top-k", type=int, help="labels per hop in the JSONL (default 3)")
    out = p.add_argument_group("output")
    out.add_argument("--every", type=_positive(int), default=1, help="print every N-th hop (default 1)")
    out.add_argument("--jsonl", help="write every hop as a JSON line to this file")
    out.add_argument("--timeline", help="save the values over time with the segments to this PNG")
    out.add_argument("--realtime", action="store_true", help="pace files at wall-clock speed; report the lag")
    out.add_argument(
        "--compare-offline", action="store_true", help="check each hop against the offline model"
    )


def postprocess_config(args: argparse.Namespace) -> PostProcessConfig:
    """``--postprocess``'s YAML with the command line's post-processing options on top.

    Raises:
        ConfigError: an unknown key or bad value (named), or a file that is not a mapping.
    """
    data: dict[str, Any] = {}
    if args.postprocess:
        path = Path(args.postprocess).expanduser()
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a mapping of PostProcessConfig keys, got {type(loaded).__name__}"
            )
        data = loaded
    for key in ("ema", "mean_last", "top_k"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    data.setdefault("top_k", 3)
    decisions = {
        k: getattr(args, k) for k in ("min_hops", "margin", "min_duration") if getattr(args, k) is not None
    }
    if decisions:
        data["decisions"] = {**(data.get("decisions") or {}), **decisions}
    return PostProcessConfig.from_dict(data, "postprocess")


def _default_window(model: Any, model_dir: str) -> float:
    """The saved window plan's length, else the backbone's input length, rounded down to the column grid."""
    from ..inference import WindowPlan

    saved = WindowPlan.load(model_dir)
    seconds = saved.window_seconds if saved else model.backbone.pretrained_cfg.input_seconds
    column = model.backbone.stream_geometry().column_samples
    samples = max(1, int(seconds * model.sample_rate + 1e-6) // column) * column
    return samples / model.sample_rate


def hop_record(hop: HopResult, labels: tuple[str, ...], classification: bool) -> dict[str, Any]:
    """One hop as the JSONL line's object: session, index, time, raw ``probs`` (or ``ratings``) and ``smoothed``
    values by name, ``top_k``, the decision ``label``, its ``events`` and ``partial``."""
    named = {"probs" if classification else "ratings": dict(zip(labels, hop.probs.tolist()))}
    return {
        "session": hop.session,
        "index": hop.index,
        "time": hop.time,
        **named,
        "smoothed": dict(zip(labels, hop.smoothed.tolist())),
        "top_k": [{"label": name, "value": value} for name, value in hop.top_k],
        "label": hop.label,
        "events": [_event(e) for e in hop.events],
        "partial": hop.partial,
    }


def _event(event: SegmentEvent) -> dict[str, Any]:
    return {"kind": event.kind, "label": event.label, "time": event.time}


@dataclass
class _Track:
    """What the command keeps per session: its source, the plot's series and the segments."""

    source: AudioSource
    session: StreamingSession
    times: list[float] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    top: list[str] = field(default_factory=list)
    segments: list[tuple[float, float, str]] = field(default_factory=list)
    open_segment: tuple[float, str] | None = None
    failed: bool = False


class _Reporter:
    """Prints hop lines and events, writes JSONL, and collects the timeline, lags and offline differences."""

    def __init__(
        self, args: argparse.Namespace, model: Any, engine: StreamingEngine, jsonl: IO[str] | None
    ) -> None:
        self.args, self.model, self.engine, self.jsonl = args, model, engine, jsonl
        self.labels = tuple(model.labels)
        self.classification = model.task.is_classification
        self.prefix_names = False
        self.lags: list[float] = []
        self.diffs: list[float] = []

    def hops(self, track: _Track, hops: list[HopResult], now: float | None) -> None:
        for hop in hops:
            diff = self._offline_diff(track, hop) if self.args.compare_offline else None
            if now is not None:
                self.lags.append(now - hop.time)
            if hop.index % self.args.every == 0:
                print(self._line(track, hop, diff))
            self.events(track, hop.events)
            if self.args.timeline:
                track.times.append(hop.time)
                track.values.append(hop.smoothed.numpy())
                track.top.append(self.labels[int(hop.smoothed.argmax())])
            if self.jsonl is not None:
                record = hop_record(hop, self.labels, self.classification)
                if diff is not None:
                    record["offline_max_abs_diff"] = diff
                self.jsonl.write(json.dumps(record) + "\n")

    def events(self, track: _Track, events: tuple[SegmentEvent, ...], end: bool = False) -> None:
        for e in events:
            print(
                f"{self._prefix(track)}{e.time:8.2f} s  {'>>' if e.kind == 'start' else '<<'} {e.kind} {e.label}"
            )
            if e.kind == "start":
                track.open_segment = (e.time, e.label)
            elif track.open_segment is not None:
                track.segments.append((track.open_segment[0], e.time, e.label))
                track.open_segment = None
        if end and self.jsonl is not None:
            record = {
                "session": track.session.id,
                "end_of_stream": True,
                "events": [_event(e) for e in events],
            }
            self.jsonl.write(json.dumps(record) + "\n")

    def _prefix(self, track: _Track) -> str:
        return f"{track.session.id}  " if self.prefix_names else ""

    def _line(self, track: _Track, hop: HopResult, diff: float | None) -> str:
        head = f"{self._prefix(track)}{hop.time:8.2f} s  "
        if not self.classification:
            text = head + "  ".join(f"{name} {value:.3f}" for name, value in hop.top_k)
        else:
            raw, smooth = int(hop.probs.argmax()), int(hop.smoothed.argmax())
            text = (
                f"{head}{self.labels[raw]:<12} {float(hop.probs[raw]):.3f}   "
                f"smoothed {self.labels[smooth]:<12} {float(hop.smoothed[smooth]):.3f}"
            )
            if hop.label is not None:
                text += f"   label {hop.label}"
        return text + (f"   offline |diff| {diff:.1e}" if diff is not None else "")

    def _offline_diff(self, track: _Track, hop: HopResult) -> float:
        """The largest |streamed - offline| over the hop's window outputs; offline reads the window again."""
        source, rate = track.source, self.model.sample_rate
        assert isinstance(source, FileSource)
        end, worst = round(hop.time * rate), 0.0
        for seconds, value in hop.outputs.items():
            n = min(self.engine.window_samples[seconds], end)
            wave = load_audio_span(source.path, end - n, end, sample_rate=rate).to(self.engine.device)
            with torch.inference_mode(), self.engine._autocast():
                out = self.model(waveform=wave)
            ref = getattr(out, self.model.task.output_field)[0].float().cpu()
            worst = max(worst, float((value - ref).abs().max()))
        self.diffs.append(worst)
        return worst


def _open_sources(args: argparse.Namespace, stdin: IO[bytes] | None) -> tuple[list[AudioSource], int]:
    """The sources to stream and how many files could not be opened (each reported on stderr)."""
    if args.mic:
        if args.inputs:
            raise ConfigError("--mic streams the input device; give it without FILE arguments or -")
        return [open_microphone(args.rate, args.channels, args.chunk, args.duration)], 0
    if not args.inputs:
        raise ConfigError("nothing to stream: give audio files, - for stdin, or --mic")
    if "-" in args.inputs:
        if args.inputs != ["-"]:
            raise ConfigError("- (stdin) is one stream: give it alone, without files")
        if args.compare_offline:
            raise ConfigError("--compare-offline decodes each window again and needs files, not stdin")
        return [
            open_stdin(
                stdin if stdin is not None else sys.stdin.buffer, args.format, args.rate, args.channels
            )
        ], 0
    sources, failed = [], 0
    names = {}
    for path in args.inputs:
        name = path if path not in names else f"{path}#{names[path] + 1}"
        names[path] = names.get(path, 0) + 1
        try:
            sources.append(FileSource(Path(path).expanduser(), name))
        except AudioLoadError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    return sources, failed


def _fail(track: _Track, error: Exception) -> None:
    print(f"error: {track.session.id}: {error}", file=sys.stderr)
    track.failed = True
    track.source.close()
    track.session.close()


def _finish(reporter: _Reporter, track: _Track) -> None:
    end = track.session.flush()
    reporter.hops(track, end.hops, None)
    reporter.events(track, end.events, end=True)
    track.source.close()
    track.session.close()


def _stream(
    reporter: _Reporter, engine: StreamingEngine, tracks: list[_Track], args: argparse.Namespace
) -> None:
    """Feed every source chunk by chunk until all are done (or Ctrl-C ends them)."""
    active, t0, rounds = list(tracks), time.perf_counter(), 0
    try:
        while active:
            batch: dict[StreamingSession, np.ndarray] = {}
            for track in list(active):
                try:
                    block = track.source.read(max(1, round(args.chunk * track.source.sample_rate)))
                except (AudioLoadError, OSError) as e:
                    _fail(track, e)
                    active.remove(track)
                    continue
                if block is None:
                    _finish(reporter, track)
                    active.remove(track)
                else:
                    batch[track.session] = block
            rounds += 1
            if args.realtime:
                time.sleep(max(0.0, t0 + rounds * args.chunk - time.perf_counter()))
            results = engine.push_many(batch) if batch else {}
            now = time.perf_counter() - t0 if args.realtime else None
            for track in [t for t in active if t.session in results]:
                hops = results[track.session]
                if isinstance(hops, StreamError):
                    _fail(track, hops)
                    active.remove(track)
                else:
                    reporter.hops(track, hops, now)
    except KeyboardInterrupt:  # the end of a live stream: flush what was heard
        for track in active:
            _finish(reporter, track)


def _segments(track: _Track) -> list[tuple[float, float, str]]:
    """Decision segments, or runs of the smoothed top-1 without a decision layer."""
    if track.segments or not track.top:
        return track.segments
    runs, start = [], 0
    for i in range(1, len(track.top) + 1):
        if i == len(track.top) or track.top[i] != track.top[start]:
            runs.append((track.times[start], track.times[i - 1], track.top[start]))
            start = i
    return runs


def run_stream(args: argparse.Namespace, stdin: IO[bytes] | None = None) -> int:
    """Stream every input of ``args`` through one engine; returns 0, or 1 when some stream failed."""
    from ..model import AudioModel
    from ..plots import StreamTrack, plot_stream_timeline

    if args.window is not None and args.windows is not None:
        raise ConfigError("give --window or --windows, not both")
    if args.realtime and (args.mic or args.inputs == ["-"]):
        raise ConfigError("--realtime paces files; stdin and --mic arrive at their own pace already")
    config = postprocess_config(args)
    model = AudioModel.from_pretrained(args.model)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    windows = args.windows or (args.window or _default_window(model, args.model),)
    engine = StreamingEngine(
        model,
        hop_s=args.hop,
        windows=windows,
        start=args.start,
        device=device,
        dtype=torch.bfloat16 if args.bf16 else None,
        postprocess=config,
    )
    sources, failed = _open_sources(args, stdin)
    tracks = []
    for source in sources:
        channels = source.channels if source.channels > 1 else None
        session = engine.open_session(source.sample_rate, channels, session_id=source.name)
        tracks.append(_Track(source, session))
    shown = ", ".join(f"{w:g}" for w in windows)
    print(
        f"{args.model}: {len(tracks)} stream(s), window(s) {shown} s, hop {args.hop:g} s, start {args.start}, "
        f"{device}{' bf16' if args.bf16 else ''}",
        file=sys.stderr,
    )
    jsonl = open(args.jsonl, "w", encoding="utf-8") if args.jsonl else None  # noqa: SIM115
    try:
        reporter = _Reporter(args, model, engine, jsonl)
        reporter.prefix_names = len(tracks) > 1
        _stream(reporter, engine, tracks, args)
    finally:
        if jsonl is not None:
            jsonl.close()
    for track in tracks:
        if not track.failed and track.segments:
            shown = "; ".join(f"{a:.2f}-{b:.2f} s {label}" for a, b, label in track.segments)
            print(f"{track.session.id}: {len(track.segments)} segment(s): {shown}")
    if reporter.lags:
        lag = statistics.median(reporter.lags), max(reporter.lags)
        print(
            f"lag behind the stream: median {lag[0]:.3f} s, max {lag[1]:.3f} s over {len(reporter.lags)} hops"
        )
    if args.compare_offline and reporter.diffs:
        print(
            f"offline check: max |streamed - offline| = {max(reporter.diffs):.2e} over {len(reporter.diffs)} hops"
        )
    if args.timeline:
        plotted = {
            t.session.id: StreamTrack(np.array(t.times), np.stack(t.values), tuple(_segments(t)))
            for t in tracks
            if t.times
        }
        if plotted:
            classes = model.task.is_classification
            ylabel, ylim = ("smoothed probability", (0.0, 1.0)) if classes else ("smoothed rating", None)
            path = plot_stream_timeline(plotted, model.labels, args.timeline, ylabel=ylabel, ylim=ylim)
            print(f"timeline: {path}")
    failed += sum(t.failed for t in tracks)
    if failed:
        print(f"{failed} of {len(args.inputs) or 1} stream(s) failed (see the errors above)", file=sys.stderr)
    return 1 if failed else 0
