"""Forward pass of one batch chunk: inputs, input projection, the recurrence.

The batch is split into as many chunks as there are threads, and each thread runs whole sequences
of its chunk with no synchronisation over time. Every scratch buffer is chunk-major: chunk ``c``
(rows ``b0:b1`` of the batch, ``nb`` of them) owns one contiguous block of each buffer, seen as
``X (T, nb, D)``, ``P (T, nb, H)``, ``hs (T + 1, nb, H)`` and the step mask ``M (T, nb)``
(1 = state update, 0 = carry the state). So every matrix product inside a thread is on contiguous
memory, and the per-chunk products over all time steps are single large calls.

The input projection ``x_t @ W_xh`` is hoisted out of the recurrence. For token ids it is not even
a product per token: ``E[v] @ W_xh`` is computed once for each distinct id ``v`` in the batch (rows
``EW``, looked up through ``slot[v]``), which at IMDB sizes is several times less work.
"""

import numpy as np

from ._blas import matmul
from ._jit import helper
from ._math import assign, tanh
from .bptt import first_update


@helper
def chunk_bounds(c, n_chunks, n):
    """Items ``[lo, hi)`` of chunk ``c`` when ``n`` items are split evenly into ``n_chunks``."""
    return c * n // n_chunks, (c + 1) * n // n_chunks


@helper
def block(buf, start, shape):
    """``buf[start:start + prod(shape)]`` seen as ``shape``."""
    n = 1
    for s in shape:
        n *= s
    return buf[start:start + n].reshape(shape)


@helper
def chunk_token_inputs(ids, b0, mask_zero, slot, EW, P, M):
    """Input projections ``P[t, i] = EW[slot[v]]`` of the tokens ``v = ids[b0 + i, t]``, and the
    step mask (``v != 0`` with ``mask_zero``, else every step)."""
    T, nb, H = P.shape
    for t in range(T):
        p, m = P[t], M[t]
        for i in range(nb):
            v = ids[b0 + i, t]
            assign(p[i], EW[slot[v]])
            m[i] = 0 if mask_zero and v == 0 else 1


@helper
def chunk_dense_inputs(x, mask, b0, W_xh, X, M, P):
    """Dense inputs ``X[t, i] = x[b0 + i, t]``, their projection ``P = X @ W_xh`` (all steps in one
    product; skipped when ``P`` is empty) and the step mask (``mask`` (B, T), or every step when it
    is empty)."""
    T, nb, D = X.shape
    for t in range(T):
        for i in range(nb):
            assign(X[t, i], x[b0 + i, t])
            M[t, i] = mask[b0 + i, t] if mask.shape[0] > 0 else 1
    if P.size > 0:
        matmul(X.reshape((T * nb, D)), W_xh, P.reshape((T * nb, P.shape[2])), 0.0)


@helper
def recurrence(W_hh, b_h, M, P, hs):
    """``hs[t + 1] = tanh(P[t] + hs[t] @ W_hh + b_h)`` where ``M[t]``, else ``hs[t]``; the loop
    over time only multiplies ``(nb, H) @ (H, H)``, and starts at the chunk's first update (the
    padding of left-padded batches costs nothing)."""
    T, nb, H = P.shape
    t0 = first_update(M)
    hs[:t0 + 1] = 0                       # before the first update every state is h_0 = 0
    a = np.empty((nb, H), P.dtype)
    for t in range(t0, T):
        h_prev, h, p, m = hs[t], hs[t + 1], P[t], M[t]
        matmul(h_prev, W_hh, a, 0.0)
        for i in range(nb):
            if m[i]:
                for j in range(H):
                    h[i, j] = tanh(a[i, j] + p[i, j] + b_h[j])
            else:
                assign(h[i], h_prev[i])
