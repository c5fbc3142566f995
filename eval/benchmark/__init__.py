"""The benchmark suite: ``python -m eval benchmark`` compares backbones on the same tasks, with baselines beside
them, honest variance and calibration.

The grid is tasks x folds x (baselines + backbones x modes) x seeds:

- tasks (:mod:`.tasks`): registered entries naming a data set and its settings, a protocol (:mod:`.protocols`:
  the fixed split, HEAR-style rotated folds, or the loader's folds), the window and crops, the headline metric and
  the recipe configs; ``folder:/path`` and ``manifest:/file`` make one from any collection;
- modes (:mod:`.modes`): ``linear_probe`` and ``mlp_probe`` on cached frozen embeddings (:mod:`.features`,
  :mod:`.probes`; hyper-parameters chosen on validation only), ``lora`` and ``full`` through the training loop
  from the recipe configs (:mod:`.finetuning`, best checkpoint on validation);
- baselines (:mod:`.baselines`): majority class / training mean, a linear model on log-mel statistics, and on
  MIDI statistics where rows have MIDI.

Every cell is scored by its task's metrics plus ECE/NLL before and after temperature scaling (fitted on
validation) and 95% bootstrap intervals over test clips (:mod:`.scoring`); the report (:mod:`.report`,
:mod:`.plots`) gives mean ± std over seeds and folds with pooled intervals. Runs resume cell by cell
(:mod:`.runner`). Built on the public API of ``backbones``, ``heads`` and ``finetune`` only.

>>> from pathlib import Path
>>> from eval.benchmark import BenchmarkOptions, get_benchmark_task, run_benchmark
>>> run_benchmark(BenchmarkOptions(["cnn14.tiny"], [get_benchmark_task("synthetic_genres")], ["linear_probe"],
...                                [0, 1, 2], Path("runs/bench")))
"""

from .modes import MODES, expand_modes
from .probes import PROBES, ProbeConfig, select_probe
from .protocols import PROTOCOLS, register_protocol
from .runner import BenchmarkOptions, Cell, plan_cells, run_benchmark
from .scoring import bootstrap, score_predictions
from .tasks import (
    BENCHMARK_TASKS,
    BenchmarkTask,
    get_benchmark_task,
    list_benchmark_tasks,
    register_benchmark_task,
    register_task_factory,
)

__all__ = [
    "BENCHMARK_TASKS",
    "MODES",
    "PROBES",
    "PROTOCOLS",
    "BenchmarkOptions",
    "BenchmarkTask",
    "Cell",
    "ProbeConfig",
    "bootstrap",
    "expand_modes",
    "get_benchmark_task",
    "list_benchmark_tasks",
    "plan_cells",
    "register_benchmark_task",
    "register_protocol",
    "register_task_factory",
    "run_benchmark",
    "score_predictions",
    "select_probe",
]
