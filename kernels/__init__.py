"""fastrnn.kernels: the Numba backend. Same names, arguments and results as ``fastrnn.reference``.

Each function here is plain Python: it checks its arguments (the compiled code runs without bounds
checks), makes arrays C-contiguous in the right dtype, allocates outputs and calls one compiled entry
point from ``step.py``. Compiling happens on the first call for each dtype, and is cached on disk.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba.np.numpy_support import as_dtype

from fastrnn import _checks
from fastrnn.optim import (ADAM_KIND, BETA_1, BETA_2, CLIPNORM, EPSILON, KERAS_EPSILON, LR, MOMENTUM,
                           N_HYPER, RHO, RMSPROP_KIND, SGD_KIND, WEIGHT_DECAY)

from . import step as _step
from . import tasks as _tasks
from .tasks import (ARG_NAMES, ARGS, CHUNK, DX_OUT, HS_IN, HS_OUT, INTS, N_CONSTS, UPDATE_RANGE,
                    UPDATE_ROWS, WANT_GRAD)
from ._jit import CACHE, FASTMATH, serial_blas  # noqa: F401  (re-exported switches)

__all__ = ["rnn_forward", "rnn_backward", "softmax_xent", "forward", "loss_and_grad",
           "clip_by_global_norm", "sgd_update", "rmsprop_update", "adam_update",
           "optimizer_update", "train_step"]     # the reference's API; plus is_compiled()

_NO_IDS = np.zeros((0, 0), np.int32)

# The batch is cut into chunks of sequences that the threads share out: their number depends on the
# batch size only, never on the thread count, and the chunks' partial gradients are summed in chunk
# order, so every result is bit-identical for any number of threads. Small chunks cost more than
# they bring on this project's 2-core machine: the Chollet step (B = 128, 2 threads) took 9%
# longer with 4 chunks of 32 than with 2 of 64, and 21% longer with 8 of 16 (interleaved runs).
CHUNK_ROWS, MIN_CHUNKS, MAX_CHUNKS = 64, 2, 8


def chunks(B):
    """How many chunks a batch of ``B`` sequences is split into: ``B // CHUNK_ROWS``, at least 2
    (so two threads share even a small batch) and at most 8, and never more than ``B``. ``B``
    alone decides, so the partition (and every result) is the same for any thread count; a machine
    with more than 2 cores uses them on batches of 192 and more."""
    return min(B, max(MIN_CHUNKS, min(MAX_CHUNKS, B // CHUNK_ROWS)))


def _c(a, dtype):
    """``a`` as a writable C-contiguous array of ``dtype`` (a copy only when needed)."""
    return np.require(a, dtype=dtype, requirements=["C", "W"])


def _mask(mask, B, T):
    """The (B, T) uint8 step mask the kernels read (1 = state update)."""
    return np.ones((B, T), np.uint8) if mask is None else _c(mask, np.uint8)


def _model_inputs(theta, dims, x):
    """(ids, dense) arrays for the compiled entry points, one of them a placeholder."""
    if dims[0]:
        return _c(x, np.int32), np.zeros((0, 0, 0), theta.dtype)
    return _NO_IDS, _c(x, theta.dtype)


def is_compiled(dtype="float32"):
    """Whether the whole-model kernel (``forward``, ``loss_and_grad``, ``train_step``) for
    ``dtype`` runs without compiling first: compiled in this process, or in Numba's on-disk cache.
    The first use of a dtype on a machine compiles it (about 8 s on a 2-core laptop CPU)."""
    return all(kernel.is_ready(dtype) for kernel in (_step.model, _step.fork, _tasks.task))


_placeholders = {}


def _run_parts(dtype, job, n, ints, theta, **arrays):
    """Run parts ``0 .. n - 1`` of a task ``job`` on the threads (see ``tasks.py``): the
    ``arrays`` it reads and writes by name, every other argument an empty placeholder."""
    empty = _placeholders.get(dtype)
    if empty is None:
        types = ARGS(numba.from_dtype(dtype)).types
        empty = _placeholders[dtype] = {name: np.empty((0,) * t.ndim, as_dtype(t.dtype))
                                        for name, t in zip(ARG_NAMES, types)}
    args = tuple(ints if name == "ints" else arrays.get(name, empty[name]) for name in ARG_NAMES)
    _step.run_parts(dtype, _step.fork.address(dtype), _tasks.task.address(dtype), job, n, theta,
                    args)


def _ints(**values):
    """The task's integer arguments (``tasks.py``) from ``{name: value}`` (the others 0)."""
    return np.array([values.get(name, 0) for name in INTS], np.int64)


def _rnn(x, W_xh, W_hh, b_h, mask, flags, k=0, **arrays):
    """Run the recurrence of ``x`` (dense inputs) as ``CHUNK`` tasks; return the sum of the
    threads' partial gradients ``(dW_xh, dW_hh, db_h)`` flat (zeros without ``WANT_GRAD``)."""
    B, T, D = x.shape
    H, dt = W_hh.shape[0], x.dtype
    nc = chunks(B)
    theta = np.concatenate((W_xh, W_hh, b_h), axis=None).astype(dt, copy=False)
    parts = np.zeros((nc, theta.size), dt)
    _run_parts(dt, CHUNK, nc,
               _ints(B=B, T=T, D=D, H=H, K=k, FLAGS=flags, NC=nc), theta=theta, x=_c(x, dt),
               mask=_mask(mask, B, T), Mb=np.empty(T * B, np.uint8), parts=parts,
               stats=np.zeros(2 * nc), **arrays,
               work=_workspace(dt, _step.workspace_size.py_func((0, D, H, 0), B, T)))
    return parts.sum(axis=0)


def rnn_forward(x, W_xh, W_hh, b_h, mask=None):
    mask = _checks.rnn_args(x, W_xh, W_hh, b_h, mask)
    B, T, _ = x.shape
    hs = np.empty((T + 1, B, W_hh.shape[0]), x.dtype)
    _rnn(x, W_xh, W_hh, b_h, mask, HS_OUT, hs_io=hs)
    return hs


def rnn_backward(dh, x, hs, W_xh, W_hh, mask=None, bptt_truncate=None):
    mask, k = _checks.rnn_backward_args(dh, x, hs, W_xh, W_hh, mask, bptt_truncate)
    D, H, dt = x.shape[2], W_hh.shape[0], x.dtype
    dx = np.empty_like(x)
    g = _rnn(x, W_xh, W_hh, np.zeros(H, dt), mask, WANT_GRAD | HS_IN | DX_OUT,
             k or 0, hs_io=_c(hs, dt), dh_in=_c(dh, dt), dx=dx)
    return dx, g[:D * H].reshape(D, H), g[D * H:D * H + H * H].reshape(H, H), g[D * H + H * H:]


def softmax_xent(logits, y):
    y = _checks.logits_labels(logits, y)
    dlogits = np.empty(logits.shape, logits.dtype)
    loss = _step.xent(logits.dtype, _c(logits, logits.dtype), _c(y, np.int64), dlogits)
    return logits.dtype.type(loss), dlogits


def _model(mode, theta, dims, x, y=None, grad=None, s1=None, s2=None, step=0, kind=0,
           hyper=None, mask_zero=False, k=None, lazy=False, bounds=None):
    """Run the compiled whole-model entry point (arguments already checked); return
    ``(logits, stats)``."""
    dt = theta.dtype
    ids, dense = _model_inputs(theta, dims, x)
    (V, D, H, C), (B, T) = dims, x.shape[:2]
    nt, nc = numba.get_num_threads(), chunks(B)
    ints = _ints(B=B, T=T, V=V, D=D, H=H, C=C, MASK_ZERO=int(bool(mask_zero)), K=k or 0,
                 FLAGS=0 if mode == _step.FORWARD else WANT_GRAD, KIND=int(kind), NC=nc, NT=nt)
    logits, stats = np.empty((B, C), dt), np.zeros(4 + max(2 * nc, nt))
    unused = np.empty(0, dt)
    _step.model(dt, mode, _c(theta, dt), unused if grad is None else grad,
                unused if s1 is None else s1, unused if s2 is None else s2, int(step),
                np.zeros(N_HYPER) if hyper is None else hyper, int(bool(lazy)), ints, ids, dense,
                np.zeros(0, np.int64) if y is None else _c(y, np.int64), np.zeros(V, np.uint8),
                np.empty(V, np.int64), np.empty(min(V, ids.size), np.int64),
                np.empty(T * B, np.uint8), logits, stats,
                _workspace(dt, _step.workspace_size.py_func(dims, B, T)),
                np.empty(0) if bounds is None else bounds, _tasks.task.address(dt),
                _step.fork.address(dt))
    return logits, stats


_local = threading.local()
# Scratch up to this size is kept per thread and reused (a training step at Chollet's size uses
# 16 MB); a larger one, such as predicting 4,000 reviews of 5,000 tokens at once (5 GB), is
# allocated for the call and returned to the system after it.
KEEP_BYTES = 64 << 20


def _workspace(dtype, n):
    """A scratch buffer of at least ``n`` elements: kept per thread and dtype and reused when it
    is at most ``KEEP_BYTES``, so that each step does not fault in tens of MB of fresh pages."""
    if n * np.dtype(dtype).itemsize > KEEP_BYTES:
        return np.empty(n, dtype)
    spaces = _local.__dict__.setdefault("spaces", {})
    work = spaces.get(dtype)
    if work is None or work.size < n:
        work = spaces[dtype] = np.empty(n, dtype)
    return work


def forward(theta, dims, x, mask_zero=False):
    x, _ = _checks.model_batch(theta, dims, x)
    return _model(_step.FORWARD, theta, dims, x, mask_zero=mask_zero)[0]


def loss_and_grad(theta, dims, x, y, grad, mask_zero=False, bptt_truncate=None):
    x, y = _checks.model_batch(theta, dims, x, y)
    _checks.buffer("grad", grad, theta)
    k = _checks.truncate(bptt_truncate)
    g = _c(grad, theta.dtype)
    logits, stats = _model(_step.LOSS_AND_GRAD, theta, dims, x, y, g, mask_zero=mask_zero, k=k)
    if g is not grad:
        grad[...] = g
    return theta.dtype.type(stats[0]), logits


def clip_by_global_norm(g, clipnorm):
    _checks.floats("g", g, 1)
    _checks.inplace("g", g)
    return _step.clip_by_global_norm(g.dtype, g, float(clipnorm))


def optimizer_update(kind, hyper, step, p, g, s1, s2, rows=None):
    hyper = _checks.optimizer(kind, hyper)
    for name, a in (("p", p), ("g", g), ("s1", s1), ("s2", s2)):
        _checks.floats(name, a, p.ndim, p.dtype)
        _checks.shape(name, a, p.shape)
        _checks.inplace(name, a)
    if rows is not None:
        if p.ndim != 2:
            raise ValueError(f"with rows, p must be a 2-D (rows, width) view, got shape {p.shape}")
        rows = np.asarray(rows)
        if rows.dtype.kind not in "iu" or rows.ndim != 1:
            raise TypeError("rows must be a 1-D integer array of row indices")
        if rows.size and (rows.min() < 0 or rows.max() >= p.shape[0]):
            raise ValueError(f"rows must lie in [0, {p.shape[0]})")
        if np.unique(rows).size != rows.size:
            raise ValueError("rows must not repeat")
    consts = np.empty(N_CONSTS, p.dtype)
    _step.step_constants.py_func(kind, hyper, int(step), 1.0, consts)   # the same maths in Python
    state = dict(consts=consts, theta=p.reshape(-1), grad=g.reshape(-1), s1=s1.reshape(-1),
                 s2=s2.reshape(-1))
    nt = numba.get_num_threads()
    if rows is None:
        n = nt if p.size >= 1 << 16 else 1
        _run_parts(p.dtype, UPDATE_RANGE, n, _ints(KIND=kind, LO=0, HI=p.size), **state)
    else:
        _run_parts(p.dtype, UPDATE_ROWS, max(1, min(rows.size, nt)),
                   _ints(KIND=kind, D=p.shape[1], N_ROWS=rows.size), rows=_c(rows, np.int64),
                   **state)


def _hyper(values):
    """The hyperparameter vector (``fastrnn.optim`` layout) from ``{slot: value}``."""
    h = np.zeros(N_HYPER)
    for index, value in values.items():
        h[index] = value
    return h


def sgd_update(p, g, buf, learning_rate, momentum=0.0, rows=None):
    optimizer_update(SGD_KIND, _hyper({LR: learning_rate, MOMENTUM: momentum}), 1, p, g, buf,
                     np.empty_like(buf), rows)


def rmsprop_update(p, g, s, learning_rate, rho=0.9, epsilon=1e-7, rows=None):
    optimizer_update(RMSPROP_KIND, _hyper({LR: learning_rate, RHO: rho, EPSILON: epsilon}), 1, p, g, s,
                     np.empty_like(s), rows)


def adam_update(p, g, m, v, step, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                weight_decay=0.0, keras_epsilon=False, rows=None):
    optimizer_update(ADAM_KIND, _hyper({LR: learning_rate, BETA_1: beta_1, BETA_2: beta_2,
                                        EPSILON: epsilon, WEIGHT_DECAY: weight_decay,
                                        KERAS_EPSILON: float(keras_epsilon)}), step, p, g, m, v, rows)


def update_step(kind, hyper, step, theta, grad, s1, s2, bounds=None):
    # The overflow check as in ``train_step``: ``bounds`` carries upper bounds on |theta|, |s1|,
    # |s2| from step to step (NaN: measure them), so an update is checked value by value (on
    # copies) only when the bounds cannot rule an overflow out.
    hyper = _checks.optimizer(kind, hyper)
    bounds = _checks.update_bounds(bounds)
    norm = clip_by_global_norm(grad, hyper[CLIPNORM])
    if not np.isfinite(norm):
        return norm, False
    consts = np.empty(N_CONSTS)
    _step.step_constants.py_func(kind, hyper, int(step), 1.0, consts)
    if bounds is not None:
        if not np.isfinite(bounds).all():
            for i, a in enumerate((theta, s1, s2)):
                bounds[i] = float(np.abs(a).max()) if a.size else 0.0
        after = np.empty(3)
        g_max = min(norm, hyper[CLIPNORM])
        _step.next_bounds.py_func(kind, consts, g_max, bounds, after)
        limit = np.finfo(theta.dtype).max / 4
        if not (np.isfinite(consts).all()
                and _step.update_is_safe.py_func(kind, consts, g_max, after, limit)):
            trial = [a.copy() for a in (theta, s1, s2)]
            _update_flat(kind, consts, trial[0], grad, trial[1], trial[2])
            if not all(np.isfinite(a).all() for a in trial):
                return norm, False
            for a, new in zip((theta, s1, s2), trial):
                a[...] = new
            bounds[:] = np.nan                     # past the bounds' reach: measure next time
            return norm, True
        bounds[:] = after
    _update_flat(kind, consts, theta, grad, s1, s2)
    return norm, True


def _update_flat(kind, consts, p, g, s1, s2):
    """The optimizer ``kind`` on the flat buffers with constants ``consts`` (float64, as
    ``step.step_constants`` computes them; passed in the parameters' dtype)."""
    n = numba.get_num_threads() if p.size >= 1 << 16 else 1
    _layers.update_flat(p.dtype, kind, consts.astype(p.dtype), p, g, s1, s2, n)


def train_step(theta, grad, s1, s2, step, dims, x, y, kind, hyper, mask_zero=False,
               bptt_truncate=None, lazy=False, bounds=None):
    x, y, hyper, k = _checks.train_step_args(theta, grad, s1, s2, dims, x, y, kind, hyper,
                                             bptt_truncate)
    bounds = _checks.update_bounds(bounds)
    stats = _model(_step.TRAIN_STEP, theta, dims, x, y, grad, s1, s2, step, kind, hyper,
                   mask_zero, k, lazy, bounds)[1]
    return float(stats[0]), int(stats[1]), float(stats[2]), bool(stats[3])


# ---------------------------------------------------------------------------------------------
# The layers' ops (fastrnn.reference.layers): compiled where the work is a loop over time or a
# scatter; elementwise ops and BLAS-size products are the reference's own NumPy code, which is
# already that fast.
# ---------------------------------------------------------------------------------------------

from fastrnn.reference.layers import (activation_backward, activation_forward,  # noqa: E402,F401
                                      dense_backward, dense_forward, dropout_backward,
                                      dropout_forward, embedding_forward, merge_backward,
                                      merge_forward, rnn_outputs, rnn_outputs_backward)

from . import layers as _layers  # noqa: E402

_ACTIVATIONS = {"tanh": 0, "relu": _layers.RELU}


def _flat_mask(mask, B, T):
    return np.zeros(0, np.uint8) if mask is None else _c(mask, np.uint8).reshape(B * T)


def _flat(a, dt):
    """An optional array (the recurrent dropout multiplier, the initial state) flat, or empty."""
    return np.zeros(0, dt) if a is None else _c(a, dt).reshape(-1)


def _rnn_dims(B, T, D, H, activation, go_backwards, bptt_truncate=None, last_only=False):
    """The ``dims`` vector of ``layers.rnn_forward`` / ``rnn_backward`` (slots ``layers.B_``,
    ...)."""
    dims = np.zeros(_layers.N_DIMS, np.int64)
    dims[[_layers.B_, _layers.T_, _layers.D_, _layers.H_]] = B, T, D, H
    dims[_layers.ACT], dims[_layers.BACKWARDS] = _ACTIVATIONS[activation], bool(go_backwards)
    dims[_layers.NC], dims[_layers.K] = chunks(B), _checks.truncate(bptt_truncate) or 0
    dims[_layers.LAST_ONLY] = bool(last_only)
    return dims


_NO_INV = np.zeros(0, np.int64)
_NO_X = {np.dtype(d): np.zeros(0, d) for d in (np.float32, np.float64)}


def _recurrence(x, kernel, recurrent_kernel, bias, mask, recurrent_dropout, initial_state, dims,
                inv=_NO_INV):
    """``hs`` for dense ``x (B, T, D)``, or token projections ``x (n, H)`` (see
    ``layers.rnn_forward``)."""
    B, T, H = int(dims[_layers.B_]), int(dims[_layers.T_]), int(dims[_layers.H_])
    dt = recurrent_kernel.dtype
    hs = np.empty((B, T, H), dt)
    _layers.rnn_forward(dt, _layers.forward_chunk.address(dt), _c(x, dt).reshape(-1), inv,
                        _c(kernel, dt), _c(recurrent_kernel, dt), _c(bias, dt),
                        _flat_mask(mask, B, T), _flat(recurrent_dropout, dt),
                        _flat(initial_state, dt), dims, hs.reshape(-1),
                        _workspace(dt, B * ((0 if inv.size else T * H) + 4 * H)))
    return hs


def _recurrence_backward(dhs, x, hs, kernel, recurrent_kernel, mask, recurrent_dropout,
                         initial_state, dims, inv=_NO_INV, n=0):
    """``(dx, dkernel, drecurrent_kernel, dbias)``; for token inputs (``inv``, ``n`` distinct
    tokens) ``dx`` is the ``(n, H)`` sums of dA per token and ``dkernel`` None (see
    ``layers.rnn_backward``)."""
    B, T, D, H = (int(dims[i]) for i in (_layers.B_, _layers.T_, _layers.D_, _layers.H_))
    dt, nc = hs.dtype, int(dims[_layers.NC])
    tokens = inv.size > 0
    dx = np.empty((nc, n, H) if tokens else (B, T, D), dt)
    Dk = 0 if tokens else D * H
    parts = np.empty((nc, Dk + H * H + H), dt)
    _layers.rnn_backward(dt, _layers.backward_chunk.address(dt), _c(dhs, dt).reshape(-1),
                         _c(x, dt).reshape(-1),
                         _c(hs, dt).reshape(-1), inv, _c(kernel, dt), _c(recurrent_kernel, dt),
                         _flat_mask(mask, B, T), _flat(recurrent_dropout, dt),
                         _flat(initial_state, dt), dims, dx.reshape(-1), parts,
                         _workspace(dt, B * (T * H + 3 * H)))
    g = parts.sum(axis=0)
    dkernel = None if tokens else g[:Dk].reshape(D, H)
    drecurrent, dbias = g[Dk:Dk + H * H].reshape(H, H), g[Dk + H * H:]
    return (dx.sum(axis=0) if tokens else dx), dkernel, drecurrent, dbias


def simple_rnn_forward(x, kernel, recurrent_kernel, bias, mask=None, activation="tanh",
                       go_backwards=False, recurrent_dropout=None, initial_state=None):
    mask = _checks.layer_rnn_args(x, kernel, recurrent_kernel, bias, mask, activation,
                                  recurrent_dropout, initial_state)
    return _recurrence(x, kernel, recurrent_kernel, bias, mask, recurrent_dropout, initial_state,
                       _rnn_dims(*x.shape, recurrent_kernel.shape[0], activation, go_backwards))


def simple_rnn_backward(dhs, x, hs, kernel, recurrent_kernel, mask=None, activation="tanh",
                        go_backwards=False, recurrent_dropout=None, bptt_truncate=None,
                        initial_state=None):
    mask = _checks.layer_rnn_args(x, kernel, recurrent_kernel, None, mask, activation,
                                  recurrent_dropout, initial_state)
    B, T, D = x.shape
    H = recurrent_kernel.shape[0]
    _checks.layer_rnn_states(hs, dhs, B, T, H)
    dims = _rnn_dims(B, T, D, H, activation, go_backwards, bptt_truncate, dhs.ndim == 2)
    return _recurrence_backward(dhs, x, hs, kernel, recurrent_kernel, mask, recurrent_dropout,
                                initial_state, dims)


def embedding_backward(dx, ids, V):
    D, dt = dx.shape[-1], dx.dtype
    ids = _c(ids, np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise ValueError(f"ids must lie in [0, {V})")
    dE = np.zeros((V, D), dt)
    _layers.embedding_backward(dt, _c(dx, dt).reshape(-1, D), ids, dE,
                               max(1, min(V, numba.get_num_threads())))
    return dE


def _distinct(ids, V, dt):
    """``(rows, inv)``: the distinct ids of a batch in order of first appearance, and each
    token's number among them (flat, in ``ids``' order)."""
    flat = _c(ids, np.int64).reshape(-1)
    rows, inv = np.empty(min(V, flat.size), np.int64), np.empty(flat.size, np.int64)
    n = _layers.distinct(dt, flat, np.zeros(V, np.uint8), np.empty(V, np.int64), rows, inv,
                         np.zeros(0, dt))
    return rows[:n], inv


def embedding_rnn_forward(E, ids, kernel, recurrent_kernel, bias, mask=None, activation="tanh",
                          go_backwards=False, recurrent_dropout=None, initial_state=None):
    ids = _checks.token_ids(ids, E.shape[0], "ids")
    B, T = ids.shape
    like = np.broadcast_to(np.empty((), E.dtype), (B, T, E.shape[1]))    # the inputs' shape
    mask = _checks.layer_rnn_args(like, kernel, recurrent_kernel, bias, mask, activation,
                                  recurrent_dropout, initial_state)
    rows, inv = _distinct(ids, E.shape[0], E.dtype)
    with serial_blas():
        EW = E[rows] @ kernel             # each distinct token's projection, once
    dims = _rnn_dims(B, T, E.shape[1], recurrent_kernel.shape[0], activation, go_backwards)
    return _recurrence(EW, kernel, recurrent_kernel, bias, mask, recurrent_dropout, initial_state,
                       dims, inv)


def embedding_rnn_backward(dhs, ids, E, hs, kernel, recurrent_kernel, mask=None,
                           activation="tanh", go_backwards=False, recurrent_dropout=None,
                           bptt_truncate=None, initial_state=None):
    ids = _checks.token_ids(ids, E.shape[0], "ids")
    B, T = ids.shape
    V, D = E.shape
    H = recurrent_kernel.shape[0]
    like = np.broadcast_to(np.empty((), E.dtype), (B, T, D))             # the inputs' shape
    mask = _checks.layer_rnn_args(like, kernel, recurrent_kernel, None, mask, activation,
                                  recurrent_dropout, initial_state)
    _checks.layer_rnn_states(hs, dhs, B, T, H)
    rows, inv = _distinct(ids, V, E.dtype)
    dims = _rnn_dims(B, T, D, H, activation, go_backwards, bptt_truncate, dhs.ndim == 2)
    dEW, _, drecurrent, dbias = _recurrence_backward(dhs, _NO_X.get(E.dtype), hs, kernel,
                                                     recurrent_kernel, mask, recurrent_dropout,
                                                     initial_state, dims, inv, rows.size)
    order = np.argsort(rows)              # the rows in ascending order, as np.unique gives them
    rows, dEW = rows[order], dEW[order]
    with serial_blas():
        dE_rows = dEW @ kernel.T          # the distinct rows only: each once
        dkernel = E[rows].T @ dEW
    return rows, dE_rows, dkernel, drecurrent, dbias
