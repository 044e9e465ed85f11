"""Shared helpers for the core tests: backends, tolerances, the shape grid, model and batch builders.

Imported by the test modules as ``helpers`` (``tests/`` is on ``sys.path`` under pytest's default
import mode); ``tests/conftest.py`` wraps the pieces that are fixtures.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import numpy as np

from fastrnn import layout, optim

# ------------------------------------------------------------------------------------------------
# backends: {"numpy": fastrnn.reference, "numba": fastrnn.kernels}, imported on first use so that a
# half-written kernel module breaks only the tests that use it
# ------------------------------------------------------------------------------------------------

BACKENDS = {"numpy": "fastrnn.reference", "numba": "fastrnn.kernels"}


def backend(name):
    """The backend module called ``name`` ("numpy" or "numba")."""
    module = importlib.import_module(BACKENDS[name])
    if name == "numba":
        # Guard, test side only: a cached kernel whose entry point is not parallel but whose helpers
        # are can segfault as the first kernel call of a process (Numba's threading layer is not
        # started, numba/numba#8578; seen with optimizer_update at commit 63d1553). Starting it here
        # keeps a run of a single test file alive; test_kernels.py checks that case in a subprocess.
        import numba
        numba.get_num_threads()
    return module


def reference():
    return backend("numpy")


def kernels():
    return backend("numba")


# ------------------------------------------------------------------------------------------------
# tolerances (STYLE.md point 12)
# ------------------------------------------------------------------------------------------------

def tolerances(dtype, T=1):
    """``(rtol, atol)`` for comparing a result computed in ``dtype`` with an exact (float64) one.

    float64: rtol 1e-10, atol 1e-12. float32 (against the float64 reference run on the same
    float32-rounded inputs): rtol 1e-4, atol 1e-5, loosened linearly with the number of time steps
    beyond 4, because rounding errors accumulate along the recurrence in BPTT.
    """
    if np.dtype(dtype) == np.float64:
        return 1e-10, 1e-12
    if np.dtype(dtype) == np.float32:
        grow = max(1.0, T / 4)
        return 1e-4 * grow, 1e-5 * grow
    raise ValueError(f"no tolerances for {dtype}")


def assert_close(actual, desired, dtype, T=1, what=""):
    """``assert_allclose`` with dtype-aware tolerances; the message names ``what`` and the max abs diff."""
    rtol, atol = tolerances(dtype, T)
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    diff = float(np.max(np.abs(actual - desired))) if actual.size else 0.0
    np.testing.assert_allclose(
        actual, desired, rtol=rtol, atol=atol,
        err_msg=f"{what} ({np.dtype(dtype).name}, T={T}): max abs diff {diff:.3e}, rtol={rtol:g}, "
                f"atol={atol:g}")


# ------------------------------------------------------------------------------------------------
# the shape grid
# ------------------------------------------------------------------------------------------------

class Shape(NamedTuple):
    """One point of the grid: batch B, time T, input D, hidden H, vocabulary V, classes C and the
    truncation ``k`` (None = full BPTT) used by the tests that truncate."""

    name: str
    B: int
    T: int
    D: int
    H: int
    V: int
    C: int
    k: int | None

    @property
    def dims(self):
        return (self.V, self.D, self.H, self.C)

    @property
    def dense_dims(self):
        return (0, self.D, self.H, self.C)


SHAPES = [
    Shape("all1", B=1, T=1, D=1, H=1, V=2, C=2, k=None),     # every size 1 (V=2: ids 0 and 1)
    Shape("B1", B=1, T=5, D=3, H=4, V=6, C=2, k=2),
    Shape("T1", B=4, T=1, D=3, H=5, V=6, C=3, k=1),
    Shape("H1", B=3, T=4, D=2, H=1, V=5, C=2, k=None),
    Shape("D1", B=3, T=4, D=1, H=3, V=5, C=3, k=3),
    Shape("k1", B=3, T=6, D=2, H=3, V=7, C=2, k=1),
    Shape("k>T", B=3, T=4, D=2, H=3, V=7, C=2, k=9),
    Shape("odd", B=5, T=7, D=3, H=5, V=11, C=3, k=3),        # odd sizes, T longer than k
    Shape("long", B=6, T=17, D=4, H=6, V=13, C=3, k=5),      # T much longer than k
]
SHAPE_IDS = [s.name for s in SHAPES]


# ------------------------------------------------------------------------------------------------
# builders (all randomness here, in NumPy, from the caller's seeded Generator)
# ------------------------------------------------------------------------------------------------

def make_theta(rng, dims, dtype=np.float64, scale=0.5):
    """A random flat parameter buffer for ``dims`` (weights ~ N(0, scale^2), large enough that tanh
    is not linear)."""
    return (scale * rng.standard_normal(layout.size(dims))).astype(dtype)


def make_ids(rng, B, T, V, padding=True):
    """Token ids ``(B, T)`` int64 in [0, V). With ``padding``: rows are left-padded with 0 to random
    lengths (Keras ``pad_sequences``), one row in three also has a 0 in the middle, and when
    ``B > 1`` one row has no padding at all; nonzero tokens are drawn from [1, V)."""
    x = rng.integers(1, V, size=(B, T)) if V > 1 else np.zeros((B, T), np.int64)
    if padding and V > 1:
        for b in range(B):
            if b == 0 and B > 1:
                continue                                  # one full-length row
            n_pad = int(rng.integers(0, T))               # keep at least one real token
            x[b, :n_pad] = 0
            if b % 3 == 1 and T - n_pad >= 3:
                x[b, int(rng.integers(n_pad + 1, T - 1))] = 0
    return x.astype(np.int64)


def make_mask(rng, B, T):
    """A (B, T) bool mask with random holes, left padding and at least one True per row."""
    mask = rng.random((B, T)) < 0.7
    mask[:, -1] |= ~mask.any(axis=1)
    if B > 1:
        mask[-1, : T // 2] = False                        # left padding on the last row
        mask[-1, -1] = True
    return mask


def make_labels(rng, B, C):
    return rng.integers(0, C, size=B).astype(np.int64)


def make_dense(rng, B, T, D, dtype=np.float64):
    return rng.standard_normal((B, T, D)).astype(dtype)


def rnn_params(rng, D, H, dtype=np.float64, scale=0.5):
    """``(W_xh, W_hh, b_h)`` as separate arrays."""
    return tuple((scale * rng.standard_normal(s)).astype(dtype) for s in [(D, H), (H, H), (H,)])


# ------------------------------------------------------------------------------------------------
# optimizers
# ------------------------------------------------------------------------------------------------

def optimizers(clipnorm=None):
    """One instance of every optimizer configuration the backends implement, by id."""
    return {
        "sgd": optim.SGD(learning_rate=0.1, global_clipnorm=clipnorm),
        "sgd_momentum": optim.SGD(learning_rate=0.05, momentum=0.9, global_clipnorm=clipnorm),
        "rmsprop": optim.RMSprop(learning_rate=0.01, rho=0.8, epsilon=1e-7,
                                 global_clipnorm=clipnorm),
        "adam": optim.Adam(learning_rate=0.01, global_clipnorm=clipnorm),
        "adam_keras_eps": optim.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-3,
                                     keras_epsilon=True, global_clipnorm=clipnorm),
        "adamw": optim.AdamW(learning_rate=0.01, weight_decay=0.1, global_clipnorm=clipnorm),
    }


OPTIMIZER_IDS = list(optimizers())


def state_buffers(theta):
    return np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)   # grad, s1, s2


# ------------------------------------------------------------------------------------------------
# the same bits for any thread count
# ------------------------------------------------------------------------------------------------

def assert_same_bits_for_1_to_5_threads(module, function, seed):
    """Run ``module.function(seed, dtype)`` (a dict of arrays) with 1 to 5 Numba threads in a fresh
    process (``NUMBA_NUM_THREADS=5``: more than this machine's cores, which Numba allows) and
    assert that every thread count gives the same SHA-256 of the results, in both dtypes."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path
    code = f"""
        import hashlib, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import numba, numpy as np
        from {module} import {function}
        for n in range(1, 6):
            numba.set_num_threads(n)
            for dtype in (np.float32, np.float64):
                out = {function}({seed}, np.dtype(dtype))
                digest = hashlib.sha256(b"".join(np.asarray(out[k]).tobytes() for k in sorted(out)))
                print(n, np.dtype(dtype).name, digest.hexdigest())
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "NUMBA_NUM_THREADS": "5"})
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.splitlines()]
    assert [int(n) for n, _, _ in lines] == [n for n in range(1, 6) for _ in range(2)]
    for dtype in ("float32", "float64"):
        assert len({d for _, name, d in lines if name == dtype}) == 1, r.stdout


def central_differences(f, v, eps=1e-5):
    """d f / d v by central differences (float64), ``v`` perturbed in place and restored."""
    g = np.zeros(v.shape)
    flat, gflat = v.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g
