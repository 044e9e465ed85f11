"""Scalar maths that vectorises: no SVML here, so ``math.tanh`` in a loop stays scalar."""

import math

import numpy as np
from numba import types
from numba.extending import overload

from ._jit import FASTMATH, helper

# Eigen's rational approximation of tanh in float32 (max error a few ulp on [-7.9, 7.9]). From
# |x| >= 9.010914 on, tanh(x) rounds to exactly +-1 in float32, as np.tanh gives it: a saturated unit
# then passes no gradient (1 - h^2 = 0) on either backend, so a diverging float32 run behaves the
# same on both (Eigen's plateau, 1 - 2^-22, kept a gradient alive that NumPy's tanh did not).
_CLAMP, _TINY, _SAT = np.float32(7.90531110763549805), np.float32(0.0004), np.float32(9.010914)
_ONE = np.float32(1.0)
_A1, _A3, _A5, _A7 = (np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04),
                      np.float32(1.48572235717979e-05), np.float32(5.12229709037114e-08))
_A9, _A11, _A13 = (np.float32(-8.60467152213735e-11), np.float32(2.00018790482477e-13),
                   np.float32(-2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03),
                      np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06))


def tanh(x):
    """tanh that vectorises in float32; ``math.tanh`` in float64 (exact to the last bit)."""
    return math.tanh(x)


@overload(tanh, jit_options={"fastmath": FASTMATH or False, "error_model": "numpy"})
def _tanh(x):
    if x == types.float32:
        def impl(x):
            c = min(max(x, -_CLAMP), _CLAMP)
            c2 = c * c
            p = c * (_A1 + c2 * (_A3 + c2 * (_A5 + c2 * (_A7 + c2 * (_A9 + c2 * (_A11 + c2 * _A13))))))
            q = _B0 + c2 * (_B2 + c2 * (_B4 + c2 * _B6))
            r = x if abs(x) < _TINY else p / q
            return r if abs(x) < _SAT else (_ONE if x > 0 else -_ONE)
        return impl
    return lambda x: math.tanh(x)


@helper
def typed(like, value):
    """``value`` as a scalar of ``like``'s dtype (a bare literal would make float32 maths float64)."""
    out = np.empty(1, like.dtype)
    out[0] = value
    return out[0]


def assign(dst, src):
    """``dst[...] = src`` for arrays of one shape (1 to 3 dimensions)."""
    dst[...] = src


@overload(assign, jit_options={"fastmath": FASTMATH or False, "error_model": "numpy"})
def _assign(dst, src):
    # Plain loops: Numba's slice assignment compiles its shape-mismatch error formatting (about a
    # second per array rank) into every kernel that uses it; callers here pass matching shapes.
    if dst.ndim == 1:
        def impl(dst, src):
            for i in range(dst.shape[0]):
                dst[i] = src[i]
    elif dst.ndim == 2:
        def impl(dst, src):
            for i in range(dst.shape[0]):
                for j in range(dst.shape[1]):
                    dst[i, j] = src[i, j]
    else:
        def impl(dst, src):
            for i in range(dst.shape[0]):
                for j in range(dst.shape[1]):
                    for m in range(dst.shape[2]):
                        dst[i, j, m] = src[i, j, m]
    return impl


def zero(a):
    """``a[...] = 0`` for a contiguous array."""
    a[...] = 0


@overload(zero, jit_options={"fastmath": FASTMATH or False, "error_model": "numpy"})
def _zero(a):
    # one flat loop for every rank (see ``assign``)
    def impl(a):
        flat = a.reshape(a.size)
        for i in range(flat.size):
            flat[i] = 0
    return impl
