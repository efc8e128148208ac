"""Shared fixtures: every correctness test runs on both backends."""

import os

# scikit-learn's check_array_api_input (in check_estimator, tests/test_sklearn.py) runs only
# when SciPy was imported with this set; it must be set before anything imports SciPy.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKENDS = ["cpp", "reference"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The backend name; the C++ one must be built (a missing _core fails, never skips)."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
