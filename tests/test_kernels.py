"""The Numba kernels against the NumPy reference (STYLE.md points 7, 8, 12-14).

float64 kernels are compared with the float64 reference tightly; float32 kernels with the float64
reference run on the same float32-rounded inputs, with tolerances loosened along T (``helpers``).
"""

import inspect
import os
import subprocess
import sys

import hypothesis
import numba
import numpy as np
import pytest
from hypothesis import strategies as st

from fastrnn import kernels as K
from fastrnn import layout, optim
from fastrnn import reference as R

import helpers
from helpers import SHAPE_IDS, SHAPES, assert_close

F64 = np.float64


def as64(a):
    return np.asarray(a, dtype=F64).copy()


def model_batch(rng, shape, dtype, dense):
    """``(dims, theta, x, y)`` in ``dtype`` (dense inputs rounded to it too)."""
    dims = shape.dense_dims if dense else shape.dims
    theta = helpers.make_theta(rng, dims, dtype)
    if dense:
        x = helpers.make_dense(rng, shape.B, shape.T, shape.D, dtype)
    else:
        x = helpers.make_ids(rng, shape.B, shape.T, shape.V)
    return dims, theta, x, helpers.make_labels(rng, shape.B, shape.C)


def ref_x(x):
    return as64(x) if x.dtype.kind == "f" else x


# ------------------------------------------------------------------------------------------------
# the API is the same
# ------------------------------------------------------------------------------------------------

def test_same_names_and_signatures_as_the_reference():
    assert K.__all__
    for name in K.__all__:
        assert inspect.signature(getattr(K, name)) == inspect.signature(getattr(R, name)), name
    for name in ["rnn_forward", "rnn_backward", "softmax_xent", "forward", "loss_and_grad",
                 "clip_by_global_norm", "sgd_update", "rmsprop_update", "adam_update",
                 "optimizer_update", "train_step"]:
        assert name in K.__all__, name


# ------------------------------------------------------------------------------------------------
# the recurrent layer
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_rnn_forward(shape, dtype, masked, rng):
    x = helpers.make_dense(rng, shape.B, shape.T, shape.D, dtype)
    params = helpers.rnn_params(rng, shape.D, shape.H, dtype)
    mask = helpers.make_mask(rng, shape.B, shape.T) if masked else None
    hs = K.rnn_forward(x, *params, mask=mask)
    assert hs.dtype == dtype and hs.shape == (shape.T + 1, shape.B, shape.H)
    want = R.rnn_forward(as64(x), *map(as64, params), mask=mask)
    assert_close(hs, want, dtype, shape.T, "hs")


@pytest.mark.parametrize("truncated", [False, True], ids=["full", "k"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_rnn_backward(shape, dtype, masked, truncated, rng):
    x = helpers.make_dense(rng, shape.B, shape.T, shape.D, dtype)
    W_xh, W_hh, b_h = helpers.rnn_params(rng, shape.D, shape.H, dtype)
    mask = helpers.make_mask(rng, shape.B, shape.T) if masked else None
    k = shape.k if truncated else None
    hs = R.rnn_forward(as64(x), as64(W_xh), as64(W_hh), as64(b_h), mask=mask).astype(dtype)
    dh = rng.standard_normal((shape.B, shape.H)).astype(dtype)
    got = K.rnn_backward(dh, x, hs, W_xh, W_hh, mask=mask, bptt_truncate=k)
    want = R.rnn_backward(as64(dh), as64(x), as64(hs), as64(W_xh), as64(W_hh), mask=mask,
                          bptt_truncate=k)
    for name, g, w in zip(["dx", "dW_xh", "dW_hh", "db_h"], got, want):
        assert g.dtype == dtype, name
        assert_close(g, w, dtype, shape.T, name)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_softmax_xent(shape, dtype, rng):
    logits = (4 * rng.standard_normal((shape.B, shape.C))).astype(dtype)
    y = helpers.make_labels(rng, shape.B, shape.C)
    loss, d = K.softmax_xent(logits, y)
    want_loss, want_d = R.softmax_xent(as64(logits), y)
    assert np.asarray(loss).dtype == dtype and d.dtype == dtype
    assert_close(loss, want_loss, dtype, what="loss")
    assert_close(d, want_d, dtype, what="dlogits")


def test_softmax_xent_huge_logits(dtype):
    logits = np.array([[1e4, 0, -1e4], [3e4, 3e4 + 1, 3e4 - 1]], dtype)
    y = np.array([2, 0])
    loss, d = K.softmax_xent(logits, y)
    want_loss, want_d = R.softmax_xent(as64(logits), y)
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert_close(loss, want_loss, dtype, what="loss")
    assert_close(d, want_d, dtype, what="dlogits")


# ------------------------------------------------------------------------------------------------
# the classifier
# ------------------------------------------------------------------------------------------------

INPUTS = [("ids", False), ("ids_mask", True), ("dense", False)]


@pytest.mark.parametrize("inputs", [i[0] for i in INPUTS])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_forward(shape, dtype, inputs, rng):
    mask_zero = dict(INPUTS)[inputs]
    dims, theta, x, _ = model_batch(rng, shape, dtype, inputs == "dense")
    logits = K.forward(theta, dims, x, mask_zero=mask_zero)
    assert logits.dtype == dtype
    assert_close(logits, R.forward(as64(theta), dims, ref_x(x), mask_zero=mask_zero), dtype,
                 shape.T, "logits")


@pytest.mark.parametrize("truncated", [False, True], ids=["full", "k"])
@pytest.mark.parametrize("inputs", [i[0] for i in INPUTS])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_loss_and_grad(shape, dtype, inputs, truncated, rng):
    mask_zero = dict(INPUTS)[inputs]
    k = shape.k if truncated else None
    dims, theta, x, y = model_batch(rng, shape, dtype, inputs == "dense")
    grad = np.full_like(theta, np.nan)                      # every entry must be written
    loss, logits = K.loss_and_grad(theta, dims, x, y, grad, mask_zero=mask_zero, bptt_truncate=k)
    want_grad = np.empty(theta.size)
    want_loss, want_logits = R.loss_and_grad(as64(theta), dims, ref_x(x), y, want_grad,
                                             mask_zero=mask_zero, bptt_truncate=k)
    assert np.asarray(loss).dtype == dtype and logits.dtype == dtype and grad.dtype == dtype
    assert_close(loss, want_loss, dtype, shape.T, "loss")
    assert_close(logits, want_logits, dtype, shape.T, "logits")
    for name, g, w in zip(layout.Params._fields, layout.unpack(grad, dims),
                          layout.unpack(want_grad, dims)):
        if g is not None:
            assert_close(g, w, dtype, shape.T, f"d{name}")


def test_loss_and_grad_odd_layouts(rng, dtype):
    """Non-contiguous, read-only and F-ordered arguments give the same numbers; a strided ``grad``
    is written through."""
    shape = SHAPES[7]
    dims, theta, x, y = model_batch(rng, shape, dtype, dense=False)
    want = np.empty(theta.size, dtype)
    want_loss, _ = K.loss_and_grad(theta, dims, x, y, want, mask_zero=True, bptt_truncate=2)
    big = np.zeros(2 * theta.size, dtype)
    big[::2] = theta
    ro = big[::2]
    ro.setflags(write=False)
    xf = np.asfortranarray(x).astype(np.int32)
    gbig = np.full(2 * theta.size, 7.0, dtype)
    loss, _ = K.loss_and_grad(ro, dims, xf, list(y), gbig[::2], mask_zero=True, bptt_truncate=2)
    assert loss == want_loss
    np.testing.assert_array_equal(gbig[::2], want)
    assert np.all(gbig[1::2] == 7.0)


# ------------------------------------------------------------------------------------------------
# the fused training step
# ------------------------------------------------------------------------------------------------

TRAIN_SHAPES = [SHAPES[0], SHAPES[2], SHAPES[7]]          # all sizes 1, T=1, odd sizes with k < T


@pytest.mark.parametrize("lazy", [False, True], ids=["dense", "lazy"])
@pytest.mark.parametrize("opt_id", helpers.OPTIMIZER_IDS)
@pytest.mark.parametrize("shape", TRAIN_SHAPES, ids=[s.name for s in TRAIN_SHAPES])
@pytest.mark.parametrize("checked", [False, True], ids=["unchecked", "overflow-checked"])
def test_train_step(shape, opt_id, lazy, dtype, rng, checked):
    """Three steps; before each, the float64 reference starts from the kernel's current state.
    Checked: the first step checks every new value before writing (its bounds are unknown), the
    next ones find from the bounds that no overflow is possible; the numbers are the same."""
    opt = helpers.optimizers(clipnorm=0.05)[opt_id]       # small: clipping is active
    dims, theta, _, _ = model_batch(rng, shape, dtype, dense=False)
    grad, s1, s2 = helpers.state_buffers(theta)
    bounds = np.full(3, np.nan) if checked else None
    for step in (1, 2, 3):
        x = helpers.make_ids(rng, shape.B, shape.T, shape.V)
        y = helpers.make_labels(rng, shape.B, shape.C)
        ref = [as64(a) for a in (theta, grad, s1, s2)]
        out = K.train_step(theta, grad, s1, s2, step, dims, x, y, opt.kind, opt.hyper(),
                           mask_zero=True, bptt_truncate=shape.k, lazy=lazy, bounds=bounds)
        want = R.train_step(*ref, step, dims, x, y, opt.kind, opt.hyper(), mask_zero=True,
                            bptt_truncate=shape.k, lazy=lazy)
        assert type(out[0]) is float and type(out[1]) is int and type(out[2]) is float
        assert out[3] is True and want[3] is True
        if checked:                                   # upper bounds on every value
            tops = [float(np.abs(as64(a)).max()) for a in (theta, s1, s2)]
            assert all(b >= v for b, v in zip(bounds, tops)), (bounds, tops)
        assert out[2] > 0.05, "clipping is not active"
        assert out[1] == want[1], "n_correct"
        assert_close(out[0], want[0], dtype, shape.T, f"step {step} loss")
        assert_close(out[2], want[2], dtype, shape.T, f"step {step} grad_norm")
        for name, got, w in [("theta", theta, ref[0]), ("s1", s1, ref[2]), ("s2", s2, ref[3])]:
            assert got.dtype == dtype
            assert_close(got, w, dtype, shape.T, f"step {step} {name}")


@pytest.mark.parametrize("lazy", [False, True], ids=["dense", "lazy"])
def test_train_step_dense_inputs(dtype, lazy, rng):
    """Dense inputs (V=0): no embedding, ``lazy`` and ``mask_zero`` change nothing."""
    shape = SHAPES[7]
    opt = optim.AdamW(learning_rate=0.01, global_clipnorm=0.05)
    dims, theta, x, y = model_batch(rng, shape, dtype, dense=True)
    grad, s1, s2 = helpers.state_buffers(theta)
    ref = [as64(a) for a in (theta, grad, s1, s2)]
    out = K.train_step(theta, grad, s1, s2, 1, dims, x, y, opt.kind, opt.hyper(), mask_zero=True,
                       bptt_truncate=shape.k, lazy=lazy)
    want = R.train_step(*ref, 1, dims, as64(x), y, opt.kind, opt.hyper(), mask_zero=False,
                        bptt_truncate=shape.k, lazy=False)
    assert out[1] == want[1]
    assert_close(out[0], want[0], dtype, shape.T, "loss")
    assert_close(out[2], want[2], dtype, shape.T, "grad_norm")
    for name, got, w in [("theta", theta, ref[0]), ("s1", s1, ref[2]), ("s2", s2, ref[3])]:
        assert_close(got, w, dtype, shape.T, name)


def test_clip_by_global_norm(dtype, rng):
    g = rng.standard_normal(37).astype(dtype)
    for clipnorm in (0.5, 1e3):
        got, want = g.copy(), as64(g)
        norm = K.clip_by_global_norm(got, clipnorm)
        assert type(norm) is float
        assert_close(norm, R.clip_by_global_norm(want, clipnorm), dtype, what="norm")
        assert got.dtype == dtype
        assert_close(got, want, dtype, what=f"clipnorm={clipnorm}")


# ------------------------------------------------------------------------------------------------
# dtypes in, dtypes out (both backends)
# ------------------------------------------------------------------------------------------------

def test_output_dtype_is_input_dtype(backend, dtype, rng):
    s = SHAPES[7]
    x = helpers.make_dense(rng, s.B, s.T, s.D, dtype)
    W_xh, W_hh, b_h = helpers.rnn_params(rng, s.D, s.H, dtype)
    hs = backend.rnn_forward(x, W_xh, W_hh, b_h)
    assert hs.dtype == dtype
    dh = np.ones((s.B, s.H), dtype)
    for a in backend.rnn_backward(dh, x, hs, W_xh, W_hh, bptt_truncate=2):
        assert a.dtype == dtype
    loss, d = backend.softmax_xent(hs[-1], np.zeros(s.B, np.int64))
    assert np.asarray(loss).dtype == dtype and d.dtype == dtype
    for dense in (False, True):
        dims, theta, xs, y = model_batch(rng, s, dtype, dense)
        assert backend.forward(theta, dims, xs).dtype == dtype
        grad = np.zeros_like(theta)
        loss, logits = backend.loss_and_grad(theta, dims, xs, y, grad)
        assert np.asarray(loss).dtype == dtype and logits.dtype == dtype and grad.dtype == dtype
        s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
        opt = optim.Adam()
        backend.train_step(theta, grad, s1, s2, 1, dims, xs, y, opt.kind, opt.hyper())
        assert theta.dtype == s1.dtype == s2.dtype == dtype


def test_float32_tanh_saturates_to_exactly_one_where_it_rounds_to_one():
    """From |x| >= 9.010914 the float32 tanh is exactly +-1 (the correctly rounded value), as
    np.tanh gives it from 10 on: a saturated unit passes no gradient on either backend."""
    x = np.array([9.010914, 9.02, 9.5, 10.0, 20.0, 1e6, 3e38], np.float32)
    x = np.concatenate([x, -x])
    one = np.ones((1, 1), np.float32)
    zero = np.zeros((1, 1), np.float32)
    h = K.rnn_forward(x.reshape(-1, 1, 1), one, zero, zero[0])[1, :, 0]
    np.testing.assert_array_equal(h, np.sign(x))
    exact = np.tanh(x.astype(np.float64)).astype(np.float32)        # correctly rounded
    np.testing.assert_array_equal(h, exact)
    below = np.float32(9.010913)
    assert K.rnn_forward(below.reshape(1, 1, 1), one, zero, zero[0])[1, 0, 0] < 1


# ------------------------------------------------------------------------------------------------
# threads: the results are bit-identical for any thread count
# ------------------------------------------------------------------------------------------------

# 330 sequences: 5 chunks of 66 (kernels.chunks), so the threads share an odd number of chunks
THREADS_SHAPE = helpers.Shape("threads", B=330, T=17, D=4, H=6, V=13, C=3, k=5)


def run_everything(seed, dtype):
    """Every parallel kernel on one batch; returns a dict of results."""
    rng = np.random.default_rng(seed)
    s = THREADS_SHAPE
    out = {}
    x = helpers.make_dense(rng, s.B, s.T, s.D, dtype)
    W_xh, W_hh, b_h = helpers.rnn_params(rng, s.D, s.H, dtype)
    mask = helpers.make_mask(rng, s.B, s.T)
    out["hs"] = K.rnn_forward(x, W_xh, W_hh, b_h, mask)
    dh = rng.standard_normal((s.B, s.H)).astype(dtype)
    for name, a in zip(["dx", "dW_xh", "dW_hh", "db_h"],
                       K.rnn_backward(dh, x, out["hs"], W_xh, W_hh, mask, bptt_truncate=s.k)):
        out[name] = a
    dims, theta, ids, y = model_batch(rng, s, dtype, dense=False)
    out["logits"] = K.forward(theta, dims, ids, mask_zero=True)
    grad = np.empty_like(theta)
    out["loss"] = K.loss_and_grad(theta, dims, ids, y, grad, mask_zero=True, bptt_truncate=s.k)[0]
    out["grad"] = grad
    for lazy in (False, True):
        t, (g, s1, s2) = theta.copy(), helpers.state_buffers(theta)
        opt = optim.AdamW(learning_rate=0.01, global_clipnorm=0.1)
        for step in (1, 2):
            K.train_step(t, g, s1, s2, step, dims, ids, y, opt.kind, opt.hyper(), mask_zero=True,
                         bptt_truncate=s.k, lazy=lazy)
        out[f"theta lazy={lazy}"], out[f"s2 lazy={lazy}"] = t, s2
    return out


def test_the_batch_partition_depends_on_the_batch_size_only():
    assert [K.chunks(B) for B in (1, 2, 16, 128, 191, 192, 256, 511, 512, 10**6)] == [1, 2, 2, 2,
                                                                                   2, 3, 4, 7,
                                                                                   8, 8]


def test_one_and_two_threads_give_identical_bits(num_threads, dtype):
    num_threads(1)
    one = run_everything(3, dtype)
    num_threads(2)
    two = run_everything(3, dtype)
    for name in one:
        np.testing.assert_array_equal(two[name], one[name], err_msg=name)


def test_any_thread_count_gives_identical_bits():
    helpers.assert_same_bits_for_1_to_5_threads("test_kernels", "run_everything", 3)


# ------------------------------------------------------------------------------------------------
# end to end: 20 training steps from one seed on both backends
# ------------------------------------------------------------------------------------------------

def train(backend, dtype, opt, dense, mask_zero, k, lazy, n_steps=20, seed=42):
    rng = np.random.default_rng(seed)
    s = helpers.Shape("train", B=8, T=12, D=4, H=6, V=15, C=3, k=k)
    dims = s.dense_dims if dense else s.dims
    theta = helpers.make_theta(rng, dims, dtype, scale=0.3)
    grad, s1, s2 = helpers.state_buffers(theta)
    batches = [((helpers.make_dense(rng, s.B, s.T, s.D, dtype) if dense
                 else helpers.make_ids(rng, s.B, s.T, s.V)), helpers.make_labels(rng, s.B, s.C))
               for _ in range(2)]
    losses = []
    for step in range(1, n_steps + 1):
        x, y = batches[step % 2]                         # two batches, cycled: the loss goes down
        loss, *_ = backend.train_step(theta, grad, s1, s2, step, dims, x, y, opt.kind,
                                        opt.hyper(), mask_zero=mask_zero, bptt_truncate=k,
                                        lazy=lazy)
        losses.append(loss)
    return np.array(losses), theta


TRAINING_RUNS = {
    "adam_ids_mask_k3_clip": (optim.Adam(learning_rate=0.02, global_clipnorm=1.0), False, True, 3,
                              False),
    "adamw_ids_lazy": (optim.AdamW(learning_rate=0.02, weight_decay=0.05), False, True, None, True),
    "sgd_momentum_dense": (optim.SGD(learning_rate=0.1, momentum=0.9), True, False, None, False),
    "rmsprop_ids_k5": (optim.RMSprop(learning_rate=0.005), False, False, 5, False),
}


@pytest.mark.parametrize("run", list(TRAINING_RUNS))
def test_twenty_steps_same_on_both_backends(run, dtype):
    opt, dense, mask_zero, k, lazy = TRAINING_RUNS[run]
    losses_np, theta_np = train(R, dtype, opt, dense, mask_zero, k, lazy)
    losses_nb, theta_nb = train(K, dtype, opt, dense, mask_zero, k, lazy)
    assert losses_np[-2:].sum() < 0.8 * losses_np[:2].sum(), "no learning: the comparison is vacuous"
    # float64: rtol 1e-10 (measured max diff ~2e-15); float32: rtol 1e-4 (measured ~2e-7)
    assert_close(losses_nb, losses_np, dtype, what="losses")
    assert_close(theta_nb, theta_np, dtype, what="final theta")


# ------------------------------------------------------------------------------------------------
# lazy and dense embedding updates
# ------------------------------------------------------------------------------------------------

def test_lazy_and_dense_updates_differ_as_defined(backend, dtype):
    """Step 1 sees rows {1..6}, step 2 only {1, 2, 3}: rows 4..6 have Adam momentum but no gradient
    at step 2; rows 7..9 never occur. Lazy: rows outside the batch keep parameters and state.
    Dense: rows 4..6 move (m != 0) with m, v decayed; rows 7..9 stay (m = v = 0), except under AdamW
    where the decay moves every row."""
    V, D, H, C = 10, 3, 4, 2
    dims = (V, D, H, C)
    rng = np.random.default_rng(9)
    theta0 = helpers.make_theta(rng, dims, dtype)
    batches = [(np.array([[1, 2, 3], [4, 5, 6]]), np.array([0, 1])),
               (np.array([[1, 2, 3], [3, 2, 1]]), np.array([1, 0]))]
    E = slice(0, V * D)

    def run(opt, lazy):
        theta = theta0.copy()
        grad, s1, s2 = helpers.state_buffers(theta)
        snap = []
        for step, (x, y) in enumerate(batches, 1):
            backend.train_step(theta, grad, s1, s2, step, dims, x, y, opt.kind, opt.hyper(),
                               lazy=lazy)
            snap.append([a[E].reshape(V, D).copy() for a in (theta, s1, s2)])
        return snap, theta

    adam = optim.Adam(learning_rate=0.01)
    (l1, l2), lazy_theta = run(adam, True)
    (d1, d2), dense_theta = run(adam, False)
    # step 1: rows 7..9 (and 0) have zero state: both modes leave them; the rest is identical
    for a, b in zip(l1, d1):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(l1[0][[0, 7, 8, 9]], theta0[E].reshape(V, D)[[0, 7, 8, 9]])
    # step 2, lazy: rows 4..6 keep parameters, m and v of step 1
    for a, b, name in zip(l2, l1, ["theta", "m", "v"]):
        np.testing.assert_array_equal(a[4:], b[4:], err_msg=f"lazy {name}")
        assert np.abs(a[1:4] - b[1:4]).max() > 0, f"lazy {name}: rows in the batch must move"
    # step 2, dense: rows 4..6 move, their m and v decay by beta_1 and beta_2
    assert np.abs(d2[0][4:7] - d1[0][4:7]).min() > 1e-5
    assert_close(d2[1][4:7], adam.beta_1 * d1[1][4:7], dtype, what="dense m")
    assert_close(d2[2][4:7], adam.beta_2 * d1[2][4:7], dtype, what="dense v")
    np.testing.assert_array_equal(d2[0][7:], d1[0][7:])
    # the rest of the model is updated the same way in both modes
    assert_close(lazy_theta[V * D:], dense_theta[V * D:], dtype, what="non-embedding parameters")

    adamw = optim.AdamW(learning_rate=0.01, weight_decay=0.5)
    (_, l2w), _ = run(adamw, True)
    (_, d2w), _ = run(adamw, False)
    E0 = theta0[E].reshape(V, D)
    np.testing.assert_array_equal(l2w[0][7:], E0[7:])
    assert_close(d2w[0][7:], E0[7:] * (1 - 0.01 * 0.5) ** 2, dtype, what="AdamW decay, dense")


# ------------------------------------------------------------------------------------------------
# a cached kernel as the first call of a fresh process
# ------------------------------------------------------------------------------------------------

FIRST_CALL = """
import numpy as np
from fastrnn import kernels as K, optim
x = np.linspace(-1.0, 1.0, 12)
p, g, s1, s2 = x.copy(), x[::-1].copy(), np.zeros(12), np.zeros(12)
K.optimizer_update(optim.ADAM_KIND, optim.Adam().hyper(), 1, p, g, s1, s2)
print(repr(float(p[0])))
"""


@pytest.mark.skipif(not K.CACHE, reason="needs the on-disk kernel cache (FASTRNN_NUMBA_CACHE)")
def test_optimizer_update_from_cache_in_a_fresh_process():
    """optimizer_update's entry point is not parallel but calls parallel helpers; when such a function
    is loaded from the cache as the first kernel of a process, Numba may not have started its
    threading layer and the call segfaults (numba/numba#8578). It did with the kernels of commit
    63d1553. The other wrappers call numba.get_num_threads(), which starts the layer."""
    numba.get_num_threads()          # starts the threading layer: keeps *this* process from crashing
    p, g, s1, s2 = np.linspace(-1.0, 1.0, 12), np.linspace(1.0, -1.0, 12), np.zeros(12), np.zeros(12)
    K.optimizer_update(optim.ADAM_KIND, optim.Adam().hyper(), 1, p, g, s1, s2)   # compile + cache
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"exit code {out.returncode}: {out.stderr[-400:]}"
    assert float(out.stdout) == p[0]


# ------------------------------------------------------------------------------------------------
# no kernel reads memory that has been freed
# ------------------------------------------------------------------------------------------------

FREED_MEMORY = """
import numpy as np
from fastrnn import kernels as K, layout, optim, reference as R
rng = np.random.default_rng(0)
for lazy in (False, True):
    for dims, x in (((11, 3, 4, 2), rng.integers(0, 11, (5, 6))),
                    ((0, 3, 4, 2), rng.standard_normal((5, 6, 3)))):
        theta = 0.3 * rng.standard_normal(layout.size(dims))
        y = rng.integers(0, 2, 5)
        runs = [[theta.copy(), np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)]
                for _ in range(2)]
        for step in range(1, 6):
            for M, (t, g, s1, s2) in zip((K, R), runs):
                M.train_step(t, g, s1, s2, step, dims, x, y, optim.ADAM_KIND, optim.Adam().hyper(),
                             lazy=lazy)
        np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-10, atol=1e-12)
print("same")
"""


def test_no_kernel_reads_freed_memory():
    """glibc overwrites freed memory at once under MALLOC_PERTURB_, so a kernel that read an array
    after Numba had freed it gives wrong numbers here, not only now and then. The training step
    did, before it kept its scratch alive past the optimizer update (the update read its
    constants from freed memory, and the first checkpoint of a resumed run held NaN)."""
    out = subprocess.run([sys.executable, "-c", FREED_MEMORY], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "MALLOC_PERTURB_": "165"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "same"


# ------------------------------------------------------------------------------------------------
# property test over shapes
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@hypothesis.settings(max_examples=25, deadline=None, database=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(B=st.integers(1, 6), T=st.integers(1, 9), D=st.integers(1, 5),
                  H=st.integers(1, 6), V=st.integers(0, 9), C=st.integers(2, 4),
                  k=st.none() | st.integers(1, 10), mask_zero=st.booleans(),
                  seed=st.integers(0, 2**32 - 1))
def test_property_loss_and_grad_backends_agree(B, T, D, H, V, C, k, mask_zero, seed):
    rng = np.random.default_rng(seed)
    V = 0 if V == 1 else V                                   # 0 = dense inputs; ids need V >= 2
    dims = (V, D, H, C)
    theta = helpers.make_theta(rng, dims)
    x = helpers.make_ids(rng, B, T, V) if V else helpers.make_dense(rng, B, T, D)
    y = helpers.make_labels(rng, B, C)
    got, want = np.empty_like(theta), np.empty_like(theta)
    loss, logits = K.loss_and_grad(theta, dims, x, y, got, mask_zero=mask_zero, bptt_truncate=k)
    want_loss, want_logits = R.loss_and_grad(theta, dims, x, y, want, mask_zero=mask_zero,
                                             bptt_truncate=k)
    assert_close(loss, want_loss, F64, T, "loss")
    assert_close(logits, want_logits, F64, T, "logits")
    assert_close(got, want, F64, T, "grad")
