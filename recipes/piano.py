"""Fine-tune a backbone to rate piano performances (PercePiano's 19 dimensions) and test it.

    accelerate launch recipes/piano.py --config recipes/configs/piano_passt_lora_excerpt.yaml \
        data.root=/data/PercePiano
    python recipes/piano.py --config recipes/configs/piano_synthetic_cnn14_linear.yaml train.max_steps=100

Everything (resolved config, checkpoints, metrics, model, plots) goes to ``train.output_dir``; the test-set
summary (Pearson r per dimension) is printed at the end. See recipes/README.md for the configs.
"""

from __future__ import annotations

from typing import Any

from finetune.config import RecipeConfig
from finetune.recipe import recipe_main

TASK = "piano"


def summary(cfg: RecipeConfig, metrics: dict[str, Any]) -> str:
    """The test-set table printed at the end of a run."""
    fold = f" ({cfg.data.fold} fold {cfg.data.fold_index})" if cfg.data.name == "percepiano" else ""
    lines = [
        f"{TASK}: {cfg.model.backbone} (freeze={cfg.model.freeze}) on {cfg.data.name}{fold}, "
        f"{metrics['steps']} steps, best step {metrics['best_step']}",
        f"test clips {metrics['n']}   mean r {metrics['mean_r']:.3f}   mean R2 {metrics['mean_r2']:.3f}   "
        f"MSE {metrics['mse']:.4f}",
        f"{'dimension':<52} {'r':>6} {'R2':>7} {'MSE':>8}",
    ]
    lines += [
        f"{name:<52} {d['r']:6.3f} {d['r2']:7.3f} {d['mse']:8.4f}"
        for name, d in metrics["per_dimension"].items()
    ]
    lines.append(f"run directory: {cfg.train.output_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(TASK, summary, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
