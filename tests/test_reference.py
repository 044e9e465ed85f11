"""The NumPy reference against first principles: finite differences, plain loops, closed forms.

This is the first link of the chain of trust (STYLE.md point 13): here the reference is checked
against definitions written out independently in this file; ``test_kernels.py`` then checks the
kernels against the reference.
"""

import ast
import inspect
import math
import subprocess
import sys

import numpy as np
import pytest

from fastrnn import layout
from fastrnn import reference as R

import helpers

# ------------------------------------------------------------------------------------------------
# independent definitions
# ------------------------------------------------------------------------------------------------


def late_steps(steps, k):
    """The steps whose state update gets the gradient: the last ``k`` of ``steps`` (all if None)."""
    return set(steps if k is None else steps[len(steps) - k:] if k < len(steps) else steps)


def naive_last_state(x_early, x_late, early, late, mask, k):
    """h_T of the tanh recurrence, row by row with a plain loop over time.

    ``early`` / ``late`` are ``(W_xh, W_hh, b_h)``; the last ``k`` state updates of each row (masked
    steps are no updates and do not count) use ``late`` and ``x_late``, the earlier ones ``early`` and
    ``x_early``. With ``early is late`` this is the ordinary forward pass.
    """
    B, T, _ = x_late.shape
    H = late[1].shape[0]
    out = np.zeros((B, H))
    for b in range(B):
        steps = [t for t in range(T) if mask is None or mask[b, t]]
        use_late = late_steps(steps, k)
        h = np.zeros(H)
        for t in steps:
            (W_xh, W_hh, b_h), xs = (late, x_late) if t in use_late else (early, x_early)
            h = np.array([math.tanh(sum(xs[b, t, d] * W_xh[d, j] for d in range(W_xh.shape[0]))
                                    + sum(h[i] * W_hh[i, j] for i in range(H)) + b_h[j])
                          for j in range(H)])
        out[b] = h
    return out


def naive_loss(theta_late, dims, x, y, mask_zero=False, k=None, theta_early=None):
    """Mean cross-entropy of the classifier, by plain loops (see ``naive_last_state``).

    The embedding rows / dense inputs of a step are read from the parameter set of that step, so the
    gradient with respect to ``theta_late`` (``theta_early`` held fixed) is the truncated gradient
    as the reference docstring defines it. Returns ``(loss, logits)``.
    """
    V, D, H, C = dims
    late = layout.unpack(theta_late, dims)
    early = late if theta_early is None else layout.unpack(theta_early, dims)
    if V:
        x_late, x_early = late.E[x], early.E[x]
        mask = (x != 0) if mask_zero else None
    else:
        x_late = x_early = x
        mask = None
    h = naive_last_state(x_early, x_late, early[1:4], late[1:4], mask, k)
    logits = h @ late.W_hy + late.b_y
    losses = []
    for b in range(len(y)):
        top = max(logits[b])
        lse = top + math.log(sum(math.exp(z - top) for z in logits[b]))
        losses.append(lse - logits[b, y[b]])
    return sum(losses) / len(y), logits


central_differences = helpers.central_differences


FD_RTOL, FD_ATOL = 1e-6, 1e-8          # central differences, eps=1e-5, float64, O(1) losses


def assert_fd(actual, fd, what):
    diff = float(np.max(np.abs(actual - fd)))
    np.testing.assert_allclose(actual, fd, rtol=FD_RTOL, atol=FD_ATOL,
                               err_msg=f"{what}: max abs diff {diff:.3e}")


def assert_blocks_close(grad, fd, dims, what):
    """Compare parameter by parameter so a failure names the parameter."""
    for name, a, b in zip(layout.Params._fields, layout.unpack(grad, dims), layout.unpack(fd, dims)):
        if a is not None:
            assert_fd(a, b, f"{what}: d{name}")


# ------------------------------------------------------------------------------------------------
# batches for the gradient checks (tiny sizes: every parameter is perturbed)
# ------------------------------------------------------------------------------------------------

CASES = {
    # name: (B, T, V, D, H, C, mask_zero, ids)
    "ids": (3, 4, 5, 2, 3, 2, False, [[0, 1, 2, 3], [4, 0, 0, 1], [2, 2, 4, 0]]),
    "ids_mask_left_pad": (3, 4, 5, 2, 3, 2, True, [[0, 0, 1, 2], [3, 4, 1, 2], [0, 0, 0, 4]]),
    "ids_mask_middle": (3, 5, 6, 2, 3, 3, True, [[1, 0, 2, 0, 3], [0, 4, 0, 0, 5], [2, 3, 4, 1, 2]]),
    "ids_mask_C3_repeats": (2, 4, 4, 3, 2, 3, True, [[0, 3, 3, 3], [1, 0, 1, 0]]),
    "ids_T1": (3, 1, 4, 2, 3, 2, False, [[0], [3], [1]]),
    "ids_mask_T1_C3": (3, 1, 4, 2, 3, 3, True, [[0], [3], [3]]),
    "dense": (3, 4, 0, 2, 3, 2, False, None),
    "dense_T1_C3": (2, 1, 0, 3, 2, 3, False, None),
}


def make_case(name, seed=5):
    B, T, V, D, H, C, mask_zero, ids = CASES[name]
    rng = np.random.default_rng(seed)
    dims = (V, D, H, C)
    theta = helpers.make_theta(rng, dims, scale=0.7)
    x = np.array(ids, dtype=np.int64) if V else helpers.make_dense(rng, B, T, D)
    y = helpers.make_labels(rng, B, C)
    y[0], y[-1] = 0, C - 1                                  # both ends of the label range
    return dims, theta, x, y, mask_zero


def present_rows(x, V, mask_zero):
    rows = set(np.unique(x).tolist())
    if mask_zero:
        rows.discard(0)
    return rows


# ------------------------------------------------------------------------------------------------
# loss and gradient of the whole classifier
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_logits_match_plain_loops(case):
    dims, theta, x, y, mask_zero = make_case(case)
    grad = np.empty_like(theta)
    loss, logits = R.loss_and_grad(theta, dims, x, y, grad, mask_zero=mask_zero)
    want_loss, want_logits = naive_loss(theta, dims, x, y, mask_zero)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(R.forward(theta, dims, x, mask_zero=mask_zero), want_logits,
                               rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(want_loss, rel=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_full_bptt_gradient_matches_finite_differences(case):
    dims, theta, x, y, mask_zero = make_case(case)
    grad = np.full_like(theta, np.nan)                      # every entry must be written
    R.loss_and_grad(theta, dims, x, y, grad, mask_zero=mask_zero)
    assert np.isfinite(grad).all()

    def loss():
        return R.loss_and_grad(theta, dims, x, y, np.empty_like(theta), mask_zero=mask_zero)[0]

    fd = central_differences(loss, theta)
    assert_blocks_close(grad, fd, dims, case)
    # every parameter takes part: its gradient is not identically zero
    for name, g in zip(layout.Params._fields, layout.unpack(grad, dims)):
        if name == "W_hh" and x.shape[1] == 1:
            assert np.all(g == 0), "T=1: h_0 = 0, so W_hh gets no gradient"
        elif g is not None:
            assert np.abs(g).max() > 1e-4, f"d{name} is zero"
    if dims[0]:
        gE = layout.unpack(grad, dims).E
        for v in range(dims[0]):
            if v not in present_rows(x, dims[0], mask_zero):
                assert np.all(gE[v] == 0), f"embedding row {v} is not in the batch but has a gradient"
            else:
                assert np.abs(gE[v]).max() > 0, f"embedding row {v} is in the batch but has no gradient"


def test_fd_check_itself_detects_a_wrong_gradient():
    """The FD comparison is sharp enough to see a 1e-5 error in one entry."""
    dims, theta, x, y, mask_zero = make_case("ids_mask_middle")
    grad = np.empty_like(theta)
    R.loss_and_grad(theta, dims, x, y, grad, mask_zero=mask_zero)
    fd = central_differences(
        lambda: R.loss_and_grad(theta, dims, x, y, np.empty_like(theta), mask_zero=mask_zero)[0], theta)
    grad[-1] += 1e-5
    with pytest.raises(AssertionError, match="db_y"):
        assert_blocks_close(grad, fd, dims, "perturbed")


def test_masked_token_zero_makes_the_sequence_shorter():
    """With mask_zero, ids ``[0, 0, a, b]`` and ``[a, 0, b]`` give the logits of ``[a, b]`` alone."""
    rng = np.random.default_rng(3)
    dims = (6, 2, 3, 2)
    theta = helpers.make_theta(rng, dims)
    short = R.forward(theta, dims, np.array([[4, 5]]), mask_zero=True)
    padded = R.forward(theta, dims, np.array([[0, 0, 4, 5], [4, 0, 5, 0], [0, 4, 0, 5]]),
                       mask_zero=True)
    np.testing.assert_allclose(padded, np.repeat(short, 3, axis=0), rtol=1e-14, atol=1e-15)
    unmasked = R.forward(theta, dims, np.array([[0, 0, 4, 5]]), mask_zero=False)
    assert np.abs(unmasked - short).max() > 1e-3             # without the mask, 0 is a real token
    empty = R.forward(theta, dims, np.array([[0, 0, 0]]), mask_zero=True)
    np.testing.assert_allclose(empty, layout.unpack(theta, dims).b_y[None], rtol=1e-15, atol=0)


# ------------------------------------------------------------------------------------------------
# truncated BPTT against its definition
# ------------------------------------------------------------------------------------------------

TRUNCATED_CASES = ["ids", "ids_mask_left_pad", "ids_mask_middle", "ids_mask_C3_repeats", "dense"]


@pytest.mark.parametrize("k", [1, 2, "T", "T+2"])
@pytest.mark.parametrize("case", TRUNCATED_CASES)
def test_truncated_gradient_matches_definition(case, k):
    """``bptt_truncate=k`` is the exact gradient with the parameters used before the last k updates of
    each sequence held constant: FD over the late parameter set of ``naive_loss``."""
    dims, theta, x, y, mask_zero = make_case(case)
    T = x.shape[1]
    k = {"T": T, "T+2": T + 2}.get(k, k)
    grad = np.full_like(theta, np.nan)
    loss, _ = R.loss_and_grad(theta, dims, x, y, grad, mask_zero=mask_zero, bptt_truncate=k)
    assert loss == pytest.approx(naive_loss(theta, dims, x, y, mask_zero)[0], rel=1e-12)

    late = theta.copy()
    fd = central_differences(lambda: naive_loss(late, dims, x, y, mask_zero, k, theta_early=theta)[0],
                             late)
    assert_blocks_close(grad, fd, dims, f"{case} k={k}")

    full = np.empty_like(theta)
    R.loss_and_grad(theta, dims, x, y, full, mask_zero=mask_zero)
    if k >= T:
        np.testing.assert_array_equal(grad, full, err_msg="k >= T must be full BPTT")
    elif k == 1:
        assert np.abs(grad - full).max() > 1e-4, "truncation to k=1 changed nothing"


def test_truncation_counts_only_unmasked_steps():
    """Row ``[a, 0, 0, b]`` with k=2 and mask_zero: both real tokens get a gradient (the zeros are no
    updates); without the mask the zeros are updates and ``a`` gets none."""
    rng = np.random.default_rng(11)
    dims = (5, 2, 3, 2)
    theta = helpers.make_theta(rng, dims)
    x, y = np.array([[3, 0, 0, 4]]), np.array([1])
    grad = np.empty_like(theta)
    R.loss_and_grad(theta, dims, x, y, grad, mask_zero=True, bptt_truncate=2)
    gE = layout.unpack(grad, dims).E
    assert np.abs(gE[3]).max() > 1e-4 and np.abs(gE[4]).max() > 1e-4
    assert np.all(gE[0] == 0)
    R.loss_and_grad(theta, dims, x, y, grad, mask_zero=False, bptt_truncate=2)
    gE = layout.unpack(grad, dims).E
    assert np.all(gE[3] == 0)
    assert np.abs(gE[0]).max() > 1e-4 and np.abs(gE[4]).max() > 1e-4


# ------------------------------------------------------------------------------------------------
# the recurrent layer on dense inputs with an explicit mask (d/dx included)
# ------------------------------------------------------------------------------------------------

LAYER_MASKS = {
    "none": None,
    "holes": [[True, False, True, True, False], [False, False, True, True, True],
              [True, True, True, True, True], [False, False, False, False, True]],
}


@pytest.mark.parametrize("k", [None, 1, 2, 5])
@pytest.mark.parametrize("mask_name", list(LAYER_MASKS))
def test_rnn_backward_matches_definition(mask_name, k):
    """FD over the late ``(x, W_xh, W_hh, b_h)`` of ``L = sum(w * h_T)`` against ``rnn_backward(w)``."""
    rng = np.random.default_rng(7)
    B, T, D, H = 4, 5, 2, 3
    x = helpers.make_dense(rng, B, T, D)
    params = helpers.rnn_params(rng, D, H, scale=0.8)
    mask = None if LAYER_MASKS[mask_name] is None else np.array(LAYER_MASKS[mask_name])
    w = rng.standard_normal((B, H))

    hs = R.rnn_forward(x, *params, mask=mask)
    dx, dW_xh, dW_hh, db_h = R.rnn_backward(w, x, hs, params[0], params[1], mask=mask,
                                            bptt_truncate=k)
    late_x, late = x.copy(), tuple(p.copy() for p in params)

    def L():
        return float(np.sum(w * naive_last_state(x, late_x, params, late, mask, k)))

    for name, got, v in [("dx", dx, late_x), ("dW_xh", dW_xh, late[0]), ("dW_hh", dW_hh, late[1]),
                         ("db_h", db_h, late[2])]:
        assert_fd(got, central_differences(L, v), f"mask={mask_name} k={k}: {name}")
    if mask is not None:
        assert np.all(dx[~mask] == 0), "masked steps have no input gradient"
    if k is not None:
        for b in range(B):
            steps = [t for t in range(T) if mask is None or mask[b, t]]
            for t in set(steps) - late_steps(steps, k):
                assert np.all(dx[b, t] == 0), f"row {b} step {t} is beyond the truncation"


# ------------------------------------------------------------------------------------------------
# forward pass
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", helpers.SHAPES[:5], ids=helpers.SHAPE_IDS[:5])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_rnn_forward_matches_per_row_loop(shape, masked):
    rng = np.random.default_rng(1)
    B, T, D, H = shape.B, shape.T, shape.D, shape.H
    x = helpers.make_dense(rng, B, T, D)
    W_xh, W_hh, b_h = helpers.rnn_params(rng, D, H)
    mask = helpers.make_mask(rng, B, T) if masked else None
    hs = R.rnn_forward(x, W_xh, W_hh, b_h, mask=mask)
    assert hs.shape == (T + 1, B, H) and hs.dtype == np.float64
    assert np.all(hs[0] == 0)
    for b in range(B):
        h = [0.0] * H
        for t in range(T):
            if mask is None or mask[b, t]:
                h = [math.tanh(sum(x[b, t, d] * W_xh[d, j] for d in range(D))
                               + sum(h[i] * W_hh[i, j] for i in range(H)) + b_h[j]) for j in range(H)]
            np.testing.assert_allclose(hs[t + 1, b], h, rtol=1e-13, atol=1e-15,
                                       err_msg=f"row {b} step {t}")


def test_hidden_state_is_carried_under_the_mask(rng):
    B, T, D, H = 5, 9, 3, 4
    x = helpers.make_dense(rng, B, T, D)
    params = helpers.rnn_params(rng, D, H)
    mask = helpers.make_mask(rng, B, T)
    assert (~mask).sum() >= 5
    hs = R.rnn_forward(x, *params, mask=mask)
    for b in range(B):
        for t in range(T):
            if mask[b, t]:
                assert np.abs(hs[t + 1, b] - hs[t, b]).max() > 1e-6, (b, t)
            else:
                np.testing.assert_array_equal(hs[t + 1, b], hs[t, b], err_msg=f"row {b} step {t}")
    # a row's states do not depend on the other rows
    alone = R.rnn_forward(x[2:3], *params, mask=mask[2:3])
    np.testing.assert_allclose(alone[:, 0], hs[:, 2], rtol=1e-14, atol=1e-16)


# ------------------------------------------------------------------------------------------------
# softmax cross-entropy
# ------------------------------------------------------------------------------------------------

def naive_xent(logits, y):
    B, C = logits.shape
    loss, d = 0.0, np.zeros((B, C))
    for b in range(B):
        e = [math.exp(z) for z in logits[b]]
        p = [v / sum(e) for v in e]
        loss -= math.log(p[y[b]]) / B
        for c in range(C):
            d[b, c] = (p[c] - (c == y[b])) / B
    return loss, d


@pytest.mark.parametrize("B,C", [(1, 2), (5, 2), (4, 3), (3, 7)])
def test_softmax_xent_matches_naive_formula(B, C):
    rng = np.random.default_rng(B * 10 + C)
    logits, y = 3 * rng.standard_normal((B, C)), helpers.make_labels(rng, B, C)
    loss, dlogits = R.softmax_xent(logits, y)
    want_loss, want_d = naive_xent(logits, y)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    np.testing.assert_allclose(dlogits, want_d, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-15)
    fd = central_differences(lambda: R.softmax_xent(logits, y)[0], logits)
    assert_fd(dlogits, fd, "dlogits")


def test_softmax_xent_is_stable_for_huge_logits():
    rng = np.random.default_rng(0)
    base, y = rng.standard_normal((4, 3)), np.array([0, 1, 2, 1])
    want_loss, want_d = naive_xent(base, y)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # no overflow anywhere
        for shift in (1e4, -1e4, 3e5):
            loss, d = R.softmax_xent(base + shift, y)
            assert loss == pytest.approx(want_loss, rel=1e-9), shift
            np.testing.assert_allclose(d, want_d, rtol=1e-7, atol=1e-12)
        loss, d = R.softmax_xent(np.array([[1e4, -1e4], [1e4, -1e4]]), np.array([0, 1]))
    assert loss == pytest.approx(1e4)                       # (0 + 2e4) / 2
    np.testing.assert_allclose(d, [[0, 0], [0.5, -0.5]], atol=1e-300)


def test_softmax_xent_float32_stays_float32():
    logits = np.array([[1e4, 0, -1e4], [0.5, 0.25, 0]], np.float32)
    loss, d = R.softmax_xent(logits, np.array([2, 0]))
    assert np.asarray(loss).dtype == np.float32 and d.dtype == np.float32
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert float(loss) == pytest.approx((2e4 + naive_xent(logits[1:].astype(float), [0])[0]) / 2,
                                        rel=1e-6)


# ------------------------------------------------------------------------------------------------
# independence of the oracle
# ------------------------------------------------------------------------------------------------

def test_reference_imports_nothing_from_kernels():
    tree = ast.parse(inspect.getsource(R))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = "." * node.level + (node.module or "")
            names = [a.name for a in node.names]
            assert "kernels" not in mod and "kernels" not in names and "numba" not in mod, mod
        elif isinstance(node, ast.Import):
            for a in node.names:
                assert "kernels" not in a.name and "numba" not in a.name, a.name
    code = ("import sys, fastrnn.reference\n"
            "bad = sorted(m for m in sys.modules if m.startswith('fastrnn.kernels'))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
