"""Forward pass of one batch chunk: inputs, the hoisted input projection, the recurrence.

The batch is split into as many chunks as there are threads, and each thread runs whole sequences
of its chunk with no synchronisation over time. Every scratch buffer is chunk-major: chunk ``c``
(rows ``b0:b1`` of the batch, ``nb`` of them) owns one contiguous block of each buffer, seen as
``X (T, nb, D)``, ``P (T, nb, H)``, ``hs (T + 1, nb, H)`` and the step mask ``M (T, nb)``
(1 = state update, 0 = carry the state). So every matrix product inside a thread is on contiguous
memory, and the per-chunk products over all time steps are single large calls.
"""

import numpy as np

from ._jit import helper
from ._math import tanh


@helper
def chunk_bounds(c, n_chunks, B):
    """Rows ``[b0, b1)`` of chunk ``c``: the batch split evenly."""
    return c * B // n_chunks, (c + 1) * B // n_chunks


@helper
def block(buf, start, shape):
    """``buf[start:start + prod(shape)]`` seen as ``shape``."""
    n = 1
    for s in shape:
        n *= s
    return buf[start:start + n].reshape(shape)


@helper
def chunk_inputs(E, ids, x, b0, mask_zero, X, M):
    """Chunk inputs ``X[t, i]`` = ``E[ids[b0 + i, t]]`` (token ids) or ``x[b0 + i, t]`` (dense),
    and the step mask (``ids != 0`` with ``mask_zero``, else all steps)."""
    T, nb, D = X.shape
    for t in range(T):
        for i in range(nb):
            if E.shape[0] > 0:
                v = ids[b0 + i, t]
                X[t, i, :] = E[v]
                M[t, i] = 0 if mask_zero and v == 0 else 1
            else:
                X[t, i, :] = x[b0 + i, t]
                M[t, i] = 1


@helper
def chunk_forward(X, W_xh, W_hh, b_h, M, P, hs):
    """``hs[t + 1] = tanh(X[t] @ W_xh + hs[t] @ W_hh + b_h)`` where ``M[t]``, else ``hs[t]``.

    The input projection of all steps is one product up front; the loop over time only multiplies
    ``(nb, H) @ (H, H)``.
    """
    T, nb, D = X.shape
    H = W_hh.shape[0]
    np.dot(X.reshape((T * nb, D)), W_xh, P.reshape((T * nb, H)))
    hs[0] = 0
    a = np.empty((nb, H), X.dtype)
    for t in range(T):
        h_prev, h, p, m = hs[t], hs[t + 1], P[t], M[t]
        np.dot(h_prev, W_hh, a)
        for i in range(nb):
            if m[i]:
                for j in range(H):
                    h[i, j] = tanh(a[i, j] + p[i, j] + b_h[j])
            else:
                h[i, :] = h_prev[i, :]
