"""Fine-tune a backbone for multi-label music tagging (MTG-Jamendo, MagnaTagATune) and test it.

    accelerate launch recipes/tagging.py --config recipes/configs/tagging_passt_lora_jamendo.yaml \
        data.root=/data/jamendo/audio data.splits_dir=/data/mtg-jamendo-dataset/data/splits
    python recipes/tagging.py --config recipes/configs/tagging_cnn14_linear_mtat.yaml data.root=/data/mtat

Everything (resolved config, checkpoints, metrics, model, plots) goes to ``train.output_dir``; the test-set
summary (mAP, ROC-AUC, F1 and the per-tag average precision) is printed at the end. See recipes/README.md.
"""

from __future__ import annotations

from typing import Any

from finetune.config import RecipeConfig
from finetune.recipe import recipe_main

TASK = "tagging"


def summary(cfg: RecipeConfig, metrics: dict[str, Any]) -> str:
    """The test-set table printed at the end of a run: the scores, then each tag's AP, best first."""
    lines = [
        f"{TASK}: {cfg.model.backbone} (freeze={cfg.model.freeze}) on {cfg.data.name}, "
        f"{metrics['steps']} steps, best step {metrics['best_step']}",
        f"test clips {metrics['n']}   mAP {metrics['map']:.3f}   ROC-AUC {metrics['roc_auc']:.3f}   "
        f"micro-F1 {metrics['micro_f1']:.3f}   macro-F1 {metrics['macro_f1']:.3f}   loss {metrics['loss']:.4f}",
        f"{'tag':<32} AP",
    ]
    per_tag = sorted(metrics["per_class_ap"].items(), key=lambda kv: (kv[1] is None, -(kv[1] or 0.0)))
    lines += [f"{name:<32} {'n/a' if ap is None else f'{ap:.3f}'}" for name, ap in per_tag]
    lines.append(f"run directory: {cfg.train.output_dir}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(TASK, summary, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
