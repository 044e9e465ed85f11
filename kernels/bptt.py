"""Backward pass of one batch chunk (full or truncated BPTT, as defined in ``fastrnn.reference``).

The sequential part only produces ``dA[t] = d loss / d a_t`` (zero where a step is masked or beyond
the truncation) and carries ``dh`` back through ``W_hh``; the weight and input gradients are then
single large products over all the chunk's steps, into the thread's own partial-gradient buffers.
"""

import numpy as np

from ._blas import matmul
from ._jit import helper
from ._math import assign, typed


@helper
def chunk_backward(dh, hs, W_hh, M, k, dA):
    """Fill ``dA (T, nb, H)`` from ``dh = d loss / d h_T (nb, H)`` (overwritten); ``k`` is the
    number of state updates to go back through (0: all).

    Returns ``t_lo``: ``dA[:t_lo]`` is zero. The loop over time stops as soon as no sequence of the
    chunk has an update left to go back through (its truncation is used up, or only padding is
    left before it), so a truncated or left-padded batch costs only the steps that matter.
    """
    T, nb, H = dA.shape
    one = typed(dA, 1.0)
    left = np.full(nb, T if k == 0 else k, np.int64)
    dh_prev = np.empty_like(dh)
    t_lo = first_update(M)
    for s in range(T - t_lo):
        t = T - 1 - s
        h, da, m = hs[t + 1], dA[t], M[t]          # per-step views: the inner loops vectorise
        for i in range(nb):
            if m[i] and left[i] > 0:
                for j in range(H):
                    da[i, j] = dh[i, j] * (one - h[i, j] * h[i, j])
                left[i] -= 1
            else:
                da[i, :] = 0
        if left.max() == 0:
            t_lo = t
            break
        matmul(da, W_hh.T, dh_prev, 0.0)
        for i in range(nb):
            if m[i]:              # an update (or past the truncation, where da and so dh_prev is 0)
                assign(dh[i], dh_prev[i])
            # a masked step copies h, so dh passes through unchanged
    dA[:t_lo] = 0
    return t_lo


@helper
def first_update(M):
    """The first step at which any sequence of the chunk updates its state (``T`` if none): before
    it every state is ``h_0 = 0`` and every ``dA`` is zero."""
    T, nb = M.shape
    for t in range(T):
        for i in range(nb):
            if M[t, i]:
                return t
    return T


@helper
def chunk_recurrent_grads(hs, dA, t_lo, dW_hh, db_h):
    """``dW_hh = sum_t hs[t].T @ dA[t]`` and ``db_h = sum_t dA[t]`` over the steps ``t >= t_lo``
    (``dA`` is zero before), each one BLAS call."""
    T, nb, H = dA.shape
    n = (T - t_lo) * nb
    if n == 0:
        dW_hh[:] = 0
        db_h[:] = 0
        return
    dA2 = dA[t_lo:].reshape((n, H))
    matmul(hs[t_lo:T].reshape((n, H)).T, dA2, dW_hh, 0.0)
    matmul(np.ones((1, n), dA.dtype), dA2, db_h.reshape((1, H)), 0.0)   # column sums, one BLAS call


@helper
def chunk_dense_input_grads(X, dA, t_lo, W_xh, dW_xh, want_dx):
    """``dW_xh = sum_t X[t].T @ dA[t]`` over the steps ``t >= t_lo``; with ``want_dx`` also
    ``dX[t] = dA[t] @ W_xh.T``, written over ``X``."""
    T, nb, H = dA.shape
    D = X.shape[2]
    n = (T - t_lo) * nb
    if want_dx:
        X[:t_lo] = 0
    if n == 0:
        dW_xh[:] = 0
        return
    dA2 = dA[t_lo:].reshape((n, H))
    matmul(X[t_lo:].reshape((n, D)).T, dA2, dW_xh, 0.0)
    if want_dx:
        matmul(dA2, W_xh.T, X[t_lo:].reshape((n, D)), 0.0)
