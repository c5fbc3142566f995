"""recipes/tagging.py end to end on a tiny MagnaTagATune in its published layout (2 optimizer steps, tiny
backbone, CPU, with mixup and SpecAugment on): a run directory, tagging metrics, the printed summary."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import soundfile as sf

from finetune.config import load_config
from tests.audio_signals import tone

ROOT = Path(__file__).resolve().parents[2]
SR = 16000
TAGS = ["guitar", "piano", "no voice"]
# clip id, folder (0-b train, c validation, d-f test), tags; the tag is audible: guitar 440 Hz, piano 1760 Hz
CLIPS = [
    (i, "0" if i < 8 else "c" if i < 12 else "d", [TAGS[i % 2]] + (["no voice"] if i % 3 else []))
    for i in range(16)
]


@pytest.fixture(scope="module")
def mtat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mtat")
    with open(root / "annotations_final.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL)
        w.writerow(["clip_id", *TAGS, "mp3_path"])
        for clip_id, folder, tags in CLIPS:
            w.writerow([clip_id, *(int(t in tags) for t in TAGS), f"{folder}/clip-{clip_id}.mp3"])
            (root / folder).mkdir(exist_ok=True)
            wave = tone(440.0 if "guitar" in tags else 1760.0, 2 * SR, SR)[0].numpy() * 0.5
            sf.write(root / folder / f"clip-{clip_id}.mp3", wave, SR, format="MP3")
    return root


@pytest.mark.usefixtures("one_thread")
def test_tagging_recipe_runs_and_reports_tagging_metrics(mtat: Path, tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("recipe_tagging", ROOT / "recipes" / "tagging.py")
    tagging = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tagging)
    out = tmp_path / "run"
    code = tagging.main(
        [
            "--config",
            str(ROOT / "recipes" / "configs" / "tagging_cnn14_full_mtat.yaml"),
            "model.backbone=cnn14.tiny",
            "model.checkpoint=null",
            "model.num_outputs=3",
            "model.spec_augment={time_width: [0, 10]}",
            f"data.root={mtat}",
            "data.top_k=3",
            "data.clip_seconds=2.0",
            "data.crop_seconds=1.0",
            "data.eval_crops=2",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.eval_every=2",
            "train.save_every=2",
            "train.num_workers=0",
            "train.mixed_precision=no",
            "train.progress=false",
            f"train.output_dir={out}",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"map", "roc_auc", "micro_f1", "macro_f1", "per_class_ap"} and metrics["n"] == 4
    assert list(metrics["per_class_ap"]) == ["no voice", "guitar", "piano"]  # top-3 by clip count
    assert (out / "average_precision.png").is_file() and (out / "model" / "config.json").is_file()
    cfg = load_config(out / "config.yaml")
    assert cfg.model.mixup.alpha == 0.3 and cfg.model.spec_augment.time_width == (0, 10)
    printed = capsys.readouterr().out
    assert f"mAP {metrics['map']:.3f}   ROC-AUC {metrics['roc_auc']:.3f}" in printed
    best = max(metrics["per_class_ap"], key=lambda k: metrics["per_class_ap"][k])
    assert printed.index(best) < min(printed.index(k) for k in TAGS if k != best)  # best tag listed first
