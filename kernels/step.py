"""The compiled entry points: each public function of ``fastrnn.kernels`` runs one of these.

``train_step`` is the fused one: forward, loss, backward, clipping and the optimizer update of one
batch in a single compiled call. Scratch buffers are reused along the way: the input projection
``P`` becomes ``dA`` once the forward pass is done, and the gathered inputs ``X`` become ``dX``.
"""

import numpy as np

from fastrnn.optim import CLIPNORM

from ._jit import In, Out, f64, helper, i32, i64, jit, u8, void
from .bptt import input_grads, recurrence_backward, scatter_rows, weight_grads
from .rnn import gather, rnn, step_mask, to_time_major
from .loss import dense, head_backward, softmax_xent
from .optim import (clip_scale, step_constants, sum_squares, update_range, update_rows,
                    update_rows_dense)

_b = i64  # booleans travel as int64 flags: one signature, no bool/int ambiguity


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
def model_inputs(E, ids, x, mask_zero, X, M):
    """Time-major inputs ``X`` and step mask ``M`` from token ids (when ``E`` has rows) or dense x."""
    if E.shape[0] > 0:
        gather(E, ids, X)
        step_mask(ids, mask_zero, M)
    else:
        to_time_major(x, X)
        M[:] = 1


@helper
def batch_shape(V, ids, x):
    return (ids.shape[0], ids.shape[1]) if V > 0 else (x.shape[0], x.shape[1])


@helper
def model_grads(theta, grad, V, D, H, C, ids, x, y, mask_zero, k, logits, rows, n_rows, nt):
    """Loss and gradient of the classifier on one batch; returns ``(loss, n_correct)``.

    The embedding gradient is written for the rows ``rows[:n_rows]`` only (zeroed, then summed into);
    the other rows of ``grad``'s embedding block are left as they were.
    """
    E, W_xh, W_hh, b_h, W_hy, b_y = views(theta, V, D, H, C)
    gE, gW_xh, gW_hh, gb_h, gW_hy, gb_y = views(grad, V, D, H, C)
    B, T = batch_shape(V, ids, x)
    X = np.empty((T, B, D), theta.dtype)
    M = np.empty((T, B), np.uint8)
    P = np.empty((T, B, H), theta.dtype)
    hs = np.empty((T + 1, B, H), theta.dtype)
    model_inputs(E, ids, x, mask_zero, X, M)
    rnn(X, W_xh, W_hh, b_h, M, P, hs, nt)
    dense(hs[T], W_hy, b_y, logits)
    dlogits = np.empty_like(logits)
    loss, correct = softmax_xent(logits, y, dlogits)
    dh_T = np.empty((B, H), theta.dtype)
    head_backward(hs[T], dlogits, W_hy.T.copy(), gW_hy, gb_y, dh_T)
    dA = P
    recurrence_backward(dh_T, hs, W_hh.T.copy(), M, k, dA, nt)
    weight_grads(X, hs, dA, gW_xh, gW_hh, gb_h)
    if V > 0:
        dX = X
        input_grads(dA, W_xh.T.copy(), dX)
        for r in range(n_rows):
            gE[rows[r]] = 0
        scatter_rows(ids, dX, gE, nt)
    return loss, correct


@helper
def batch_rows(ids, V, touched, rows):
    """Mark the embedding rows that occur in ``ids``; list them in ``rows``; return their count."""
    touched[:] = 0
    n = 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            v = ids[b, t]
            if touched[v] == 0:
                touched[v] = 1
                rows[n] = v
                n += 1
    return n


# ------------------------------------------------------------------------------------------------
# entry points (signature templates: F is the float type)
# ------------------------------------------------------------------------------------------------

@jit(lambda F: void(In(F, 3), In(F, 2), In(F, 2), In(F, 1), In(u8, 2), Out(F, 3), i64))
def rnn_forward(x, W_xh, W_hh, b_h, M, hs, nt):
    B, T, D = x.shape
    X = np.empty((T, B, D), x.dtype)
    to_time_major(x, X)
    rnn(X, W_xh, W_hh, b_h, M, np.empty((T, B, W_hh.shape[0]), x.dtype), hs, nt)


@jit(lambda F: void(In(F, 2), In(F, 3), In(F, 3), In(F, 2), In(F, 2), In(u8, 2), i64,
                    Out(F, 3), Out(F, 2), Out(F, 2), Out(F, 1), i64))
def rnn_backward(dh, x, hs, W_xh, W_hh, M, k, dx, dW_xh, dW_hh, db_h, nt):
    B, T, D = x.shape
    H = W_hh.shape[0]
    X = np.empty((T, B, D), x.dtype)
    to_time_major(x, X)
    dA = np.empty((T, B, H), x.dtype)
    recurrence_backward(dh, hs, W_hh.T.copy(), M, k, dA, nt)
    weight_grads(X, hs, dA, dW_xh, dW_hh, db_h)
    input_grads(dA, W_xh.T.copy(), X)
    for b in range(B):
        for t in range(T):
            dx[b, t] = X[t, b]


@jit(lambda F: f64(In(F, 2), In(i64, 1), Out(F, 2)))
def xent(logits, y, dlogits):
    return softmax_xent(logits, y, dlogits)[0]


@jit(lambda F: void(In(F, 1), i64, i64, i64, i64, In(i32, 2), In(F, 3), _b, Out(F, 2), i64))
def forward(theta, V, D, H, C, ids, x, mask_zero, logits, nt):
    E, W_xh, W_hh, b_h, W_hy, b_y = views(theta, V, D, H, C)
    B, T = batch_shape(V, ids, x)
    X = np.empty((T, B, D), theta.dtype)
    M = np.empty((T, B), np.uint8)
    hs = np.empty((T + 1, B, H), theta.dtype)
    model_inputs(E, ids, x, mask_zero, X, M)
    rnn(X, W_xh, W_hh, b_h, M, np.empty((T, B, H), theta.dtype), hs, nt)
    dense(hs[T], W_hy, b_y, logits)


@jit(lambda F: f64(In(F, 1), i64, i64, i64, i64, In(i32, 2), In(F, 3), In(i64, 1), _b, i64,
                   Out(F, 1), Out(F, 2), i64))
def loss_and_grad(theta, V, D, H, C, ids, x, y, mask_zero, k, grad, logits, nt):
    rows = np.arange(V)
    return model_grads(theta, grad, V, D, H, C, ids, x, y, mask_zero, k, logits, rows, V, nt)[0]


@jit(lambda F: void(Out(F, 1), Out(F, 1), Out(F, 1), Out(F, 1), i64, i64, i64, i64, i64,
                    In(i32, 2), In(F, 3), In(i64, 1), i64, In(f64, 1), _b, i64, _b, Out(f64, 1), i64))
def train_step(theta, grad, s1, s2, step, V, D, H, C, ids, x, y, kind, hyper, mask_zero, k, lazy,
               stats, nt):
    B = ids.shape[0] if V > 0 else x.shape[0]
    touched = np.zeros(V, np.uint8)
    rows = np.empty(min(V, ids.size), np.int64)
    n_rows = batch_rows(ids, V, touched, rows) if V > 0 else 0
    logits = np.empty((B, C), theta.dtype)
    loss, correct = model_grads(theta, grad, V, D, H, C, ids, x, y, mask_zero, k, logits, rows,
                                n_rows, nt)
    # global norm over the gradient (embedding rows outside the batch have zero gradient)
    tail = V * D
    squares = sum_squares(grad, tail, grad.size)
    for r in range(n_rows):
        squares += sum_squares(grad, rows[r] * D, rows[r] * D + D)
    norm = np.sqrt(squares)
    scale = clip_scale(norm, hyper[CLIPNORM], theta)
    c = step_constants(kind, hyper, step, theta)
    update_range(kind, c, theta, grad, s1, s2, tail, grad.size, scale)
    if V > 0:
        if lazy:
            update_rows(kind, c, theta, grad, s1, s2, D, rows[:n_rows], scale)
        else:
            update_rows_dense(kind, c, theta, grad, s1, s2, D, V, touched, scale)
    stats[0], stats[1], stats[2] = loss, correct, norm


@jit(lambda F: void(i64, In(f64, 1), i64, Out(F, 1), In(F, 1), Out(F, 1), Out(F, 1), In(i64, 1),
                    i64))
def optimizer_update(kind, hyper, step, p, g, s1, s2, rows, D):
    c = step_constants(kind, hyper, step, p)
    one = p[:1].copy()
    one[0] = 1
    if D > 0:
        update_rows(kind, c, p, g, s1, s2, D, rows, one[0])
    else:
        update_range(kind, c, p, g, s1, s2, 0, p.size, one[0])


@jit(lambda F: f64(Out(F, 1), f64))
def clip_by_global_norm(g, clipnorm):
    norm = np.sqrt(sum_squares(g, 0, g.size))
    scale = clip_scale(norm, clipnorm, g)
    if norm > clipnorm:
        for i in range(g.size):
            g[i] *= scale
    return norm
