"""Head tests run single-threaded (see the ``one_thread`` fixture in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _heads_one_thread(one_thread: None) -> None:
    """Every head test uses the shared ``one_thread`` fixture."""
