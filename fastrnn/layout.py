"""Where each parameter lives in the model's one flat buffer.

The order is Keras' `get_weights()` order for Embedding -> SimpleRNN -> Dense::

    E (V, D)   W_xh (D, H)   W_hh (H, H)   b_h (H,)   W_hy (H, C)   b_y (C,)

``dims = (V, D, H, C)``; ``V = 0`` means the model reads dense inputs ``(B, T, D)`` and has no
embedding. Because the embedding comes first, ``theta[:V * D]`` is the embedding table and
``theta[V * D:]`` everything else, which is what the lazy (row-wise) optimizer update relies on.
"""

from __future__ import annotations

from collections import namedtuple
from functools import lru_cache

import numpy as np

NAMES = ("embedding", "kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")

Params = namedtuple("Params", ["E", "W_xh", "W_hh", "b_h", "W_hy", "b_y"])


def shapes(dims):
    """Shapes of the six parameters, in buffer order (the embedding is ``(0, D)`` without one)."""
    V, D, H, C = dims
    return [(V, D), (D, H), (H, H), (H,), (H, C), (C,)]


def size(dims):
    """Number of scalars in the flat buffer."""
    return _size(tuple(int(d) for d in dims))


@lru_cache(maxsize=64)
def _size(dims):
    return sum(int(np.prod(s)) for s in shapes(dims))


def unpack(theta, dims):
    """Views of the flat buffer ``theta`` as a :class:`Params` (``E`` is None without embedding)."""
    views, start = [], 0
    for shape in shapes(dims):
        n = int(np.prod(shape))
        views.append(theta[start:start + n].reshape(shape))
        start += n
    if dims[0] == 0:
        views[0] = None
    return Params(*views)
