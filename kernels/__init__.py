"""fastrnn.kernels: the Numba backend. Same names, arguments and results as ``fastrnn.reference``.

Each function here is plain Python: it checks its arguments (the compiled code runs without bounds
checks), makes arrays C-contiguous in the right dtype, allocates outputs and calls one compiled entry
point from ``step.py``. Compiling happens on the first call for each dtype, and is cached on disk.
"""

from __future__ import annotations

import numba
import numpy as np

from fastrnn import _checks
from fastrnn.optim import (ADAM_KIND, BETA_1, BETA_2, EPSILON, KERAS_EPSILON, LR, MOMENTUM,
                           N_HYPER, RHO, RMSPROP_KIND, SGD_KIND, WEIGHT_DECAY)

from . import step as _step
from ._jit import CACHE, FASTMATH  # noqa: F401  (re-exported switches)

__all__ = ["rnn_forward", "rnn_backward", "softmax_xent", "forward", "loss_and_grad",
           "clip_by_global_norm", "sgd_update", "rmsprop_update", "adam_update",
           "optimizer_update", "train_step"]

_NO_IDS = np.zeros((0, 0), np.int32)


def _c(a, dtype):
    """``a`` as a writable C-contiguous array of ``dtype`` (a copy only when needed)."""
    return np.require(a, dtype=dtype, requirements=["C", "W"])


def _mask(mask, B, T):
    """The (B, T) uint8 step mask the kernels read (1 = state update)."""
    return np.ones((B, T), np.uint8) if mask is None else _c(mask, np.uint8)


def _truncate(bptt_truncate):
    k = _checks.truncate(bptt_truncate)
    return 0 if k is None else k


def _model_inputs(theta, dims, x):
    """(ids, dense) arrays for the compiled entry points, one of them a placeholder."""
    if dims[0]:
        return _c(x, np.int32), np.zeros((0, 0, 0), theta.dtype)
    return _NO_IDS, _c(x, theta.dtype)


def rnn_forward(x, W_xh, W_hh, b_h, mask=None):
    mask = _checks.rnn_args(x, W_xh, W_hh, b_h, mask)
    B, T, _ = x.shape
    hs = np.empty((T + 1, B, W_hh.shape[0]), x.dtype)
    _step.rnn_forward(x.dtype, _c(x, x.dtype), _c(W_xh, x.dtype), _c(W_hh, x.dtype),
                               _c(b_h, x.dtype), _mask(mask, B, T), hs, numba.get_num_threads())
    return hs


def rnn_backward(dh, x, hs, W_xh, W_hh, mask=None, bptt_truncate=None):
    mask = _checks.rnn_args(x, W_xh, W_hh, None, mask)
    B, T, D = x.shape
    H = W_hh.shape[0]
    dt = x.dtype
    _checks.floats("dh", dh, 2, dt)
    _checks.shape("dh", dh, (B, H))
    _checks.floats("hs", hs, 3, dt)
    _checks.shape("hs", hs, (T + 1, B, H))
    out = (np.empty_like(x), np.empty((D, H), dt), np.empty((H, H), dt), np.empty(H, dt))
    _step.rnn_backward(dt, _c(dh, dt), _c(x, dt), _c(hs, dt), _c(W_xh, dt), _c(W_hh, dt),
                           _mask(mask, B, T), _truncate(bptt_truncate), *out,
                           numba.get_num_threads())
    return out


def softmax_xent(logits, y):
    _checks.floats("logits", logits, 2)
    y = _checks.labels(y, logits.shape[0], logits.shape[1])
    dlogits = np.empty(logits.shape, logits.dtype)
    loss = _step.xent(logits.dtype, _c(logits, logits.dtype), _c(y, np.int64), dlogits)
    return logits.dtype.type(loss), dlogits


def forward(theta, dims, x, mask_zero=False):
    x, _ = _checks.model_batch(theta, dims, x)
    ids, dense = _model_inputs(theta, dims, x)
    logits = np.empty((x.shape[0], dims[3]), theta.dtype)
    _step.forward(theta.dtype, _c(theta, theta.dtype), *dims, ids, dense, int(bool(mask_zero)),
                               logits, numba.get_num_threads())
    return logits


def loss_and_grad(theta, dims, x, y, grad, mask_zero=False, bptt_truncate=None):
    x, y = _checks.model_batch(theta, dims, x, y)
    _checks.buffer("grad", grad, theta)
    ids, dense = _model_inputs(theta, dims, x)
    logits = np.empty((x.shape[0], dims[3]), theta.dtype)
    g = _c(grad, theta.dtype)
    loss = _step.loss_and_grad(theta.dtype, _c(theta, theta.dtype), *dims, ids, dense,
                                            _c(y, np.int64), int(bool(mask_zero)),
                                            _truncate(bptt_truncate), g, logits,
                                            numba.get_num_threads())
    if g is not grad:
        grad[...] = g
    return theta.dtype.type(loss), logits


def clip_by_global_norm(g, clipnorm):
    _checks.floats("g", g, 1)
    _inplace("g", g)
    return _step.clip_by_global_norm(g.dtype, g, float(clipnorm))


def _inplace(name, a):
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"{name} is updated in place and must be a writable C-contiguous array")


def optimizer_update(kind, hyper, step, p, g, s1, s2, rows=None):
    hyper = _c(hyper, np.float64)
    if hyper.shape != (N_HYPER,):
        raise ValueError(f"hyper must have shape ({N_HYPER},), got {hyper.shape}")
    for name, a in (("p", p), ("g", g), ("s1", s1), ("s2", s2)):
        _checks.floats(name, a, p.ndim, p.dtype)
        _checks.shape(name, a, p.shape)
        _inplace(name, a)
    if rows is None:
        _step.optimizer_update(p.dtype, kind, hyper, int(step), p.ravel(), g.ravel(), s1.ravel(),
                                        s2.ravel(), np.zeros(0, np.int64), 0)
        return
    if p.ndim != 2:
        raise ValueError(f"with rows, p must be a 2-D (rows, width) view, got shape {p.shape}")
    rows = np.asarray(rows)
    if rows.dtype.kind not in "iu" or rows.ndim != 1:
        raise TypeError("rows must be a 1-D integer array of row indices")
    if rows.size and (rows.min() < 0 or rows.max() >= p.shape[0]):
        raise ValueError(f"rows must lie in [0, {p.shape[0]})")
    if np.unique(rows).size != rows.size:
        raise ValueError("rows must not repeat")
    _step.optimizer_update(p.dtype, kind, hyper, int(step), p.ravel(), g.ravel(), s1.ravel(),
                                    s2.ravel(), _c(rows, np.int64), p.shape[1])


def _hyper(**values):
    h = np.zeros(N_HYPER)
    for index, value in values.items():
        h[globals()[index]] = value
    return h


def sgd_update(p, g, buf, learning_rate, momentum=0.0, rows=None):
    optimizer_update(SGD_KIND, _hyper(LR=learning_rate, MOMENTUM=momentum), 1, p, g, buf,
                     np.empty_like(buf), rows)


def rmsprop_update(p, g, s, learning_rate, rho=0.9, epsilon=1e-7, rows=None):
    optimizer_update(RMSPROP_KIND, _hyper(LR=learning_rate, RHO=rho, EPSILON=epsilon), 1, p, g, s,
                     np.empty_like(s), rows)


def adam_update(p, g, m, v, step, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                weight_decay=0.0, keras_epsilon=False, rows=None):
    optimizer_update(ADAM_KIND, _hyper(LR=learning_rate, BETA_1=beta_1, BETA_2=beta_2,
                                       EPSILON=epsilon, WEIGHT_DECAY=weight_decay,
                                       KERAS_EPSILON=float(keras_epsilon)), step, p, g, m, v, rows)


def train_step(theta, grad, s1, s2, step, dims, x, y, kind, hyper, mask_zero=False,
               bptt_truncate=None, lazy=False):
    x, y = _checks.model_batch(theta, dims, x, y)
    for name, a in (("theta", theta), ("grad", grad), ("s1", s1), ("s2", s2)):
        _checks.buffer(name, a, theta)
        _inplace(name, a)
    ids, dense = _model_inputs(theta, dims, x)
    stats = np.empty(3)
    _step.train_step(theta.dtype, theta, grad, s1, s2, int(step), *dims, ids, dense,
                                  _c(y, np.int64), int(kind), _c(hyper, np.float64),
                                  int(bool(mask_zero)), _truncate(bptt_truncate), int(bool(lazy)),
                                  stats, numba.get_num_threads())
    return float(stats[0]), int(stats[1]), float(stats[2])
