"""Fixtures shared by test modules (pytest loads this file for every test under tests/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module: grouping checks run many tiny forwards, which extra
    threads only slow down (and two xdist workers share two cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
