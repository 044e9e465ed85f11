"""Benchmarks: sizes, FLOP counts, backends, and the side-by-side runner behind ``fastrnn bench``.

The pytest-benchmark suite in ``bench/`` imports its sizes, inputs and timed callables from here, so
``fastrnn bench`` and ``pytest --benchmark-only`` time exactly the same code.

Backends: ``numba`` (``fastrnn.kernels``), ``numpy`` (``fastrnn.reference``) and ``torch`` (CPU,
optional): ``nn.Embedding -> nn.RNN(tanh, batch_first) -> nn.Linear``, ``cross_entropy``, fused Adam
(foreach where fused is unavailable); in lazy mode ``Embedding(sparse=True)`` with ``SparseAdam`` for
the embedding and Adam for the rest. Torch runs with Numba's thread count, and must be imported
before Numba's first parallel kernel (see `import_torch`).

``fastrnn bench`` (`main`) runs each backend in its own subprocess (`BackendProcess`, environment
`child_env`: the caller's without `MACHINE_ONLY_ENV`) and measures the GEMM peak in another
(`measure_gemm_peak`); it interleaves samples over the processes and refuses to write an impossible
report (`check_rows`). pytest-benchmark (``bench/``) times the same callables in its own process.

Ops (one call each): ``forward`` = ``rnn_forward`` on embedded inputs; ``bptt``/``bptt_k4`` =
``rnn_backward`` with full / k=4 truncated BPTT; ``adam`` = ``adam_update`` over the whole flat
buffer; ``adam_lazy`` = the same on the embedding rows of one batch plus the dense tail; ``step`` /
``step_lazy`` = one whole training step (forward, loss, backward, Adam), dense / lazy embedding.

FLOPs (see `flops`) count matrix products only, 2*m*n*k for an (m, k) @ (k, n) product; tanh,
softmax, gathers and the optimizer are not counted. With ``R = B * (D*H + H*H)`` (one time step of
``x_t @ W_xh + h @ W_hh`` over the batch) and ``S = B * H * C`` (the head)::

    forward   2 * T * R              bptt   4 * T * R  (dW_xh, dW_hh, dx, dh per step)
    step      6 * T * R + 6 * S      bptt_k4  4 * min(4, T) * R
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import layout, optim, reference
from .model import SimpleRNNClassifier


class Size(NamedTuple):
    """A benchmark size: time T, batch B, embedding D, hidden H, vocabulary V, classes C."""

    T: int
    B: int
    D: int
    H: int
    V: int
    C: int = 2

    @property
    def dims(self):
        return (self.V, self.D, self.H, self.C)


SIZES = {
    "notebook": Size(T=40, B=16, D=128, H=32, V=10000),   # the original notebook's model
    "chollet": Size(T=500, B=128, D=32, H=32, V=10000),   # Chollet's IMDB SimpleRNN example
    "wide": Size(T=100, B=64, D=128, H=256, V=10000),
}
DTYPES = ("float32", "float64")
BACKENDS = ("numba", "numpy", "torch")
OPS = ("forward", "bptt", "bptt_k4", "adam", "adam_lazy", "step", "step_lazy", "seq_step",
       "bidir2_step", "stack4_step")
# Sequential models of the same size (their training step with Adam): today's model built from
# layers ("seq_step", the model of "step"), two stacked Bidirectional(SimpleRNN) layers, and
# Chollet's stack of four SimpleRNN layers (return_sequences on the first three)
SEQUENTIAL_OPS = {"seq_step": (1, False), "bidir2_step": (2, True), "stack4_step": (4, False)}
K_TRUNC = 4
STEP = 10                      # Adam step number used by the standalone optimizer benchmarks
LR = 1e-3

# The speed floors: (op, size, dtype, "vs torch" | "vs numpy" | "% of GEMM peak", minimum).
FLOORS = [("step_lazy", "notebook", "float32", "torch", 8.0),
          ("step", "notebook", "float32", "torch", 2.5),
          ("step", "notebook", "float32", "numpy", 6.0),
          ("step", "chollet", "float32", "torch", 3.5),
          ("step", "chollet", "float32", "numpy", 4.0),
          ("step", "wide", "float32", "torch", 1.3),
          ("step", "wide", "float32", "peak", 55.0)]


def flops(op, s):
    """Matrix-product FLOPs of one call of ``op`` at size ``s`` (formulas in the module docstring)."""
    R, S = s.B * (s.D * s.H + s.H * s.H), s.B * s.H * s.C
    return {"forward": 2 * s.T * R, "bptt": 4 * s.T * R, "bptt_k4": 4 * min(K_TRUNC, s.T) * R,
            "step": 6 * s.T * R + 6 * S, "step_lazy": 6 * s.T * R + 6 * S}.get(op, 0)


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------

class Batch(NamedTuple):
    """Inputs for one size and dtype: Keras-initialised ``theta``, token ids ``x (B, T)``,
    labels ``y (B,)``, embedded inputs ``xs (B, T, D)``, its states ``hs (T + 1, B, H)``,
    ``dh (B, H)``, a gradient ``g`` like ``theta`` and the embedding rows of the batch."""

    size: Size
    theta: np.ndarray
    x: np.ndarray
    y: np.ndarray
    xs: np.ndarray
    hs: np.ndarray
    dh: np.ndarray
    g: np.ndarray
    rows: np.ndarray


def make_batch(size, dtype, seed=0):
    """Build the `Batch` for ``size`` in ``dtype``; token ids follow Zipf's law like words."""
    rng = np.random.default_rng(seed)
    V, D, H, C = size.dims
    theta = SimpleRNNClassifier(V, D, H, C, dtype=dtype, backend="numpy", seed=seed).theta
    p = layout.unpack(theta, size.dims)
    zipf = 1.0 / np.arange(1, V)
    x = rng.choice(np.arange(1, V), size=(size.B, size.T), p=zipf / zipf.sum()).astype(np.int32)
    y = rng.integers(0, C, size.B)
    xs = np.ascontiguousarray(p.E[x])
    hs = reference.rnn_forward(xs, p.W_xh, p.W_hh, p.b_h)
    dh = rng.standard_normal((size.B, H)).astype(dtype)
    g = (1e-2 * rng.standard_normal(theta.size)).astype(dtype)
    return Batch(size, theta, x, y, xs, hs, dh, g, np.unique(x).astype(np.int64))


def fastrnn_backend(name):
    """The module behind backend ``name``: ``fastrnn.kernels`` or ``fastrnn.reference``."""
    if name == "numba":
        from . import kernels
        return kernels
    return reference


# ------------------------------------------------------------------------------------------------
# torch
# ------------------------------------------------------------------------------------------------

_torch_threads = []


def import_torch(threads=None):
    """torch, running ``threads`` intra-op threads (set once; default: Numba's thread count).

    Import torch before Numba's OpenMP threading layer starts. Otherwise Numba has loaded the
    system ``libgomp`` and torch binds to it instead of its own: measured here, torch then trained
    the Chollet model ~30x slower (3.3 s instead of 0.1 s for 256 reviews). This warns when that
    happens; ``bench/conftest.py`` and `main` import torch first.
    """
    late = "torch" not in sys.modules and _numba_openmp_started()
    import torch                   # without torch: ImportError, and no warning about a late import
    if late:
        warnings.warn("torch is imported after Numba's OpenMP threads started, so it shares the "
                      "system libgomp and runs far slower (see fastrnn.bench.import_torch)",
                      RuntimeWarning, stacklevel=2)
    if threads is not None or not _torch_threads:
        if threads is None:
            import numba
            threads = numba.get_num_threads()
        torch.set_num_threads(threads)
        _torch_threads[:] = [threads]
    return torch


def _numba_openmp_started():
    numba = sys.modules.get("numba")
    try:
        return numba is not None and numba.threading_layer() == "omp"
    except ValueError:                                  # no parallel kernel has run yet
        return False


def torch_model(theta, dims, sparse=False):
    """``Embedding -> RNN(tanh) -> Linear`` holding the weights of ``theta`` (its dtype), as a
    ``ModuleDict`` with keys ``emb``, ``rnn``, ``lin`` (see `torch_logits`)."""
    torch = import_torch()
    V, D, H, C = dims
    dt = getattr(torch, theta.dtype.name)
    m = torch.nn.ModuleDict({
        "emb": torch.nn.Embedding(V, D, sparse=sparse, dtype=dt),
        "rnn": torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=True, dtype=dt),
        "lin": torch.nn.Linear(H, C, dtype=dt)})
    p = layout.unpack(theta, dims)
    with torch.no_grad():
        for param, value in ((m.emb.weight, p.E), (m.rnn.weight_ih_l0, p.W_xh.T),
                             (m.rnn.weight_hh_l0, p.W_hh.T), (m.rnn.bias_ih_l0, p.b_h),
                             (m.rnn.bias_hh_l0, 0 * p.b_h), (m.lin.weight, p.W_hy.T),
                             (m.lin.bias, p.b_y)):
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return m


def torch_logits(m, x):
    """Logits ``(B, C)`` of the torch model on token ids ``x`` (a LongTensor)."""
    return m.lin(m.rnn(m.emb(x))[1][0])


def torch_adam(params, lr=LR):
    """``torch.optim.Adam``, fused where this torch supports it on CPU, else foreach."""
    torch, params = import_torch(), list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def torch_optimizers(m, lazy, lr=LR):
    """Adam for everything (dense) or SparseAdam for the embedding + Adam for the rest (lazy)."""
    torch = import_torch()
    if not lazy:
        return [torch_adam(m.parameters(), lr)]
    rest = [p for name, p in m.named_parameters() if name != "emb.weight"]
    return [torch.optim.SparseAdam([m.emb.weight], lr=lr), torch_adam(rest, lr)]


def torch_trainer(theta, dims, lazy):
    """``step(x, y)`` -> loss: one torch training step on LongTensors ``x (B, T)``, ``y (B,)``."""
    torch = import_torch()
    m = torch_model(theta, dims, sparse=lazy)
    opts = torch_optimizers(m, lazy)

    def step(x, y):
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(torch_logits(m, x), y)
        loss.backward()
        for o in opts:
            o.step()
        return loss.item()

    step.model = m
    return step


# ------------------------------------------------------------------------------------------------
# the timed callables
# ------------------------------------------------------------------------------------------------

def make_op(op, backend, batch):
    """A zero-argument callable running ``op`` once on ``batch`` with ``backend``; every input and
    buffer is built here, before any timing. Stateful ops (Adam, training steps) work on copies."""
    if backend == "torch":
        return _torch_op(op, batch)
    mod, s = fastrnn_backend(backend), batch.size
    p = layout.unpack(batch.theta, s.dims)
    if op == "forward":
        return lambda: mod.rnn_forward(batch.xs, p.W_xh, p.W_hh, p.b_h)
    if op in ("bptt", "bptt_k4"):
        k = K_TRUNC if op == "bptt_k4" else None
        return lambda: mod.rnn_backward(batch.dh, batch.xs, batch.hs, p.W_xh, p.W_hh, None, k)
    theta, grad, s1, s2 = batch.theta.copy(), batch.g.copy(), np.zeros_like(batch.g), np.zeros_like(batch.g)
    if op == "adam":
        return lambda: mod.adam_update(theta, grad, s1, s2, STEP, LR)
    if op == "adam_lazy":
        n = s.V * s.D
        rows_args = [a[:n].reshape(s.V, s.D) for a in (theta, grad, s1, s2)]
        tail_args = [a[n:] for a in (theta, grad, s1, s2)]
        return lambda: (mod.adam_update(*rows_args, STEP, LR, rows=batch.rows),
                        mod.adam_update(*tail_args, STEP, LR))
    if op in SEQUENTIAL_OPS:
        model = sequential_model(op, s, batch.theta.dtype, backend)
        return lambda: model.train_on_batch(batch.x, batch.y)
    if op in ("step", "step_lazy"):
        # numba as the model calls it, with the overflow check's bounds; the NumPy reference
        # without: its exact check copies the buffers each step, and it is timed at its best
        count, hyper = itertools.count(1), optim.Adam(LR).hyper()
        bounds = np.full(3, np.nan) if backend == "numba" else None
        return lambda: mod.train_step(theta, grad, s1, s2, next(count), s.dims, batch.x, batch.y,
                                      optim.ADAM_KIND, hyper, lazy=op == "step_lazy",
                                      bounds=bounds)
    raise ValueError(f"unknown op {op!r}; expected one of {OPS}")


def sequential_model(op, s, dtype, backend, seed=0):
    """The ``fastrnn.Sequential`` of a `SEQUENTIAL_OPS` op at size ``s``, compiled with Adam."""
    from . import layers
    from .models import Sequential
    n, bidirectional = SEQUENTIAL_OPS[op]
    stack = [layers.Embedding(s.V, s.D)]
    for i in range(n):
        rnn = layers.SimpleRNN(s.H, return_sequences=i < n - 1)
        stack.append(layers.Bidirectional(rnn) if bidirectional else rnn)
    model = Sequential([*stack, layers.Dense(s.C, activation="softmax")], dtype=np.dtype(dtype).name,
                       backend=backend, seed=seed)
    model.compile(optim.Adam(LR), "sparse_categorical_crossentropy")
    model.build((None, s.T))
    return model


def torch_sequential_trainer(op, s, dtype):
    """The torch twin of `sequential_model`: ``Embedding -> nn.RNN(num_layers, bidirectional) ->
    Linear`` on the last states, softmax cross-entropy, Adam; returns ``step(x, y)``."""
    torch = import_torch()
    n, bidirectional = SEQUENTIAL_OPS[op]
    dt = getattr(torch, np.dtype(dtype).name)
    emb = torch.nn.Embedding(s.V, s.D, dtype=dt)
    rnn = torch.nn.RNN(s.D, s.H, num_layers=n, bidirectional=bidirectional, batch_first=True,
                       dtype=dt)
    lin = torch.nn.Linear(s.H * (2 if bidirectional else 1), s.C, dtype=dt)
    opt = torch_adam([*emb.parameters(), *rnn.parameters(), *lin.parameters()])

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        h_n = rnn(emb(x))[1]                      # (layers * directions, B, H)
        last = torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]
        loss = torch.nn.functional.cross_entropy(lin(last), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _torch_op(op, batch):
    torch = import_torch()
    s, t = batch.size, torch.from_numpy
    if op in SEQUENTIAL_OPS:
        step = torch_sequential_trainer(op, s, batch.theta.dtype)
        x, y = t(batch.x).long(), t(batch.y)
        return lambda: step(x, y)
    if op in ("step", "step_lazy"):
        step, x, y = torch_trainer(batch.theta, s.dims, op == "step_lazy"), t(batch.x).long(), t(batch.y)
        return lambda: step(x, y)
    m = torch_model(batch.theta, s.dims, sparse=op == "adam_lazy")
    xs = t(batch.xs)
    if op == "forward":
        def forward():
            with torch.inference_mode():
                return m.rnn(xs)
        return forward
    if op in ("bptt", "bptt_k4"):
        # truncation the torch way: run the first T - k steps without a graph, backprop the last k
        k = min(K_TRUNC, s.T) if op == "bptt_k4" else s.T
        with torch.no_grad():
            h0 = m.rnn(xs[:, :s.T - k])[1] if k < s.T else None
        h_T = m.rnn(xs[:, s.T - k:].clone().requires_grad_(), h0)[1][0]
        dh = t(batch.dh)
        return lambda: h_T.backward(dh, retain_graph=True)
    g = layout.unpack(batch.g, s.dims)
    for param, value in zip(m.parameters(), (g.E, g.W_xh.T, g.W_hh.T, g.b_h, g.b_h, g.W_hy.T, g.b_y)):
        param.grad = t(np.ascontiguousarray(value))
    if op == "adam_lazy":   # the coalesced sparse gradient of the batch's embedding rows
        rows = t(batch.rows)
        m.emb.weight.grad = torch.sparse_coo_tensor(rows[None], t(g.E[batch.rows]), (s.V, s.D),
                                                    check_invariants=True).coalesce()
    if op in ("adam", "adam_lazy"):
        opts = torch_optimizers(m, op == "adam_lazy")
        return lambda: [o.step() for o in opts]
    raise ValueError(f"unknown op {op!r}; expected one of {OPS}")


# ------------------------------------------------------------------------------------------------
# real data: an epoch of the Chollet model, inference, compile time, memory
# ------------------------------------------------------------------------------------------------

CHOLLET = SIZES["chollet"]
EPOCH_REVIEWS, EPOCH_BATCH = 2560, 128


def imdb_slices(n=EPOCH_REVIEWS, maxlen=CHOLLET.T, num_words=CHOLLET.V):
    """``(x, y), (x_test, y_test)``: the first ``n`` IMDB training and test reviews padded to
    ``maxlen`` (Keras' ``pad_sequences``), as in Chollet's example, and their labels."""
    from .datasets import imdb
    from .preprocessing import pad_sequences
    return tuple((pad_sequences(x[:n], maxlen=maxlen), np.asarray(y[:n], np.int64))
                 for x, y in imdb.load_data(num_words=num_words))


def fastrnn_model(backend, dtype, seed=0):
    """The Chollet model (Embedding(10000, 32) -> SimpleRNN(32) -> Dense(2)) in fastrnn."""
    s = CHOLLET
    return SimpleRNNClassifier(s.V, s.D, s.H, s.C, dtype=dtype, backend=backend, seed=seed)


def train_epoch(backend, model, x, y, batch_size=EPOCH_BATCH, seed=0):
    """One shuffled epoch: ``model.fit`` for fastrnn, the plain loop for a `torch_trainer`."""
    if backend != "torch":
        return model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    torch = import_torch()
    order = np.random.default_rng(seed).permutation(len(x))
    xt, yt = torch.from_numpy(x).long(), torch.from_numpy(y)
    for b in range(0, len(x), batch_size):
        idx = torch.from_numpy(order[b:b + batch_size])
        model(xt[idx], yt[idx])


def epoch_model(backend, dtype):
    """A fresh model to train an epoch with (`train_epoch`)."""
    if backend == "torch":
        return torch_trainer(fastrnn_model("numpy", dtype).theta, CHOLLET.dims, lazy=False)
    return fastrnn_model(backend, dtype)


def predict(backend, model, x, batch_size=256):
    """Predicted labels (fastrnn: ``SimpleRNNClassifier.predict``; torch: argmax under inference_mode)."""
    if backend != "torch":
        return model.predict(x, batch_size=batch_size)
    torch = import_torch()
    with torch.inference_mode():
        xt = torch.from_numpy(x).long()
        return torch.cat([torch_logits(model.model, xt[i:i + batch_size]).argmax(1)
                          for i in range(0, len(x), batch_size)]).numpy()


def run_child(code, *args, env=None, timeout=900):
    """Run ``code`` with ``args`` in a fresh Python (environment: `child_env` updated by ``env``);
    return the JSON object it prints last."""
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=False,
                         env={**child_env(), **(env or {})}, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"benchmark subprocess failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


COMPILE_CHILD = """
import json, time
t0 = time.perf_counter()
import numpy as np
from fastrnn import kernels as k, layout, optim
imported = time.perf_counter() - t0
V, D, H, C, B, T = 50, 4, 3, 2, 3, 5
dims, f = (V, D, H, C), np.float32
theta, y = np.full(layout.size(dims), 0.1, f), np.zeros(B, np.int64)
x = np.arange(B * T, dtype=np.int32).reshape(B, T)
grad, s1, s2 = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
k.train_step(theta, grad, s1, s2, 1, dims, x, y, optim.ADAM_KIND, optim.Adam().hyper(),
             bounds=np.full(3, np.nan))
first = time.perf_counter() - t0
xs, W, U, b = np.ones((B, T, D), f), np.ones((D, H), f), np.ones((H, H), f), np.ones(H, f)
hs = k.rnn_forward(xs, W, U, b)
k.rnn_backward(hs[-1], xs, hs, W, U)
k.softmax_xent(np.ones((B, C), f), y)
k.forward(theta, dims, x)
k.loss_and_grad(theta, dims, x, y, grad)
k.clip_by_global_norm(grad, 1.0)
for kind in (optim.SGD_KIND, optim.RMSPROP_KIND, optim.ADAM_KIND):
    k.optimizer_update(kind, optim.Adam().hyper(), 1, theta, grad, s1, s2)
print(json.dumps({"import_s": imported, "first_step_s": first,
                  "all_kernels_s": time.perf_counter() - t0}))
"""


def compile_times(cache_dir=None):
    """Seconds from ``import numpy`` to ``fastrnn.kernels`` imported, to the first float32
    ``train_step`` done and to every float32 kernel compiled, in a fresh process whose Numba cache
    is ``cache_dir`` (cold when empty; None: Numba's default, next to the sources)."""
    env = {"FASTRNN_NUMBA_CACHE": "1"}
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return run_child(COMPILE_CHILD, env=env)


MEMORY_CHILD = """
import json, sys, numpy as np
from fastrnn import bench
backend, dtype, data, threads = sys.argv[1:]
if backend == "torch":
    bench.import_torch(int(threads))
with np.load(data) as f:
    x, y = f["x"], f["y"]
model = bench.epoch_model(backend, dtype)
bench.train_epoch(backend, model, x[:bench.EPOCH_BATCH], y[:bench.EPOCH_BATCH])  # compile/load kernels
before, start_peak = bench.rss_mb("VmRSS"), bench.rss_mb("VmHWM")
reset = bench.reset_peak_rss()
bench.train_epoch(backend, model, x, y)
peak = bench.rss_mb("VmHWM")
print(json.dumps({"peak_rss_mb": max(start_peak, peak), "rss_before_epoch_mb": before,
                  "epoch_peak_rss_mb": peak if reset else None}))
"""


def rss_mb(field="VmHWM"):
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB, from ``/proc/self/status``.

    Unlike ``getrusage``'s ``ru_maxrss``, which Linux carries over ``fork`` + ``exec`` (a child
    of a 1 GB pytest process reports at least 1 GB), ``VmHWM`` belongs to this process image.
    """
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak_rss():
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); True if that worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def epoch_memory(backend, dtype, data, threads):
    """Resident memory (MiB) of a fresh process training one epoch on the ``x``, ``y`` arrays of
    the ``.npz`` file ``data`` after one warm-up batch: its peak, its RSS before the epoch, and the
    peak during the epoch alone. The child imports only what ``backend`` needs."""
    return run_child(MEMORY_CHILD, backend, dtype, data, threads)


# ------------------------------------------------------------------------------------------------
# machine
# ------------------------------------------------------------------------------------------------

def threading_layer():
    """Numba's threading layer (launches it with one tiny parallel kernel call if needed)."""
    import numba
    try:
        return numba.threading_layer()
    except ValueError:
        from . import kernels
        z = np.zeros((1, 1, 1), np.float32)
        kernels.rnn_forward(z, z[0], z[0], z[0, 0])
        return numba.threading_layer()


# environment variables that change the timings
ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
       "NUMBA_THREADING_LAYER", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
       "MKL_NUM_THREADS", "FASTRNN_FASTMATH", "FASTRNN_NUMBA_CACHE")


def run_info():
    """Threads, threading layer and the `ENV` variables set, for ``benchmark.extra_info``."""
    import numba
    info = {"numba_threads": numba.get_num_threads(), "threading_layer": threading_layer(),
            **{k: os.environ[k] for k in ENV if k in os.environ}}
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def gemm_peak(dtype, n=2048, repeats=5, seed=0):
    """GFLOP/s of the best of ``repeats`` ``np.matmul`` of two ``n x n`` matrices (2 n^3 FLOPs),
    with NumPy's BLAS as this process's environment configures it (threads,
    ``OPENBLAS_CORETYPE``): the report runs it in a clean subprocess (`measure_gemm_peak`)."""
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    c = a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def cpu():
    """``CPU: <model name>, <n> physical / <m> logical cores``."""
    name = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                 if line.startswith("model name")), platform.processor() or "unknown")
    try:
        import psutil
        cores = f"{psutil.cpu_count(logical=False)} physical / {os.cpu_count()} logical"
    except ImportError:
        cores = f"{os.cpu_count()} logical"
    return f"CPU: {name}, {cores} cores"


def machine():
    """Lines describing this machine and software for a report header (this process's threads,
    BLAS and environment)."""
    import numba
    import scipy
    blas = []
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, "
                f"{i['num_threads']} threads, {Path(i['filepath']).name})"
                for i in threadpool_info() if i["user_api"] == "blas"]
    except ImportError:
        pass
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}",
                f"numba {numba.__version__}", f"scipy {scipy.__version__}"]
    if "torch" in sys.modules:
        versions.append(f"torch {sys.modules['torch'].__version__}")
    info = run_info()
    env = ", ".join(f"{k}={os.environ[k]}" for k in ENV if k in os.environ) or "none set"
    return [cpu(),
            f"threads: numba {info['numba_threads']} ({info['threading_layer']} layer)"
            + (f", torch {info['torch_threads']}" if "torch_threads" in info else ""),
            "BLAS: " + ("; ".join(blas) or "unknown"),
            f"environment: {env}",
            "versions: " + ", ".join(versions)]


def _load():
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def _read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
# the interleaved side-by-side runner: one subprocess per backend
# ------------------------------------------------------------------------------------------------

def calibrate(fn, min_sample=0.05):
    """How many back-to-back calls of ``fn`` make a sample of about ``min_sample`` seconds."""
    fn()
    t0 = time.perf_counter()
    fn()
    return max(1, round(min_sample / max(time.perf_counter() - t0, 1e-9)))


def sample(fn, n, settle=0.1):
    """Seconds per call of ``fn`` over ``n`` back-to-back calls, after a ``settle`` second pause
    and one untimed call.

    The pause and the untimed call are there because the worker threads of the previous backend
    (OpenBLAS, OpenMP) spin for milliseconds after its last call and its data evicts the caches:
    measured here, numba's wide step took 60 ms right after a NumPy sample and 24 ms otherwise.
    """
    time.sleep(settle)
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def interleave(samplers, repeats, progress=None):
    """Run the zero-argument ``samplers`` (name -> callable returning seconds per call, one
    sample each) round-robin for ``repeats`` rounds, alternating the order (A B C, C B A, ...).
    Returns name -> seconds per call, one per round: sample ``i`` of two backends ran side by
    side, so their ratio cancels machine drift."""
    samples = {name: [] for name in samplers}
    for r in range(repeats):
        for name in (list(samplers) if r % 2 == 0 else list(samplers)[::-1]):
            samples[name].append(samplers[name]())
            if progress is not None:
                progress.update()
    return samples


def ratios(samples, backend, base):
    """Per-round ``base time / backend time`` (None if either backend is missing)."""
    if backend not in samples or base not in samples:
        return None
    return [b / a for a, b in zip(samples[backend], samples[base])]


def speedup(samples, backend, base):
    """Median over rounds of ``base time / backend time`` (None if either is missing)."""
    r = ratios(samples, backend, base)
    return None if r is None else statistics.median(r)


def quartiles(values):
    """``(q1, q3)`` of ``values`` (both the value itself for a single one)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


# Variables set on this project's machines and not on a user's: OPENBLAS_CORETYPE pins OpenBLAS to
# an older kernel (measured here: float32 GEMM capped at ~88 GFLOP/s where the CPU reaches ~400).
# Every subprocess of the report (each backend and the GEMM peak) runs without them.
MACHINE_ONLY_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def child_env(environ=None):
    """A benchmark subprocess's environment: ``environ`` (default: this process's) without the
    `MACHINE_ONLY_ENV` variables, otherwise unchanged."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k not in MACHINE_ONLY_ENV}


def blas_info():
    """The BLAS libraries loaded in this process (threadpoolctl): internal API, version,
    architecture (the kernel OpenBLAS chose), threads and file name."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{"internal_api": i.get("internal_api"), "version": i.get("version"),
             "architecture": i.get("architecture"), "num_threads": i.get("num_threads"),
             "file": Path(i.get("filepath", "?")).name}
            for i in threadpool_info() if i.get("user_api") == "blas"]


def describe_blas(libs):
    return "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']} kernels, "
                     f"{b['num_threads']} threads, {b['file']})" for b in libs) or "none loaded"


GEMM_CHILD = """
import json, sys
from fastrnn import bench
n, repeats = map(int, sys.argv[1:3])
peaks = {dt: bench.gemm_peak(dt, n, repeats) for dt in bench.DTYPES}
print(json.dumps({"gflops": peaks, "blas": bench.blas_info(), "n": n, "repeats": repeats}))
"""


def measure_gemm_peak(n=2048, repeats=5):
    """`gemm_peak` of each dtype in a fresh NumPy process without `MACHINE_ONLY_ENV` (as a user's
    machine runs it), with the BLAS that did it: ``{"gflops": {dtype: ...}, "blas": [...]}``."""
    return run_child(GEMM_CHILD, n, repeats)


BACKEND_CHILD = """
import json, sys
backend, threads = sys.argv[1], int(sys.argv[2])
if backend == "torch":
    try:
        import torch  # noqa: F401  first, before Numba's OpenMP starts (see fastrnn.bench.import_torch)
    except ImportError as e:
        print(json.dumps({"error": f"torch is not installed ({e})"}), flush=True)
        sys.exit(0)
from fastrnn import bench
bench.serve(backend, threads)
"""


def serve(backend, threads):
    """The loop of a `BackendProcess`: one JSON request a line on stdin, one JSON reply a line on
    stdout (anything else printed goes to stderr). Requests: ``{"prepare": [op, size, dtype],
    "min_sample": s}`` builds the inputs and the timed call of ``make_op`` and calibrates it (reply
    ``{"n": calls per sample}``); ``{"sample": settle}`` times one sample (reply ``{"seconds": s}``,
    per call). The first line sent is ``{"info": ...}``."""
    out, sys.stdout = sys.stdout, sys.stderr

    def reply(**message):
        out.write(json.dumps(message) + "\n")
        out.flush()

    info = {"backend": backend, "env": {k: os.environ[k] for k in ENV if k in os.environ}}
    if backend == "numba":
        import numba
        numba.set_num_threads(threads)
        info.update(threads=numba.get_num_threads(), threading_layer=threading_layer())
    elif backend == "torch":
        import_torch(threads)
        torch = sys.modules["torch"]
        info.update(threads=torch.get_num_threads(), version=torch.__version__)
    info["blas"] = blas_info()
    reply(info=info)
    fn = n = None
    for line in sys.stdin:
        request = json.loads(line)
        if "prepare" in request:
            op, size, dtype = request["prepare"]
            fn = make_op(op, backend, make_batch(SIZES[size], dtype))
            n = calibrate(fn, request["min_sample"])
            reply(n=n)
        else:
            reply(seconds=sample(fn, n, request["sample"]))


class ChildProcess:
    """A Python child that answers each request line on its stdin with one JSON line on its
    stdout; ``info`` is its first line. Its stderr is the caller's, so its errors show there."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        try:
            self.info = self._reply()
        except BaseException:
            self.close()
            raise

    def request(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} process exited (status {self.proc.wait()}); "
                               "its error is printed above")
        return json.loads(line)

    def close(self):
        """End the process (EOF on its stdin; killed if it has not exited after 60 s)."""
        try:
            self.proc.stdin.close()
        except OSError:                              # it exited already: a broken pipe
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class BackendProcess(ChildProcess):
    """One backend in its own Python process (`serve`), started with `child_env`: a peer never
    runs with settings made for another backend, nor in a process another backend's threads or
    libraries (libgomp, OpenBLAS) have been through. ``info`` is its first reply; it holds
    ``"error"`` when the backend cannot run (torch not installed)."""

    def __init__(self, backend, threads):
        self.backend = backend
        super().__init__(f"{backend} benchmark",
                         [sys.executable, "-c", BACKEND_CHILD, backend, str(threads)], child_env())
        self.info = self.info.get("info", self.info)

    def ask(self, **request):
        return self.request(json.dumps(request))

    def prepare(self, op, size, dtype, min_sample=0.05):
        return self.ask(prepare=[op, size, dtype], min_sample=min_sample)["n"]

    def sample(self, settle=0.1):
        return self.ask(sample=settle)["seconds"]


def start_backends(backends, threads=None):
    """`BackendProcess` of each backend that can run: ``(processes, {backend: why not})``."""
    if threads is None:
        import numba
        threads = numba.get_num_threads()
    procs, missing = {}, {}
    try:
        for b in backends:
            p = BackendProcess(b, threads)
            if "error" in p.info:
                missing[b] = p.info["error"]
                p.close()
            else:
                procs[b] = p
    except BaseException:
        for p in procs.values():
            p.close()
        raise
    return procs, missing


def run(ops, sizes, dtypes, procs, repeats, progress=None, min_sample=0.05, settle=0.1):
    """Interleaved timings of every (op, size, dtype) on the `BackendProcess` ``procs`` (name ->
    process); one result row per backend, in the order of ``procs``."""
    rows = []
    for op, size, dtype in itertools.product(ops, sizes, dtypes):
        if progress is not None:
            progress.set_description(f"{op} {size} {dtype}")
        for p in procs.values():
            p.prepare(op, size, dtype, min_sample)
        samples = interleave({b: (lambda p=p: p.sample(settle)) for b, p in procs.items()},
                             repeats, progress=progress)
        f = flops(op, SIZES[size])
        for b in procs:
            median = statistics.median(samples[b])
            row = {"op": op, "size": size, "dtype": dtype, "backend": b, "median_s": median,
                   "gflops": f / median / 1e9 if f else None, "samples": samples[b]}
            for base in ("torch", "numpy"):
                r = ratios(samples, b, base)
                row[f"vs_{base}"] = None if r is None else statistics.median(r)
                row[f"vs_{base}_iqr"] = None if r is None else quartiles(r)
            rows.append(row)
    return rows


def floors(rows, peaks):
    """``(description, value, minimum, holds)`` for each floor the rows can decide."""
    out = []
    for op, size, dtype, vs, minimum in FLOORS:
        row = next((r for r in rows if (r["op"], r["size"], r["dtype"], r["backend"])
                    == (op, size, dtype, "numba")), None)
        value = None if row is None else (
            row["gflops"] and 100 * row["gflops"] / peaks[dtype] if vs == "peak"
            else row[f"vs_{vs}"])
        if value is not None:
            what = "% of GEMM peak" if vs == "peak" else f"x vs {vs}"
            out.append((f"{op} {size} {dtype} numba {what}", value, minimum, value >= minimum))
    return out


class ImpossibleResult(ValueError):
    """A benchmark result that cannot be true: above the GEMM peak, or a repeated row."""


def percent_of_peak(row, peaks):
    """``row``'s GFLOP/s as a percentage of its dtype's GEMM peak (None without a FLOP count)."""
    return 100 * row["gflops"] / peaks[row["dtype"]] if row["gflops"] else None


def check_rows(rows, peaks):
    """Raise `ImpossibleResult` for a repeated (op, size, dtype, backend) row, or for a row above
    100% of its dtype's GEMM peak: no RNN step beats a large square GEMM on the same cores, so
    such a row means the peak ran under a cap (``OPENBLAS_CORETYPE``) or a FLOP count is wrong."""
    seen = set()
    for r in rows:
        key = (r["op"], r["size"], r["dtype"], r["backend"])
        if key in seen:
            raise ImpossibleResult(f"the results hold the row {' '.join(key)} twice")
        seen.add(key)
        pct = percent_of_peak(r, peaks)
        if pct is not None and pct > 100:
            raise ImpossibleResult(
                f"{' '.join(key)}: {r['gflops']:.1f} GFLOP/s is {pct:.0f}% of the {r['dtype']} "
                f"GEMM peak ({peaks[r['dtype']]:.1f} GFLOP/s), which is impossible: the peak was "
                "measured under a cap (OPENBLAS_CORETYPE?) or the FLOP count is wrong. "
                "No report written.")


def report(rows, peaks, header, compile_s=None, gemm=None):
    """The Markdown report; raises `ImpossibleResult` instead of writing an impossible one
    (see `check_rows`; no table line may appear twice either). ``gemm``: `measure_gemm_peak`'s
    result, for the peak's description."""
    check_rows(rows, peaks)
    how = "np.matmul 2048^3, best of 5"
    if gemm is not None:
        how = (f"np.matmul {gemm['n']}^3, best of {gemm['repeats']}, in a fresh process without "
               f"{' / '.join(MACHINE_ONLY_ENV)}; BLAS {describe_blas(gemm['blas'])}")
    lines = ["# fastrnn benchmark", "", *[f"- {h}" for h in header],
             f"- float GEMM peak ({how}): "
             + ", ".join(f"{dt} {p:.1f} GFLOP/s" for dt, p in peaks.items()), "",
             ("Times are medians over interleaved rounds; speed-ups are medians of per-round "
              "ratios (other backend's time / this backend's time). FLOPs count matrix products "
              "only (2mnk); see `fastrnn/bench.py`."), "",
             ("The spread is the interquartile range of a backend's rounds over their median: large "
              "values mean other processes disturbed the run."), "",
             ("| op | size | dtype | backend | median ms | spread | vs torch | vs numpy | GFLOP/s "
              "| % GEMM peak |"),
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        q1, q3 = quartiles(r["samples"])
        lines.append(f"| {r['op']} | {r['size']} | {r['dtype']} | {r['backend']} | "
                     f"{1e3 * r['median_s']:.3f} | {100 * (q3 - q1) / r['median_s']:.0f}% | "
                     f"{_fmt(r['vs_torch'], '.2f')} | {_fmt(r['vs_numpy'], '.2f')} | "
                     f"{_fmt(r['gflops'], '.2f')} | {_fmt(percent_of_peak(r, peaks), '.1f')} |")
    checks = floors(rows, peaks)
    if compile_s:
        checks += [("compile: all float32 kernels, cold cache (s)", compile_s["cold"], 10.0,
                    compile_s["cold"] <= 10.0),
                   ("compile: first float32 step, warm cache (s)", compile_s["warm"], 1.0,
                    compile_s["warm"] <= 1.0)]
    if checks:
        lines += ["", "## Speed floors", "", "| floor | measured | required | holds |",
                  "|---|---:|---:|---|"]
        for what, value, minimum, holds in checks:
            bound = f"<= {minimum:g}" if what.startswith("compile") else f">= {minimum:g}"
            lines.append(f"| {what} | {value:.2f} | {bound} | {'yes' if holds else '**no**'} |")
    table = [line for line in lines if line.startswith("|")]
    repeated = sorted({line for line in table if table.count(line) > 1})
    if repeated:
        raise ImpossibleResult(f"the report would repeat the table line(s) {repeated}")
    return "\n".join(lines) + "\n"


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def _duration(seconds):
    """``0.445 ms``, ``53.8 ms``, ``1.21 s``: three significant digits."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    ms = 1e3 * seconds
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.3g} ms"


def plot(rows, path):
    """Bar charts of speed-ups per (op, size, dtype): one panel per baseline (torch, numpy) that
    was run, one bar per other backend, log scale. Each bar: the median of the per-round ratios,
    its interquartile range as an error bar, labelled with the ratio and the backend's median
    time; each group names the baseline's median time. Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    configs = list(dict.fromkeys((r["op"], r["size"], r["dtype"]) for r in rows))
    value = {(r["op"], r["size"], r["dtype"], r["backend"]): r for r in rows}
    bases = [b for b in ("torch", "numpy") if b in backends and len(backends) > 1]
    rounds = max(len(r["samples"]) for r in rows)
    fig = Figure(figsize=(max(8, 1.3 * len(configs)), 1 + 4 * max(1, len(bases))),
                 layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"fastrnn benchmark: speed-up of each backend over a baseline (higher is faster), "
                 f"{rounds} interleaved rounds\nbar = median of the per-round ratios, error bar = "
                 "interquartile range of the ratios\nlabel = speed-up and the backend's median "
                 "time per call", fontsize=9)
    for k, base in enumerate(bases):
        ax = fig.add_subplot(len(bases), 1, k + 1)
        others = [b for b in backends if b != base]
        width = 0.8 / len(others)
        for i, b in enumerate(others):
            xs = [j + (i - (len(others) - 1) / 2) * width for j in range(len(configs))]
            rs = [value[(*c, b)] for c in configs]
            mid = [r[f"vs_{base}"] for r in rs]
            err = [[m - r[f"vs_{base}_iqr"][0] for m, r in zip(mid, rs)],
                   [r[f"vs_{base}_iqr"][1] - m for m, r in zip(mid, rs)]]
            ax.bar(xs, mid, width, yerr=err, capsize=2, error_kw={"linewidth": 0.8}, label=b)
            for x, m, r in zip(xs, mid, rs):         # above the error bar, not across it
                ax.annotate(f"{m:.2g}x\n{_duration(r['median_s'])}", (x, r[f"vs_{base}_iqr"][1]),
                            xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=6)
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_xticks(range(len(configs)),
                      [f"{op}\n{size}\n{dtype}\n{base} {_duration(value[(op, size, dtype, base)]['median_s'])}"
                       for op, size, dtype in configs], fontsize=7)
        ax.set_yscale("log")
        ax.margins(y=0.25)
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(f"speed-up vs {base}\n({base} time / backend time, log scale)", fontsize=8)
        ax.set_xlabel(f"op, size, dtype, and {base}'s median time per call", fontsize=8)
        ax.legend(fontsize=8, title="backend", title_fontsize=8)
    fig.savefig(path, dpi=120)


def _choices(kind, allowed):
    def parse(text):
        values = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))  # no repeats
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {', '.join(map(repr, bad)) or repr(text)}; allowed: {', '.join(allowed)}")
        return values
    return parse


HOW = ("how: each backend runs in its own Python subprocess, started with this command's "
       "environment minus {stripped} (caps on OpenBLAS that some machines set; see below), so no "
       "backend runs with settings made for another or in a process another has been through. "
       "This process only asks for samples over a pipe: one process works at a time, round r "
       "takes one sample of each backend in turn (the order reversed every other round); a "
       "sample is a {settle:g} s pause, one untimed call, then n back-to-back calls (n set for "
       "about {min_sample:g} s).")


def main(argv=None, prog="fastrnn bench"):
    """``fastrnn bench``: interleaved side-by-side timings, each backend in its own subprocess;
    writes ``DIR/bench.md``, ``bench.png`` and ``bench.json``. Returns the exit code.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description="Time the training step of numba, numpy and torch side by side "
        "(each in its own subprocess, interleaved rounds, per-round ratios) and write "
        "DIR/bench.md, bench.png, bench.json.")
    for name, allowed, default in (("sizes", list(SIZES), list(SIZES)), ("dtypes", DTYPES, DTYPES),
                                   ("backends", BACKENDS, BACKENDS),
                                   ("ops", OPS, ["step", "step_lazy"])):
        parser.add_argument(f"--{name}", type=_choices(name[:-1], allowed), default=list(default),
                            help=f"comma-separated, any of {','.join(allowed)} "
                                 f"(default {','.join(default)})")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--compile", action="store_true",
                        help="also time a cold and a warm start in fresh processes")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                        help="output directory (default bench-results)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code
    if args.repeats < 1:
        print("fastrnn bench: --repeats must be >= 1", file=sys.stderr)
        return 2
    command = " ".join([prog, shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    from tqdm.auto import tqdm
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load = [_load()]
    gemm = measure_gemm_peak()                 # first, while no other benchmark process exists
    peaks = gemm["gflops"]
    min_sample, settle = 0.05, 0.1
    procs, missing = start_backends(args.backends)
    try:
        for b, why in missing.items():
            print(f"{why}: the {b} backend is skipped", file=sys.stderr)
        if not procs:
            print("fastrnn bench: no backend left to run", file=sys.stderr)
            return 2
        total = len(args.ops) * len(args.sizes) * len(args.dtypes) * len(procs) * args.repeats
        with tqdm(total=total, unit="sample", dynamic_ncols=True) as progress:
            rows = run(args.ops, args.sizes, args.dtypes, procs, args.repeats, progress,
                       min_sample, settle)
        infos = {b: p.info for b, p in procs.items()}
    finally:
        for p in procs.values():
            p.close()
    compile_s = None
    if args.compile:
        import tempfile
        with tempfile.TemporaryDirectory() as cache:
            compile_s = {"cold": compile_times(cache)["all_kernels_s"],
                         "warm": compile_times(cache)["first_step_s"]}
    load.append(_load())
    header = [f"date: {date}", f"command: `{command}`", cpu(),
              HOW.format(stripped=" and ".join(MACHINE_ONLY_ENV), settle=settle,
                         min_sample=min_sample),
              *backend_lines(infos),
              (f"load average (1/5/15 min, other processes share the machine): start {load[0]}, "
               f"end {load[1]}")]
    text = report(rows, peaks, header, compile_s, gemm)         # raises on an impossible result
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text)
    (args.out / "bench.json").write_text(json.dumps(
        {"header": header, "gemm_peak_gflops": peaks, "gemm": gemm, "backends": infos,
         "compile_s": compile_s, "rows": rows}, indent=1))
    written = ["bench.md", "bench.json"]
    try:
        plot(rows, args.out / "bench.png")
        written.append("bench.png")
    except ImportError:
        print("matplotlib is not installed: bench.png is not written", file=sys.stderr)
    print(f"wrote {', '.join(str(args.out / w) for w in written)}")
    return 0


def backend_lines(infos):
    """Report-header lines from the backends' `serve` infos: threads and BLAS of each process,
    the environment they ran with (and what was removed from it), versions."""
    import numba
    import scipy
    lines = []
    for b, info in infos.items():
        what = []
        if "threads" in info:
            what.append(f"{info['threads']} threads"
                        + (f" ({info['threading_layer']} layer)" if "threading_layer" in info else ""))
        if "version" in info:
            what.append(f"torch {info['version']}")
        what.append("BLAS " + describe_blas(info.get("blas", [])))
        lines.append(f"{b} process: " + ", ".join(what))
    env = next(iter(infos.values()))["env"] if infos else {}
    removed = [f"{k}={os.environ[k]}" for k in MACHINE_ONLY_ENV if k in os.environ]
    lines.append("environment of every process: "
                 + (", ".join(f"{k}={v}" for k, v in env.items()) or "none of the variables set "
                    "that change timings (fastrnn.bench.ENV)")
                 + (f"; removed from this command's: {', '.join(removed)}" if removed else ""))
    lines.append(f"versions: python {platform.python_version()}, numpy {np.__version__}, "
                 f"numba {numba.__version__}, scipy {scipy.__version__}")
    return lines


if __name__ == "__main__":          # python -m fastrnn.bench: the same as `fastrnn bench`
    sys.exit(main(prog="python -m fastrnn.bench"))
