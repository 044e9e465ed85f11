"""The compiled entry points: each public function of ``fastrnn.kernels`` runs one of these.

``train_step`` is the fused one: forward, loss, backward, clipping and the optimizer update of one
batch in a single compiled call. Threads split the batch into chunks (see ``rnn.py``); each thread
writes its own partial gradients, which are summed once after the parallel loop. Products over
other dimensions (the distinct tokens of a batch) are split over threads by rows the same way.
The input projections ``P`` are overwritten by ``dA = d loss / d a_t`` in the backward pass.
"""

import numpy as np
from numba import prange

from fastrnn.optim import CLIPNORM

from ._blas import matmul
from ._jit import Arr, f64, helper, i32, i64, jit, u8, void
from ._math import assign
from .bptt import chunk_backward, chunk_dense_input_grads, chunk_recurrent_grads
from .loss import head_backward, head_forward, softmax_xent
from .optim import clip_scale, step_constants, sum_squares, update_range, update_rows
from .rnn import block, chunk_bounds, chunk_dense_inputs, chunk_token_inputs, recurrence

_b = i64  # flags travel as int64: one signature, no bool/int ambiguity


@helper
def views(theta, V, D, H, C):
    """The six parameter views of the flat buffer (see ``fastrnn.layout``)."""
    o1 = V * D
    o2 = o1 + D * H
    o3 = o2 + H * H
    o4 = o3 + H
    o5 = o4 + H * C
    return (theta[:o1].reshape((V, D)), theta[o1:o2].reshape((D, H)), theta[o2:o3].reshape((H, H)),
            theta[o3:o4], theta[o4:o5].reshape((H, C)), theta[o5:o5 + C])


@helper
def chunk_blocks(c, nc, B, T, D, H, Xb, Mb, Pb, Hb):
    """Chunk ``c``'s first row ``b0``, row count ``nb`` and blocks ``X (T, nb, D)``, ``M (T, nb)``,
    ``P (T, nb, H)``, ``hs (T + 1, nb, H)`` (``X`` empty when ``Xb`` is)."""
    b0, b1 = chunk_bounds(c, nc, B)
    nb = b1 - b0
    X = block(Xb, T * b0 * D, (T, nb, D)) if Xb.size > 0 else np.empty((0, 0, 0), Xb.dtype)
    return (b0, nb, X, block(Mb, T * b0, (T, nb)), block(Pb, T * b0 * H, (T, nb, H)),
            block(Hb, (T + 1) * b0 * H, (T + 1, nb, H)))


@helper(parallel=True)
def rows_matmul(A, B, out, nt):
    """``out = A @ B`` with the rows of ``A`` split over ``nt`` threads."""
    n = A.shape[0]
    nc = max(1, min(n, nt))
    for c in prange(nc):
        r0, r1 = chunk_bounds(c, nc, n)
        if r1 > r0:
            matmul(A[r0:r1], B, out[r0:r1], 0.0)


@helper
def sum_parts(parts, out):
    """``out = parts.sum(axis=0)``: the threads' partial gradients, added in thread order."""
    assign(out, parts[0])
    for c in range(1, parts.shape[0]):
        out += parts[c]


@helper
def batch_rows(ids, touched, rows, slot):
    """Mark the distinct ids of the batch in ``touched``, list them in ``rows`` and number them in
    ``slot`` (``rows[slot[v]] == v``); return how many there are."""
    n = 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            v = ids[b, t]
            if touched[v] == 0:
                touched[v] = 1
                rows[n] = v
                slot[v] = n
                n += 1
    return n


@helper
def token_projection(E, W_xh, ids, nt, touched, rows, slot):
    """``(n, Ec, EW)``: the ``n`` distinct ids of the batch, their embedding rows ``Ec (n, D)``
    and their input projections ``EW = Ec @ W_xh (n, H)``."""
    n = batch_rows(ids, touched, rows, slot)
    Ec = np.empty((n, E.shape[1]), E.dtype)
    for r in range(n):
        assign(Ec[r], E[rows[r]])
    EW = np.empty((n, W_xh.shape[1]), E.dtype)
    rows_matmul(Ec, W_xh, EW, nt)
    return n, Ec, EW


@helper(parallel=True, inline="always")
def batch_pass(theta, grad, V, D, H, C, ids, x, mask, y, mask_zero, k, nt, slot, EW, logits, Pb,
               Hb, Xb):
    """Forward pass of the whole batch over ``nt`` threads, and the backward pass when labels
    ``y`` are given (an empty ``y``: forward only).

    Writes ``logits``. With labels: returns ``(loss, n_correct)``, writes the gradients of
    ``W_hh, b_h, W_hy, b_y`` (and ``W_xh`` for dense inputs) into ``grad`` and leaves
    ``dA (T, nb, H)`` chunk-major in ``Pb``.
    """
    want_grad = y.shape[0] > 0
    E, W_xh, W_hh, b_h, W_hy, b_y = views(theta, V, D, H, C)
    B, T = (ids.shape[0], ids.shape[1]) if V > 0 else (x.shape[0], x.shape[1])
    nc = max(1, min(B, nt))
    Mb = np.empty(T * B, np.uint8)
    pW_xh, pW_hh = np.zeros((nc, D, H), theta.dtype), np.empty((nc, H, H), theta.dtype)
    pb_h, pW_hy = np.empty((nc, H), theta.dtype), np.empty((nc, H, C), theta.dtype)
    pb_y = np.empty((nc, C), theta.dtype)
    loss_c, correct_c = np.zeros(nc), np.zeros(nc, np.int64)
    dlogits = np.empty_like(logits)
    for c in prange(nc):
        b0, nb, X, M, P, hs = chunk_blocks(c, nc, B, T, D, H, Xb, Mb, Pb, Hb)
        b1 = b0 + nb
        if V > 0:
            chunk_token_inputs(ids, b0, mask_zero, slot, EW, P, M)
        else:
            chunk_dense_inputs(x, mask, b0, W_xh, X, M, P)
        recurrence(W_hh, b_h, M, P, hs)
        head_forward(hs[T], W_hy, b_y, logits[b0:b1])
        if want_grad:
            loss_c[c], correct_c[c] = softmax_xent(logits[b0:b1], y[b0:b1], B, dlogits[b0:b1])
            dh = np.empty((nb, H), theta.dtype)
            head_backward(hs[T], dlogits[b0:b1], W_hy, pW_hy[c], pb_y[c], dh)
            dA = P
            t_lo = chunk_backward(dh, hs, W_hh, M, k, dA)
            chunk_recurrent_grads(hs, dA, t_lo, pW_hh[c], pb_h[c])
            if V == 0:
                chunk_dense_input_grads(X, dA, t_lo, W_xh, pW_xh[c], False)
    if want_grad:
        gE, gW_xh, gW_hh, gb_h, gW_hy, gb_y = views(grad, V, D, H, C)
        sum_parts(pW_xh, gW_xh)
        sum_parts(pW_hh, gW_hh)
        sum_parts(pb_h, gb_h)
        sum_parts(pW_hy, gW_hy)
        sum_parts(pb_y, gb_y)
    return loss_c.sum() / B, correct_c.sum()


@helper(parallel=True)
def token_backward(ids, Pb, slot, Ec, W_xh, nt, dEW, dEc, pW_xh):
    """Backward pass of the token projection ``EW = Ec @ W_xh``, with ``dA`` chunk-major in ``Pb``:
    ``dEW[slot[v]] = sum of dA[t, b]`` over the tokens ``v = ids[b, t]``, then ``dEc = dEW @ W_xh.T``
    and the partial sums ``pW_xh[o] = Ec.T @ dEW`` over each thread's rows. Thread ``o`` owns one
    contiguous block of the distinct ids: no two threads add into the same row."""
    B, T = ids.shape
    n, H = dEW.shape
    nc = max(1, min(B, nt))          # the batch chunks that laid out Pb
    no = pW_xh.shape[0]
    for o in prange(no):
        s0, s1 = chunk_bounds(o, no, n)
        for c in range(nc):
            b0, b1 = chunk_bounds(c, nc, B)
            nb = b1 - b0
            for t in range(T):
                for i in range(nb):
                    s = slot[ids[b0 + i, t]]
                    if s0 <= s < s1:
                        off = (T * b0 + t * nb + i) * H
                        row, da = dEW[s], Pb[off:off + H]
                        for j in range(H):
                            row[j] += da[j]
        matmul(dEW[s0:s1], W_xh.T, dEc[s0:s1], 0.0)
        matmul(Ec[s0:s1].T, dEW[s0:s1], pW_xh[o], 0.0)


@helper
def scratch(work, T, B, D, H):
    """The chunk-major scratch buffers ``Pb (T B H)``, ``Hb ((T + 1) B H)`` and ``Xb (T B D)`` (D
    may be 0), taken from the caller's reusable workspace ``work`` when it is large enough (see
    ``workspace_size``): fresh buffers of this size are fresh pages from the OS, and faulting them
    in costs as much as the forward pass."""
    n_P, n_H, n_X = T * B * H, (T + 1) * B * H, T * B * D
    if work.size < n_P + n_H + n_X:
        work = np.empty(n_P + n_H + n_X, work.dtype)
    return work[:n_P], work[n_P:n_P + n_H], work[n_P + n_H:n_P + n_H + n_X]


def workspace_size(dims, B, T):
    """Scratch elements an entry point uses for ``B`` sequences of ``T`` steps (``dims`` as in
    ``fastrnn.layout``; ``V = 0``: dense inputs, as in ``rnn_forward`` and ``rnn_backward``)."""
    V, D, H, _ = dims
    return T * B * H + (T + 1) * B * H + (0 if V > 0 else T * B * D)


# ------------------------------------------------------------------------------------------------
# entry points (signature templates: F is the float type); ``nt`` is the thread count, passed in
# from Python because calling numba.get_num_threads() in compiled code makes it uncacheable
# ------------------------------------------------------------------------------------------------

@jit(lambda F: void(Arr(F, 3), Arr(F, 2), Arr(F, 2), Arr(F, 1), Arr(u8, 2), Arr(F, 3), i64,
                    Arr(F, 1)), parallel=True)
def rnn_forward(x, W_xh, W_hh, b_h, mask, hs_out, nt, work):
    B, T, D = x.shape
    H = W_hh.shape[0]
    nc = max(1, min(B, nt))
    Pb, Hb, Xb = scratch(work, T, B, D, H)
    Mb = np.empty(T * B, np.uint8)
    for c in prange(nc):
        b0, nb, X, M, P, hs = chunk_blocks(c, nc, B, T, D, H, Xb, Mb, Pb, Hb)
        chunk_dense_inputs(x, mask, b0, W_xh, X, M, P)
        recurrence(W_hh, b_h, M, P, hs)
        assign(hs_out[:, b0:b0 + nb], hs)


@jit(lambda F: void(Arr(F, 2), Arr(F, 3), Arr(F, 3), Arr(F, 2), Arr(F, 2), Arr(u8, 2), i64,
                    Arr(F, 3), Arr(F, 2), Arr(F, 2), Arr(F, 1), i64, Arr(F, 1)), parallel=True)
def rnn_backward(dh, x, hs_in, W_xh, W_hh, mask, k, dx, dW_xh, dW_hh, db_h, nt, work):
    B, T, D = x.shape
    H = W_hh.shape[0]
    nc = max(1, min(B, nt))
    Pb, Hb, Xb = scratch(work, T, B, D, H)
    Mb = np.empty(T * B, np.uint8)
    pW_xh, pW_hh = np.empty((nc, D, H), x.dtype), np.empty((nc, H, H), x.dtype)
    pb_h = np.empty((nc, H), x.dtype)
    for c in prange(nc):
        b0, nb, X, M, dA, hs = chunk_blocks(c, nc, B, T, D, H, Xb, Mb, Pb, Hb)
        chunk_dense_inputs(x, mask, b0, W_xh, X, M, dA[:0])    # the inputs only: no projection
        assign(hs, hs_in[:, b0:b0 + nb])
        t_lo = chunk_backward(dh[b0:b0 + nb].copy(), hs, W_hh, M, k, dA)
        chunk_recurrent_grads(hs, dA, t_lo, pW_hh[c], pb_h[c])
        chunk_dense_input_grads(X, dA, t_lo, W_xh, pW_xh[c], True)
        for t in range(T):
            for i in range(nb):
                assign(dx[b0 + i, t], X[t, i])
    sum_parts(pW_xh, dW_xh)
    sum_parts(pW_hh, dW_hh)
    sum_parts(pb_h, db_h)


@jit(lambda F: f64(Arr(F, 2), Arr(i64, 1), Arr(F, 2)))
def xent(logits, y, dlogits):
    return softmax_xent(logits, y, logits.shape[0], dlogits)[0] / logits.shape[0]


FORWARD, LOSS_AND_GRAD, TRAIN_STEP = 0, 1, 2


@jit(lambda F: void(i64, Arr(F, 1), Arr(F, 1), Arr(F, 1), Arr(F, 1), i64, i64, i64, i64, i64,
                    Arr(i32, 2), Arr(F, 3), Arr(i64, 1), i64, Arr(f64, 1), _b, i64, _b, i64,
                    Arr(F, 2), Arr(f64, 1), Arr(F, 1)), parallel=True)
def model(mode, theta, grad, s1, s2, step, V, D, H, C, ids, x, y, kind, hyper, mask_zero, k, lazy,
          nt, logits, stats, work):
    """The whole classifier on one batch, by ``mode``:

    - FORWARD: the logits;
    - LOSS_AND_GRAD: the loss in ``stats[0]`` and the full gradient in ``grad``;
    - TRAIN_STEP: the fused step; ``stats = (loss, n_correct, grad_norm)``. The embedding gradient
      is written for the rows in the batch only, and a non-finite loss or norm updates nothing.

    ``work`` is scratch space (used when it holds ``workspace_size`` elements, else allocated).

    One entry point with one call of ``batch_pass`` (inlined), so the large shared code is compiled,
    optimised and cached once per dtype: Numba re-optimises a helper's code in every caller that
    links it, so each extra level of helpers would cost another full optimisation.
    """
    B, T = (ids.shape[0], ids.shape[1]) if V > 0 else (x.shape[0], x.shape[1])
    E, W_xh = views(theta, V, D, H, C)[:2]
    touched, slot = np.zeros(V, np.uint8), np.empty(V, np.int64)
    rows = np.empty(min(V, ids.size), np.int64)
    n, Ec, EW = token_projection(E, W_xh, ids, nt, touched, rows, slot)
    if mode == LOSS_AND_GRAD:
        grad[:V * D] = 0
    Pb, Hb, Xb = scratch(work, T, B, 0 if V > 0 else D, H)
    loss, correct = batch_pass(theta, grad, V, D, H, C, ids, x, np.empty((0, 0), np.uint8),
                               y if mode != FORWARD else y[:0], mask_zero, k, nt, slot, EW, logits,
                               Pb, Hb, Xb)
    if mode == FORWARD:
        return
    if V > 0:
        dEW, dEc = np.zeros((n, H), theta.dtype), np.empty((n, D), theta.dtype)
        pW_xh = np.empty((max(1, min(n, nt)), D, H), theta.dtype)
        token_backward(ids, Pb, slot, Ec, W_xh, nt, dEW, dEc, pW_xh)
        gE, gW_xh = views(grad, V, D, H, C)[:2]
        sum_parts(pW_xh, gW_xh)                   # dW_xh = sum over tokens of E[v].T @ dA
        for r in range(n):
            assign(gE[rows[r]], dEc[r])           # dE[v] = (sum of dA over v's tokens) @ W_xh.T
    stats[0], stats[1] = loss, correct
    if mode == LOSS_AND_GRAD:
        return
    # global norm over the gradient (embedding rows outside the batch have zero gradient)
    tail = V * D
    squares = sum_squares(grad, tail, grad.size)
    for r in range(n):
        squares += sum_squares(grad, rows[r] * D, rows[r] * D + D)
    norm = np.sqrt(squares)
    stats[2] = norm
    if not (np.isfinite(norm) and np.isfinite(loss)):     # update nothing; the caller decides
        return
    scale = clip_scale(norm, hyper[CLIPNORM], theta)
    consts = step_constants(kind, hyper, step, theta)
    update_range(kind, consts, theta, grad, s1, s2, tail, grad.size, scale)
    if V > 0:
        every_row = touched if not lazy else touched[:0]
        update_rows(kind, consts, theta, grad, s1, s2, D, rows[:n], every_row, scale)


@jit(lambda F: void(i64, Arr(f64, 1), i64, Arr(F, 1), Arr(F, 1), Arr(F, 1), Arr(F, 1), Arr(i64, 1),
                    i64))
def optimizer_update(kind, hyper, step, p, g, s1, s2, rows, D):
    consts = step_constants(kind, hyper, step, p)
    one = clip_scale(0.0, 1.0, p)
    if D > 0:
        update_rows(kind, consts, p, g, s1, s2, D, rows, np.zeros(0, np.uint8), one)
    else:
        update_range(kind, consts, p, g, s1, s2, 0, p.size, one)


@jit(lambda F: f64(Arr(F, 1), f64))
def clip_by_global_norm(g, clipnorm):
    norm = np.sqrt(sum_squares(g, 0, g.size))
    scale = clip_scale(norm, clipnorm, g)
    if norm > clipnorm:
        for i in range(g.size):
            g[i] *= scale
    return norm
