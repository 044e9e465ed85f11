"""``kernels._blas.matmul`` (the kernels' one matrix product) against ``np.matmul``."""

import numba
import numpy as np
import pytest

from fastrnn.kernels._blas import matmul


@numba.njit
def _plain(a, b, out, beta):
    matmul(a, b, out, beta)


@numba.njit
def _a_transposed(aT, b, out, beta):
    matmul(aT.T, b, out, beta)


@numba.njit
def _both_transposed(aT, bT, out, beta):
    matmul(aT.T, bT.T, out, beta)


@numba.njit
def _row_slices(a, b, out, beta):
    matmul(a[1:3], b, out[1:3], beta)


SHAPES = [(1, 1, 1), (3, 5, 2), (7, 1, 4), (16, 32, 32), (5, 0, 3), (0, 3, 2), (3, 2, 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("layout", ["plain", "a.T", "a.T b.T"])
def test_matmul_matches_numpy(dtype, m, k, n, beta, layout):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    out0 = rng.standard_normal((m, n)).astype(dtype)
    out = out0.copy()
    if layout == "plain":
        _plain(a, b, out, beta)
    elif layout == "a.T":
        _a_transposed(np.ascontiguousarray(a.T), b, out, beta)
    else:
        _both_transposed(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T), out, beta)
    expected = a.astype(np.float64) @ b + beta * out0
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * max(1, k))


def test_matmul_writes_only_its_rows():
    rng = np.random.default_rng(0)
    a, b, out = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), np.zeros((5, 3))
    _row_slices(a, b, out, 0.0)
    np.testing.assert_allclose(out[1:3], a[1:3] @ b, rtol=1e-12)
    assert not out[[0, 3, 4]].any()


def test_matmul_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes do not match"):
        _plain(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), 0.0)
