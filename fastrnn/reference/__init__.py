"""The NumPy reference: the specification of every fastrnn computation.

This module defines the maths. The Numba kernels in ``fastrnn.kernels`` compute the same functions
with the same names, arguments and results, and are tested against this file; it imports nothing from
them. Keep it readable: plain vectorised NumPy over the batch, one loop over time, no tricks.

Shapes (batch first for inputs, time first for states)::

    B batch   T time   V vocabulary   D input/embedding   H hidden   C classes

    x     (B, T) int token ids, or (B, T, D) dense inputs
    mask  (B, T) bool, False where the step is padding (token 0 with ``mask_zero``)
    hs    (T + 1, B, H) hidden states: hs[0] = h_0 = 0 and hs[t + 1] = h_t after step t

The model (parameter names as in Keras' Embedding -> SimpleRNN(tanh) -> Dense(softmax))::

    x_t    = E[x[:, t]]                                      (or the dense input x[:, t])
    h_t    = tanh(x_t @ W_xh + h_{t-1} @ W_hh + b_h)         h_t = h_{t-1} where mask[:, t] is False
    logits = h_T @ W_hy + b_y
    loss   = mean over the batch of -log softmax(logits)[y]

Truncated BPTT (``bptt_truncate=k``): the gradient of the loss flows back through the last ``k``
state updates of each sequence and stops there. Masked steps are not state updates: they pass the
gradient through unchanged and do not count towards ``k``. ``k=None`` is full BPTT; ``k >= T`` is
the same as full BPTT. Only the backward pass is truncated: the forward pass always runs from
``h_0 = 0`` over all T steps, and no state is carried from one batch to the next.
Equivalently, the truncated gradient is the exact gradient of the loss with the parameters used
before the last ``k`` updates of each sequence held constant.

Optimizers act in place on the flat parameter buffer ``theta`` (see ``fastrnn.layout``) and on two
state buffers of the same shape ``s1``, ``s2``; ``rows`` restricts an update to some rows of a 2-D
view (the embedding rows present in a batch: the "lazy" update of TF's LazyAdam / torch's SparseAdam).
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from ..layout import unpack
from .layers import (activation_backward, activation_forward, dense_backward,  # noqa: F401
                     dense_forward, dropout_backward, dropout_forward, embedding_backward,
                     embedding_forward, embedding_rnn_backward, embedding_rnn_forward,
                     merge_backward, merge_forward, rnn_outputs, rnn_outputs_backward,
                     simple_rnn_backward, simple_rnn_forward)
from ..optim import (BETA_1, BETA_2, CLIPNORM, EPSILON, KERAS_EPSILON, LR, MOMENTUM,
                    RHO, RMSPROP_KIND, SGD_KIND, WEIGHT_DECAY)


# ---------------------------------------------------------------------------------------------
# The recurrent layer
# ---------------------------------------------------------------------------------------------

def rnn_forward(x, W_xh, W_hh, b_h, mask=None):
    """Run the tanh recurrence over dense inputs ``x (B, T, D)``; return ``hs (T + 1, B, H)``."""
    mask = _checks.rnn_args(x, W_xh, W_hh, b_h, mask)
    B, T, _ = x.shape
    hs = np.zeros((T + 1, B, W_hh.shape[0]), dtype=x.dtype)
    for t in range(T):
        h = np.tanh(x[:, t] @ W_xh + hs[t] @ W_hh + b_h)
        hs[t + 1] = h if mask is None else np.where(mask[:, t, None], h, hs[t])
    return hs


def rnn_backward(dh, x, hs, W_xh, W_hh, mask=None, bptt_truncate=None):
    """Backpropagate ``dh = dloss/dh_T (B, H)`` through the recurrence.

    Returns ``dx (B, T, D), dW_xh (D, H), dW_hh (H, H), db_h (H,)``; see the module docstring for
    what ``bptt_truncate`` truncates.
    """
    mask, bptt_truncate = _checks.rnn_backward_args(dh, x, hs, W_xh, W_hh, mask, bptt_truncate)
    B, T, _ = x.shape
    if mask is None:
        mask = np.ones((B, T), dtype=bool)
    updates_left = np.full(B, T if bptt_truncate is None else bptt_truncate)
    dx = np.zeros_like(x)
    dW_xh, dW_hh, db_h = np.zeros_like(W_xh), np.zeros_like(W_hh), np.zeros(W_hh.shape[0], x.dtype)
    for t in reversed(range(T)):
        update = mask[:, t] & (updates_left > 0)      # rows whose step t is a counted state update
        da = dh * (1 - hs[t + 1] ** 2) * update[:, None]
        dW_xh += x[:, t].T @ da
        dW_hh += hs[t].T @ da
        db_h += da.sum(axis=0)
        dx[:, t] = da @ W_xh.T
        # through an update the gradient goes on via W_hh; a masked step copies h, so it passes dh on;
        # a row that has used up its k updates stops here
        dh = np.where(update[:, None], da @ W_hh.T, np.where(mask[:, t, None], 0, dh))
        updates_left -= update
    return dx, dW_xh, dW_hh, db_h


def softmax_xent(logits, y):
    """Mean softmax cross-entropy of ``logits (B, C)`` against labels ``y (B,)``.

    Returns ``(loss, dlogits)`` with ``dlogits = d loss / d logits``. Uses the log-sum-exp shift,
    so it is exact for any finite logits.
    """
    y = _checks.logits_labels(logits, y)
    B = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(B), y].mean()
    dlogits = np.exp(log_p)
    dlogits[np.arange(B), y] -= 1
    return loss, dlogits / B


def softmax(logits):
    """Class probabilities ``(B, C)`` from ``logits``."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# The whole classifier on the flat parameter buffer
# ---------------------------------------------------------------------------------------------

def _inputs(p, x, mask_zero):
    """Dense inputs (B, T, D) and the step mask (or None) for ids or dense ``x``."""
    if p.E is None:
        return x, None
    return p.E[x], (x != 0 if mask_zero else None)


def forward(theta, dims, x, mask_zero=False):
    """Logits ``(B, C)`` of the classifier with parameters ``theta`` on inputs ``x``."""
    x, _ = _checks.model_batch(theta, dims, x)
    p = unpack(theta, dims)
    xs, mask = _inputs(p, x, mask_zero)
    hs = rnn_forward(xs, p.W_xh, p.W_hh, p.b_h, mask)
    return hs[-1] @ p.W_hy + p.b_y


def loss_and_grad(theta, dims, x, y, grad, mask_zero=False, bptt_truncate=None):
    """Mean loss on the batch ``(x, y)``; writes d loss / d theta into the flat buffer ``grad``.

    Returns ``(loss, logits)``. The embedding gradient is dense: zero for rows not in the batch.
    """
    x, y = _checks.model_batch(theta, dims, x, y)
    _checks.buffer("grad", grad, theta)
    bptt_truncate = _checks.truncate(bptt_truncate)
    p, g = unpack(theta, dims), unpack(grad, dims)
    xs, mask = _inputs(p, x, mask_zero)
    hs = rnn_forward(xs, p.W_xh, p.W_hh, p.b_h, mask)
    logits = hs[-1] @ p.W_hy + p.b_y
    loss, dlogits = softmax_xent(logits, y)
    g.W_hy[...] = hs[-1].T @ dlogits
    g.b_y[...] = dlogits.sum(axis=0)
    dx, g.W_xh[...], g.W_hh[...], g.b_h[...] = rnn_backward(
        dlogits @ p.W_hy.T, xs, hs, p.W_xh, p.W_hh, mask, bptt_truncate)
    if p.E is not None:
        g.E[...] = 0
        np.add.at(g.E, x, dx)                           # rows repeated in the batch add up
    return loss, logits


# ---------------------------------------------------------------------------------------------
# Optimizers (in place)
# ---------------------------------------------------------------------------------------------

def clip_by_global_norm(g, clipnorm):
    """Scale ``g`` in place by ``clipnorm / max(norm, clipnorm)``; return the norm before clipping."""
    norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
    if norm > clipnorm:
        g *= clipnorm / norm
    return norm


def sgd_update(p, g, buf, learning_rate, momentum=0.0, rows=None):
    """``buf = momentum * buf + g; p -= lr * buf``."""
    r = slice(None) if rows is None else rows
    buf[r] = momentum * buf[r] + g[r]
    p[r] -= learning_rate * buf[r]


def rmsprop_update(p, g, s, learning_rate, rho=0.9, epsilon=1e-7, rows=None):
    """``s = rho * s + (1 - rho) * g**2; p -= lr * g / sqrt(s + epsilon)`` (Keras)."""
    r = slice(None) if rows is None else rows
    s[r] = rho * s[r] + (1 - rho) * g[r] ** 2
    p[r] -= learning_rate * g[r] / np.sqrt(s[r] + epsilon)


def adam_update(p, g, m, v, step, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                weight_decay=0.0, keras_epsilon=False, rows=None):
    """One Adam(W) step number ``step`` (1, 2, ...), bias-corrected exactly::

        p *= 1 - lr * weight_decay                     (AdamW; skipped when 0)
        m  = beta_1 * m + (1 - beta_1) * g
        v  = beta_2 * v + (1 - beta_2) * g**2
        p -= lr * m_hat / (sqrt(v_hat) + eps)          m_hat = m / (1 - beta_1**step), same for v

    With ``keras_epsilon`` eps is added before the bias correction: ``eps / sqrt(1 - beta_2**step)``
    in the formula above. ``step=1`` at every step is the original notebook's variant (its
    ``m_hat = m / (1 - beta_1)``), term for term.
    """
    r = slice(None) if rows is None else rows
    bc1, bc2 = 1 - beta_1 ** step, 1 - beta_2 ** step
    eps = epsilon / np.sqrt(bc2) if keras_epsilon else epsilon
    if weight_decay:
        p[r] *= 1 - learning_rate * weight_decay
    m[r] = beta_1 * m[r] + (1 - beta_1) * g[r]
    v[r] = beta_2 * v[r] + (1 - beta_2) * g[r] ** 2
    p[r] -= learning_rate * (m[r] / bc1) / (np.sqrt(v[r] / bc2) + eps)


def optimizer_update(kind, hyper, step, p, g, s1, s2, rows=None):
    """Apply the optimizer ``kind`` with hyperparameters ``hyper`` (see ``fastrnn.optim``)."""
    h = [float(value) for value in _checks.optimizer(kind, hyper)]              # Python floats keep float32 maths float32
    if kind == SGD_KIND:
        sgd_update(p, g, s1, h[LR], h[MOMENTUM], rows)
    elif kind == RMSPROP_KIND:
        rmsprop_update(p, g, s1, h[LR], h[RHO], h[EPSILON], rows)
    else:
        adam_update(p, g, s1, s2, step, h[LR], h[BETA_1], h[BETA_2], h[EPSILON], h[WEIGHT_DECAY],
                    bool(h[KERAS_EPSILON]), rows)


def update_step(kind, hyper, step, theta, grad, s1, s2, bounds=None):
    """Clip ``grad`` by its global norm and apply the optimizer to the flat buffers, unless the
    gradient is not finite, or (with ``bounds``, as in ``train_step``) the update would make a
    parameter or optimizer state non-finite: then nothing changes. Returns ``(norm, applied)``,
    the norm before clipping. ``Sequential`` steps with this after its backward pass.
    """
    hyper = _checks.optimizer(kind, hyper)
    bounds = _checks.update_bounds(bounds)
    norm = clip_by_global_norm(grad, hyper[CLIPNORM])
    if not np.isfinite(norm):
        return norm, False
    backup = None if bounds is None else (theta.copy(), s1.copy(), s2.copy())
    with np.errstate(over="ignore", invalid="ignore"):
        optimizer_update(kind, hyper, step, theta, grad, s1, s2)
    if backup is not None and not all(np.isfinite(a).all() for a in (theta, s1, s2)):
        for a, old in zip((theta, s1, s2), backup):        # the update overflowed: undo it
            a[...] = old
        return norm, False
    return norm, True


def train_step(theta, grad, s1, s2, step, dims, x, y, kind, hyper, mask_zero=False,
               bptt_truncate=None, lazy=False, bounds=None):
    """One training step on the batch ``(x, y)``: forward, loss, backward, clip, update.

    ``step`` is the optimizer's step number (1 for the first). With ``lazy`` the embedding rows
    that do not occur in ``x`` are left alone (parameters and optimizer state); otherwise every
    parameter is updated, as in Keras and PyTorch. A loss or gradient that is not finite (NaN or
    inf) updates nothing: parameters and optimizer state stay as they were, and the caller decides.

    ``bounds`` (a float64 array of 3, or None) turns on the overflow check: an update that would
    make any parameter or optimizer state non-finite updates nothing either. The array carries
    upper bounds on ``|theta|, |s1|, |s2|`` from step to step (NaN: unknown) for the compiled
    backend, which uses them to skip the check when no overflow is possible; this one checks
    every update (it keeps a copy of the buffers, and puts it back when the update overflowed)
    and leaves ``bounds`` as it is.

    Returns ``(loss, n_correct, grad_norm, applied)``.
    """
    x, y, hyper, bptt_truncate = _checks.train_step_args(theta, grad, s1, s2, dims, x, y, kind, hyper,
                                                         bptt_truncate)
    bounds = _checks.update_bounds(bounds)
    loss, logits = loss_and_grad(theta, dims, x, y, grad, mask_zero, bptt_truncate)
    correct = int((logits.argmax(axis=1) == y).sum())
    norm = clip_by_global_norm(grad, hyper[CLIPNORM])
    if not (np.isfinite(norm) and np.isfinite(loss)):
        return float(loss), correct, norm, False
    backup = None if bounds is None else (theta.copy(), s1.copy(), s2.copy())
    V, D = dims[0], dims[1]
    with np.errstate(over="ignore", invalid="ignore"):
        if lazy and V:
            rows = np.unique(x)
            view = lambda a: a[:V * D].reshape(V, D)            # noqa: E731
            optimizer_update(kind, hyper, step, view(theta), view(grad), view(s1), view(s2), rows)
            tail = slice(V * D, None)
            optimizer_update(kind, hyper, step, theta[tail], grad[tail], s1[tail], s2[tail])
        else:
            optimizer_update(kind, hyper, step, theta, grad, s1, s2)
    if backup is not None and not all(np.isfinite(a).all() for a in (theta, s1, s2)):
        for a, old in zip((theta, s1, s2), backup):        # the update overflowed: undo it
            a[...] = old
        return float(loss), correct, norm, False
    return float(loss), correct, norm, True


# ---------------------------------------------------------------------------------------------
# The original notebook's maths (``fastrnn.compat.RNN(..., faithful=True)``)
# ---------------------------------------------------------------------------------------------
# The notebook this project grew out of trains the same tanh RNN with different maths. These
# functions state that maths in this module's layout (batch first, W_xh = the notebook's U.T,
# W_hh = W.T, W_hy = V.T), so that the drop-in can reproduce its training; nothing else uses them.
# What differs from the maths above: no biases (their slots in the flat buffer stay 0); the loss
# is summed over the batch, not averaged; its softmax has no max shift; truncation is its own (see
# ``notebook_rnn_backward``); its Adam is ``adam_update(..., step=1)`` at every step (the bias
# correction divides by ``1 - beta`` instead of ``1 - beta**t``; learning rate 0.001); its loss
# and accuracy formulas are ``notebook_metrics``.

def notebook_forward(x, W_xh, W_hh):
    """The tanh recurrence without bias from ``h_0 = 0`` over dense ``x (B, T, D)``.

    Returns ``hs (T + 1, B, H)`` as ``rnn_forward`` (``hs[t + 1]`` is the notebook's ``S[t]``):
    ``h_t = tanh([h_{t-1}, x_t] @ [W_hh; W_xh])``, the maths of ``rnn_forward(x, W_xh, W_hh, 0)``
    with both products of a step as one (``z[t]`` holds ``[h_{t-1}, x_t]``, the states written
    into it by ``tanh``): two NumPy calls per step, the notebook's own cost at batch 16 being
    calls, not arithmetic (measured: 315-420 us instead of 480-500 us for 16 x 40 x 128, H 32).
    The result differs from the notebook's two separate products only by rounding (1e-16).
    """
    B, T, D = x.shape
    H = W_hh.shape[0]
    dtype = np.result_type(x.dtype, W_xh.dtype)
    z = np.empty((T + 1, B, H + D), dtype)
    z[0, :, :H] = 0
    z[:T, :, H:] = x.transpose(1, 0, 2)
    z[T, :, H:] = 0
    W = np.concatenate((W_hh, W_xh)).astype(dtype, copy=False)
    a = np.empty((B, H), dtype)
    for t in range(T):
        np.dot(z[t], W, out=a)
        np.tanh(a, out=z[t + 1, :, :H])
    return z[:, :, :H]


def notebook_softmax(logits):
    """The notebook's softmax of ``logits (B, C)``: ``exp(z) / sum(exp(z))``, no shift (so it
    overflows to NaN for logits above about 709, as the notebook's does)."""
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def notebook_rnn_backward(dh, x, hs, W_hh, truncate):
    """The notebook's truncated backward pass; returns ``(dW_xh (D, H), dW_hh (H, H))``.

    ``dh = dloss/dh_T (B, H)``. With ``S = hs[1:]`` (the notebook's list of states) it runs the
    notebook's loop ``for i in range(T - 1, T - 1 - truncate, -1)`` over ``da = (1 - S[i]**2) dh``,
    adding ``x[:, i].T @ da`` and ``S[i - 1].T @ da`` and passing ``dh = da @ W_hh.T`` on, with
    Python's negative indices: at ``i = 0`` the previous state ``S[-1]`` is the LAST state ``h_T``
    (not ``h_0 = 0``), and with ``truncate > T`` the loop goes on through ``i = -1, -2, ...``, that
    is through steps ``T - 1, T - 2, ...`` again. So ``truncate < T`` is exactly ``rnn_backward``'s
    truncation; ``T <= truncate < 2 T`` is ``rnn_backward`` on ``notebook_wrap(x, hs)``; from
    ``truncate = 2 T`` on the notebook's index goes out of range (``IndexError``) and this raises
    ``ValueError``. ``truncate = 0`` gives zero gradients (only the output layer learns).
    """
    B, T, D = x.shape
    if not 0 <= truncate < 2 * T:
        raise ValueError(f"truncate must lie in [0, 2 T) = [0, {2 * T}) for T = {T} steps, got "
                         f"{truncate} (the notebook's loop indexes out of range there)")
    S = hs[1:]
    dW_xh = np.zeros((D, W_hh.shape[0]), dtype=hs.dtype)
    dW_hh = np.zeros_like(W_hh, dtype=hs.dtype)
    for i in range(T - 1, T - 1 - truncate, -1):
        da = (1.0 - np.square(S[i])) * dh
        dW_xh += x[:, i].T @ da
        dW_hh += S[i - 1].T @ da                # i = 0: S[-1] = h_T, the notebook's wrap
        dh = da @ W_hh.T
    return dW_xh, dW_hh


def notebook_wrap(x, hs):
    """The inputs on which ``rnn_backward`` computes the notebook's gradient for ``truncate >= T``.

    Returns ``x2 = concat(x, x)`` along time ``(B, 2 T, D)`` and
    ``hs2 = concat(0, hs[1:], hs[1:])`` ``(2 T + 1, B, H)``: step ``j`` of the doubled sequence is
    the notebook's step ``i = j - T`` (``j >= T``: the real steps; ``j < T``: the negative ``i`` its
    loop wraps to), and the state before it, ``hs2[j]``, is its ``S[i - 1]`` (``hs2[T] = h_T`` at
    ``i = 0``). ``rnn_backward(dh, x2, hs2, W_xh, W_hh, bptt_truncate=k)`` then adds exactly the
    notebook's terms for ``T <= k < 2 T`` (``hs2[0]`` is never read for those ``k``).
    """
    x2 = np.concatenate((x, x), axis=1)
    hs2 = np.concatenate((np.zeros_like(hs[:1]), hs[1:], hs[1:]))
    return x2, hs2


def notebook_loss_and_grad(p, g, x, y, truncate):
    """The notebook's gradient on the batch ``(x, y)`` (dense ``x``), written into ``g``.

    ``p`` and ``g`` are the parameter and gradient views (``unpack(theta, dims)``,
    ``unpack(grad, dims)``; unpacked once by the caller, as this runs once per batch of 16). The
    gradient of the loss SUMMED over the batch (``softmax - onehot``, not divided by ``B``); the
    bias slots of ``g`` are not written (the notebook has no biases: keep them 0). Returns the
    logits ``(B, C)``.
    """
    hs = notebook_forward(x, p.W_xh, p.W_hh)
    logits = hs[-1] @ p.W_hy
    dlogits = notebook_softmax(logits) - np.eye(logits.shape[1])[y]
    g.W_hy[...] = hs[-1].T @ dlogits
    g.W_xh[...], g.W_hh[...] = notebook_rnn_backward(dlogits @ p.W_hy.T, x, hs, p.W_hh, truncate)
    return logits


def notebook_metrics(logits, y):
    """The notebook's ``(loss, accuracy)`` of ``logits (N, C)`` against labels ``y (N,)``.

    With ``p = notebook_softmax(logits)`` and ``q = p[n, y[n]]`` (the true class's probability):
    ``accuracy`` counts the rows whose ``q >= 0.5``; ``loss = -sum(log(q + 1e-8)) / N`` over the
    rows with ``q > 1e-9`` only (the others add nothing). Both divided by all ``N`` rows. Computed
    on the ``(C, N)`` transposes, as the notebook lays them out, so the sums run in its order.
    """
    N, C = logits.shape
    p = notebook_softmax(logits).T
    onehot = np.eye(C)[y].T
    hard = p.copy()
    hard[hard < 0.5] = 0
    hard[0.5 <= hard] = 1
    accuracy = (hard * onehot).sum() / N
    q = p * onehot
    loss = -np.log(q[1e-9 < q] + 1e-8).sum() / N
    return float(loss), float(accuracy)
