"""Optimizers: the update functions of both backends against closed forms written out here in scalar
Python maths, gradient clipping, and the configuration objects of ``fastrnn.optim``."""

import math

import numpy as np
import pytest

from fastrnn import layout, optim

import helpers
from helpers import assert_close

N_STEPS = [1, 5]

# ------------------------------------------------------------------------------------------------
# closed forms, one scalar parameter at a time; gs = [g_1, ..., g_N]
# ------------------------------------------------------------------------------------------------


def sgd_closed(p0, gs, lr, momentum):
    """p_N = p_0 - lr * sum_t buf_t with buf_t = sum_{j<=t} momentum^(t-j) g_j. Returns (p, buf_N)."""
    bufs = [sum(momentum ** (t - j) * gs[j] for j in range(t + 1)) for t in range(len(gs))]
    return p0 - lr * sum(bufs), bufs[-1]


def rmsprop_closed(p0, gs, lr, rho, eps):
    """s_t = (1 - rho) sum_{j<=t} rho^(t-j) g_j^2;  p -= lr g_t / sqrt(s_t + eps). Returns (p, s_N)."""
    p = p0
    for t in range(len(gs)):
        s = (1 - rho) * sum(rho ** (t - j) * gs[j] ** 2 for j in range(t + 1))
        p -= lr * gs[t] / math.sqrt(s + eps)
    return p, s


def adam_closed(p0, gs, lr, b1, b2, eps, wd=0.0, keras_eps=False):
    """Adam(W) unrolled: m_t = (1 - b1) sum_j b1^(t-j) g_j, v_t likewise with b2 and g^2;
    p_t = p_{t-1} (1 - lr wd) - lr (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps_t) with
    eps_t = eps, or eps / sqrt(1 - b2^t) in Keras' convention. Returns (p, m_N, v_N)."""
    p = p0
    for t in range(1, len(gs) + 1):
        m = (1 - b1) * sum(b1 ** (t - j) * gs[j - 1] for j in range(1, t + 1))
        v = (1 - b2) * sum(b2 ** (t - j) * gs[j - 1] ** 2 for j in range(1, t + 1))
        e = eps / math.sqrt(1 - b2 ** t) if keras_eps else eps
        p = p * (1 - lr * wd) - lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + e)
    return p, m, v


def closed_form(opt, p0, gs):
    """Closed form of ``opt`` (a ``fastrnn.optim`` object) for one scalar: (p, s1, s2)."""
    if isinstance(opt, optim.Adam):
        return adam_closed(p0, gs, opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon,
                           getattr(opt, "weight_decay", 0.0), opt.keras_epsilon)
    if isinstance(opt, optim.RMSprop):
        return (*rmsprop_closed(p0, gs, opt.learning_rate, opt.rho, opt.epsilon), 0.0)
    return (*sgd_closed(p0, gs, opt.learning_rate, opt.momentum), 0.0)


def closed_form_arrays(opt, p0, gs):
    """Elementwise ``closed_form`` over float64 arrays ``p0 (n,)`` and ``gs (N, n)``."""
    out = np.array([closed_form(opt, float(p0[i]), [float(g[i]) for g in gs])
                    for i in range(p0.size)])
    return out[:, 0], out[:, 1], out[:, 2]


# ------------------------------------------------------------------------------------------------
# each update function, N steps, both backends
# ------------------------------------------------------------------------------------------------

def named_update(backend, opt, step, p, g, s1, s2, rows=None):
    """Call the update function named after ``opt`` with its own keyword arguments."""
    if isinstance(opt, optim.Adam):
        backend.adam_update(p, g, s1, s2, step, opt.learning_rate, beta_1=opt.beta_1,
                            beta_2=opt.beta_2, epsilon=opt.epsilon,
                            weight_decay=getattr(opt, "weight_decay", 0.0),
                            keras_epsilon=opt.keras_epsilon, rows=rows)
    elif isinstance(opt, optim.RMSprop):
        backend.rmsprop_update(p, g, s1, opt.learning_rate, rho=opt.rho, epsilon=opt.epsilon,
                               rows=rows)
    else:
        backend.sgd_update(p, g, s1, opt.learning_rate, momentum=opt.momentum, rows=rows)


def via_optimizer_update(backend, opt, step, p, g, s1, s2, rows=None):
    backend.optimizer_update(opt.kind, opt.hyper(), step, p, g, s1, s2, rows=rows)


CALLS = {"named": named_update, "optimizer_update": via_optimizer_update}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("n_steps", N_STEPS)
@pytest.mark.parametrize("opt_id", helpers.OPTIMIZER_IDS)
def test_update_matches_closed_form(backend, opt_id, n_steps, call, dtype, rng):
    opt = helpers.optimizers()[opt_id]
    n = 23
    p0 = rng.standard_normal(n).astype(dtype)
    gs = (0.3 * rng.standard_normal((n_steps, n))).astype(dtype)
    gs[:, 0] = 0.0                                           # a parameter with zero gradient
    p, s1, s2 = p0.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
    for step, g in enumerate(gs, 1):
        CALLS[call](backend, opt, step, p, g, s1, s2)
    want_p, want_s1, want_s2 = closed_form_arrays(opt, p0, gs)
    assert p.dtype == s1.dtype == dtype
    assert_close(p, want_p, dtype, what=f"{opt_id} p after {n_steps}")
    assert_close(s1, want_s1, dtype, what=f"{opt_id} s1 after {n_steps}")
    if isinstance(opt, optim.Adam):
        assert_close(s2, want_s2, dtype, what=f"{opt_id} s2 after {n_steps}")
    assert np.abs(p - p0).max() > 1e-3, "the parameters did not move"


@pytest.mark.parametrize("opt_id", helpers.OPTIMIZER_IDS)
def test_lazy_rows_update_only_those_rows(backend, opt_id, dtype, rng):
    opt = helpers.optimizers()[opt_id]
    V, D, n_steps = 9, 4, 3
    rows = np.array([7, 0, 3, 4])
    p0 = rng.standard_normal((V, D)).astype(dtype)
    s0 = np.abs(rng.standard_normal((2, V, D))).astype(dtype)   # state from earlier steps
    gs = (0.3 * rng.standard_normal((n_steps, V, D))).astype(dtype)
    for call in CALLS.values():
        p, s1, s2 = p0.copy(), s0[0].copy(), s0[1].copy()
        for step, g in enumerate(gs, 1):
            call(backend, opt, step, p, g, s1, s2, rows=rows)
        others = np.setdiff1d(np.arange(V), rows)
        np.testing.assert_array_equal(p[others], p0[others])
        np.testing.assert_array_equal(s1[others], s0[0][others])
        if isinstance(opt, optim.Adam):
            np.testing.assert_array_equal(s2[others], s0[1][others])
        # the selected rows: the same as a dense update of those rows alone
        q, r1, r2 = p0[rows].copy(), s0[0][rows].copy(), s0[1][rows].copy()
        for step, g in enumerate(gs, 1):
            named_update(helpers.reference(), opt, step, q, np.ascontiguousarray(g[rows]), r1, r2)
        assert_close(p[rows], q, dtype, what="rows p")
        assert_close(s1[rows], r1, dtype, what="rows s1")
        if isinstance(opt, optim.Adam):
            assert_close(s2[rows], r2, dtype, what="rows s2")
        assert np.all(p[rows] != p0[rows]), "a selected row did not move"


def test_first_adam_step_is_lr_times_sign(backend, dtype):
    """Bias correction exactly as Kingma & Ba: step 1 moves every parameter by lr * g / (|g| + eps)."""
    g = np.array([0.5, -2.0, 1e-3, 0.0], dtype)
    p, m, v = np.ones(4, dtype), np.zeros(4, dtype), np.zeros(4, dtype)
    backend.adam_update(p, g, m, v, 1, 0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    want = 1 - 0.1 * g.astype(float) / (np.abs(g.astype(float)) + 1e-8)
    assert_close(p, want, dtype, what="p")
    assert_close(m, 0.1 * g.astype(float), dtype, what="m")
    assert_close(v, 0.001 * g.astype(float) ** 2, dtype, what="v")


# ------------------------------------------------------------------------------------------------
# clipping
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("clipnorm", [0.5, 3.0, 100.0, math.inf])
def test_clip_by_global_norm(backend, dtype, clipnorm, rng):
    g0 = rng.standard_normal(50).astype(dtype) * 0.6            # norm ~ 4.2
    norm0 = math.sqrt(math.fsum(float(v) ** 2 for v in g0))
    g = g0.copy()
    norm = backend.clip_by_global_norm(g, clipnorm)
    assert type(norm) is float and g.dtype == dtype
    assert_close(norm, norm0, dtype, what="norm")
    if clipnorm >= norm0:
        np.testing.assert_array_equal(g, g0)                    # below the threshold: untouched
    else:
        assert_close(g, g0.astype(float) * clipnorm / norm0, dtype, what="clipped g")
        assert_close(np.linalg.norm(g.astype(float)), clipnorm, dtype, what="clipped norm")


def test_clip_zero_gradient(backend, dtype):
    g = np.zeros(5, dtype)
    assert backend.clip_by_global_norm(g, 1.0) == 0.0
    assert np.all(g == 0)


# ------------------------------------------------------------------------------------------------
# train_step = loss_and_grad + clip + update (lazy: embedding rows of the batch only)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lazy", [False, True], ids=["dense", "lazy"])
@pytest.mark.parametrize("opt_id", ["sgd_momentum", "rmsprop", "adamw"])
def test_train_step_composition(backend, opt_id, lazy, rng):
    opt = helpers.optimizers(clipnorm=0.2)[opt_id]
    dims = (8, 3, 4, 3)
    V, D = dims[:2]
    theta0 = helpers.make_theta(rng, dims)
    x, y = np.array([[0, 2, 5], [3, 5, 1]]), np.array([2, 0])
    theta, (grad, s1, s2) = theta0.copy(), helpers.state_buffers(theta0)
    loss, n_correct, norm, applied = backend.train_step(theta, grad, s1, s2, 1, dims, x, y,
                                                        opt.kind, opt.hyper(), mask_zero=True,
                                                        bptt_truncate=2, lazy=lazy)
    assert applied is True
    g = np.empty_like(theta0)
    want_loss, logits = helpers.reference().loss_and_grad(theta0, dims, x, y, g, mask_zero=True,
                                                          bptt_truncate=2)
    want_norm = math.sqrt(math.fsum(g ** 2))
    assert want_norm > 0.2                                       # clipping is active
    assert norm == pytest.approx(want_norm, rel=1e-12)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert n_correct == int((logits.argmax(axis=1) == y).sum())
    want = np.array(closed_form_arrays(opt, theta0, [g * 0.2 / want_norm])[0])
    if lazy:                                                   # rows 4, 6, 7 are not in x
        E0, Ew = theta0[:V * D].reshape(V, D), want[:V * D].reshape(V, D)
        Ew[[4, 6, 7]] = E0[[4, 6, 7]]
    assert_close(theta, want, np.float64, what="theta")
    # which embedding rows moved: rows 0 (masked) and 3 (beyond the truncation) are in x with zero
    # gradient, so only AdamW's decay moves them; rows 4, 6, 7 are not in x: AdamW's decay moves
    # them unless the update is lazy
    moved = (np.abs(layout.unpack(theta - theta0, dims).E).max(axis=1) > 0).tolist()
    if opt_id == "adamw":
        assert moved == [True] * 4 + [not lazy, True, not lazy, not lazy]
    else:
        assert moved == [False, True, True, False, False, True, False, False]


@pytest.mark.parametrize("lazy", [False, True], ids=["dense", "lazy"])
def test_train_step_with_non_finite_gradient_updates_nothing(backend, dtype, lazy):
    """A NaN in the parameters makes the gradient norm NaN: parameters and optimizer state stay as
    they were (bit for bit) and the NaN norm is returned for the caller to act on."""
    rng = np.random.default_rng(4)
    dims = (8, 3, 4, 3)
    theta = helpers.make_theta(rng, dims, dtype)
    layout.unpack(theta, dims).W_hy[1, 2] = np.nan
    grad = np.zeros_like(theta)
    s1, s2 = (np.abs(rng.standard_normal(theta.size)).astype(dtype) for _ in range(2))
    before = [a.copy() for a in (theta, s1, s2)]
    opt = optim.AdamW(global_clipnorm=1.0)
    loss, _, norm, applied = backend.train_step(theta, grad, s1, s2, 3, dims,
                                                np.array([[0, 2, 5], [3, 5, 1]]),
                                                np.array([2, 0]), opt.kind, opt.hyper(), lazy=lazy)
    assert math.isnan(norm) and math.isnan(loss) and applied is False
    for a, b, name in zip((theta, s1, s2), before, ["theta", "s1", "s2"]):
        np.testing.assert_array_equal(a, b, err_msg=name)


# ------------------------------------------------------------------------------------------------
# configuration objects
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, name", [
    (lambda: optim.SGD(learning_rate=0), "learning_rate"),
    (lambda: optim.SGD(learning_rate=-0.1), "learning_rate"),
    (lambda: optim.Adam(learning_rate=math.nan), "learning_rate"),
    (lambda: optim.Adam(learning_rate=math.inf), "learning_rate"),
    (lambda: optim.Adam(learning_rate="0.1"), "learning_rate"),
    (lambda: optim.SGD(momentum=1.0), "momentum"),
    (lambda: optim.SGD(momentum=-0.5), "momentum"),
    (lambda: optim.RMSprop(rho=1.0), "rho"),
    (lambda: optim.RMSprop(rho=math.nan), "rho"),
    (lambda: optim.RMSprop(epsilon=0.0), "epsilon"),
    (lambda: optim.Adam(beta_1=1.0), "beta_1"),
    (lambda: optim.Adam(beta_1=-0.1), "beta_1"),
    (lambda: optim.Adam(beta_2=1.5), "beta_2"),
    (lambda: optim.Adam(epsilon=-1e-8), "epsilon"),
    (lambda: optim.Adam(global_clipnorm=0.0), "global_clipnorm"),
    (lambda: optim.SGD(global_clipnorm=-1.0), "global_clipnorm"),
    (lambda: optim.AdamW(weight_decay=-0.01), "weight_decay"),
    (lambda: optim.AdamW(weight_decay=math.nan), "weight_decay"),
    (lambda: optim.AdamW(weight_decay=math.inf), "weight_decay"),
])
def test_config_validation(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_hyper_vector():
    h = optim.AdamW(learning_rate=0.003, weight_decay=0.02, beta_1=0.8, beta_2=0.95, epsilon=1e-6,
                    keras_epsilon=True, global_clipnorm=2.5).hyper()
    assert h.dtype == np.float64 and h.shape == (optim.N_HYPER,)
    assert (h[optim.LR], h[optim.BETA_1], h[optim.BETA_2], h[optim.EPSILON], h[optim.WEIGHT_DECAY],
            h[optim.CLIPNORM], h[optim.KERAS_EPSILON]) == (0.003, 0.8, 0.95, 1e-6, 0.02, 2.5, 1.0)
    assert optim.SGD(momentum=0.5).hyper()[optim.CLIPNORM] == math.inf   # no clipping
    assert optim.SGD(momentum=0.5).hyper()[optim.MOMENTUM] == 0.5
    h = optim.RMSprop(rho=0.7, epsilon=1e-5).hyper()
    assert (h[optim.RHO], h[optim.EPSILON], h[optim.WEIGHT_DECAY]) == (0.7, 1e-5, 0.0)
    assert optim.Adam().hyper()[optim.KERAS_EPSILON] == 0.0
    kinds = {type(o).__name__: o.kind for o in helpers.optimizers().values()}
    assert kinds == {"SGD": optim.SGD_KIND, "RMSprop": optim.RMSPROP_KIND, "Adam": optim.ADAM_KIND,
                     "AdamW": optim.ADAM_KIND}


def test_get():
    assert optim.get("adam") == optim.Adam()
    assert type(optim.get("AdamW")) is optim.AdamW
    assert optim.get("rmsprop") == optim.RMSprop() and optim.get("sgd") == optim.SGD()
    assert optim.get(None) == optim.Adam()
    opt = optim.SGD(0.5)
    assert optim.get(opt) is opt
    assert optim.Adam() != optim.AdamW(weight_decay=0.0)          # the class is part of equality


@pytest.mark.parametrize("opt_id", helpers.OPTIMIZER_IDS)
def test_config_round_trip(opt_id):
    opt = helpers.optimizers(clipnorm=1.5)[opt_id]
    config = opt.get_config()
    assert config["name"] == type(opt).__name__
    copy = dict(config)
    back = optim.get(config)
    assert config == copy, "get() must not modify the config dict"
    assert back == opt and back is not opt and type(back) is type(opt)
    np.testing.assert_array_equal(back.hyper(), opt.hyper())


def test_get_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        optim.get("adagrad")
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get({"name": "nadam", "learning_rate": 0.1})
    with pytest.raises(TypeError, match="optimizer must be"):
        optim.get(0.001)
    with pytest.raises(ValueError, match="learning_rate"):
        optim.get({"name": "adam", "learning_rate": -1})
