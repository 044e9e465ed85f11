"""Optimizer updates: one fused, thread-parallel pass over the flat buffers.

The constants of a step (bias corrections, 1 - beta, ...) are computed once, outside the loop, in
float64 and then cast to the parameters' dtype.
"""

import math

import numpy as np
from numba import prange

from fastrnn.optim import (ADAM_KIND, BETA_1, BETA_2, EPSILON, KERAS_EPSILON, LR, MOMENTUM, RHO,
                           RMSPROP_KIND, WEIGHT_DECAY)

from ._jit import helper
from ._math import typed

# slots of the per-step constant vector
_LR, _B1, _1B1, _B2, _1B2, _EPS, _LR_BC1, _INV_BC2, _DECAY = range(9)


@helper
def step_constants(kind, hyper, step, dtype_of):
    """The per-step constants for the optimizer ``kind``, in the dtype of ``dtype_of``."""
    c = np.zeros(9)
    lr = hyper[LR]
    c[_LR] = lr
    if kind == ADAM_KIND:
        bc1 = 1.0 - hyper[BETA_1] ** step
        bc2 = 1.0 - hyper[BETA_2] ** step
        c[_B1], c[_1B1] = hyper[BETA_1], 1.0 - hyper[BETA_1]
        c[_B2], c[_1B2] = hyper[BETA_2], 1.0 - hyper[BETA_2]
        c[_EPS] = hyper[EPSILON] / math.sqrt(bc2) if hyper[KERAS_EPSILON] != 0 else hyper[EPSILON]
        c[_LR_BC1], c[_INV_BC2] = lr / bc1, 1.0 / bc2
        c[_DECAY] = 1.0 - lr * hyper[WEIGHT_DECAY]
    elif kind == RMSPROP_KIND:
        c[_B2], c[_1B2], c[_EPS] = hyper[RHO], 1.0 - hyper[RHO], hyper[EPSILON]
    else:
        c[_B1] = hyper[MOMENTUM]
    return c.astype(dtype_of.dtype)


@helper
def update_one(kind, c, p, g, s1, s2, i, gi):
    """Update element ``i`` given its (already clipped) gradient ``gi``."""
    if kind == ADAM_KIND:
        m = c[_B1] * s1[i] + c[_1B1] * gi
        v = c[_B2] * s2[i] + c[_1B2] * gi * gi
        s1[i], s2[i] = m, v
        p[i] = p[i] * c[_DECAY] - c[_LR_BC1] * m / (np.sqrt(v * c[_INV_BC2]) + c[_EPS])
    elif kind == RMSPROP_KIND:
        s = c[_B2] * s1[i] + c[_1B2] * gi * gi
        s1[i] = s
        p[i] -= c[_LR] * gi / np.sqrt(s + c[_EPS])
    else:
        buf = c[_B1] * s1[i] + gi
        s1[i] = buf
        p[i] -= c[_LR] * buf


@helper(parallel=True)
def update_range(kind, c, p, g, s1, s2, lo, hi, scale):
    """Update elements ``[lo, hi)`` with gradient ``scale * g``."""
    # one loop per kind, so that each loop body is branch-free and vectorises
    if kind == ADAM_KIND:
        for i in prange(lo, hi):
            update_one(ADAM_KIND, c, p, g, s1, s2, i, scale * g[i])
    elif kind == RMSPROP_KIND:
        for i in prange(lo, hi):
            update_one(RMSPROP_KIND, c, p, g, s1, s2, i, scale * g[i])
    else:
        for i in prange(lo, hi):
            update_one(kind, c, p, g, s1, s2, i, scale * g[i])


@helper(parallel=True)
def update_rows(kind, c, p, g, s1, s2, D, rows, scale):
    """Update the rows ``rows`` of a ``(V, D)`` block stored flat (lazy embedding update)."""
    for r in prange(rows.shape[0]):
        lo = rows[r] * D
        for i in range(lo, lo + D):
            update_one(kind, c, p, g, s1, s2, i, scale * g[i])


@helper(parallel=True)
def update_rows_dense(kind, c, p, g, s1, s2, D, V, touched, scale):
    """Update every row of a ``(V, D)`` block; rows with ``touched[v] == 0`` have zero gradient
    (their entries of ``g`` are not read, so they need not be zeroed)."""
    zero = scale - scale
    for v in prange(V):
        lo = v * D
        if touched[v]:
            for i in range(lo, lo + D):
                update_one(kind, c, p, g, s1, s2, i, scale * g[i])
        else:
            for i in range(lo, lo + D):
                update_one(kind, c, p, g, s1, s2, i, zero)


@helper
def sum_squares(g, lo, hi):
    """``sum(g[lo:hi] ** 2)`` accumulated in float64."""
    total = 0.0
    for i in range(lo, hi):
        total += float(g[i]) * float(g[i])
    return total


@helper
def clip_scale(norm, clipnorm, dtype_of):
    """TensorFlow's ``clip_by_global_norm`` factor ``clipnorm / max(norm, clipnorm)``."""
    return typed(dtype_of, clipnorm / norm if norm > clipnorm else 1.0)
