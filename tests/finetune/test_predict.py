"""``python -m finetune predict``: per-file top-k probabilities (calibrated when the model has a calibration) or
ratings, as CSV or JSONL, from files or a manifest; an unreadable file gets an error row and exit status 1."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.calibration import Calibration
from finetune.cli import main
from finetune.descriptors import descriptor_names
from finetune.inference import WindowPlan, predict_clips
from finetune.model import AudioModel, build_model
from tests.audio_signals import music

SR = 32000


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny genre model saved with a window plan, and a folder of two short files."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = build_model("cnn14.tiny", head="linear", labels=("calm", "loud", "odd"))
    model.save_pretrained(root / "model")
    WindowPlan(0.5, crops=2).save(root / "model")
    audio = root / "audio"
    audio.mkdir()
    for i, rate in enumerate((22050, 44100)):
        sf.write(audio / f"song{i}.wav", music(1, int(rate * (1.0 + i)), rate, seed=i)[0].numpy(), rate)
    return root / "model", audio


@pytest.mark.usefixtures("one_thread")
def test_csv_of_top_k_classes_matches_the_clip_predictions(
    saved: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, audio = saved
    files = [str(audio / "song0.wav"), str(audio / "song1.wav")]
    assert main(["predict", "--model", str(model_dir), "--top-k", "2", "--no-progress", *files]) == 0
    captured = capsys.readouterr()
    assert "2 file(s), 2 window(s) of 0.5 s evenly spaced over each clip" in captured.err
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert list(rows[0]) == ["path", "windows", "error", "label_1", "p_1", "label_2", "p_2"]
    model = AudioModel.from_pretrained(model_dir)
    clips = list(predict_clips(model, [{"path": f} for f in files], WindowPlan(0.5, crops=2)))
    for row, clip in zip(rows, clips):
        probs = torch.from_numpy(clip.output).softmax(-1)
        order = probs.argsort(descending=True)
        assert row["path"] in files and row["windows"] == "2" and row["error"] == ""
        assert [row["label_1"], row["label_2"]] == [model.labels[int(i)] for i in order[:2]]
        assert float(row["p_1"]) == pytest.approx(float(probs[order[0]]), abs=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_manifest_jsonl_calibration_and_unreadable_files(saved: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, audio = saved
    calibrated = tmp_path / "calibrated"
    for f in model_dir.iterdir():
        (calibrated / f.name).parent.mkdir(exist_ok=True)
        (calibrated / f.name).write_bytes(f.read_bytes())
    calibration = Calibration("single_label", 3, temperature=4.0, labels=("calm", "loud", "odd"))
    calibration.save(calibrated)
    (audio / "broken.wav").write_bytes(b"")
    manifest = tmp_path / "list.csv"
    manifest.write_text("file,note\nsong0.wav,x\nbroken.wav,y\n")
    out = tmp_path / "p.jsonl"
    args = ["predict", "--model", str(calibrated), "--manifest", str(manifest), "--path-column", "file"]
    args += ["--root", str(audio), "--hop", "0.25", "--out", str(out), "--no-progress"]
    assert main(args) == 1  # one file could not be read
    good, bad = [json.loads(line) for line in out.read_text().splitlines()]
    assert bad == {"path": "broken.wav", "windows": 0, "error": "the file is empty (0 bytes)"}
    assert good["path"] == "song0.wav" and good["windows"] == 3 and [t["label"] for t in good["top"]]
    model = AudioModel.from_pretrained(calibrated)
    assert model.calibration == calibration
    clip = next(predict_clips(model, [{"path": str(audio / "song0.wav")}], WindowPlan(0.5, hop_seconds=0.25)))
    expected = calibration.probabilities(torch.from_numpy(clip.output))
    assert [t["p"] for t in good["top"]] == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-6)


def test_ratings_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    build_model("cnn14.tiny", head="rating", labels=("tempo", "touch")).save_pretrained(tmp_path / "rater")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(int(SR * 0.8), dtype=np.float32), SR)
    assert (
        main(["predict", "--model", str(tmp_path / "rater"), "--window", "0.4", "--no-progress", str(wav)])
        == 0
    )
    (row,) = csv.DictReader(capsys.readouterr().out.splitlines())
    assert list(row) == ["path", "windows", "error", "tempo", "touch"] and row["windows"] == "2"
    assert main(["predict", "--model", str(tmp_path / "rater")]) == 2
    assert "nothing to predict: give audio files and/or --manifest" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_tagging_models_give_independent_tag_probabilities(
    saved: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, audio = saved
    torch.manual_seed(0)
    build_model("cnn14.tiny", labels=("rock", "piano", "voice"), multi_label=True).save_pretrained(
        tmp_path / "m"
    )
    wav = str(audio / "song1.wav")
    assert main(["predict", "--model", str(tmp_path / "m"), "--window", "0.5", "--no-progress", wav]) == 0
    (row,) = csv.DictReader(capsys.readouterr().out.splitlines())
    clip = next(predict_clips(AudioModel.from_pretrained(tmp_path / "m"), [{"path": wav}], WindowPlan(0.5)))
    expected = torch.from_numpy(clip.output).sigmoid()  # one sigmoid per tag, not a softmax over tags
    assert [float(row[f"p_{r}"]) for r in (1, 2, 3)] == pytest.approx(
        sorted(expected.tolist(), reverse=True), abs=1e-6
    )
    assert float(expected.sum()) != pytest.approx(1.0, abs=1e-3)


def test_a_hybrid_model_is_refused_before_any_file_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    names = descriptor_names(["audio"])
    build_model("cnn14.tiny", head="hybrid", labels=("a", "b"), descriptor_names=names).save_pretrained(
        tmp_path / "hybrid"
    )
    assert main(["predict", "--model", str(tmp_path / "hybrid"), "--no-progress", "missing.wav"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {tmp_path / 'hybrid'}: its hybrid head needs each clip's descriptors ({', '.join(names[:3])}, "
        "...), which predict does not compute; predict it in code with finetune.inference.predict_clips"
    )
    assert "missing.wav" not in err
