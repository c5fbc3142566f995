"""Fine-tune a backbone for genre (single-label) classification and test it.

    accelerate launch recipes/genre.py --config recipes/configs/genre_passt_lora.yaml data.root=/data/gtzan
    python recipes/genre.py --config recipes/configs/genre_synthetic_cnn14_linear.yaml train.max_steps=100

Everything (resolved config, checkpoints, metrics, model, plots) goes to ``train.output_dir``; the test-set
summary is printed at the end. See recipes/README.md for the configs and their placeholders.
"""

from __future__ import annotations

from typing import Any

from finetune.config import RecipeConfig
from finetune.recipe import recipe_main

TASK = "genre"


def summary(cfg: RecipeConfig, metrics: dict[str, Any]) -> str:
    """The test-set table printed at the end of a run."""
    lines = [
        f"{TASK}: {cfg.model.backbone} (freeze={cfg.model.freeze}) on {cfg.data.name}, "
        f"{metrics['steps']} steps, best step {metrics['best_step']}",
        f"test clips {metrics['n']}   accuracy {metrics['accuracy']:.3f}   macro-F1 {metrics['macro_f1']:.3f}   "
        f"ECE {metrics['ece']:.3f}   loss {metrics['loss']:.4f}",
        f"{'class':<24} F1",
    ]
    lines += [f"{name:<24} {f1:.3f}" for name, f1 in metrics["per_class_f1"].items()]
    if "calibration" in metrics:  # calibrate=...: fitted on validation, its effect on the test clips
        before, after = metrics["calibration"]["test"]["before"], metrics["calibration"]["test"]["after"]
        lines.append(
            f"calibration ({metrics['calibration']['report']['method']}, T={metrics['calibration']['temperature']:.3f}):"
            f" test ECE {before['ece']:.3f} -> {after['ece']:.3f}, NLL {before['nll']:.3f} -> {after['nll']:.3f}"
        )
    lines.append(f"run directory: {cfg.train.output_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(TASK, summary, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
