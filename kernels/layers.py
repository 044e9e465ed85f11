"""The fast path of the layers' ops (twins of ``fastrnn.reference.layers``).

``rnn_forward`` and ``rnn_backward`` are the compiled bodies of ``simple_rnn_forward`` and
``simple_rnn_backward``; ``embedding_backward`` of the embedding's scatter-add. Their Python
wrappers in ``fastrnn.kernels`` check arguments, flatten arrays and provide the scratch. Shapes as
in the reference (B batch, T time, D input, H units); large arrays travel flat (1-D, C order),
so that each chunk's block of them is one contiguous slice for BLAS.

Threads: the batch is cut into ``nc`` chunks of sequences (``fastrnn.kernels.chunks``: the batch
size alone decides), each run by one thread from its first step to its last, and each chunk
writes its own partial weight gradients (``parts[c]``), which the wrapper adds in chunk order:
results are bit-identical for any thread count.

In a chunk, the input projections of all its steps are one product, ``x[b0:b1] (nb T, D) @
kernel``, done before the recurrence, which then does one ``(nb, H) @ (H, H)`` product per step.
The backward pass keeps ``dA = d loss / d a`` and the previous states in sequence order
``(nb, T, H)``, so that ``dkernel = x^T dA``, ``dx = dA kernel^T`` and ``drecurrent = h_prev^T dA``
are again one product each.
"""

import numpy as np
from numba import prange

from ._blas import matmul
from ._jit import Arr, function_at, helper, i64, jit, task, u8, void
from ._math import tanh, typed
from .tasks import adam, rmsprop, sgd
from fastrnn.optim import ADAM_KIND, RMSPROP_KIND

# ``dims`` slots
B_, T_, D_, H_, ACT, BACKWARDS, NC, K, LAST_ONLY = range(9)
N_DIMS = 9
RELU = 1                                           # ACT: 0 tanh, 1 relu


ROWS = 256     # rows per block of a tall product (see tall_matmul)


@helper
def tall_matmul(a, b, out):
    """``out = a @ b`` for a tall ``a (n, k)`` and small ``b (k, m)``, ``ROWS`` rows at a time:
    BLAS runs small products from the cache at about twice the speed of one tall thin one."""
    n = a.shape[0]
    for r0 in range(0, n, ROWS):
        r1 = min(n, r0 + ROWS)
        matmul(a[r0:r1], b, out[r0:r1], 0.0)


@helper
def tall_matmul_tn(a, b, out):
    """``out = a^T @ b`` for tall ``a (n, k)`` and ``b (n, m)``, accumulated ``ROWS`` rows at a
    time (in row order, so the sum's order is fixed)."""
    n = a.shape[0]
    for r0 in range(0, n, ROWS):
        r1 = min(n, r0 + ROWS)
        matmul(a[r0:r1].T, b[r0:r1], out, 0.0 if r0 == 0 else 1.0)


def FORWARD_CHUNK(F):
    """The signature of ``forward_chunk`` for float type ``F``."""
    return void(i64, Arr(F, 1), Arr(i64, 1), Arr(F, 2), Arr(F, 2), Arr(F, 1), Arr(u8, 1),
                Arr(F, 1), Arr(F, 1), Arr(i64, 1), Arr(F, 1), Arr(F, 1))


_forward_chunk_at = function_at(FORWARD_CHUNK)


@jit(lambda F: void(i64, *FORWARD_CHUNK(F).args[1:]), parallel=True)
def rnn_forward(address, x, inv, kernel, recurrent_kernel, bias, mask, r, h0, dims, hs, work):
    """``hs (B T H,)``, the states of ``simple_rnn_forward`` by sequence position, for
    ``x (B T D,)``; or, for token inputs, from ``x (n H,)``, the projections ``E[v] @ kernel`` of
    the batch's ``n`` distinct tokens, token ``(b, s)`` being number ``inv[b T + s]`` (``inv``
    empty: dense ``x``).

    ``mask (B T,)`` 1 = a state update (empty: all), ``r (B H,)`` the recurrent dropout
    multiplier (empty: none), ``h0 (B H,)`` the state before the first step (empty: 0),
    ``dims`` (B, T, D, H, activation, go_backwards, nc), ``work`` at
    least ``B (T H + 4 H)`` elements (``4 B H`` for tokens).
    """
    run = _forward_chunk_at(address, x)      # (see rnn_backward)
    for c in prange(dims[NC]):
        run(np.int64(c), x, inv, kernel, recurrent_kernel, bias, mask, r, h0, dims, hs, work)


@task(FORWARD_CHUNK)
def forward_chunk(c, x, inv, kernel, recurrent_kernel, bias, mask, r, h0, dims, hs, work):
    """Chunk ``c`` of ``rnn_forward``."""
    B, T, H = dims[B_], dims[T_], dims[H_]
    relu, backwards, nc = dims[ACT] == RELU, dims[BACKWARDS], dims[NC]
    b0 = c * B // nc
    b1 = (c + 1) * B // nc
    nb = b1 - b0
    if nb == 0:
        return
    tokens = inv.size > 0
    S = 4 * H if tokens else T * H + 4 * H    # scratch per sequence
    w = work[b0 * S:b1 * S]
    a, hr = w[:nb * H].reshape((nb, H)), w[nb * H:2 * nb * H].reshape((nb, H))
    h = w[2 * nb * H:4 * nb * H].reshape((2, nb, H))      # the previous and the new state
    zero = typed(a, 0.0)
    EW = x.reshape((x.size // H, H)) if tokens else x[:0].reshape((0, H))
    # dense inputs: every step's projection, one product
    Pc = w[:0].reshape((0, T, H)) if tokens else w[4 * nb * H:].reshape((nb, T, H))
    if not tokens:
        D = dims[D_]
        tall_matmul(x[b0 * T * D:b1 * T * D].reshape((nb * T, D)), kernel,
                    Pc.reshape((nb * T, H)))
    out = hs[b0 * T * H:b1 * T * H].reshape((nb, T, H))
    prev = h[0]
    for i in range(nb):
        for j in range(H):
            prev[i, j] = h0[(b0 + i) * H + j] if h0.size > 0 else 0
    for t in range(T):
        s = T - 1 - t if backwards else t
        prev, cur = h[t % 2], h[(t + 1) % 2]
        if r.size > 0:
            rc = r[b0 * H:b1 * H].reshape((nb, H))
            for i in range(nb):
                for j in range(H):
                    hr[i, j] = prev[i, j] * rc[i, j]
            matmul(hr, recurrent_kernel, a, 0.0)
        else:
            matmul(prev, recurrent_kernel, a, 0.0)
        for i in range(nb):
            p = EW[inv[(b0 + i) * T + s]] if tokens else Pc[i, s]
            if not (mask.size == 0 or mask[(b0 + i) * T + s]):
                for j in range(H):
                    cur[i, j] = prev[i, j]
            elif relu:
                for j in range(H):
                    cur[i, j] = max(a[i, j] + p[j] + bias[j], zero)
            else:
                for j in range(H):
                    cur[i, j] = tanh(a[i, j] + p[j] + bias[j])
            o = out[i, s]
            for j in range(H):
                o[j] = cur[i, j]


def BACKWARD_CHUNK(F):
    """The signature of ``backward_chunk`` for float type ``F``."""
    return void(i64, Arr(F, 1), Arr(F, 1), Arr(F, 1), Arr(i64, 1), Arr(F, 2), Arr(F, 2),
                Arr(u8, 1), Arr(F, 1), Arr(F, 1), Arr(i64, 1), Arr(F, 1), Arr(F, 2), Arr(F, 1))


_backward_chunk_at = function_at(BACKWARD_CHUNK)


@jit(lambda F: void(i64, *BACKWARD_CHUNK(F).args[1:]), parallel=True)
def rnn_backward(address, dhs, x, hs, inv, kernel, recurrent_kernel, mask, r, h0, dims, dx,
                 parts, work):
    """``simple_rnn_backward``: ``dx (B T D,)`` and per chunk ``c`` ``parts[c] = (dkernel
    (D H), drecurrent_kernel (H H), dbias (H))`` flat. For token inputs (``inv`` as in
    ``rnn_forward``, ``n`` distinct tokens; ``x`` unused) ``dx (nc n H,)`` holds instead each
    chunk's sums of ``dA = d loss / d a`` over the steps that read each token, added in step
    order, and ``parts[c]`` has no ``dkernel`` (the wrapper computes it from those sums).

    ``dhs``: ``(B T H,)`` per-position gradients, or ``(B H,)`` for the final state only
    (``dims[LAST_ONLY]``); ``dims`` (B, T, D, H, activation, go_backwards, nc, k, last_only), k
    the truncation (0: none); ``work`` at least ``B (T H + 3 H)`` elements.
    """
    # the chunk's code is ``backward_chunk``, compiled once and called through its ``address``:
    # compiled inside this parallel loop, the same code took 8 s to compile instead of 3 s
    run = _backward_chunk_at(address, dhs)
    for c in prange(dims[NC]):
        run(np.int64(c), dhs, x, hs, inv, kernel, recurrent_kernel, mask, r, h0, dims, dx, parts,
            work)


@task(BACKWARD_CHUNK)
def backward_chunk(c, dhs, x, hs, inv, kernel, recurrent_kernel, mask, r, h0, dims, dx, parts,
                   work):
    """Chunk ``c`` of ``rnn_backward``."""
    B, T, H = dims[B_], dims[T_], dims[H_]
    relu, backwards, nc, k, last_only = (dims[ACT] == RELU, dims[BACKWARDS], dims[NC], dims[K],
                                         dims[LAST_ONLY])
    D = dims[D_]
    b0 = c * B // nc
    b1 = (c + 1) * B // nc
    nb = b1 - b0
    if nb == 0:
        return
    tokens, per_step = inv.size > 0, not last_only
    S = T * H + 3 * H
    w = work[b0 * S:b1 * S]
    dh = w[:nb * H].reshape((nb, H))                  # d loss / d h before step t
    dn = w[nb * H:2 * nb * H].reshape((nb, H))        # the same before step t - 1 (swapped)
    da = w[2 * nb * H:3 * nb * H].reshape((nb, H))
    dAc = w[3 * nb * H:].reshape((nb, T, H))          # dA by sequence position, like x and hs
    part = parts[c]
    Dk = 0 if tokens else D * H
    drec, db = part[Dk:Dk + H * H].reshape((H, H)), part[Dk + H * H:Dk + H * H + H]
    for m in range(part.size):
        part[m] = 0
    states = hs[b0 * T * H:b1 * T * H].reshape((nb, T, H))
    grads = dhs[b0 * T * H:b1 * T * H].reshape((nb, T, H)) if per_step else \
        dhs[:0].reshape((0, T, H))
    left = np.empty(nb, np.int64)
    state = np.empty(nb, np.uint8)                     # 2: an update, 1: masked (carry), 0: cut
    for i in range(nb):
        left[i] = T if k == 0 else k
        for j in range(H):
            dh[i, j] = dhs[(b0 + i) * H + j] if last_only else 0
    one = typed(dh, 1.0)
    for t in range(T - 1, -1, -1):
        s = T - 1 - t if backwards else t
        for i in range(nb):
            real = mask.size == 0 or mask[(b0 + i) * T + s] != 0
            update = real and left[i] > 0
            state[i] = 2 if update else (0 if real else 1)
            left[i] -= update
            h, d, out, dhi = states[i, s], da[i], dAc[i, s], dh[i]
            if not update:
                for j in range(H):
                    d[j] = 0
                    out[j] = 0
                if per_step and not real:         # the carried state's gradient adds up
                    g = grads[i, s]
                    for j in range(H):
                        dhi[j] += g[j]
            elif per_step:
                g = grads[i, s]
                if relu:
                    for j in range(H):
                        v = dhi[j] + g[j]
                        d[j] = v if h[j] > 0 else 0 * one
                        out[j] = d[j]
                        db[j] += d[j]
                else:
                    for j in range(H):
                        d[j] = (dhi[j] + g[j]) * (one - h[j] * h[j])
                        out[j] = d[j]
                        db[j] += d[j]
            elif relu:
                for j in range(H):
                    d[j] = dhi[j] if h[j] > 0 else 0 * one
                    out[j] = d[j]
                    db[j] += d[j]
            else:
                for j in range(H):
                    d[j] = dhi[j] * (one - h[j] * h[j])
                    out[j] = d[j]
                    db[j] += d[j]
        matmul(da, recurrent_kernel.T, dn, 0.0)   # through an update: da @ W_hh^T (times r)
        for i in range(nb):
            # a masked step copies h, so it passes dh on unchanged; a row whose k updates are
            # used up stops here
            if state[i] == 2:
                if r.size > 0:
                    rr = r[(b0 + i) * H:(b0 + i + 1) * H]
                    for j in range(H):
                        dn[i, j] *= rr[j]
            elif state[i] == 1:
                for j in range(H):
                    dn[i, j] = dh[i, j]
            else:
                for j in range(H):
                    dn[i, j] = 0
        dh, dn = dn, dh
    # drecurrent_kernel = sum over the steps of h_prev^T dA: per sequence one product of its
    # states (shifted by one step: the state each step read) with its dA, and h_0 with the first
    if h0.size > 0:
        first = T - 1 if backwards else 0
        for i in range(nb):
            g, hi = dAc[i, first], h0[(b0 + i) * H:(b0 + i + 1) * H]
            for p in range(H):
                v = hi[p] * r[(b0 + i) * H + p] if r.size > 0 else hi[p]
                for j in range(H):
                    drec[p, j] += v * g[j]
    if T > 1:
        tmp = np.empty((H, H), da.dtype)
        flat_h, flat_d = states.reshape(nb * T * H), dAc.reshape(nb * T * H)
        for i in range(nb):
            base = i * T * H          # forward: h[s - 1] goes with dA[s]; backwards: h[s + 1]
            prev = flat_h[base + H:base + T * H] if backwards else flat_h[base:base + T * H - H]
            cur = flat_d[base:base + T * H - H] if backwards else flat_d[base + H:base + T * H]
            if r.size == 0:
                matmul(prev.reshape((T - 1, H)).T, cur.reshape((T - 1, H)), drec, 1.0)
            else:
                matmul(prev.reshape((T - 1, H)).T, cur.reshape((T - 1, H)), tmp, 0.0)
                rr = r[(b0 + i) * H:(b0 + i + 1) * H]
                for p in range(H):
                    for j in range(H):
                        drec[p, j] += rr[p] * tmp[p, j]
    dA2 = dAc.reshape((nb * T, H))
    if tokens:                                    # dA summed per distinct token, in step order
        n = dx.size // (nc * H)
        flat = dx[c * n * H:(c + 1) * n * H]
        for m in range(n * H):
            flat[m] = 0
        dEW = flat.reshape((n, H))
        for i in range(nb):
            for s in range(T):
                row, src = dEW[inv[(b0 + i) * T + s]], dAc[i, s]
                for j in range(H):
                    row[j] += src[j]
    else:                                         # dkernel = x^T dA, dx = dA kernel^T
        xc = x[b0 * T * D:b1 * T * D].reshape((nb * T, D))
        tall_matmul_tn(xc, dA2, part[:D * H].reshape((D, H)))
        tall_matmul(dA2, kernel.T, dx[b0 * T * D:b1 * T * D].reshape((nb * T, D)))


@jit(lambda F: void(Arr(F, 2), Arr(i64, 1), Arr(F, 2), i64), parallel=True)
def embedding_backward(dx, ids, dE, n):
    """``dE (V, D)`` += the rows of ``dx (N, D)`` at the rows ``ids (N,)`` name (``dE`` zeroed by
    the caller). Part ``c`` of ``n`` owns a block of the vocabulary and adds its tokens' rows in
    token order, so every row's sum runs in the same order whatever the thread count."""
    V, D = dE.shape
    for c in prange(n):
        v0 = c * V // n
        v1 = (c + 1) * V // n
        for r in range(ids.size):
            v = ids[r]
            if v0 <= v < v1:
                row, g = dE[v], dx[r]
                for j in range(D):
                    row[j] += g[j]


@jit(lambda F: i64(Arr(i64, 1), Arr(u8, 1), Arr(i64, 1), Arr(i64, 1), Arr(i64, 1), Arr(F, 1)))
def distinct(ids, touched, slot, rows, inv, like):
    """Number the distinct values of ``ids (N,)`` in order of first appearance: ``rows[:n]``
    holds them and ``inv[r]`` is the number of ``ids[r]``; returns ``n``. ``touched (V,)`` zeroed
    by the caller, ``slot (V,)`` scratch (``like`` only picks the dtype's compiled copy)."""
    n = 0
    for r in range(ids.size):
        v = ids[r]
        if touched[v] == 0:
            touched[v] = 1
            slot[v] = n
            rows[n] = v
            n += 1
        inv[r] = slot[v]
    return n


@jit(lambda F: void(i64, Arr(F, 1), Arr(F, 1), Arr(F, 1), Arr(F, 1), Arr(F, 1), i64),
     parallel=True)
def update_flat(kind, k, p, g, s1, s2, n):
    """The optimizer ``kind`` on the flat buffers, in ``n`` parts: ``k`` its constants
    (``step.step_constants``: lr, a, 1 - a, b, 1 - b, eps, lr / bc1, 1 / bc2, decay, scale), the
    gradient ``scale * g``. A small kernel of its own, so that a model compiles only this, not the
    whole-classifier task (``fastrnn.kernels.optimizer_update``)."""
    for c in prange(n):
        _update_part(kind, k, p, g, s1, s2, c * p.size // n, (c + 1) * p.size // n)


@helper
def _update_part(kind, k, p, g, s1, s2, lo, hi):
    """Elements ``lo:hi`` of ``update_flat`` (a loop of its own: written inside the parallel
    loop, the same code ran 4x slower, not vectorised)."""
    lr, a, one_a, b, one_b, eps, lr_bc1, inv_bc2, decay, scale = (k[0], k[1], k[2], k[3], k[4],
                                                                  k[5], k[6], k[7], k[8], k[9])
    p, g, s1, s2 = p[lo:hi], g[lo:hi], s1[lo:hi], s2[lo:hi]
    if kind == ADAM_KIND:
        for i in range(p.size):
            p[i], s1[i], s2[i] = adam(p[i], scale * g[i], s1[i], s2[i], a, one_a, b, one_b, eps,
                                      lr_bc1, inv_bc2, decay)
    elif kind == RMSPROP_KIND:
        for i in range(p.size):
            p[i], s1[i] = rmsprop(p[i], scale * g[i], s1[i], lr, b, one_b, eps)
    else:
        for i in range(p.size):
            p[i], s1[i] = sgd(p[i], scale * g[i], s1[i], lr, a)
