"""Storage of the synthetic data sets: ``audio`` is a ``List(float32)`` column built directly as an Arrow
array (``from_dict`` on numpy arrays is ~40x slower); the data sets come formatted as ``numpy``, so
``ds[i]["audio"]`` is a float32 ``np.ndarray``.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np
import pyarrow as pa


def _audio_column(clips: Sequence[np.ndarray]) -> pa.Array:
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    if lengths.sum() >= 2**31:
        raise ValueError(
            f"{lengths.sum()} samples in all exceed the 2**31 an Arrow list column holds; "
            "make fewer or shorter clips"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate(clips).astype(np.float32) if len(clips) else np.zeros(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def _to_dataset(columns: dict[str, pa.Array], features: datasets.Features) -> datasets.Dataset:
    table = pa.table(columns).cast(features.arrow_schema)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features)).with_format("numpy")
