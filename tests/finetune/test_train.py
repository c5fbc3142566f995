"""The accelerate training loop: exact resume, divergence handling, checkpoints, early stopping, metrics, and
the task deciding targets, metrics and the selection metric (multi-label end to end)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from backbones.config import ConfigError
from finetune.checkpointing import ResumeMismatchError, read_state
from finetune.train import TrainConfig, TrainingDivergedError, TrainingInterrupted, train
from heads.tasks import SINGLE_LABEL


@dataclass
class _Out:
    loss: torch.Tensor | None
    logits: torch.Tensor


class _TinyNet(nn.Module):
    """Waveform classifier with dropout, so that resuming must restore the RNG too."""

    task = SINGLE_LABEL

    def __init__(self, n_classes: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 16, 33, stride=4)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, n_classes)
        self.scale = scale

    def forward(self, waveform: torch.Tensor, labels: torch.Tensor | None = None) -> _Out:
        h = self.conv(waveform.unsqueeze(1)).pow(2).mean(-1).log1p()
        logits = self.fc(self.drop(h)) * self.scale
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return _Out(loss, logits)


class _Tones(Dataset):
    """Class k is a sine at frequency 200*(k+1) Hz with random phase and noise: learnable, not trivial."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        t = torch.arange(1600) / 8000
        phase = torch.rand(n, 1, generator=g) * 6.28
        self.x = torch.sin(2 * torch.pi * 200 * (self.labels[:, None] + 1) * t + phase)
        self.x += 0.3 * torch.randn(n, 1600, generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.labels[i])


class _CropCollate:
    """Random crops whose randomness derives from (seed, epoch, batch index), told by the loop."""

    def __init__(self, length: int = 1200, seed: int = 0) -> None:
        self.length, self.seed, self.epoch, self.batch = length, seed, 0, 0

    def set_position(self, epoch: int, batches_done: int) -> None:
        self.epoch, self.batch = epoch, batches_done

    def __call__(self, items: list) -> dict:
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, self.batch)) % 2**62)
        self.batch += 1
        starts = torch.randint(0, 1600 - self.length + 1, (len(items),), generator=g)
        wave = torch.stack([x[s : s + self.length] for (x, _), s in zip(items, starts.tolist())])
        return {"waveform": wave, "labels": torch.tensor([y for _, y in items])}


class _CrashingCollate(_CropCollate):
    """Simulates a crash (killed job) when the n-th batch is requested."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.calls, self.crash_at = 0, crash_at

    def __call__(self, items: list) -> dict:
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("simulated crash")
        return super().__call__(items)


def _run(tmp, max_steps, collate=None, settings=None, **kw):
    torch.manual_seed(0)
    cfg = TrainConfig(
        **{
            "output_dir": str(tmp),
            "max_steps": max_steps,
            "batch_size": 4,
            "lr": 3e-3,
            "eval_every": 1000,
            "log_every": 1,
            "progress": False,
            "warmup_ratio": 0.1,
            **kw,
        }
    )
    return train(
        _TinyNet(),
        _Tones(24, 0),
        _Tones(12, 1),
        cfg,
        collate or _CropCollate(),
        _CropCollate(seed=1),
        settings=settings,
    )


def _losses(res):
    return [(h["step"], h["loss"]) for h in res.history if "loss" in h]


def test_resume_reproduces_uninterrupted_losses_step_for_step(tmp_path, caplog):
    full = _run(tmp_path / "full", 9, save_every=100)
    # 24 items / batch 4 = 6 batches per epoch: the run crashes in epoch 2, after the checkpoint at step 5
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "split", 9, collate=_CrashingCollate(crash_at=8), save_every=5)
    assert (tmp_path / "split" / "checkpoints" / "step_5").is_dir()
    with caplog.at_level(logging.INFO, logger="finetune.train"):
        resumed = _run(tmp_path / "split", 9, save_every=5)  # a fresh process: everything built anew
    assert f"resuming from {tmp_path / 'split' / 'checkpoints' / 'step_5'} (step 5 of 9)" in caplog.messages
    assert _losses(resumed) == _losses(full)
    assert len(_losses(full)) == 9 and len({v for _, v in _losses(full)}) == 9
    # metrics.jsonl held steps 1-7 when the run crashed; the resumed run rewrote it from step 5's history
    logged = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in logged if "loss" in r] == _losses(full)


def test_checkpoints_are_complete_and_pruned(tmp_path):
    _run(tmp_path, 9, save_every=2, keep_checkpoints=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_8", "step_9"]
    state = read_state(tmp_path / "checkpoints" / "step_9" / "trainer_state.json")
    assert state.step == 9 and [h["step"] for h in state.history if "loss" in h] == list(range(1, 10))
    assert state.best_step == 9 and state.best == state.history[-1]["eval/accuracy"]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, 10))
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())


class _Linear(nn.Module):
    """Logits linear in the waveform, so that scaling a batch scales the loss (an explosion on demand)."""

    task = SINGLE_LABEL

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, waveform: torch.Tensor, labels: torch.Tensor | None = None) -> _Out:
        logits = self.fc(waveform[:, :64])
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return _Out(loss, logits)


class _ScaledCollate(_CropCollate):
    """Multiplies the waveforms of the k-th batch (1-based) by ``factors[k]``: 1e6 explodes, nan diverges."""

    def __init__(self, factors: dict[int, float]) -> None:
        super().__init__()
        self.factors, self.calls = factors, 0

    def __call__(self, items: list) -> dict:
        self.calls += 1
        batch = super().__call__(items)
        batch["waveform"] = batch["waveform"] * self.factors.get(self.calls, 1.0)
        return batch


def _diverge(tmp, factors, max_grad_norm=1.0, save_every=2):
    torch.manual_seed(0)
    cfg = TrainConfig(
        output_dir=str(tmp), max_steps=20, batch_size=4, lr=1e-3, save_every=save_every, keep_checkpoints=1,
        log_every=1, progress=False, warmup_ratio=0.0, max_grad_norm=max_grad_norm,
    )  # fmt: skip
    train(_Linear(), _Tones(80, 0), None, cfg, _ScaledCollate(factors))


def test_divergence_names_the_last_good_checkpoint_and_what_the_run_had(tmp_path):
    """Steps 5-6 explode (loss ~1e5 against ~1), step 7 is NaN: step_4 is the last good checkpoint, kept although
    keep_checkpoints=1, and step_6 is named as exploded."""
    with pytest.raises(TrainingDivergedError) as info:
        _diverge(tmp_path, {5: 1e6, 6: 1e6, 7: float("nan")})
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_4", "step_6"]
    good, bad = (
        read_state(root / "step_4" / "trainer_state.json"),
        read_state(root / "step_6" / "trainer_state.json"),
    )
    assert (good.last_good_step, bad.last_good_step) == (4, 4)
    losses = [h["loss"] for h in bad.history if "loss" in h]
    assert good.train_loss == pytest.approx((losses[2] + losses[3]) / 2, rel=1e-12) and good.train_loss < 2
    assert bad.train_loss == pytest.approx((losses[4] + losses[5]) / 2, rel=1e-12) and bad.train_loss > 1e3
    scheduled = 1e-3 * 0.5 * (1 + math.cos(math.pi * 6 / 20))  # cosine decay after 6 of 20 steps: 0.000794
    assert str(info.value) == (
        f"the training loss is nan at step 7; stopping. This run had learning rate 0.001 ({scheduled:.3g} at this "
        "step) and "
        f"gradient clipping on (max_grad_norm=1). The last good checkpoint is {root / 'step_4'} (mean training "
        f"loss {good.train_loss:.4g}); the loss had already exploded in the later ones: step_6 "
        f"({bad.train_loss:.3g}). To fix: lower the learning rate (train.lr, e.g. 0.0001), then start over with "
        "train.resume=false (the checkpoints are moved to previous/) or a new train.output_dir."
    )


def test_divergence_without_clipping_or_good_checkpoint_says_so(tmp_path):
    with pytest.raises(
        TrainingDivergedError,
        match=r"^the training loss is nan at step 1; stopping\. This run had learning rate 0\.001 \(0\.001 at "
        r"this step\) and gradient clipping off\. No good checkpoint was written \(finite mean loss, at most 100x "
        r"the running median of the step losses\)\. To fix: lower the learning rate \(train\.lr, e\.g\. 0\.0001\) "
        r"and clip gradients \(train\.max_grad_norm=1\.0\), then start over",
    ):
        _diverge(tmp_path / "a", {1: float("nan")}, max_grad_norm=None)
    # step 4 explodes: the one checkpoint, step_4, is not good, and the message says so
    with pytest.raises(TrainingDivergedError) as info:
        _diverge(tmp_path / "b", {4: 1e6, 5: float("nan")}, save_every=4)
    state = read_state(tmp_path / "b" / "checkpoints" / "step_4" / "trainer_state.json")
    assert state.last_good_step is None
    assert (
        "the running median of the step losses); the loss had already exploded in those written: "
        f"step_4 ({state.train_loss:.3g}). To fix"
    ) in str(info.value)


def test_training_learns_and_reports_metrics(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(
        output_dir=str(tmp_path),
        max_steps=60,
        batch_size=8,
        lr=1e-2,
        eval_every=60,
        save_every=60,
        progress=False,
        warmup_ratio=0.0,
    )
    res = train(_TinyNet(), _Tones(96, 0), _Tones(48, 1), cfg, _CropCollate(), _CropCollate(seed=1))
    assert res.final_metrics["accuracy"] > 0.6  # chance is 1/3
    assert set(res.final_metrics) >= {
        "accuracy",
        "macro_f1",
        "per_class_f1",
        "confusion_matrix",
        "ece",
        "loss",
    }


def test_early_stopping(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(
        output_dir=str(tmp_path),
        max_steps=50,
        batch_size=4,
        lr=0.0,
        eval_every=1,
        save_every=100,
        progress=False,
        early_stopping_patience=2,
        best_metric="loss",
    )
    res = train(_TinyNet(), _Tones(24, 0), _Tones(8, 1), cfg, _CropCollate(), _CropCollate(length=1600))
    assert res.stopped_early and res.step == 3 and res.best_step == 1


def test_unknown_best_metric_fails_before_anything_runs(tmp_path):
    cfg = TrainConfig(
        output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, best_metric="acuracy", progress=False
    )
    # a collated batch would raise "simulated crash": the metric must be refused before the first batch
    with pytest.raises(
        ValueError, match=r"'acuracy' is not a single_label metric \(did you mean 'accuracy'\?\)"
    ):
        train(_TinyNet(), _Tones(24, 0), _Tones(8, 1), cfg, _CrashingCollate(crash_at=1))
    assert not (tmp_path / "run").exists()


def test_task_comes_from_the_argument_when_the_model_has_none(tmp_path):
    class NoTask(_TinyNet):
        task = None

    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=1, batch_size=4, eval_every=1, progress=False)
    with pytest.raises(TypeError, match=r"cannot tell the task of a NoTask: pass task="):
        train(NoTask(), _Tones(24, 0), _Tones(8, 1), cfg, _CropCollate())
    res = train(NoTask(), _Tones(24, 0), _Tones(8, 1), cfg, _CropCollate(), task="single_label")
    assert set(res.final_metrics) >= {"accuracy", "macro_f1", "ece", "nll", "loss"}
    assert res.best_metric == res.final_metrics["accuracy"] and res.best_step == 1


def test_resume_refuses_a_run_that_selected_on_another_metric(tmp_path):
    _run(tmp_path, 2, save_every=2)
    state = read_state(tmp_path / "checkpoints" / "step_2" / "trainer_state.json")
    assert (state.step, state.metric, state.best_step) == (2, "accuracy", 2)
    with pytest.raises(ValueError, match=r"step_2 selected its best model on 'accuracy', this run on 'loss'"):
        _run(tmp_path, 2, best_metric="loss")


def test_config_rejects_bad_values():
    with pytest.raises(TypeError, match="unexpected keyword argument 'lrr'"):
        TrainConfig(lrr=1.0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("keep_checkpoints", 0, "must be >= 1 (the newest checkpoint is what a run resumes from), got 0"),
        ("warmup_ratio", 5, "must be in [0, 1) (the fraction of max_steps spent warming up), got 5.0"),
        ("warmup_ratio", 1.0, "must be in [0, 1) (the fraction of max_steps spent warming up), got 1.0"),
        ("lr", "nan", "must be a finite number >= 0, got nan"),
        ("lr", -1e-4, "must be a finite number >= 0, got -0.0001"),
        ("layer_decay", 0.0, "must be in (0, 1] (1: no decay), got 0.0"),
        ("max_grad_norm", 0.0, "must be > 0, or null for no clipping, got 0.0"),
        ("eval_batch_size", 0, "must be >= 1 or null, got 0"),
        ("num_workers", -1, "must be >= 0 (0 loads data in the main process), got -1"),
        ("max_steps", 0, "must be >= 1, got 0"),
        ("mixed_precision", "fp8", "must be 'no', 'bf16' or 'fp16', got 'fp8'"),
    ],
)
def test_config_ranges_are_checked_with_the_key_named(key, value, rule):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({key: value}, "train")
    assert str(info.value) == f"train.{key} {rule}"


def test_resume_refuses_changed_settings_and_leaves_the_run_untouched(tmp_path):
    """The run of issue 12: rerunning a directory with another lr (or model) must not resume the old optimizer."""
    _run(tmp_path, 2, save_every=2, settings={"model": {"backbone": "cnn14.tiny", "lora": {"r": 8}}})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ResumeMismatchError) as info:
        _run(
            tmp_path,
            2,
            save_every=2,
            lr=1e-4,
            settings={"model": {"backbone": "cnn14.tiny", "lora": {"r": 8}}},
        )
    assert str(info.value) == (
        f"cannot resume from {tmp_path / 'checkpoints' / 'step_2'}: these settings differ from the run that wrote "
        "it:\n  train.lr: 0.003 -> 0.0001\nResuming would continue the old run's weights, optimizer and schedule. "
        "Start over in this directory with train.resume=false (the old checkpoints, best model and logs are moved "
        f"to {tmp_path / 'previous'}/<time>/), or use a new train.output_dir."
    )
    with pytest.raises(
        ResumeMismatchError,
        match=r"differ from the run that wrote it:\n  model.backbone: 'cnn14.tiny' -> 'ast.tiny'\n  "
        r"model.lora: \{'r': 8\} -> None\n  train.max_steps: 2 -> 3\nResuming",
    ):
        _run(tmp_path, 3, save_every=2, settings={"model": {"backbone": "ast.tiny", "lora": None}})
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    # settings that do not shape training may change: this resumes (and, at step 2 of 2, trains no further)
    res = _run(tmp_path, 2, save_every=1, eval_every=5, keep_checkpoints=3, progress=True,
               settings={"model": {"backbone": "cnn14.tiny", "lora": {"r": 8}}})  # fmt: skip
    assert res.step == 2 and not (tmp_path / "previous").exists()


def test_resume_false_starts_over_after_moving_the_old_run_aside(tmp_path):
    _run(tmp_path, 4, save_every=2, keep_checkpoints=5)
    again = _run(tmp_path, 3, save_every=2, keep_checkpoints=5, resume=False)
    assert _losses(again) == _losses(_run(tmp_path / "fresh", 3))  # a fresh start, not a continuation
    (previous,) = (tmp_path / "previous").iterdir()
    assert sorted(p.name for p in previous.iterdir()) == ["checkpoints", "metrics.jsonl"]
    assert sorted(p.name for p in (previous / "checkpoints").iterdir()) == ["step_2", "step_4"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2", "step_3"]
    logged = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 3]  # three training records and the final evaluation, nothing of the old run


def test_logged_loss_is_the_interval_mean_and_both_learning_rates_are_named(tmp_path):
    def run(log_every):
        torch.manual_seed(0)
        model = _TinyNet()
        groups = [
            {"params": list(model.conv.parameters()), "lr": 1.5e-3},  # a lower layer at half the rate
            {"params": list(model.fc.parameters()), "lr": 3e-3},
        ]
        cfg = TrainConfig(
            output_dir=str(tmp_path / str(log_every)), max_steps=6, batch_size=4, lr=3e-3, eval_every=1000,
            log_every=log_every, progress=False, warmup_ratio=0.5,
        )  # fmt: skip
        res = train(model, _Tones(24, 0), None, cfg, _CropCollate(), param_groups=groups)
        return [h for h in res.history if "loss" in h]

    per_step = {r["step"]: r["loss"] for r in run(1)}
    records = run(3)
    assert [r["step"] for r in records] == [1, 3, 6]
    assert records[0]["loss"] == per_step[1]
    assert records[1]["loss"] == pytest.approx((per_step[2] + per_step[3]) / 2, rel=1e-12)
    assert records[2]["loss"] == pytest.approx((per_step[4] + per_step[5] + per_step[6]) / 3, rel=1e-12)
    # warmup over 3 steps, then cosine decay to 0 at step 6
    expected_top = [3e-3 * 1 / 3, 3e-3 * 1.0, 3e-3 * 0.0]
    assert [r["lr_top"] for r in records] == pytest.approx(expected_top, abs=1e-12)
    assert [r["lr_min"] for r in records] == pytest.approx([v / 2 for v in expected_top], abs=1e-12)
    assert "lr" not in records[0]


def test_sigterm_saves_a_checkpoint_at_the_step_boundary_and_exits_143(tmp_path):
    """What a scheduler's preemption does: SIGTERM arrives while batch 3 is prepared, which the loader fetches
    ahead during step 2; step 2 is saved and the run stops there."""
    previous = signal.getsignal(signal.SIGTERM)

    class Preempted(_CropCollate):
        calls = 0

        def __call__(self, items):
            self.calls += 1
            if self.calls == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__call__(items)

    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=50, batch_size=4, save_every=100, progress=False)
    with pytest.raises(TrainingInterrupted) as info:
        train(_TinyNet(), _Tones(24, 0), None, cfg, Preempted())
    assert info.value.code == 143 and info.value.signum == signal.SIGTERM
    assert str(info.value) == (
        f"stopped by SIGTERM at step 2 of 50; the checkpoint {tmp_path / 'checkpoints' / 'step_2'} holds it: run "
        "the same command again to resume"
    )
    assert read_state(tmp_path / "checkpoints" / "step_2" / "trainer_state.json").step == 2
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is removed again


def test_each_validation_pass_logs_one_line_with_the_best_so_far(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="finetune.train")
    res = _run(tmp_path, 4, save_every=4, eval_every=2, best_metric="loss")
    lines = [r.getMessage() for r in caplog.records if "validation" in r.getMessage()]
    evals = [h for h in res.history if "eval/loss" in h]
    assert len(lines) == 2 and len(evals) == 2
    first, second = evals
    assert lines[0].startswith(f"step 2/4 validation: loss {first['eval/loss']:.4g}  accuracy ")
    assert lines[0].endswith(f"| best loss {first['eval/loss']:.4g} at step 2 (new)")
    best = min(first["eval/loss"], second["eval/loss"])
    suffix = " (new)" if res.best_step == 4 else ""
    assert lines[1].endswith(f"| best loss {best:.4g} at step {res.best_step}{suffix}")


# Every augmentation a recipe reaches: waveform gain and time-stretch in the collate (drawn from the batch's
# seeded generator), SpecAugment, mixup (on features, so that it and SpecMix mix the same frames) and SpecMix in
# the model's training forward (drawn from torch's generators, whose states the checkpoints keep).
_ALL_AUGMENTATIONS = {
    "data": {"time_stretch": {"rate": [0.93, 1.07], "p": 0.8}, "gain": {"min_db": -6, "max_db": 6}},
    "model": {
        "spec_augment": {"time_width": [0, 20], "freq_width": [0, 16]},
        "mixup": {"alpha": 0.3, "stage": "features"},
        "specmix": {"p": 0.5},
    },
}


def test_resume_is_exact_with_library_model_collate_and_data(tmp_path):
    """6 steps uninterrupted vs 3 + crash + resume + 3, with an AudioModel (dropout in the head, patchout in
    the backbone), random training crops from CropCollate and the synthetic genre set; without augmentation
    and with every augmentation on."""
    from finetune.data import CropCollate, synthetic_genres
    from finetune.data.augment import build_data_augment
    from finetune.model import build_model

    data = synthetic_genres(n_per_class=1, seconds=2.0, sample_rate=32000, seed=0)

    class Crash(CropCollate):
        def __call__(self, rows):
            # 5 batches per epoch: the batch of step 6, after the checkpoint of step 3
            if self._epoch == 1 and self._calls == 0:
                raise RuntimeError("simulated crash")
            return super().__call__(rows)

    def run(out, collate_cls, augment):
        torch.manual_seed(0)
        model = build_model(
            "passt_s.tiny",
            head="mlp",
            num_outputs=10,
            dropout=0.3,
            backbone_overrides={"patchout": (2, 1)},
            **augment.get("model", {}),
        ).train()
        cfg = TrainConfig(
            output_dir=str(out),
            max_steps=6,
            batch_size=2,
            lr=1e-3,
            save_every=3,
            log_every=1,
            progress=False,
            eval_every=1000,
        )
        stretch, wave = build_data_augment(augment.get("data", {}), 32000)
        return train(
            model, data, None, cfg, collate_cls(32000, 1.0, train=True, seed=3, augment=wave, stretch=stretch)
        )

    losses = {}
    for name, augment in (("plain", {}), ("augmented", _ALL_AUGMENTATIONS)):
        full = run(tmp_path / name / "full", CropCollate, augment)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(tmp_path / name / "split", Crash, augment)
        resumed = run(tmp_path / name / "split", CropCollate, augment)
        assert _losses(resumed) == _losses(full) and len(_losses(full)) == 6
        losses[name] = _losses(full)
    # the augmentations did act: every loss differs from the unaugmented run's
    assert all(a != b for (_, a), (_, b) in zip(losses["plain"], losses["augmented"]))


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state; a test that changes mixed precision needs it reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_mixed_precision_runs_the_forward_in_bf16(tmp_path, fresh_accelerator_state):
    seen = []

    class Spy(_TinyNet):
        def forward(self, waveform, labels=None):
            seen.append(self.conv(waveform.unsqueeze(1)).dtype)
            return super().forward(waveform, labels)

    torch.manual_seed(0)
    cfg = TrainConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        batch_size=4,
        save_every=3,
        progress=False,
        mixed_precision="bf16",
        log_every=1,
    )
    res = train(Spy(), _Tones(24, 0), None, cfg, _CropCollate())
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert len(_losses(res)) == 3 and all(math.isfinite(v) for _, v in _losses(res))


_TAG_FREQS = (440.0, 1250.0, 3300.0)  # tag k is present iff a sine at _TAG_FREQS[k] is in the clip


class _Tags(Dataset):
    """Half-second clips at 32 kHz: each tag is present with probability 0.4, as its sine (random phase), in
    light noise; the tags are decidable from the audio."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.tags = (torch.rand(n, len(_TAG_FREQS), generator=g) < 0.4).float()
        t = torch.arange(16000) / 32000
        phase = torch.rand(n, len(_TAG_FREQS), 1, generator=g) * 2 * torch.pi
        tones = torch.sin(2 * torch.pi * torch.tensor(_TAG_FREQS)[:, None] * t + phase)
        self.x = 0.3 * (self.tags[:, :, None] * tones).sum(1) + 0.05 * torch.randn(n, 16000, generator=g)

    def __len__(self) -> int:
        return len(self.tags)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.tags[i]


def _collate_tags(items: list) -> dict:
    return {"waveform": torch.stack([x for x, _ in items]), "labels": torch.stack([y for _, y in items])}


@pytest.mark.usefixtures("one_thread")
def test_multi_label_model_is_scored_and_selected_on_map(tmp_path):
    from finetune.evaluation import evaluate
    from finetune.model import AudioModel, build_model

    names = ("low", "mid", "high")
    torch.manual_seed(0)
    model = build_model(
        "cnn14.tiny",
        head="mlp",
        num_outputs=3,
        multi_label=True,
        hidden_sizes=(32,),
        dropout=0.0,
        labels=names,
    ).train()
    cfg = TrainConfig(
        output_dir=str(tmp_path),
        max_steps=40,
        batch_size=8,
        lr=3e-3,
        eval_every=10,
        save_every=40,
        warmup_ratio=0.0,
        progress=False,
    )
    val = _Tags(32, 1)
    res = train(model, _Tags(48, 0), val, cfg, _collate_tags, class_names=names)

    metrics = res.final_metrics
    assert "mean_r" not in metrics and "accuracy" not in metrics  # not scored as ratings or single labels
    assert set(metrics) >= {"map", "roc_auc", "micro_f1", "macro_f1", "per_class_ap", "loss"}
    assert list(metrics["per_class_ap"]) == list(names)
    chance_map = float(val.tags.mean(0).mean())  # AP of random scores = the class's positive rate
    assert metrics["map"] > chance_map + 0.3 and metrics["roc_auc"] > 0.5 + 0.25
    evals = [(h["step"], h["eval/map"]) for h in res.history if "eval/map" in h]
    assert [s for s, _ in evals] == [10, 20, 30, 40]
    best_step, best_map = max(evals, key=lambda e: e[1])
    assert (res.best_step, res.best_metric) == (best_step, best_map)
    assert read_state(tmp_path / "checkpoints" / "step_40" / "trainer_state.json").metric == "map"
    # the saved best model is the one that scored best_map
    best = AudioModel.from_pretrained(tmp_path / "best")
    loader = torch.utils.data.DataLoader(val, batch_size=16, collate_fn=_collate_tags)
    assert evaluate(best, loader)["map"] == pytest.approx(best_map, abs=1e-6)
