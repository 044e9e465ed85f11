"""The layer ops of ``fastrnn.reference.layers`` and ``fastrnn.reference.losses`` against finite
differences of their own forward functions, in float64 on tiny sizes; then whole ``Sequential``
stacks (``backend="numpy"``): the gradient ``model._loss_and_grad`` writes into ``model.grad``
against finite differences of the loss over ``model.theta``.

Tolerances: central differences with ``eps = 1e-6`` in float64 have a truncation error of about
``eps**2 * |f'''| ~ 1e-12`` and a rounding error of about ``1e-16 * |f| / eps ~ 1e-10`` for the
O(1) values here, so ``rtol = 1e-6, atol = 1e-8`` leaves a margin of two orders of magnitude and
still catches any wrong term (a wrong gradient is off by O(1e-2) or more; see
``test_fd_check_catches_a_wrong_gradient``).
"""

import numpy as np
import pytest

import helpers

from fastrnn import layers as L
from fastrnn import losses
from fastrnn.models import Sequential
from fastrnn.reference import layers as ref
from fastrnn.reference import losses as loss_ops

F64 = np.float64
EPS = 1e-6
RTOL, ATOL = 1e-6, 1e-8
B, T, D, H = 3, 4, 3, 2


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def numerical_gradient(f, a, eps=EPS):
    """Central differences of the scalar ``f()`` w.r.t. every entry of ``a`` (perturbed in place
    and put back)."""
    return helpers.central_differences(f, a, eps)


def assert_fd(actual, f, a, what):
    """``actual`` (the analytic gradient w.r.t. ``a``) against central differences of ``f``."""
    fd = numerical_gradient(f, a)
    actual = np.asarray(actual, F64)
    assert actual.shape == fd.shape, f"{what}: shape {actual.shape} != {fd.shape}"
    diff = float(np.abs(actual - fd).max()) if fd.size else 0.0
    np.testing.assert_allclose(actual, fd, rtol=RTOL, atol=ATOL,
                               err_msg=f"{what}: max abs diff {diff:.3e}")


def masks(T):
    """``(B + 1, T)``: a full row, left padding, right padding, a fully masked row (T >= 2), or
    for T = 1 real, real, masked, masked."""
    if T == 1:
        return np.array([[True], [True], [False], [False]])
    m = np.ones((4, T), bool)
    m[1, : T // 2] = False                      # left padding
    m[2, T - T // 2:] = False                   # right padding
    m[3] = False                                # fully masked
    return m


def rnn_weights(rng, D, H, activation):
    kernel = 0.7 * rng.standard_normal((D, H))
    recurrent = 0.5 * rng.standard_normal((H, H))
    bias = 0.3 * rng.standard_normal(H) + (0.4 if activation == "relu" else 0.0)
    return kernel, recurrent, bias


def final_state(hs, go_backwards):
    """The state after the last step of ``hs (B, T, H)`` (by sequence position): that of
    position ``T - 1``, or of position 0 with ``go_backwards``."""
    return hs[:, 0] if go_backwards else hs[:, -1]


def preactivations(x, hs, kernel, recurrent, bias, go_backwards, r):
    """``a_t (T, B, H)`` of ``simple_rnn_forward`` in processing order, from its states
    ``hs (B, T, H)`` by sequence position (the state before the first step is h_0 = 0)."""
    Tm = x.shape[1]
    out = []
    h = np.zeros_like(hs[:, 0])                                    # h_0
    for t in range(Tm):
        s = Tm - 1 - t if go_backwards else t
        h_in = h if r is None else h * r
        out.append(x[:, s] @ kernel + h_in @ recurrent + bias)
        h = hs[:, s]
    return np.array(out)


def assert_away_from_kink(a, mask, go_backwards, margin=1e-3):
    """relu: every real step's pre-activation is at least ``margin`` from 0, so eps = 1e-6
    perturbations (moving ``a`` by about 1e-6) never cross the kink."""
    m = mask if mask is not None else np.ones(a.shape[1::-1], bool)
    m = (m[:, ::-1] if go_backwards else m).T                # (T, B) processing order
    assert np.abs(a[m]).min() > margin, "pick another seed: a pre-activation is near 0"


# ---------------------------------------------------------------------------------------------
# the finite-difference check itself
# ---------------------------------------------------------------------------------------------

def test_fd_check_catches_a_wrong_gradient(rng):
    x = rng.standard_normal((B, D))
    kernel = rng.standard_normal((D, H))
    bias = rng.standard_normal(H)
    G = rng.standard_normal((B, H))
    f = lambda: float((G * np.tanh(ref.dense_forward(x, kernel, bias))).sum())   # noqa: E731
    dz = ref.activation_backward(G, np.tanh(ref.dense_forward(x, kernel, bias)), "tanh")
    _, dk, _ = ref.dense_backward(dz, x, kernel)
    assert_fd(dk, f, kernel, "right gradient")
    with pytest.raises(AssertionError):
        assert_fd(dk * (1 + 1e-2), f, kernel, "gradient 1% off")


# ---------------------------------------------------------------------------------------------
# SimpleRNN
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("recurrent_dropout", [False, True], ids=["no_rdrop", "rdrop"])
@pytest.mark.parametrize("per_step", [True, False], ids=["dhs_per_step", "dhs_last"])
@pytest.mark.parametrize("steps", [T, 1], ids=["T4", "T1"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn_backward_matches_finite_differences(rng, activation, go_backwards, masked,
                                                        steps, per_step, recurrent_dropout):
    """dx, dkernel, drecurrent_kernel, dbias of ``sum(G * hs)`` (every state, ``dhs (B, T, H)``)
    or ``sum(G * final state)`` (``dhs (B, H)``), with masks (left and right padding, a fully
    masked row), go_backwards, T = 1 and a recurrent dropout multiplier."""
    Bm = 4
    x = rng.standard_normal((Bm, steps, D))
    kernel, recurrent, bias = rnn_weights(rng, D, H, activation)
    mask = masks(steps) if masked else None
    r = None
    if recurrent_dropout:
        keep = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], bool)
        r = ref.dropout_forward(np.ones((Bm, H)), keep, 0.4)       # 0 or 1 / 0.6
    G = rng.standard_normal((Bm, steps, H) if per_step else (Bm, H))

    def loss():
        hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask, activation, go_backwards, r)
        return float((G * (hs if per_step else final_state(hs, go_backwards))).sum())

    hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask, activation, go_backwards, r)
    if activation == "relu":
        assert_away_from_kink(preactivations(x, hs, kernel, recurrent, bias, go_backwards, r),
                              mask, go_backwards)
    dx, dk, dr, db = ref.simple_rnn_backward(G, x, hs, kernel, recurrent, mask, activation,
                                             go_backwards, r)
    assert_fd(dx, loss, x, "dx")
    assert_fd(dk, loss, kernel, "dkernel")
    assert_fd(dr, loss, recurrent, "drecurrent_kernel")
    assert_fd(db, loss, bias, "dbias")
    if masked:                               # nothing reaches the inputs of masked steps
        assert not dx[~mask].any()


def test_simple_rnn_mask_carries_the_state_and_masked_row_stays_zero(rng):
    x = rng.standard_normal((4, T, D))
    kernel, recurrent, bias = rnn_weights(rng, D, H, "tanh")
    mask = masks(T)
    hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask)
    assert hs.shape == (4, T, H)
    assert not hs[3].any()                                         # fully masked row
    np.testing.assert_array_equal(hs[1, :T // 2], 0)               # left padding: h stays h_0
    last_real = T - T // 2 - 1                                     # right padding: carried
    np.testing.assert_array_equal(hs[2, last_real + 1], hs[2, last_real])
    np.testing.assert_array_equal(hs[2, T - 1], hs[2, last_real])
    # the masked step is skipped: rows 1 and 2 equal the unmasked run on their real steps
    full = ref.simple_rnn_forward(x[1:2, T // 2:], kernel, recurrent, bias)
    np.testing.assert_allclose(hs[1, -1], full[0, -1], rtol=1e-14, atol=0)
    np.testing.assert_allclose(hs[1, T // 2:], full[0], rtol=1e-14, atol=0)
    full = ref.simple_rnn_forward(x[2:3, :T - T // 2], kernel, recurrent, bias)
    np.testing.assert_allclose(hs[2, -1], full[0, -1], rtol=1e-14, atol=0)
    np.testing.assert_allclose(hs[2, :T - T // 2], full[0], rtol=1e-14, atol=0)


def test_go_backwards_is_the_forward_run_on_reversed_inputs(rng):
    x = rng.standard_normal((4, T, D))
    kernel, recurrent, bias = rnn_weights(rng, D, H, "tanh")
    mask = masks(T)
    hb = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask, go_backwards=True)
    hf = ref.simple_rnn_forward(x[:, ::-1], kernel, recurrent, bias, mask[:, ::-1])
    # hs is by sequence position: position s of x is position T - 1 - s of the reversed x
    np.testing.assert_array_equal(hb, hf[:, ::-1])
    np.testing.assert_array_equal(final_state(hb, True), final_state(hf, False))


def explicit_recurrence(x, kernel, recurrent, bias, mask, go_backwards, r):
    """The module docstring's tanh recurrence, one row and one step at a time: ``(states,
    final)``, ``states (B, T, H)`` with ``states[b, s]`` the state of row ``b`` after the step
    that read position ``s``, ``final (B, H)`` the state after the last step (h_0 = 0 for a row
    with no real step)."""
    Bm, Tm, _ = x.shape
    states = np.zeros((Bm, Tm, recurrent.shape[0]))
    final = np.zeros((Bm, recurrent.shape[0]))
    for b in range(Bm):
        h = np.zeros(recurrent.shape[0])                          # h_0
        order = range(Tm - 1, -1, -1) if go_backwards else range(Tm)
        for s in order:
            if mask is None or mask[b, s]:
                h_in = h if r is None else h * r[b]
                h = np.tanh(x[b, s] @ kernel + h_in @ recurrent + bias)
            states[b, s] = h
        final[b] = h
    return states, final


@pytest.mark.parametrize("recurrent_dropout", [False, True], ids=["no_rdrop", "rdrop"])
@pytest.mark.parametrize("steps", [T, 1], ids=["T4", "T1"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
def test_states_by_position_and_final_state(rng, go_backwards, masked, steps,
                                            recurrent_dropout):
    """``hs (B, T, H)`` is by sequence position in both directions; the final state is
    ``hs[:, -1]`` (forward) or ``hs[:, 0]`` (go_backwards); ``rnn_outputs`` returns it without
    ``return_sequences`` and, with it, the states in processing order, the final state last; a
    ``(B, H)`` ``dhs`` is the gradient of that final state only."""
    Bm = 4
    x = rng.standard_normal((Bm, steps, D))
    kernel, recurrent, bias = rnn_weights(rng, D, H, "tanh")
    mask = masks(steps) if masked else None
    r = None
    if recurrent_dropout:
        keep = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], bool)
        r = ref.dropout_forward(np.ones((Bm, H)), keep, 0.4)
    hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask, "tanh", go_backwards, r)
    states, final = explicit_recurrence(x, kernel, recurrent, bias, mask, go_backwards, r)
    assert hs.shape == (Bm, steps, H)
    np.testing.assert_allclose(hs, states, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(hs[:, 0] if go_backwards else hs[:, -1], final, rtol=1e-13,
                               atol=1e-15)
    if masked:
        assert not final[3].any()                                 # fully masked row: h_0
    y_last = ref.rnn_outputs(hs, mask, False, go_backwards)
    assert y_last.shape == (Bm, H)
    np.testing.assert_array_equal(y_last, hs[:, 0] if go_backwards else hs[:, -1])
    y_seq = ref.rnn_outputs(hs, mask, True, go_backwards)
    np.testing.assert_array_equal(y_seq, hs[:, ::-1] if go_backwards else hs)
    np.testing.assert_array_equal(y_seq[:, -1], y_last)           # the last step's output
    # dhs (B, H) for the final state = dhs (B, T, H), zero but at the final state's position
    g = rng.standard_normal((Bm, H))
    dhs = np.zeros((Bm, steps, H))
    dhs[:, 0 if go_backwards else -1] = g
    last = ref.simple_rnn_backward(g, x, hs, kernel, recurrent, mask, "tanh", go_backwards, r)
    seq = ref.simple_rnn_backward(dhs, x, hs, kernel, recurrent, mask, "tanh", go_backwards, r)
    for a, b, name in zip(last, seq, ("dx", "dkernel", "drecurrent", "dbias")):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=0, err_msg=name)
    np.testing.assert_array_equal(ref.rnn_outputs_backward(g, mask, False, go_backwards), g)


def truncated_forward(x, kernel, recurrent, bias, mask, activation, go_backwards, r, k, hs_const):
    """The docstring's definition of ``bptt_truncate=k`` made explicit: the states before the last
    ``k`` state updates of each row are the constants ``hs_const (B, T, H)`` (by sequence
    position, computed once, at the unperturbed weights), only the last ``k`` updates (masked
    steps not counted) are computed from the weights and inputs; masked steps among them carry
    the computed state. Returns ``hs (B, T, H)`` by sequence position."""
    Bm, Tm, _ = x.shape
    m = np.ones((Bm, Tm), bool) if mask is None else mask
    mp = m[:, ::-1] if go_backwards else m                         # processing order
    later = np.cumsum(mp[:, ::-1], axis=1)[:, ::-1]                # real steps at t .. T-1
    counted = mp & (later <= k)                                    # (B, T) the last k updates
    hs = np.zeros_like(hs_const)
    h = np.zeros_like(hs_const[:, 0])                              # h_0
    for t in range(Tm):
        s = Tm - 1 - t if go_backwards else t
        h_in = h if r is None else h * r
        a = x[:, s] @ kernel + h_in @ recurrent + bias
        new = np.tanh(a) if activation == "tanh" else np.maximum(a, 0)
        held = np.where(mp[:, t, None], hs_const[:, s], h)         # before the counted updates
        h = np.where(counted[:, t, None], new, held)
        hs[:, s] = h
    return hs


@pytest.mark.parametrize("per_step", [True, False], ids=["dhs_per_step", "dhs_last"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_bptt_truncate_matches_its_definition(rng, k, masked, go_backwards, per_step):
    """``bptt_truncate=k < T``: the exact gradient (finite differences) of the outputs with the
    states before the last ``k`` updates of each row held constant."""
    Tm, Bm = 6, 4
    x = rng.standard_normal((Bm, Tm, D))
    kernel, recurrent, bias = rnn_weights(rng, D, H, "tanh")
    mask = None
    if masked:
        mask = np.ones((Bm, Tm), bool)
        mask[1, :2] = False                 # left padding
        mask[2, [1, 4]] = False             # holes: one among the last k updates for k >= 2
        mask[3, 3:] = False                 # right padding
    r = ref.dropout_forward(np.ones((Bm, H)), rng.random((Bm, H)) > 0.3, 0.3)
    G = rng.standard_normal((Bm, Tm, H) if per_step else (Bm, H))
    hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask, "tanh", go_backwards, r)
    hs_const = hs.copy()

    def loss():
        ht = truncated_forward(x, kernel, recurrent, bias, mask, "tanh", go_backwards, r, k,
                               hs_const)
        return float((G * (ht if per_step else final_state(ht, go_backwards))).sum())

    # the definition's forward values are the real ones: only the gradient is truncated
    np.testing.assert_array_equal(truncated_forward(x, kernel, recurrent, bias, mask, "tanh",
                                                    go_backwards, r, k, hs_const), hs)
    grads = ref.simple_rnn_backward(G, x, hs, kernel, recurrent, mask, "tanh", go_backwards, r,
                                    bptt_truncate=k)
    full = ref.simple_rnn_backward(G, x, hs, kernel, recurrent, mask, "tanh", go_backwards, r)
    for g, a, name in zip(grads, (x, kernel, recurrent, bias), ("dx", "dkernel", "drecurrent",
                                                               "dbias")):
        assert_fd(g, loss, a, f"{name} (k={k})")
    assert not np.allclose(grads[1], full[1])          # the truncation did truncate


@pytest.mark.parametrize("k", [T, T + 3])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
def test_bptt_truncate_k_at_least_T_is_the_full_gradient(rng, k, go_backwards):
    x = rng.standard_normal((4, T, D))
    kernel, recurrent, bias = rnn_weights(rng, D, H, "tanh")
    mask = masks(T)
    G = rng.standard_normal((4, T, H))
    hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask, "tanh", go_backwards)
    full = ref.simple_rnn_backward(G, x, hs, kernel, recurrent, mask, "tanh", go_backwards)
    trunc = ref.simple_rnn_backward(G, x, hs, kernel, recurrent, mask, "tanh", go_backwards,
                                    bptt_truncate=k)
    for a, b in zip(trunc, full):
        np.testing.assert_array_equal(a, b)


def test_bptt_truncate_does_not_count_masked_steps(rng):
    """A row whose last steps are padding gets the same truncated gradient as the same row without
    the padding."""
    x = rng.standard_normal((1, 6, D))
    kernel, recurrent, bias = rnn_weights(rng, D, H, "tanh")
    mask = np.array([[True, True, True, True, False, False]])
    g = rng.standard_normal((1, H))
    hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask)
    padded = ref.simple_rnn_backward(g, x, hs, kernel, recurrent, mask, bptt_truncate=2)
    short = x[:, :4]
    hs_short = ref.simple_rnn_forward(short, kernel, recurrent, bias)
    plain = ref.simple_rnn_backward(g, short, hs_short, kernel, recurrent, bptt_truncate=2)
    np.testing.assert_allclose(padded[0][:, :4], plain[0], rtol=1e-14, atol=1e-15)
    for a, b in zip(padded[1:], plain[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# rnn_outputs, and the layer as a whole (outputs -> states -> weights)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("zero_masked", [False, True], ids=["carried", "zero_masked"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
def test_rnn_outputs_backward_matches_finite_differences(rng, return_sequences, go_backwards,
                                                         zero_masked):
    mask = masks(T)
    hs = rng.standard_normal((4, T, H))
    G = rng.standard_normal((4, T, H) if return_sequences else (4, H))
    loss = lambda: float((G * ref.rnn_outputs(hs, mask, return_sequences, go_backwards,   # noqa
                                               zero_masked)).sum())
    dhs = ref.rnn_outputs_backward(G, mask, return_sequences, go_backwards, zero_masked)
    fd = numerical_gradient(loss, hs)
    if return_sequences:
        np.testing.assert_allclose(dhs, fd, rtol=RTOL, atol=ATOL)
    else:                                   # only the final state is an output
        last = 0 if go_backwards else T - 1
        np.testing.assert_allclose(dhs, fd[:, last], rtol=RTOL, atol=ATOL)
        assert not np.delete(fd, last, axis=1).any()


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
def test_masked_layer_with_zero_masked_sequence_outputs_matches_finite_differences(
        rng, go_backwards, activation):
    """``rnn_outputs(simple_rnn_forward(...), zero_masked=True)`` as Bidirectional uses it."""
    mask = masks(T)
    x = rng.standard_normal((4, T, D))
    kernel, recurrent, bias = rnn_weights(rng, D, H, activation)
    G = rng.standard_normal((4, T, H))

    def loss():
        hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask, activation, go_backwards)
        return float((G * ref.rnn_outputs(hs, mask, True, go_backwards, True)).sum())

    hs = ref.simple_rnn_forward(x, kernel, recurrent, bias, mask, activation, go_backwards)
    if activation == "relu":
        assert_away_from_kink(preactivations(x, hs, kernel, recurrent, bias, go_backwards, None),
                              mask, go_backwards)
    dhs = ref.rnn_outputs_backward(G, mask, True, go_backwards, True)
    grads = ref.simple_rnn_backward(dhs, x, hs, kernel, recurrent, mask, activation, go_backwards)
    for g, a, name in zip(grads, (x, kernel, recurrent, bias), ("dx", "dkernel", "drecurrent",
                                                               "dbias")):
        assert_fd(g, loss, a, name)


# ---------------------------------------------------------------------------------------------
# Embedding, Dense, activations, dropout, merge
# ---------------------------------------------------------------------------------------------

def test_embedding_backward_adds_repeated_ids(rng):
    V = 5
    E = rng.standard_normal((V, D))
    ids = np.array([[1, 1, 0, 3], [3, 1, 4, 4], [0, 0, 0, 1]])       # repeats; id 2 absent
    G = rng.standard_normal((*ids.shape, D))
    loss = lambda: float((G * ref.embedding_forward(E, ids)).sum())  # noqa: E731
    dE = ref.embedding_backward(G, ids, V)
    assert_fd(dE, loss, E, "dE")
    assert not dE[2].any()
    np.testing.assert_allclose(dE[1], G[0, 0] + G[0, 1] + G[1, 1] + G[2, 3], rtol=1e-14)


@pytest.mark.parametrize("shape", [(B, D), (B, T, D)], ids=["2d", "3d"])
def test_dense_backward_matches_finite_differences(rng, shape):
    C = 4
    x = rng.standard_normal(shape)
    kernel = rng.standard_normal((D, C))
    bias = rng.standard_normal(C)
    G = rng.standard_normal((*shape[:-1], C))
    loss = lambda: float((G * ref.dense_forward(x, kernel, bias)).sum())   # noqa: E731
    dx, dk, db = ref.dense_backward(G, x, kernel)
    assert_fd(dx, loss, x, "dx")
    assert_fd(dk, loss, kernel, "dkernel")
    assert_fd(db, loss, bias, "dbias")


@pytest.mark.parametrize("activation", list(ref.ACTIVATIONS))
@pytest.mark.parametrize("shape", [(B, 4), (B, T, 4)], ids=["2d", "3d"])
def test_activation_backward_matches_finite_differences(rng, activation, shape):
    z = 2 * rng.standard_normal(shape)
    if activation == "relu":
        z = np.where(np.abs(z) < 1e-2, 0.5, z)           # away from the kink
    G = rng.standard_normal(shape)
    loss = lambda: float((G * ref.activation_forward(z, activation)).sum())   # noqa: E731
    dz = ref.activation_backward(G, ref.activation_forward(z, activation), activation)
    assert_fd(dz, loss, z, activation)


def test_sigmoid_is_stable_and_exact_for_large_inputs():
    z = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):    # underflow is fine
        p = ref.activation_forward(z, "sigmoid")
    e = np.exp(-40.0)
    np.testing.assert_allclose(p, [0, e / (1 + e), 0.5, 1 / (1 + e), 1], rtol=1e-15, atol=1e-300)


def test_softmax_rows_sum_to_one_for_huge_logits():
    z = np.array([[1000.0, 999.0, -1000.0]])
    p = ref.activation_forward(z, "softmax")
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-15)
    np.testing.assert_allclose(p[0, :2], [1 / (1 + np.exp(-1)), 1 / (1 + np.e)], rtol=1e-14)


def test_dropout_backward_matches_finite_differences_and_keeps_the_mean(rng):
    rate = 0.4
    x = rng.standard_normal((B, T, D))
    keep = rng.random((B, 1, D)) >= rate                 # one mask per sequence and feature
    G = rng.standard_normal((B, T, D))
    loss = lambda: float((G * ref.dropout_forward(x, keep, rate)).sum())   # noqa: E731
    assert_fd(ref.dropout_backward(G, keep, rate), loss, x, "dropout dx")
    y = ref.dropout_forward(x, keep, rate)
    np.testing.assert_allclose(y, np.where(keep, x / (1 - rate), 0), rtol=1e-15)
    assert y.dtype == x.dtype


@pytest.mark.parametrize("mode", list(L.MERGE_MODES))
@pytest.mark.parametrize("shape", [(B, H), (B, T, H)], ids=["last", "sequences"])
def test_merge_backward_matches_finite_differences(rng, mode, shape):
    yf, yb = rng.standard_normal(shape), rng.standard_normal(shape)
    out = ref.merge_forward(yf, yb, mode)
    assert out.shape == (*shape[:-1], 2 * H if mode == "concat" else H)
    G = rng.standard_normal(out.shape)
    loss = lambda: float((G * ref.merge_forward(yf, yb, mode)).sum())   # noqa: E731
    dyf, dyb = ref.merge_backward(G, yf, yb, mode)
    assert_fd(dyf, loss, yf, f"{mode} d forward")
    assert_fd(dyb, loss, yb, f"{mode} d backward")


# ---------------------------------------------------------------------------------------------
# losses fused with the head
# ---------------------------------------------------------------------------------------------

def logits_for(rng, loss, activation, from_logits, shape):
    """``z`` whose head outputs lie inside Keras' clipping range [1e-7, 1 - 1e-7] (where the
    clipped formulas are differentiable) and are valid for the loss."""
    z = rng.standard_normal(shape)
    fused = loss_ops.fused(loss, activation, from_logits)
    if not fused and loss != "mean_squared_error":
        if activation == "linear":                 # p = z must be probabilities
            z = rng.uniform(0.1, 0.9, shape)
        if activation in ("tanh", "relu"):         # p in (0, 1)
            z = rng.uniform(0.2, 1.5, shape)
    if activation == "relu":
        z = np.where(np.abs(z) < 1e-2, 0.5, z)
    return z


def targets_for(rng, loss, shape):
    if loss == "sparse_categorical_crossentropy":
        return rng.integers(0, shape[-1], shape[:-1])
    if loss == "binary_crossentropy":
        return rng.random(shape).round()            # 0/1 (Keras allows soft targets too)
    return rng.standard_normal(shape)


LOSS_CASES = [
    # (loss, head activation, from_logits): fused and Keras-formula (unfused) heads
    ("sparse_categorical_crossentropy", "softmax", False),
    ("sparse_categorical_crossentropy", "linear", True),
    ("sparse_categorical_crossentropy", "linear", False),       # p renormalised, clipped
    ("sparse_categorical_crossentropy", "softmax", True),       # softmax outputs used as logits
    ("binary_crossentropy", "sigmoid", False),
    ("binary_crossentropy", "linear", True),
    ("binary_crossentropy", "sigmoid", True),                   # sigmoid outputs used as logits
    ("binary_crossentropy", "tanh", False),                     # unfused, Keras' clipped formula
    ("binary_crossentropy", "softmax", False),
    ("mean_squared_error", "linear", False),
    ("mean_squared_error", "sigmoid", False),
    ("mean_squared_error", "tanh", False),
    ("mean_squared_error", "relu", False),
    ("mean_squared_error", "softmax", False),
]
SHAPES = {"last": (B, 3), "per_step": (B, T, 3), "last_1unit": (B, 1),
          "per_step_1unit": (B, T, 1)}
# one unit: no sparse classes, and softmax of one unit is constant
LOSS_GRID = [pytest.param(*case, SHAPES[name], id=f"{case[0][:6]}-{case[1]}"
                          f"{'-logits' if case[2] else ''}-{name}")
             for case in LOSS_CASES for name in SHAPES
             if not (SHAPES[name][-1] == 1 and (case[0] == "sparse_categorical_crossentropy"
                                                 or case[1] == "softmax"))]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "mask"])
@pytest.mark.parametrize("loss,activation,from_logits,shape", LOSS_GRID)
def test_loss_and_grad_matches_finite_differences(rng, loss, activation, from_logits, shape,
                                                  weighted):
    C = shape[-1]
    z = logits_for(rng, loss, activation, from_logits, shape)
    y = targets_for(rng, loss, shape)
    if C == 1 and loss != "sparse_categorical_crossentropy":
        y = y[..., 0]                                # Keras' (N,) targets against (N, 1) outputs
    weight = None
    if weighted:
        weight = np.ones(shape[:-1], bool)
        weight.flat[[1, -1]] = False                 # per step: a masked step; last: a sample
        if len(shape) == 3:
            weight[2] = False                        # a fully masked sequence
    value, dz = loss_ops.loss_and_grad(loss, activation, from_logits, z, y, weight)
    assert dz.shape == z.shape and dz.dtype == z.dtype
    assert value == loss_ops.loss_value(loss, activation, from_logits, z, y, weight)
    assert_fd(dz, lambda: float(loss_ops.loss_value(loss, activation, from_logits, z, y, weight)),
              z, f"{loss} {activation} from_logits={from_logits}")
    if weighted:                                     # masked entries get no gradient
        assert not dz[~weight].any()


def test_loss_with_every_step_masked_is_zero(rng):
    z = rng.standard_normal((B, T, 3))
    y = rng.integers(0, 3, (B, T))
    value, dz = loss_ops.loss_and_grad("sparse_categorical_crossentropy", "softmax", False, z, y,
                                       np.zeros((B, T), bool))
    assert value == 0 and not dz.any()


def test_fused_losses_equal_the_plain_formulas(rng):
    """The fused values against ``-log softmax(z)[y]`` and ``-(y log p + (1-y) log(1-p))`` (mean
    over units, then samples), and the per-step weights as a mean over the unmasked steps."""
    z = rng.standard_normal((B, T, 3))
    y = rng.integers(0, 3, (B, T))
    w = masks(T)[:B]
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    per = -np.log(np.take_along_axis(p, y[..., None], -1)[..., 0])
    for act, logits in (("softmax", False), ("linear", True)):
        value = loss_ops.loss_value("sparse_categorical_crossentropy", act, logits, z, y, w)
        np.testing.assert_allclose(value, per[w].mean(), rtol=1e-13)
    t = rng.random((B, 3)).round()
    zz = z[:, 0]
    q = 1 / (1 + np.exp(-zz))
    expected = (-(t * np.log(q) + (1 - t) * np.log(1 - q))).mean(-1).mean()
    for act, logits in (("sigmoid", False), ("linear", True)):
        np.testing.assert_allclose(loss_ops.loss_value("binary_crossentropy", act, logits, zz, t),
                                   expected, rtol=1e-13)


def test_fused_cross_entropies_are_finite_for_huge_logits():
    z = np.array([[800.0, -800.0], [-800.0, 800.0]])
    value, dz = loss_ops.loss_and_grad("sparse_categorical_crossentropy", "softmax", False, z,
                                       np.array([1, 1]))
    np.testing.assert_allclose(value, 800.0, rtol=1e-15)             # (1600 + 0) / 2
    np.testing.assert_allclose(dz, [[0.5, -0.5], [0, 0]], atol=1e-300)
    value, dz = loss_ops.loss_and_grad("binary_crossentropy", "sigmoid", False, z[:, :1],
                                       np.array([0.0, 0.0]))
    np.testing.assert_allclose(value, 400.0, rtol=1e-15)
    np.testing.assert_allclose(dz[:, 0], [0.5, 0], atol=1e-300)


# ---------------------------------------------------------------------------------------------
# whole stacks through Sequential(backend="numpy")
# ---------------------------------------------------------------------------------------------

def generators(model):
    """The distinct random generators ``_loss_and_grad`` draws dropout masks from."""
    seen = {}
    for r in [model.rng, *model._layer_rngs]:
        seen[id(r)] = r
    return list(seen.values())


def check_model_gradient(model, x, y, scale=0.5, seed=7):
    """``model._loss_and_grad``'s ``model.grad`` against central differences over ``model.theta``.

    The weights are redrawn N(0, scale^2) (so biases are nonzero). The loss is recomputed by
    ``_loss_and_grad`` itself with every generator reset before each call, so dropout masks are the
    same in every evaluation; without dropout it also equals the inference loss of ``_evaluate``.
    """
    if model._input is None:
        model.build((None, *np.shape(x)[1:]))
    x, y = model._data(x, y)
    model.theta[...] = scale * np.random.default_rng(seed).standard_normal(model.theta.size)
    states = [g.bit_generator.state for g in generators(model)]

    def loss():
        for g, s in zip(generators(model), states):
            g.bit_generator.state = s
        return model._loss_and_grad(x, y)[0]

    value = loss()
    grad = model.grad.copy()
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0
    assert model.grad.dtype == model.theta.dtype == F64
    fd = numerical_gradient(loss, model.theta)
    diff = float(np.abs(grad - fd).max())
    np.testing.assert_allclose(grad, fd, rtol=RTOL, atol=ATOL, err_msg=f"max abs diff {diff:.3e}")
    return value, grad


def inference_loss(model, x, y):
    x, y = model._data(x, y)
    return model._evaluate(x, y, len(x))[0]


def left_padded_ids(rng, Bm, Tm, V, empty_row=False):
    ids = rng.integers(1, V, (Bm, Tm))
    for b in range(1, Bm):
        ids[b, : b % Tm] = 0                           # left padding of different lengths
    if empty_row:
        ids[-1] = 0
    return ids


def seq(layers, seed=3):
    return Sequential(layers, dtype="float64", backend="numpy", seed=seed)


def test_stacked_return_sequences_simple_rnns(rng):
    V, C = 6, 3
    model = seq([L.Embedding(V, D), L.SimpleRNN(H, return_sequences=True),
                 L.SimpleRNN(H, return_sequences=True), L.SimpleRNN(H), L.Dense(C, "softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.integers(0, V, (B, T))
    y = rng.integers(0, C, B)
    value, _ = check_model_gradient(model, x, y)
    np.testing.assert_allclose(value, inference_loss(model, x, y), rtol=1e-14)


@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("merge_mode", list(L.MERGE_MODES))
def test_bidirectional_each_merge_mode(rng, merge_mode, return_sequences):
    """Dense inputs -> Bidirectional(SimpleRNN) -> Dense head (per step with mse for sequences,
    sigmoid + binary crossentropy for the last state)."""
    model = seq([L.Input((T, D)),
                 L.Bidirectional(L.SimpleRNN(H, return_sequences=return_sequences), merge_mode),
                 L.Dense(2 if return_sequences else 1,
                         None if return_sequences else "sigmoid")])
    model.compile("sgd", "mse" if return_sequences else "binary_crossentropy")
    x = rng.standard_normal((B, T, D))
    y = rng.standard_normal((B, T, 2)) if return_sequences else rng.random(B).round()
    value, _ = check_model_gradient(model, x, y)
    np.testing.assert_allclose(value, inference_loss(model, x, y), rtol=1e-14)


@pytest.mark.parametrize("merge_mode", list(L.MERGE_MODES))
def test_masked_left_padding_through_bidirectional_and_a_second_layer(rng, merge_mode):
    V = 7
    model = seq([L.Input((None,)), L.Embedding(V, D, mask_zero=True),
                 L.Bidirectional(L.SimpleRNN(H, return_sequences=True), merge_mode),
                 L.SimpleRNN(H), L.Dense(1, "sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    x = left_padded_ids(rng, 4, T, V, empty_row=True)
    y = np.array([1.0, 0.0, 1.0, 0.0])
    check_model_gradient(model, x, y)
    # padding really is skipped: a row's outputs do not depend on how much padding it has
    p = model.predict(x, verbose=0)
    shorter = model.predict(x[1:3, 1:], verbose=0)           # one step less of padding
    np.testing.assert_allclose(p[1:3], shorter, rtol=1e-14)


def test_masked_per_step_dense_head_with_sparse_crossentropy(rng):
    V, C = 7, 3
    model = seq([L.Embedding(V, D, mask_zero=True),
                 L.Bidirectional(L.SimpleRNN(H, return_sequences=True)),
                 L.SimpleRNN(H, return_sequences=True, go_backwards=True),
                 L.Dense(C, "softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = left_padded_ids(rng, 4, T, V, empty_row=True)
    y = rng.integers(0, C, (4, T))
    value, _ = check_model_gradient(model, x, y)
    np.testing.assert_allclose(value, inference_loss(model, x, y), rtol=1e-14)
    # the loss is the mean over the real steps only: the padded steps' labels do not matter
    y2 = np.where(x == 0, (y + 1) % C, y)
    np.testing.assert_allclose(inference_loss(model, x, y2), value, rtol=1e-14)


def test_one_time_step(rng):
    V, C = 5, 3
    model = seq([L.Embedding(V, D), L.Bidirectional(L.SimpleRNN(H, return_sequences=True), "sum"),
                 L.SimpleRNN(H), L.Dense(C, None)])
    model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.integers(0, V, (B, 1))
    check_model_gradient(model, x, rng.integers(0, C, B))


def test_relu_stack_with_mse(rng):
    model = seq([L.Input((T, D)),
                 L.SimpleRNN(H, activation="relu", return_sequences=True),
                 L.SimpleRNN(H, activation="relu"), L.Dense(2)])
    model.compile("sgd", "mse")
    x = rng.standard_normal((B, T, D))
    check_model_gradient(model, x, rng.standard_normal((B, 2)), seed=11)


def test_dense_float_inputs_with_go_backwards_and_hidden_dense(rng):
    model = seq([L.Input((T, D)), L.SimpleRNN(H, go_backwards=True, return_sequences=True),
                 L.Dense(3, "tanh"), L.SimpleRNN(H), L.Dense(1, "sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    x = rng.standard_normal((B, T, D))
    check_model_gradient(model, x, np.array([1.0, 0.0, 1.0]))


def test_last_layer_recurrent_with_mse(rng):
    """No Dense head: the SimpleRNN's last state is the output (head 'linear')."""
    model = seq([L.Input((T, D)), L.Bidirectional(L.SimpleRNN(H), "mul")])
    model.compile("sgd", "mse")
    x = rng.standard_normal((B, T, D))
    check_model_gradient(model, x, 0.1 * rng.standard_normal((B, H)))


def test_bptt_truncate_at_least_T_in_a_model_is_the_exact_gradient(rng):
    model = seq([L.Input((T, D)), L.SimpleRNN(H, bptt_truncate=T, return_sequences=True),
                 L.SimpleRNN(H, bptt_truncate=T + 5), L.Dense(1, "sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    check_model_gradient(model, rng.standard_normal((B, T, D)), np.array([0.0, 1.0, 1.0]))


def test_dropout_and_recurrent_dropout_with_fixed_masks(rng):
    """With the generators reset before each evaluation every call draws the same masks, so the
    training loss is a smooth function of theta and its gradient must match; the masks are really
    used (the training loss differs from the inference loss)."""
    V, C = 6, 3
    model = seq([L.Embedding(V, D), L.Dropout(0.3),
                 L.Bidirectional(L.SimpleRNN(H, dropout=0.3, recurrent_dropout=0.4,
                                             return_sequences=True)),
                 L.SimpleRNN(H, recurrent_dropout=0.5, seed=5), L.Dense(C, "softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.integers(0, V, (4, T))
    y = rng.integers(0, C, 4)
    value, _ = check_model_gradient(model, x, y)
    assert abs(value - inference_loss(model, x, y)) > 1e-6


def test_dropout_rate_zero_changes_nothing(rng):
    V, C = 6, 3
    layers = lambda rate: [L.Embedding(V, D), L.Dropout(rate),                    # noqa: E731
                           L.SimpleRNN(H, dropout=rate, recurrent_dropout=rate),
                           L.Dense(C, "softmax")]
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, C, B)
    a, b = seq(layers(0.0)), seq([L.Embedding(V, D), L.SimpleRNN(H), L.Dense(C, "softmax")])
    for m in (a, b):
        m.compile("sgd", "sparse_categorical_crossentropy")
    ga = check_model_gradient(a, x, y)[1]
    gb = check_model_gradient(b, x, y)[1]
    np.testing.assert_array_equal(ga, gb)
