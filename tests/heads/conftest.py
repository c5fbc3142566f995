"""Head tests run single-threaded: on a loaded machine small GRU/einsum kernels are many times slower with
more threads (the setting is restored afterwards)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
