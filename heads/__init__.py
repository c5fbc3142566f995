"""Task heads on top of a backbone's output: genre classification, multi-task ratings, and the hybrid head that
fuses the embedding with hand-made descriptors.

>>> from heads import build_head
>>> head = build_head("mlp", in_dim=768, num_outputs=10, hidden_sizes=[256])
"""

from .classification import (
    GTZAN_GENRES,
    AttentionHead,
    ClassificationConfig,
    ClassificationHead,
    CRNNHead,
    LinearHead,
    MLPHead,
)
from .hybrid import FUSIONS, HybridConfig, HybridHead
from .pooling import POOLINGS, AttentionPool, build_pooling, time_columns
from .rating import PERCEPIANO_DIMENSIONS, RatingConfig, RatingHead
from .registry import Head, HeadConfig, StrictConfig, build_head, head_config_class, list_heads, register_head
from .tasks import MULTI_LABEL, RATING, SINGLE_LABEL, TASKS, Task, get_task, list_tasks, register_task

__all__ = [
    "FUSIONS",
    "GTZAN_GENRES",
    "MULTI_LABEL",
    "PERCEPIANO_DIMENSIONS",
    "POOLINGS",
    "RATING",
    "SINGLE_LABEL",
    "TASKS",
    "Task",
    "AttentionHead",
    "AttentionPool",
    "ClassificationConfig",
    "ClassificationHead",
    "CRNNHead",
    "Head",
    "HeadConfig",
    "HybridConfig",
    "HybridHead",
    "LinearHead",
    "MLPHead",
    "RatingConfig",
    "RatingHead",
    "StrictConfig",
    "build_head",
    "build_pooling",
    "get_task",
    "head_config_class",
    "list_heads",
    "list_tasks",
    "register_head",
    "register_task",
    "time_columns",
]
