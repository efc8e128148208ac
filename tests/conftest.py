"""Shared fixtures: every correctness test runs on both backends."""

import numpy as np
import pytest

BACKENDS = ["cpp", "reference"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The backend name; the C++ one must be built (a missing _core fails, never skips)."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
