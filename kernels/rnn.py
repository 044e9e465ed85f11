"""Forward pass: inputs to time-major layout, the hoisted input projection, the recurrence.

Layouts inside the kernels are time-major: ``X (T, B, D)``, ``P (T, B, H)`` (input projection plus
bias), ``hs (T + 1, B, H)``, step mask ``M (T, B)`` (1 = state update, 0 = carry).

``n_threads`` is passed in from Python (``numba.get_num_threads()``): calling it inside compiled code
would make the function uncacheable.
"""

import numpy as np
from numba import prange

from ._jit import helper
from ._math import tanh


@helper(parallel=True)
def gather(E, ids, X):
    """``X[t, b] = E[ids[b, t]]`` (ids already checked to lie in [0, V))."""
    T, B, D = X.shape
    for t in prange(T):
        for b in range(B):
            row = ids[b, t]
            for d in range(D):
                X[t, b, d] = E[row, d]


@helper(parallel=True)
def to_time_major(x, X):
    """``X[t, b] = x[b, t]`` for dense inputs."""
    T, B, D = X.shape
    for t in prange(T):
        for b in range(B):
            for d in range(D):
                X[t, b, d] = x[b, t, d]


@helper(parallel=True)
def step_mask(ids, mask_zero, M):
    """``M[t, b] = ids[b, t] != 0`` with ``mask_zero``, else 1."""
    T, B = M.shape
    for t in prange(T):
        for b in range(B):
            M[t, b] = 1 if not mask_zero or ids[b, t] != 0 else 0


@helper
def project(X, W_xh, b_h, P):
    """``P = X @ W_xh + b_h`` for all time steps in one matrix product."""
    T, B, D = X.shape
    H = W_xh.shape[1]
    P2 = P.reshape((T * B, H))
    np.dot(X.reshape((T * B, D)), W_xh, P2)
    for i in range(T * B):
        for j in range(H):
            P2[i, j] += b_h[j]


@helper
def chunk(c, n_chunks, B):
    """Rows ``[b0, b1)`` of batch chunk ``c``: threads split the batch evenly."""
    return c * B // n_chunks, (c + 1) * B // n_chunks


@helper(parallel=True)
def recurrence(P, W_hh, M, hs, n_threads):
    """``hs[t + 1] = tanh(P[t] + hs[t] @ W_hh)`` where ``M[t]``, else ``hs[t]``.

    Each thread runs whole sequences for its slice of the batch: no synchronisation over time.
    """
    T, B, H = P.shape
    n_chunks = min(B, n_threads)
    for c in prange(n_chunks):
        b0, b1 = chunk(c, n_chunks, B)
        a = np.empty((b1 - b0, H), P.dtype)
        for t in range(T):
            np.dot(hs[t, b0:b1], W_hh, a)
            for i in range(b1 - b0):
                b = b0 + i
                if M[t, b]:
                    for j in range(H):
                        hs[t + 1, b, j] = tanh(a[i, j] + P[t, b, j])
                else:
                    for j in range(H):
                        hs[t + 1, b, j] = hs[t, b, j]


@helper
def rnn(X, W_xh, W_hh, b_h, M, P, hs, n_threads):
    """The recurrent layer on time-major inputs: hoisted projection, then the recurrence."""
    project(X, W_xh, b_h, P)
    hs[0] = 0
    recurrence(P, W_hh, M, hs, n_threads)
