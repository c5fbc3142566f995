"""``python -m finetune stream``: files as batched sessions equal to the engine, stdin PCM and WAV, a bad file
among good ones, the offline check, the timeline, ``--realtime``, ``--mic`` without its library and bad options."""

from __future__ import annotations

import io
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.cli import main
from finetune.data import load_audio
from finetune.model import AudioModel, build_model
from finetune.streaming import StreamingEngine
from tests.audio_signals import music

PNG = b"\x89PNG\r\n\x1a\n"
LABELS = ("calm", "loud", "odd")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PaSST genre model and three files: stereo 22.05 kHz (3 s), mono 44.1 kHz (4 s), mono 16 kHz
    float with NaN samples from 1.8 s on."""
    root = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    build_model("passt_s.tiny", head="linear", labels=LABELS).save_pretrained(root / "model")
    sf.write(root / "stereo.wav", music(2, 3 * 22050, 22050, seed=1).numpy().T, 22050)
    sf.write(root / "mono.wav", music(1, 4 * 44100, 44100, seed=2)[0].numpy(), 44100)
    nan = music(1, 3 * 16000, 16000, seed=3)[0].numpy()
    nan[int(1.8 * 16000) :] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    (root / "bad.wav").write_bytes(b"RIFF\x04\x00\x00\x00WAVEjunk")
    return root


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["stream", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _hops(path: Path) -> dict[str, list[dict]]:
    by_session: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "index" in record:
            by_session.setdefault(record["session"], []).append(record)
    return by_session


def _engine_hops(model_dir: Path, path: Path, **options: object) -> list:
    """The engine's hops for the whole file pushed at once (the reference the command must reproduce)."""
    engine = StreamingEngine(
        AudioModel.from_pretrained(model_dir), hop_s=0.5, postprocess={"top_k": 3}, **options
    )
    wave, rate = load_audio(path, mono=False)
    session = engine.open_session(rate, wave.shape[0] if wave.shape[0] > 1 else None)
    return session.push(wave) + session.flush().hops


@pytest.mark.usefixtures("one_thread")
def test_two_files_are_two_sessions_whose_hops_equal_the_engine(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(saved / "stereo.wav"), str(saved / "mono.wav")]
    jsonl = tmp_path / "hops.jsonl"
    code, out, err = _run(
        capsys,
        "--model",
        str(saved / "model"),
        *files,
        "--window",
        "1",
        "--chunk",
        "0.3",
        "--jsonl",
        str(jsonl),
    )
    assert code == 0, err
    assert "2 stream(s), window(s) 1 s, hop 0.5 s, start wait, cpu" in err
    streamed = _hops(jsonl)
    assert list(streamed) == files
    for name in files:
        reference = _engine_hops(saved / "model", Path(name), window_s=1.0)
        assert [h["time"] for h in streamed[name]] == [h.time for h in reference]
        assert len(reference) == {files[0]: 5, files[1]: 7}[name]  # hops at 1.0, 1.5, ... to the end
        for got, want in zip(streamed[name], reference):
            assert list(got["probs"]) == list(LABELS) and got["label"] is None and got["partial"] is False
            np.testing.assert_allclose(list(got["probs"].values()), want.probs.numpy(), rtol=0, atol=1e-6)
            assert [t["label"] for t in got["top_k"]] == [name for name, _ in want.top_k]
    # one printed line per hop, named by session, with the raw and smoothed top-1
    first = streamed[files[1]][0]
    top = max(first["probs"], key=first["probs"].get)
    assert f"{files[1]}      1.00 s  {top:<12} {first['probs'][top]:.3f}   smoothed {top:<12}" in out
    assert len([line for line in out.splitlines() if " s  " in line]) == 12


@pytest.mark.usefixtures("one_thread")
def test_a_bad_file_is_reported_and_the_others_go_on(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = tmp_path / "hops.jsonl"
    files = [str(saved / n) for n in ("bad.wav", "nan.wav", "stereo.wav")]
    code, out, err = _run(
        capsys, "--model", str(saved / "model"), *files, "--window", "1", "--jsonl", str(jsonl)
    )
    assert code == 1
    assert f"error: cannot load audio '{files[0]}': not readable as audio (libsndfile:" in err
    assert re.search(
        rf"error: {re.escape(files[1])}: session .*: the chunk holds non-finite samples \(\d+ NaN", err
    )
    assert "2 of 3 stream(s) failed (see the errors above)" in err
    streamed = _hops(jsonl)
    assert [h["time"] for h in streamed[files[1]]] == [1.0, 1.5]  # the hops before the NaN chunk
    assert [h["time"] for h in streamed[files[2]]] == [1.0, 1.5, 2.0, 2.5, 3.0]


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))


@pytest.mark.usefixtures("one_thread")
def test_stdin_pcm_and_wav_give_the_file_hops(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model, stereo = str(saved / "model"), saved / "stereo.wav"
    file_jsonl = tmp_path / "file.jsonl"
    assert _run(capsys, "--model", model, str(stereo), "--window", "1", "--jsonl", str(file_jsonl))[0] == 0
    want = _hops(file_jsonl)[str(stereo)]
    pcm = sf.read(stereo, dtype="int16")[0]  # [N, 2]: interleaved as written
    _stdin(monkeypatch, pcm.tobytes())
    pcm_jsonl = tmp_path / "pcm.jsonl"
    code, _, err = _run(
        capsys, "--model", model, "-", "--format", "s16le", "--rate", "22050", "--channels", "2",
        "--window", "1", "--chunk", "0.1", "--jsonl", str(pcm_jsonl),
    )  # fmt: skip
    assert code == 0, err
    _stdin(monkeypatch, stereo.read_bytes())
    wav_jsonl = tmp_path / "wav.jsonl"
    assert _run(capsys, "--model", model, "-", "--window", "1", "--jsonl", str(wav_jsonl))[0] == 0
    for jsonl in (pcm_jsonl, wav_jsonl):
        got = _hops(jsonl)["stdin"]
        assert [h["time"] for h in got] == [h["time"] for h in want]
        for g, w in zip(got, want):
            np.testing.assert_allclose(
                list(g["probs"].values()), list(w["probs"].values()), rtol=0, atol=1e-6
            )


@pytest.mark.usefixtures("one_thread")
def test_compare_offline_reports_a_difference_within_1e_5(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Partial windows from the start and two window lengths: every output is checked against offline."""
    jsonl = tmp_path / "hops.jsonl"
    code, out, err = _run(
        capsys, "--model", str(saved / "model"), str(saved / "stereo.wav"), str(saved / "mono.wav"),
        "--windows", "0.5,1.5", "--start", "partial", "--compare-offline", "--jsonl", str(jsonl),
    )  # fmt: skip
    assert code == 0, err
    worst = float(re.search(r"offline check: max \|streamed - offline\| = (\S+) over 14 hops", out).group(1))
    hops = [h for hops in _hops(jsonl).values() for h in hops]
    assert len(hops) == 14 and hops[0]["time"] == 0.5 and hops[0]["partial"] is True
    assert max(h["offline_max_abs_diff"] for h in hops) == pytest.approx(worst, rel=0.01)
    assert 0 <= worst <= 1e-5
    assert re.search(r"   offline \|diff\| \d\.\de-\d\d$", out.splitlines()[0])


@pytest.mark.usefixtures("one_thread")
def test_timeline_png_and_decision_segments(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "timeline.png"
    code, out, _ = _run(
        capsys, "--model", str(saved / "model"), str(saved / "mono.wav"), "--window", "1",
        "--min-hops", "2", "--timeline", str(png), "--every", "3",
    )  # fmt: skip
    assert code == 0 and png.read_bytes()[:8] == PNG
    assert f"timeline: {png}" in out
    hop_lines = [line for line in out.splitlines() if "smoothed" in line]
    assert [line.split(" s ")[0].strip() for line in hop_lines] == ["1.00", "2.50", "4.00"]  # --every 3
    start = re.search(r"\n\s+1\.50 s  >> start (\w+)\n", out)  # two leading hops: 1.0 and 1.5 s
    assert start is not None and start.group(1) in LABELS
    assert f"4.00 s  << end {start.group(1)}" in out
    assert re.search(rf"mono\.wav: \d segment\(s\): 1\.50-\S+ s {start.group(1)}", out)


@pytest.mark.usefixtures("one_thread")
def test_realtime_paces_the_file_and_reports_the_lag(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    code, out, _ = _run(
        capsys, "--model", str(saved / "model"), str(saved / "stereo.wav"), "--window", "1", "--realtime"
    )
    assert code == 0 and time.perf_counter() - t0 >= 3.0  # 3 s of audio at wall-clock speed
    median, worst, hops = re.search(
        r"lag behind the stream: median (\S+) s, max (\S+) s over (\d+) hops", out
    ).groups()
    assert int(hops) == 4 and 0.0 <= float(median) <= float(worst)  # the flush's hop is not paced


def test_mic_without_the_library_names_the_extra(
    saved: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if it were not installed
    code, _, err = _run(capsys, "--model", str(saved / "model"), "--mic", "--window", "1")
    assert code == 1
    assert (
        "error: --mic needs an audio-input library: pip install 'musicft[mic]'  (the sounddevice package"
        in err
    )


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["x.wav", "--hop", "0.33"], 1, "error: hop_s=0.33 s is not a multiple of passt_s.tiny's token-column stride (0.1 s"),
        (["x.wav", "--ema", "2"], 2, "error: postprocess: ema is the weight of the newest hop and must lie in (0, 1], got 2.0"),
        (["x.wav", "--window", "1", "--windows", "1,2"], 2, "error: give --window or --windows, not both"),
        ([], 2, "error: nothing to stream: give audio files, - for stdin, or --mic"),
        (["-", "x.wav"], 2, "error: - (stdin) is one stream: give it alone, without files"),
        (["-", "--compare-offline"], 2, "error: --compare-offline decodes each window again and needs files, not stdin"),
        (["-", "--format", "f32le"], 1, "error: raw PCM on stdin (--format f32le) needs its sample rate: add --rate HZ"),
        (["-"], 1, "error: stdin does not start with a WAV header; for raw samples give --format s16le|f32le"),
        (["-", "--realtime"], 2, "error: --realtime paces files; stdin and --mic arrive at their own pace already"),
    ],
)  # fmt: skip
def test_bad_options_get_the_cli_error(
    argv: list[str],
    code: int,
    message: str,
    saved: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _stdin(monkeypatch, b"not audio at all")
    got, _, err = _run(capsys, "--model", str(saved / "model"), "--window", "1", *argv)
    assert got == code and message in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--windows", "5,x"], "argument --windows: expected seconds separated by commas (5,10,15), got '5,x'"),
        (["--hop", "0"], "argument --hop: must be positive, got 0"),
        (["--every", "two"], "argument --every: expected a positive int, got 'two'"),
        (["--format", "s24le"], "argument --format: invalid choice: 's24le'"),
    ],
)  # fmt: skip
def test_options_are_checked_as_they_are_parsed(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["stream", "--model", "m", "x.wav", *argv])
    assert info.value.code == 2 and f"error: {message}" in capsys.readouterr().err
