"""The NumPy reference of the losses and metrics (Keras 3's formulas), fused with the head.

``z (..., C)`` is the last Dense layer's pre-activation and ``activation`` its activation, so the
model's output is ``p = activation(z)``; ``y`` the targets; ``weight`` (the shape of
``z.shape[:-1]``, or None) 1 for a real sample or step and 0 for a masked one. Every loss is a mean
over the last axis per sample (Keras), then ``sum(weight * l) / sum(weight)`` (Keras' mean over the
batch, over unmasked steps only for per-step outputs; 0 when all are masked).

Where the head allows it the loss is computed from ``z`` directly, which is exact and stable for
any finite ``z``: ``sparse_categorical_crossentropy`` after softmax (or on logits) is
``logsumexp(z) - z[y]``; ``binary_crossentropy`` after sigmoid (or on logits) is
``max(z, 0) - y z + log(1 + exp(-|z|))``. Otherwise Keras' formulas on ``p`` are used, including its
clipping of probabilities to ``[1e-7, 1 - 1e-7]``; Keras clips there too, so both agree where
the probabilities lie inside that range (the fused forms are exact outside it too).
"""

from __future__ import annotations

import numpy as np

from .layers import activation_backward, activation_forward

EPSILON = 1e-7                          # keras.config.epsilon()
LOSSES = ("sparse_categorical_crossentropy", "binary_crossentropy", "mean_squared_error")


def fused(loss, activation, from_logits):
    """Whether ``loss`` on the head ``activation`` is computed from the logits ``z``."""
    if loss == "sparse_categorical_crossentropy":
        return (activation, from_logits) in (("softmax", False), ("linear", True))
    if loss == "binary_crossentropy":
        return (activation, from_logits) in (("sigmoid", False), ("linear", True))
    return False


def _elementwise(loss, p, y, from_logits):
    """Per-sample losses ``l (...)`` and ``dl / dp (..., C)`` on the outputs ``p`` (not fused)."""
    C = p.shape[-1]
    if loss == "sparse_categorical_crossentropy":
        onehot = np.eye(C, dtype=p.dtype)[y]
        if from_logits:                           # the outputs are logits: log-sum-exp
            top = p.max(-1, keepdims=True)
            log_total = np.log(np.exp(p - top).sum(-1, keepdims=True)) + top
            return log_total[..., 0] - (p * onehot).sum(-1), np.exp(p - log_total) - onehot
        total = p.sum(-1, keepdims=True)
        q = p / total                             # Keras renormalises, then clips
        clipped = np.clip(q, EPSILON, 1 - EPSILON)
        inside = (q >= EPSILON) & (q <= 1 - EPSILON)
        dq = -onehot / clipped * inside
        return -np.log((clipped * onehot).sum(-1)), (dq - (dq * q).sum(-1, keepdims=True)) / total
    y = y.astype(p.dtype)
    if loss == "binary_crossentropy":
        if from_logits:
            e = np.exp(-np.abs(p))
            return ((np.maximum(p, 0) - y * p + np.log1p(e)).mean(-1),
                    (activation_forward(p, "sigmoid") - y) / C)
        clipped = np.clip(p, EPSILON, 1 - EPSILON)
        inside = (p >= EPSILON) & (p <= 1 - EPSILON)
        l = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).mean(-1)
        return l, (-(y / clipped) + (1 - y) / (1 - clipped)) * inside / C
    return ((p - y) ** 2).mean(-1), 2 * (p - y) / C


def targets(loss, y, z):
    """``y`` shaped for ``z``: labels ``z.shape[:-1]`` for the sparse loss; for the others the
    shape of ``z``, a trailing axis added for one output (Keras' ``(N,)`` against ``(N, 1)``)."""
    if loss != "sparse_categorical_crossentropy" and y.ndim == z.ndim - 1:
        return y[..., None]
    return y


def loss_and_grad(loss, activation, from_logits, z, y, weight=None):
    """``(mean loss, d loss / d z)`` of the head ``activation(z)`` against ``y``."""
    y = targets(loss, y, z)
    if fused(loss, activation, from_logits):      # z are the logits of both cross-entropies
        l, dz = _elementwise(loss, z, y, True)
    else:
        p = activation_forward(z, activation)
        l, dp = _elementwise(loss, p, y, from_logits)
        dz = activation_backward(dp, p, activation)
    w = np.ones(l.shape, z.dtype) if weight is None else weight.astype(z.dtype)
    total = w.sum()
    scale = 1 / total if total > 0 else 0.0
    return (w * l).sum() * scale, (dz * (w * scale)[..., None]).astype(z.dtype)


def loss_value(loss, activation, from_logits, z, y, weight=None):
    """The mean loss alone (``loss_and_grad``'s first result)."""
    return loss_and_grad(loss, activation, from_logits, z, y, weight)[0]


# ---------------------------------------------------------------------------------------------
# Metrics: per-sample values, averaged with the same weights as the loss
# ---------------------------------------------------------------------------------------------

def accuracy_kind(y, p):
    """Keras 3's choice for ``"accuracy"``: binary when the output has one unit, sparse when the
    targets have one axis fewer than the outputs, else categorical (argmax against argmax)."""
    if p.shape[-1] == 1:
        return "binary"
    if y.ndim < p.ndim:
        return "sparse"
    return "categorical"


def metric_values(metric, y, p):
    """Per-sample values ``(...)`` of ``metric`` ("accuracy" or "mae") for outputs
    ``p (..., C)``."""
    if metric == "mae":
        t = y[..., None] if y.ndim == p.ndim - 1 else y
        return np.abs(p - t).mean(-1)
    kind = accuracy_kind(y, p)
    if kind == "binary":
        t = y[..., None] if y.ndim == p.ndim - 1 else y
        return ((p > 0.5).astype(p.dtype) == t).mean(-1)
    if kind == "sparse":
        return (p.argmax(-1) == y).astype(np.float64)
    return (p.argmax(-1) == y.argmax(-1)).astype(np.float64)
