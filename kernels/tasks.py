"""Everything a thread does, in one compiled function: ``task(job, c, n, theta, address)`` runs
part ``c`` of ``n`` of one job on the parameters ``theta``, with the other arguments (``ARGS``) in
a tuple at ``address`` (see ``step.py`` for who runs which job, and ``fork`` for how the parts map
to threads). The entry points call it through its address too, so its code is compiled, optimised
and cached once per dtype however many entry points and parallel loops use it. Written as nested
helpers called directly, Numba compiled the same code four or five times over: once per level of
callers, and three more times inside each parallel loop (two thirds of a cold start).

Jobs:

- ``CHUNK``: sequences ``b0:b1`` of the batch (chunk ``c``): inputs, input projection, the
  recurrence, the classifier head; with ``WANT_GRAD`` the loss and the whole backward pass into
  the thread's own partial gradients ``parts[c]`` (the layout of the buffer after the embedding:
  ``W_xh, W_hh, b_h, W_hy, b_y``);
- ``PROJECT``: the input projections ``EW = E[rows] @ W_xh`` of the distinct token ids of a batch;
- ``TOKEN_BACKWARD``: the gradients of those projections: the embedding rows' ``dEc`` and the
  partial ``W_xh`` gradient; thread ``c`` owns a block of the distinct ids, so no two threads add
  into one row;
- ``UPDATE_RANGE``, ``UPDATE_ROWS``, ``UPDATE_ALL_ROWS``: the optimizer update of part of a
  contiguous range, of the listed rows of the embedding (lazy), or of every row; with
  ``CHECK_ONLY`` part ``c`` writes nothing but ``stats[c]``, the number of new values that would
  not be finite (``update_rows``).

Scratch buffers are chunk-major: chunk ``c`` (rows ``b0:b1``, ``nb`` of them) owns one contiguous
block of each, seen as ``X (T, nb, D)``, ``P (T, nb, H)``, ``hs (T + 1, nb, H)`` and the step mask
``M (T, nb)`` (1 = state update, 0 = carry the state), so each product over all time steps is one
BLAS call on contiguous memory. ``P`` holds the input projections, then ``dA = d loss / d a_t``.
The input projection is hoisted out of the recurrence: for token ids it is not even a product per
token, but ``E[v] @ W_xh`` once per distinct id ``v`` (rows ``EW``, found through ``slot[v]``).
"""

import math

import numpy as np
from numba import types

from fastrnn.optim import ADAM_KIND, RMSPROP_KIND

from ._blas import matmul
from ._jit import Arr, borrow, f64, helper, i32, i64, task as _task, u8, value_at, void
from ._math import assign, tanh, typed, zero

# jobs
CHUNK, PROJECT, TOKEN_BACKWARD, UPDATE_RANGE, UPDATE_ROWS, UPDATE_ALL_ROWS = range(6)
# the slots of ``ints``
INTS = ("B", "T", "V", "D", "H", "C", "MASK_ZERO", "K", "FLAGS", "KIND", "N_ROWS", "LO", "HI", "NC",
        "NT")
B_, T_, V_, D_, H_, C_, MASK_ZERO, K, FLAGS, KIND, N_ROWS, LO, HI, NC, NT = range(len(INTS))
# bits of ints[FLAGS]
WANT_GRAD, HS_IN, HS_OUT, DX_OUT, CHECK_ONLY = 1, 2, 4, 8, 16
# ``consts``: step_constants (9 values), then the gradient scale
N_CONSTS = 10


# the task's arguments after (job, c, n, theta), passed as one tuple by address
ARG_NAMES = ("ints", "consts", "ids", "x", "mask", "y", "EW", "slot", "rows", "work", "Mb",
             "logits", "parts", "stats", "hs_io", "dh_in", "dx", "Ec", "dEW", "dEc", "grad", "s1",
             "s2", "touched")


def ARGS(F):
    """The type of the argument tuple for float type ``F``."""
    return types.Tuple((Arr(i64, 1), Arr(F, 1), Arr(i32, 2), Arr(F, 3), Arr(u8, 2), Arr(i64, 1),
                        Arr(F, 2), Arr(i64, 1), Arr(i64, 1), Arr(F, 1), Arr(u8, 1), Arr(F, 2),
                        Arr(F, 2), Arr(f64, 1), Arr(F, 3), Arr(F, 2), Arr(F, 3), Arr(F, 2),
                        Arr(F, 2), Arr(F, 2), Arr(F, 1), Arr(F, 1), Arr(F, 1), Arr(u8, 1)))


def TEMPLATE(F):
    """The task's signature for float type ``F``: ``(job, c, n, theta, address of the ARGS)``."""
    return void(i64, i64, i64, Arr(F, 1), i64)


args_at = value_at(ARGS)


@helper
def part(c, n, size):
    """Items ``[lo, hi)`` of part ``c`` when ``size`` items are split evenly into ``n`` parts."""
    return c * size // n, (c + 1) * size // n


@helper
def softmax_xent(logits, y, B, dlogits):
    """Cross-entropy of the rows ``logits (nb, C)`` against ``y``, for a batch mean over ``B`` rows
    (stable log-sum-exp). Writes ``dlogits = d mean_loss / d logits``; returns the sum of the rows'
    losses (float64) and how many rows have their arg-max at the label."""
    nb, C = logits.shape
    loss, correct = 0.0, 0
    for i in range(nb):
        top, best = float(logits[i, 0]), 0
        for j in range(1, C):
            if logits[i, j] > top:
                top, best = float(logits[i, j]), j
        total = 0.0
        for j in range(C):
            total += math.exp(float(logits[i, j]) - top)
        log_total = math.log(total)
        loss -= float(logits[i, y[i]]) - top - log_total
        correct += best == y[i]
        for j in range(C):
            prob = math.exp(float(logits[i, j]) - top - log_total)
            dlogits[i, j] = (prob - (1.0 if j == y[i] else 0.0)) / B
    return loss, correct


@helper
def adam(p, g, m, s, a, one_a, b, one_b, eps, lr_bc1, inv_bc2, decay):
    """Adam on one element (``g`` scaled, constants as ``consts``): ``(p, m, v)`` after the step,
    ``p -= lr m_hat / (sqrt(v_hat) + eps)``, decayed."""
    m = a * m + one_a * g
    s = b * s + one_b * g * g
    return p * decay - lr_bc1 * m / (np.sqrt(s * inv_bc2) + eps), m, s


@helper
def rmsprop(p, g, s, lr, b, one_b, eps):
    """RMSprop on one element: ``(p, mean square)`` after ``p -= lr g / sqrt(ms + eps)``."""
    s = b * s + one_b * g * g
    return p - lr * g / np.sqrt(s + eps), s


@helper
def sgd(p, g, buf, lr, a):
    """SGD with (PyTorch's) momentum on one element: ``(p, buf)`` after the step."""
    buf = a * buf + g
    return p - lr * buf, buf


@helper
def update_rows(kind, k, p, g, s1, s2, scale, D, rows, touched, r0, r1, write):
    """Update rows ``r0:r1`` of the ``(., D)`` blocks stored flat in ``p, g, s1, s2``, with gradient
    ``scale * g``: row ``r`` is ``rows[r]`` (``r`` itself when ``rows`` is empty), and a row ``v``
    with ``touched[v] == 0`` (when ``touched`` is not empty) has zero gradient (its ``g`` is not
    read). ``k`` as ``consts``; one inner loop per kind keeps the loops branch-free, so they
    vectorise.

    With ``write`` false nothing is written: the new values are computed and checked (the check
    before an update that might overflow); returns how many are not finite (0 with ``write``).
    Tested by comparison, ``|x| <= largest``: the fastmath flags fold ``x - x`` to 0.
    """
    lr, a, one_a, b, one_b, eps, lr_bc1, inv_bc2, decay = (k[0], k[1], k[2], k[3], k[4], k[5],
                                                            k[6], k[7], k[8])
    zeros = np.empty(D, p.dtype)
    zero(zeros)
    top, bad = typed(p, np.finfo(p.dtype).max), 0
    for r in range(r0, r1):
        v = rows[r] if rows.size > 0 else np.int64(r)
        lo = v * D
        gv = g[lo:lo + D] if touched.size == 0 or touched[v] else zeros
        pv, s1v, s2v = p[lo:lo + D], s1[lo:lo + D], s2[lo:lo + D]
        if kind == ADAM_KIND:
            if write:
                for i in range(D):
                    pv[i], s1v[i], s2v[i] = adam(pv[i], scale * gv[i], s1v[i], s2v[i], a, one_a,
                                                 b, one_b, eps, lr_bc1, inv_bc2, decay)
            else:
                for i in range(D):
                    pn, m, s = adam(pv[i], scale * gv[i], s1v[i], s2v[i], a, one_a, b, one_b, eps,
                                    lr_bc1, inv_bc2, decay)
                    if not (abs(pn) <= top and abs(m) <= top and s <= top):
                        bad += 1
        elif kind == RMSPROP_KIND:
            if write:
                for i in range(D):
                    pv[i], s1v[i] = rmsprop(pv[i], scale * gv[i], s1v[i], lr, b, one_b, eps)
            else:
                for i in range(D):
                    pn, s = rmsprop(pv[i], scale * gv[i], s1v[i], lr, b, one_b, eps)
                    if not (abs(pn) <= top and s <= top):
                        bad += 1
        elif write:
            for i in range(D):
                pv[i], s1v[i] = sgd(pv[i], scale * gv[i], s1v[i], lr, a)
        else:
            for i in range(D):
                pn, buf = sgd(pv[i], scale * gv[i], s1v[i], lr, a)
                if not (abs(pn) <= top and abs(buf) <= top):
                    bad += 1
    return bad


@_task(TEMPLATE)
def task(job, c, n, theta, address):
    theta = borrow(theta)
    (ints, consts, ids, x, mask, y, EW, slot, rows, work, Mb, logits, parts, stats, hs_io, dh_in,
     dx, Ec, dEW, dEc, grad, s1, s2, touched) = args_at(address, theta)
    B, T, V, D, H, C = ints[B_], ints[T_], ints[V_], ints[D_], ints[H_], ints[C_]
    o1 = V * D                                    # the parameters (see fastrnn.layout)
    o2 = o1 + D * H
    o3 = o2 + H * H
    o4 = o3 + H
    o5 = o4 + H * C
    W_xh, W_hh, b_h = theta[o1:o2].reshape((D, H)), theta[o2:o3].reshape((H, H)), theta[o3:o4]
    W_hy, b_y = theta[o4:o5].reshape((H, C)), theta[o5:o5 + C]

    if job == PROJECT:
        r0, r1 = part(c, n, ints[N_ROWS])
        for r in range(r0, r1):
            assign(Ec[r], theta[rows[r] * D:rows[r] * D + D])
        if r1 > r0:
            matmul(Ec[r0:r1], W_xh, EW[r0:r1], 0.0)
        return

    if job == TOKEN_BACKWARD:
        # dEW[slot[v]] = sum of dA[t, b] over the tokens v = ids[b, t] (dA chunk-major in work),
        # then dEc = dEW @ W_xh.T and this part's dW_xh = Ec.T @ dEW
        r0, r1 = part(c, n, ints[N_ROWS])
        nc = ints[NC]                             # the chunks that laid out dA
        for ch in range(nc):
            b0, b1 = part(ch, nc, B)
            nb = b1 - b0
            dA = work[T * b0 * H:T * b1 * H].reshape((T, nb, H))     # as the CHUNK job left it
            for t in range(T):
                for i in range(nb):
                    s = slot[ids[b0 + i, t]]
                    if r0 <= s < r1:
                        row, da = dEW[s], dA[t, i]
                        for j in range(H):
                            row[j] += da[j]
        matmul(dEW[r0:r1], W_xh.T, dEc[r0:r1], 0.0)
        matmul(Ec[r0:r1].T, dEW[r0:r1], parts[c, :D * H].reshape((D, H)), 0.0)
        return

    if job >= UPDATE_RANGE:
        kind, scale = ints[KIND], consts[9]
        lo, width, r0, r1 = 0, D, 0, 0
        if job == UPDATE_RANGE:                   # part c of theta[LO:HI], as one row
            i0, i1 = part(c, n, ints[HI] - ints[LO])
            lo, width, r1 = ints[LO] + i0, i1 - i0, 1
            rows, touched = rows[:0], touched[:0]
        else:                                     # rows of the (V, D) block at the start
            r0, r1 = part(c, n, ints[N_ROWS] if job == UPDATE_ROWS else V)
            rows, touched = (rows, touched[:0]) if job == UPDATE_ROWS else (rows[:0], touched)
        hi = lo + (width if job == UPDATE_RANGE else theta.size)
        stats[c] = update_rows(kind, consts, theta[lo:hi], grad[lo:hi], s1[lo:hi], s2[lo:hi],
                               scale, width, rows, touched, r0, r1, not ints[FLAGS] & CHECK_ONLY)
        return

    # job == CHUNK
    b0, b1 = part(c, n, B)
    nb = b1 - b0
    if nb == 0:
        return
    flags, dense = ints[FLAGS], V == 0
    Dx = D if dense else 0
    n_P, n_H = T * B * H, (T + 1) * B * H
    P = work[T * b0 * H:T * b1 * H].reshape((T, nb, H))
    hs = work[n_P + (T + 1) * b0 * H:n_P + (T + 1) * b1 * H].reshape((T + 1, nb, H))
    X = work[n_P + n_H + T * b0 * Dx:n_P + n_H + T * b1 * Dx].reshape((T, nb, Dx))
    M = Mb[T * b0:T * b1].reshape((T, nb))

    # inputs and the step mask
    mask_zero = ints[MASK_ZERO]
    for t in range(T):
        for i in range(nb):
            if dense:
                assign(X[t, i], x[b0 + i, t])
                M[t, i] = mask[b0 + i, t] if mask.shape[0] > 0 else 1
            else:
                v = ids[b0 + i, t]
                assign(P[t, i], EW[slot[v]])
                M[t, i] = 0 if mask_zero and v == 0 else 1
    # the first step with an update (T if none): before it every h is h_0 = 0 and every dA is 0,
    # so the padding of a left-padded batch costs nothing
    t0, t = T, 0
    while t0 == T and t < T:
        for i in range(nb):
            if M[t, i]:
                t0 = t
        t += 1

    if flags & HS_IN:
        for t in range(T + 1):
            assign(hs[t], hs_io[t, b0:b1])
    else:
        if dense and T * nb * D > 0:              # all the steps' projections in one product
            matmul(X.reshape((T * nb, D)), W_xh, P.reshape((T * nb, H)), 0.0)
        # hs[t + 1] = tanh(P[t] + hs[t] @ W_hh + b_h) where M[t], else hs[t]
        zero(hs[:t0 + 1])
        a = np.empty(nb * H, theta.dtype).reshape((nb, H))
        for t in range(t0, T):
            h_prev, h, p, m = hs[t], hs[t + 1], P[t], M[t]
            matmul(h_prev, W_hh, a, 0.0)
            for i in range(nb):
                if m[i]:
                    for j in range(H):
                        h[i, j] = tanh(a[i, j] + p[i, j] + b_h[j])
                else:
                    assign(h[i], h_prev[i])
        if flags & HS_OUT:
            for t in range(T + 1):
                assign(hs_io[t, b0:b1], hs[t])

    # this chunk's partial gradients (the parameter layout after the embedding)
    pW_xh, pW_hh = parts[c, :o2 - o1].reshape((D, H)), parts[c, o2 - o1:o3 - o1].reshape((H, H))
    pb_h, pW_hy = parts[c, o3 - o1:o4 - o1], parts[c, o4 - o1:o5 - o1].reshape((H, C))
    pb_y = parts[c, o5 - o1:o5 - o1 + C]
    dh = np.empty(nb * H, theta.dtype).reshape((nb, H))
    dh_prev = np.empty(nb * H, theta.dtype).reshape((nb, H))
    if C > 0:                                     # the classifier head
        out = logits[b0:b1]
        matmul(hs[T], W_hy, out, 0.0)
        for i in range(nb):
            for j in range(C):
                out[i, j] += b_y[j]
        if not flags & WANT_GRAD:
            return
        dlogits = np.empty(nb * C, theta.dtype).reshape((nb, C))
        loss, correct = softmax_xent(out, y[b0:b1], B, dlogits)
        stats[2 * c], stats[2 * c + 1] = loss, correct
        matmul(hs[T].T, dlogits, pW_hy, 0.0)
        zero(pb_y)
        for i in range(nb):
            for j in range(C):
                pb_y[j] += dlogits[i, j]
        matmul(dlogits, W_hy.T, dh, 0.0)
    elif not flags & WANT_GRAD:
        return
    else:
        assign(dh, dh_in[b0:b1])

    # BPTT: dA[t] = dh * (1 - h^2) back through the last k updates of each sequence (k = 0: all);
    # stops as soon as no sequence of the chunk has an update left to go back through
    one = typed(P, 1.0)
    k = ints[K]
    left = np.empty(nb, np.int64)                  # updates left to go back through
    for i in range(nb):
        left[i] = T if k == 0 else k
    active = nb                                    # sequences with updates left
    dA = P
    t_lo = t0
    for s in range(T - t0):
        t = T - 1 - s
        h, da, m = hs[t + 1], dA[t], M[t]
        for i in range(nb):
            if m[i] and left[i] > 0:
                for j in range(H):
                    da[i, j] = dh[i, j] * (one - h[i, j] * h[i, j])
                left[i] -= 1
                active -= left[i] == 0
            else:
                zero(da[i])
        if active == 0:
            t_lo = t
            break
        matmul(da, W_hh.T, dh_prev, 0.0)
        for i in range(nb):
            if m[i]:          # an update (or past the truncation, where da and so dh_prev is 0)
                for j in range(H):
                    dh[i, j] = dh_prev[i, j]
            # a masked step copies h, so dh passes through unchanged
    zero(dA[:t_lo])

    # weight gradients: each one product over all the steps t >= t_lo
    n_lo = (T - t_lo) * nb
    dA2 = dA[t_lo:].reshape((n_lo, H))
    matmul(hs[t_lo:T].reshape((n_lo, H)).T, dA2, pW_hh, 0.0)     # (zero when n_lo == 0)
    ones = np.empty(n_lo, theta.dtype)
    for r in range(n_lo):
        ones[r] = 1
    matmul(ones.reshape((1, n_lo)), dA2, pb_h.reshape((1, H)), 0.0)      # column sums of dA
    if dense:
        matmul(X[t_lo:].reshape((n_lo, D)).T, dA2, pW_xh, 0.0)
        if flags & DX_OUT:                        # dX[t] = dA[t] @ W_xh.T, written over X
            zero(X[:t_lo])
            matmul(dA2, W_xh.T, X[t_lo:].reshape((n_lo, D)), 0.0)
            for t in range(T):
                for i in range(nb):
                    assign(dx[b0 + i, t], X[t, i])
