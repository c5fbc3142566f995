"""Test configuration: no network, deterministic threads, and shared fixtures."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Nothing in the test suite may download: the hub is offline and panns_inference (which fetches its label CSV
# with wget at import time when ~/panns_data is missing) finds a prepared file in a private HOME.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
_home = Path(tempfile.mkdtemp(prefix="musicft-test-home-"))
(_home / "panns_data").mkdir()
(_home / "panns_data" / "class_labels_indices.csv").write_text(
    "index,mid,display_name\n" + "".join(f'{i},/m/{i:05d},"label {i}"\n' for i in range(527))
)
os.environ["HOME"] = str(_home)
os.environ["MUSICFT_CACHE"] = str(_home / "cache")

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open a non-local socket."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if (
            isinstance(host, str)
            and host not in ("127.0.0.1", "localhost", "::1")
            and not host.startswith("/")
        ):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread (restored afterwards): small GRU/FFT/einsum kernels are many times slower
    with more threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's ``../shared`` directory (real data and reference facts)."""
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}; tests need it beside the checkout")
    return SHARED
