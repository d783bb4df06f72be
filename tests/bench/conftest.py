"""Bench tests run PyTorch with one intra-op thread.

They share a 2-core machine with other work; with two OpenMP threads a descheduled worker
stalls every operator's barrier, which makes tiny models take seconds to time.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
