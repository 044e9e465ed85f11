"""Weight initialisers (Keras' defaults for Embedding -> SimpleRNN -> Dense).

Initialisation is part of the product: on IMDB these reach about 0.85 test accuracy where PyTorch's
defaults reach about 0.73. All draw from a seeded ``np.random.Generator`` in float64, so the NumPy
and Numba backends start from identical weights.
"""

from __future__ import annotations

import numpy as np


def uniform(rng, shape, limit=0.05):
    """Keras ``RandomUniform(-0.05, 0.05)``, the Embedding default."""
    return rng.uniform(-limit, limit, size=shape)


def zeros(rng, shape):
    """Keras ``Zeros``, the bias default."""
    return np.zeros(shape)


def glorot_uniform(rng, shape):
    """Keras ``GlorotUniform``: ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def orthogonal(rng, shape, gain=1.0):
    """Keras ``Orthogonal``: Q of the QR decomposition of a normal matrix, signs fixed by R."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols]


def keras_weights(rng, dims):
    """The six parameters of ``dims = (V, D, H, C)`` initialised as Keras does, in layout order."""
    V, D, H, C = dims
    return [uniform(rng, (V, D)), glorot_uniform(rng, (D, H)), orthogonal(rng, (H, H)),
            np.zeros(H), glorot_uniform(rng, (H, C)), np.zeros(C)]


def notebook_weights(random_state, dims):
    """The original notebook's initialisation, in layout order (for ``compat.RNN(faithful=True)``).

    It draws, in this order, ``U (H, D)`` from ``U(-sqrt(1/D), sqrt(1/D))``, ``W (H, H)`` and
    ``V (C, H)`` from ``U(-sqrt(1/H), sqrt(1/H))`` with ``random_state.uniform`` (the notebook used
    ``np.random``, NumPy's global state); the layout holds their transposes (``W_xh = U.T``,
    ``W_hh = W.T``, ``W_hy = V.T``) and zero biases (the notebook has none) and no embedding.
    """
    V_, D, H, C = dims
    if V_:
        raise ValueError("the notebook's model reads dense inputs: dims must have V = 0")
    U = random_state.uniform(-np.sqrt(1. / D), np.sqrt(1. / D), (H, D))
    W = random_state.uniform(-np.sqrt(1. / H), np.sqrt(1. / H), (H, H))
    V = random_state.uniform(-np.sqrt(1. / H), np.sqrt(1. / H), (C, H))
    return [np.zeros((0, D)), U.T, W.T, np.zeros(H), V.T, np.zeros(C)]
