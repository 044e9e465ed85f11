"""Fixtures for the core tests (see ``helpers.py`` for the shape grid, tolerances and builders)."""

import numpy as np
import pytest

import helpers


@pytest.fixture
def rng():
    """A freshly seeded generator: every test sees the same numbers on every run."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=list(helpers.BACKENDS), ids=list(helpers.BACKENDS))
def backend(request):
    """``fastrnn.reference`` ("numpy") or ``fastrnn.kernels`` ("numba")."""
    return helpers.backend(request.param)


@pytest.fixture
def num_threads():
    """``set(n)`` changes Numba's thread count for the test; the original count is restored after."""
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    yield numba.set_num_threads
    numba.set_num_threads(before)


@pytest.fixture
def assert_close():
    """The dtype-aware comparison helper, ``assert_close(actual, desired, dtype, T=1, what="")``."""
    return helpers.assert_close
