"""Optimizer updates: one fused, thread-parallel pass over the flat buffers.

The constants of a step (bias corrections, 1 - beta, ...) are computed once, outside the loop, in
float64, cast to the parameters' dtype and passed as a tuple of scalars, so that the loops read no
memory but the buffers and vectorise.
"""

import math

import numpy as np
from numba import prange

from fastrnn.optim import (ADAM_KIND, BETA_1, BETA_2, EPSILON, KERAS_EPSILON, LR, MOMENTUM, RHO,
                           RMSPROP_KIND, WEIGHT_DECAY)

from ._jit import helper
from ._math import typed


@helper
def step_constants(kind, hyper, step, like):
    """``(lr, a, 1 - a, b, 1 - b, eps, lr / bc1, 1 / bc2, decay)`` in ``like``'s dtype, where
    ``a, b`` are Adam's betas, RMSprop's ``rho`` (as ``b``) or SGD's momentum (as ``a``)."""
    lr = hyper[LR]
    a = b = eps = 0.0
    lr_bc1, inv_bc2, decay = lr, 1.0, 1.0
    if kind == ADAM_KIND:
        a, b = hyper[BETA_1], hyper[BETA_2]
        bc1, bc2 = 1.0 - a ** step, 1.0 - b ** step
        eps = hyper[EPSILON] / math.sqrt(bc2) if hyper[KERAS_EPSILON] != 0 else hyper[EPSILON]
        lr_bc1, inv_bc2 = lr / bc1, 1.0 / bc2
        decay = 1.0 - lr * hyper[WEIGHT_DECAY]
    elif kind == RMSPROP_KIND:
        b, eps = hyper[RHO], hyper[EPSILON]
    else:
        a = hyper[MOMENTUM]
    return (typed(like, lr), typed(like, a), typed(like, 1.0 - a), typed(like, b),
            typed(like, 1.0 - b), typed(like, eps), typed(like, lr_bc1), typed(like, inv_bc2),
            typed(like, decay))


@helper
def update_one(kind, k, p, s1, s2, i, gi):
    """Update element ``i`` given its (already clipped) gradient ``gi``; ``k`` from step_constants."""
    lr, a, one_a, b, one_b, eps, lr_bc1, inv_bc2, decay = k
    if kind == ADAM_KIND:
        m = a * s1[i] + one_a * gi
        v = b * s2[i] + one_b * gi * gi
        s1[i] = m
        s2[i] = v
        p[i] = p[i] * decay - lr_bc1 * m / (np.sqrt(v * inv_bc2) + eps)
    elif kind == RMSPROP_KIND:
        s = b * s1[i] + one_b * gi * gi
        s1[i] = s
        p[i] -= lr * gi / np.sqrt(s + eps)
    else:
        buf = a * s1[i] + gi
        s1[i] = buf
        p[i] -= lr * buf


@helper
def update_range(kind, k, p, g, s1, s2, lo, hi, scale):
    """Update elements ``[lo, hi)`` with gradient ``scale * g`` (serial: the dense weights are
    small next to the embedding, and a parallel loop here costs a second of every cold start)."""
    # Loops run over slices from 0: an index that might be negative (range(lo, hi)) makes Numba
    # emit wrap-around code, which stops vectorisation. One loop per kind keeps bodies branch-free.
    p, g, s1, s2 = p[lo:hi], g[lo:hi], s1[lo:hi], s2[lo:hi]
    if kind == ADAM_KIND:
        for i in range(p.size):
            update_one(ADAM_KIND, k, p, s1, s2, i, scale * g[i])
    elif kind == RMSPROP_KIND:
        for i in range(p.size):
            update_one(RMSPROP_KIND, k, p, s1, s2, i, scale * g[i])
    else:
        for i in range(p.size):
            update_one(kind, k, p, s1, s2, i, scale * g[i])


@helper(parallel=True)
def update_rows(kind, k, p, g, s1, s2, D, rows, touched, scale):
    """Update rows of a ``(V, D)`` block stored flat, in parallel over rows: the listed ``rows``
    when ``touched`` is empty (the lazy embedding update), else every row, where a row with
    ``touched[v] == 0`` has zero gradient (its entries of ``g`` are not read, nor need zeroing)."""
    n = rows.shape[0] if touched.shape[0] == 0 else touched.shape[0]
    zeros = np.zeros(D, p.dtype)
    for r in prange(n):
        v = rows[r] if touched.shape[0] == 0 else np.int64(r)
        lo = v * D
        gv = g[lo:lo + D] if touched.shape[0] == 0 or touched[v] else zeros
        pv, s1v, s2v = p[lo:lo + D], s1[lo:lo + D], s2[lo:lo + D]
        if kind == ADAM_KIND:
            for i in range(D):
                update_one(ADAM_KIND, k, pv, s1v, s2v, i, scale * gv[i])
        elif kind == RMSPROP_KIND:
            for i in range(D):
                update_one(RMSPROP_KIND, k, pv, s1v, s2v, i, scale * gv[i])
        else:
            for i in range(D):
                update_one(kind, k, pv, s1v, s2v, i, scale * gv[i])


@helper
def sum_squares(g, lo, hi):
    """``sum(g[lo:hi] ** 2)`` accumulated in float64."""
    g = g[lo:hi]
    total = 0.0
    for i in range(g.size):
        total += float(g[i]) * float(g[i])
    return total


@helper
def clip_scale(norm, clipnorm, like):
    """TensorFlow's ``clip_by_global_norm`` factor ``clipnorm / max(norm, clipnorm)``."""
    return typed(like, clipnorm / norm if norm > clipnorm else 1.0)
