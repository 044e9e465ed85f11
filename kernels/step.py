"""The compiled entry points: each public function of ``fastrnn.kernels`` runs one of these.

``model`` is the whole classifier on one batch, and ``TRAIN_STEP`` its fused step: forward, loss,
backward, clipping and the optimizer update in a single compiled call. The work itself is done by
``tasks.task``, in parts that ``fork`` spreads over the threads: the batch split into chunks of
sequences, the distinct token ids split by rows into as many parts as there are chunks. How many
chunks depends on the batch size only (``fastrnn.kernels.chunks``), never on the thread count, and
each part writes its own partial gradients, summed once afterwards in part order (never ``+=``
from several threads): the results are bit-identical for any number of threads.

The Python wrappers pass in the addresses of ``task`` and ``fork`` (``Kernel.address``) and the
thread count (``ints[NT]``: calling numba.get_num_threads() in compiled code makes it uncacheable).
"""

import math

import numpy as np
from numba import prange

from fastrnn.optim import (ADAM_KIND, BETA_1, BETA_2, CLIPNORM, EPSILON, KERAS_EPSILON, LR,
                           MOMENTUM, RHO, RMSPROP_KIND, WEIGHT_DECAY)

from ._jit import (Arr, address_of, f64, function_at, helper, i32, i64, jit, keep_alive, u8,
                   void)
from ._math import assign, typed, zero
from .tasks import (ARGS, B_, C_, CHECK_ONLY, CHUNK, D_, FLAGS, H_, HI, KIND, LO, N_CONSTS, N_ROWS,
                    NC, NT, PROJECT, T_, TEMPLATE, TOKEN_BACKWARD, UPDATE_ALL_ROWS, UPDATE_RANGE,
                    UPDATE_ROWS, V_, softmax_xent)

_b = i64  # flags travel as int64: one signature, no bool/int ambiguity
task_at = function_at(TEMPLATE)


def FORK(F):
    """``fork``'s signature for float type ``F``."""
    return void(i64, i64, i64, Arr(F, 1), i64)


@jit(FORK, parallel=True)
def fork(address, job, n, theta, args_address):
    """Run parts ``0 .. n - 1`` of ``job`` (one call of the task at ``address`` each) on the
    threads; the task's other arguments are at ``args_address`` (see ``tasks.ARGS``)."""
    run = task_at(address, theta)
    if n == 1:                                    # no thread launch for one part
        run(job, 0, 1, theta, args_address)
        return
    for c in prange(n):
        run(job, np.int64(c), n, theta, args_address)


fork_at = function_at(FORK)


@jit(lambda F: void(i64, i64, i64, i64, Arr(F, 1), ARGS(F)))
def run_parts(fork_address, address, job, n, theta, args):
    """``fork`` for the Python wrappers whose jobs need no compiled code around them."""
    fork_at(fork_address, theta)(address, job, n, theta, address_of(args))


@helper
def sum_parts(parts, n, out):
    """``out = parts[:, :n].sum(axis=0)``: the parts' partial gradients, added in part order."""
    for i in range(n):
        out[i] = parts[0, i]
    for c in range(1, parts.shape[0]):
        for i in range(n):
            out[i] += parts[c, i]


@helper
def step_constants(kind, hyper, step, scale, consts):
    """``consts = (lr, a, 1 - a, b, 1 - b, eps, lr / bc1, 1 / bc2, decay, scale)`` in the
    parameters' dtype, where ``a, b`` are Adam's betas, RMSprop's ``rho`` (as ``b``) or SGD's
    momentum (as ``a``): computed once in float64, so that the update loops read no memory but
    the buffers and vectorise."""
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
    values = (lr, a, 1.0 - a, b, 1.0 - b, eps, lr_bc1, inv_bc2, decay, scale)
    for i in range(N_CONSTS):
        consts[i] = values[i]


@helper
def clip_scale(norm, clipnorm):
    """TensorFlow's ``clip_by_global_norm`` factor ``clipnorm / max(norm, clipnorm)``."""
    return clipnorm / norm if norm > clipnorm else 1.0


@helper
def sum_squares(g, lo, hi):
    """``sum(g[lo:hi] ** 2)`` accumulated in float64."""
    g = g[lo:hi]
    total = 0.0
    for i in range(g.size):
        total += float(g[i]) * float(g[i])
    return total


@helper
def workspace_size(dims, B, T):
    """Scratch elements a batch of ``B`` sequences of ``T`` steps uses (``dims`` as in
    ``fastrnn.layout``; ``V = 0``: dense inputs); the Python wrappers call ``.py_func``."""
    V, D, H, _ = dims
    return T * B * H + (T + 1) * B * H + (0 if V > 0 else T * B * D)


@helper
def scratch(work, n):
    """The caller's reusable workspace ``work`` when it holds ``n`` elements, else a fresh one
    (fresh buffers are fresh pages from the OS, and faulting them in costs as much as the
    forward pass)."""
    return work if work.size >= n else np.empty(n, work.dtype)


# ------------------------------------------------------------------------------------------------
# entry points (signature templates: F is the float type)
# ------------------------------------------------------------------------------------------------

FORWARD, LOSS_AND_GRAD, TRAIN_STEP = 0, 1, 2


@helper
def all_finite(a):
    """No NaN or inf in ``a`` (tested one by one: the fastmath flags may fold a test of a sum)."""
    for i in range(a.size):
        if not np.isfinite(a[i]):
            return False
    return True


@helper
def abs_max(a):
    """``max(|a|)`` in float64 (NaN if ``a`` holds one)."""
    top = 0.0
    for i in range(a.size):
        v = abs(float(a[i]))
        if not v <= top:
            top = v
    return top


@helper
def next_bounds(kind, k, g_max, bounds, out):
    """Upper bounds ``out = (|p|, |s1|, |s2|)`` on every value after the update with constants
    ``k`` (``consts``), from ``bounds`` on the values before it and ``g_max >= |scale * g|``:
    Adam's ``m`` and SGD's buffer are convex or geometric combinations of old values and the
    gradient, and one step moves a weight by at most ``lr_bc1 m / eps`` (Adam), ``lr g / sqrt(eps)``
    (RMSprop) or ``lr buf`` (SGD). Rows an update skips keep their values, within ``bounds``."""
    P, M, S = bounds[0], bounds[1], bounds[2]
    lr, a, one_a, b, one_b = float(k[0]), float(k[1]), float(k[2]), float(k[3]), float(k[4])
    eps, lr_bc1, decay = float(k[5]), float(k[6]), float(k[8])
    if kind == ADAM_KIND:
        m = max(M, a * M + one_a * g_max)
        out[0], out[1] = max(P, P * abs(decay) + lr_bc1 * m / eps), m
        out[2] = max(S, b * S + one_b * g_max * g_max)
    elif kind == RMSPROP_KIND:
        out[0], out[1] = P + lr * g_max / np.sqrt(eps), max(M, b * M + one_b * g_max * g_max)
        out[2] = S
    else:
        buf = a * M + g_max
        out[0], out[1], out[2] = P + lr * buf, max(M, buf), S


@helper
def update_is_safe(kind, k, g_max, after, limit):
    """Whether the update cannot overflow: every bound ``after`` (``next_bounds``) and every
    intermediate it implies (``g^2``, ``v / bc2``, ``lr m``, ``lr g``) stays below ``limit``.
    Plain scalar maths, so that ``fastrnn.kernels.update_step`` runs it as Python too."""
    if not (np.isfinite(after[0]) and np.isfinite(after[1]) and np.isfinite(after[2])
            and g_max * g_max <= limit):
        return False
    big = max(after[0], after[1], after[2])
    if kind == ADAM_KIND:
        big = max(big, after[2] * float(k[7]), float(k[6]) * after[1])
    elif kind == RMSPROP_KIND:
        big = max(big, after[1] + float(k[5]), float(k[0]) * g_max)
    return big <= limit


@helper
def run_updates(fork, address, theta, args, lazy, n_range, n_rows, stats):
    """The optimizer update's parts: the dense tail (``UPDATE_RANGE``), then the embedding rows.
    Returns how many new values the parts found not finite (with ``CHECK_ONLY``; else 0)."""
    fork(address, np.int64(UPDATE_RANGE), n_range, theta, args)
    bad = 0.0
    for c in range(n_range):
        bad += stats[4 + c]
    if n_rows > 0:
        fork(address, np.int64(UPDATE_ROWS if lazy else UPDATE_ALL_ROWS), n_rows, theta, args)
        for c in range(n_rows):
            bad += stats[4 + c]
    return bad


@jit(lambda F: void(i64, Arr(F, 1), Arr(F, 1), Arr(F, 1), Arr(F, 1), i64, Arr(f64, 1), _b,
                    Arr(i64, 1), Arr(i32, 2), Arr(F, 3), Arr(i64, 1), Arr(u8, 1), Arr(i64, 1),
                    Arr(i64, 1), Arr(u8, 1), Arr(F, 2), Arr(f64, 1), Arr(F, 1), Arr(f64, 1), i64,
                    i64))
def model(mode, theta, grad, s1, s2, step, hyper, lazy, ints, ids, x, y, touched, slot, rows, Mb,
          logits, stats, work, bounds, address, fork_address):
    """The whole classifier on one batch, by ``mode``:

    - FORWARD: the logits;
    - LOSS_AND_GRAD: the loss in ``stats[0]`` and the full gradient in ``grad``;
    - TRAIN_STEP: the fused step; ``stats[:4] = (loss, n_correct, grad_norm, applied)``. The
      embedding gradient is written for the rows in the batch only, and a non-finite loss or norm
      updates nothing (``applied`` 0). With ``bounds (3,)`` (else empty) an update that would
      make a weight or optimizer state non-finite also updates nothing: when ``update_is_safe``
      cannot rule it out, every new value is computed and checked before any is written.
      ``bounds`` holds upper bounds on ``|theta|, |s1|, |s2|`` from step to step (NaN: unknown,
      measured then), updated by ``next_bounds``: no pass over the data.

    The caller passes the task's integers ``ints`` (all but ``N_ROWS``), ``touched`` zeroed and
    the scratch ``slot, rows (V,)``, ``Mb (T B,)``, ``stats (4 + max(2 NC, NT),)`` (after the
    results, the chunks' loss sums and counts of correct rows, then the update parts' checks) and
    ``work`` (used when it holds ``workspace_size`` elements, else allocated).
    """
    B, T, V, D, H, C = ints[B_], ints[T_], ints[V_], ints[D_], ints[H_], ints[C_]
    nc, nt = ints[NC], ints[NT]
    # the distinct ids of the batch, numbered: rows[slot[v]] == v
    n = 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            v = ids[b, t]
            if touched[v] == 0:
                touched[v] = 1
                rows[n] = v
                slot[v] = n
                n += 1
    ints[N_ROWS] = n
    no = max(1, min(n, nc))     # parts of the per-id jobs: as many as chunks, not threads
    # the floating-point scratch, carved from one allocation (each distinct np.empty or
    # np.zeros call is more code to compile)
    npart, nparts = theta.size - V * D, max(nc, no)
    o1 = N_CONSTS + nparts * npart
    o2 = o1 + 2 * n * (H + D)
    fbuf = np.empty(o2, theta.dtype)
    consts, parts = fbuf[:N_CONSTS], fbuf[N_CONSTS:o1].reshape((nparts, npart))
    EW, Ec = fbuf[o1:o1 + n * H].reshape((n, H)), fbuf[o1 + n * H:o1 + n * (H + D)].reshape((n, D))
    dEW = fbuf[o1 + n * (H + D):o2 - n * D].reshape((n, H))
    dEc = fbuf[o2 - n * D:o2].reshape((n, D))
    zero(parts)
    zero(dEW)
    e3 = fbuf[:0].reshape((0, 0, 0))
    arrays = (ints, consts, ids, x, Mb[:0].reshape((0, 0)), y, EW, slot, rows,
              scratch(work, workspace_size((V, D, H, C), B, T)), Mb,
              logits, parts, stats[4:], e3, dEW[:0], e3, Ec, dEW, dEc, grad, s1, s2, touched)
    args = address_of(arrays)
    fork = fork_at(fork_address, theta)
    if V > 0:
        fork(address, np.int64(PROJECT), no, theta, args)     # EW = E[rows] @ W_xh
    fork(address, np.int64(CHUNK), nc, theta, args)
    if mode == FORWARD:
        return
    tail = V * D
    sum_parts(parts, npart, grad[tail:])
    if V > 0:
        fork(address, np.int64(TOKEN_BACKWARD), no, theta, args)
        sum_parts(parts, D * H, grad[tail:])      # dW_xh = sum over the ids of E[v].T @ dEW[v]
        if mode == LOSS_AND_GRAD:
            zero(grad[:tail])
        for r in range(n):                        # dE[v] = (sum of dA over v's tokens) @ W_xh.T
            assign(grad[rows[r] * D:rows[r] * D + D], dEc[r])
    loss = correct = 0.0
    for c in range(nc):
        loss += stats[4 + 2 * c]
        correct += stats[5 + 2 * c]
    stats[0], stats[1], stats[3] = loss / B, correct, 0
    if mode == LOSS_AND_GRAD:
        return
    # global norm over the gradient (embedding rows outside the batch have zero gradient)
    squares = sum_squares(grad, tail, grad.size)
    for r in range(n):
        squares += sum_squares(grad, rows[r] * D, rows[r] * D + D)
    norm = np.sqrt(squares)
    stats[2] = norm
    if not (np.isfinite(norm) and np.isfinite(loss)):     # update nothing; the caller decides
        return
    scale = clip_scale(norm, hyper[CLIPNORM])
    step_constants(ints[KIND], hyper, step, scale, consts)
    ints[LO], ints[HI] = tail, grad.size
    n_range = nt if grad.size - tail >= 1 << 16 else 1
    n_rows = max(1, min(n if lazy else V, nt)) if V > 0 else 0
    if bounds.size == 3:                          # refuse an update that overflows
        if not all_finite(bounds):                # unknown: measure them once
            bounds[0], bounds[1], bounds[2] = abs_max(theta), abs_max(s1), abs_max(s2)
        if not all_finite(consts):                # e.g. a learning rate too large for float32
            return
        after = np.empty(3)
        next_bounds(ints[KIND], consts, scale * norm, bounds, after)
        if not update_is_safe(ints[KIND], consts, scale * norm, after,
                              np.finfo(theta.dtype).max / 4):
            ints[FLAGS] |= CHECK_ONLY
            bad = run_updates(fork, address, theta, args, lazy, n_range, n_rows, stats)
            ints[FLAGS] &= ~CHECK_ONLY
            if bad > 0:
                return
            for j in range(3):                    # these bounds may be past the limit: measure
                after[j] = np.nan
        assign(bounds, after)
    run_updates(fork, address, theta, args, lazy, n_range, n_rows, stats)
    stats[3] = 1
    keep_alive(arrays)                            # (each return above comes after its last fork)


@jit(lambda F: f64(Arr(F, 2), Arr(i64, 1), Arr(F, 2)))
def xent(logits, y, dlogits):
    return softmax_xent(logits, y, logits.shape[0], dlogits)[0] / logits.shape[0]


@jit(lambda F: f64(Arr(F, 1), f64))
def clip_by_global_norm(g, clipnorm):
    norm = np.sqrt(sum_squares(g, 0, g.size))
    if norm > clipnorm:
        scale = typed(g, clip_scale(norm, clipnorm))
        for i in range(g.size):
            g[i] *= scale
    return norm
