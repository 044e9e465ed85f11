"""The layers' compiled ops (``fastrnn.kernels``) against their NumPy twins (``fastrnn.reference``).

float64 results must match the reference to 1e-10 relative; float32 ones the float64 reference
run on the same float32-rounded inputs, with ``helpers.tolerances`` (loosened with T). Every case
also checks the dtype of every result, and the thread tests check that 1 to 5 Numba threads give
the same bits.
"""

import numpy as np
import pytest

import helpers

R = helpers.reference()
K = helpers.kernels()

# (B, T, D, H): sizes 1, odd sizes, and a batch of 130 (2 chunks of 65)
GRID = [(1, 1, 1, 1), (3, 5, 4, 2), (5, 7, 3, 5), (130, 17, 5, 7)]
GRID_IDS = ["all1", "small", "odd", "B130"]


def _params(rng, D, H, dtype):
    # recurrent weights of spectral radius below 1, so float32 rounding does not grow chaotically
    return (rng.standard_normal((D, H)) * 0.5, rng.standard_normal((H, H)) * 0.5 / np.sqrt(H),
            rng.standard_normal(H) * 0.5)


def _mask(rng, B, T, kind):
    if kind == "none":
        return None
    mask = rng.random((B, T)) > 0.3
    if kind == "left":                         # left padding, one row all padding
        lengths = rng.integers(0, T + 1, B)
        mask = np.arange(T)[None, :] >= (T - lengths)[:, None]
    mask[0] = False
    return mask


def _as(dtype, *arrays):
    return [None if a is None else a.astype(dtype) for a in arrays]


def _f64(*arrays):
    return [None if a is None or a.dtype == bool else a.astype(np.float64) for a in arrays]


@pytest.mark.parametrize("shape", GRID, ids=GRID_IDS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("mask_kind", ["none", "random", "left"])
def test_simple_rnn_matches_reference(rng, dtype, shape, activation, go_backwards, mask_kind):
    B, T, D, H = shape
    x, = _as(dtype, rng.standard_normal((B, T, D)))
    W, U, b = _as(dtype, *_params(rng, D, H, dtype))
    mask = _mask(rng, B, T, mask_kind)
    r, = _as(dtype, (rng.random((B, H)) > 0.5) * 2.0)
    for dropout in (None, r):
        args = (activation, go_backwards)
        hs = K.simple_rnn_forward(x, W, U, b, mask, *args, dropout)
        hs_ref = R.simple_rnn_forward(*_f64(x, W, U, b), mask, *args, *_f64(dropout))
        assert hs.dtype == dtype
        helpers.assert_close(hs, hs_ref, dtype, T, "hs")
        for dhs in (rng.standard_normal((B, H)), rng.standard_normal((B, T, H))):
            for k in (None, 2):
                got = K.simple_rnn_backward(dhs.astype(dtype), x, hs_ref.astype(dtype), W, U, mask,
                                            *args, dropout, k)
                want = R.simple_rnn_backward(*_f64(dhs, x, hs_ref, W, U), mask, *args,
                                             *_f64(dropout), k)
                for name, g, w in zip(("dx", "dkernel", "drecurrent_kernel", "dbias"), got, want):
                    assert g.dtype == dtype, name
                    helpers.assert_close(g, w, dtype, T, f"{name} k={k} dhs{dhs.shape}")


@pytest.mark.parametrize("shape", GRID, ids=GRID_IDS)
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("mask_zero", [False, True])
def test_embedding_rnn_matches_reference(rng, dtype, shape, go_backwards, mask_zero):
    B, T, D, H = shape
    V = 11
    ids = rng.integers(0, V, (B, T))
    mask = ids != 0 if mask_zero else None
    E, = _as(dtype, rng.standard_normal((V, D)))
    W, U, b = _as(dtype, *_params(rng, D, H, dtype))
    hs = K.embedding_rnn_forward(E, ids, W, U, b, mask, "tanh", go_backwards)
    hs_ref = R.embedding_rnn_forward(*_f64(E), ids, *_f64(W, U, b), mask, "tanh", go_backwards)
    helpers.assert_close(hs, hs_ref, dtype, T, "hs")
    for dhs in (rng.standard_normal((B, H)), rng.standard_normal((B, T, H))):
        got = K.embedding_rnn_backward(dhs.astype(dtype), ids, E, hs_ref.astype(dtype), W, U, mask,
                                       "tanh", go_backwards, None, 3)
        want = R.embedding_rnn_backward(*_f64(dhs), ids, *_f64(E, hs_ref, W, U), mask, "tanh",
                                        go_backwards, None, 3)
        np.testing.assert_array_equal(got[0], np.unique(ids))
        np.testing.assert_array_equal(want[0], np.unique(ids))
        for name, g, w in zip(("dE rows", "dkernel", "drecurrent_kernel", "dbias"), got[1:],
                              want[1:]):
            assert g.dtype == dtype, name
            helpers.assert_close(g, w, dtype, T, name)


def test_embedding_backward_adds_repeated_ids(rng, dtype):
    ids = rng.integers(0, 7, (5, 9))
    ids[0, :3] = 6                                  # id 6 repeated, id 5 maybe absent
    dx, = _as(dtype, rng.standard_normal((5, 9, 3)))
    got = K.embedding_backward(dx, ids, 8)
    assert got.dtype == dtype
    helpers.assert_close(got, R.embedding_backward(*_f64(dx), ids, 8), dtype, 1, "dE")
    assert np.all(got[7] == 0)                      # an id that never occurs gets no gradient


def test_kernels_refuse_bad_arguments():
    x = np.zeros((2, 3, 4), np.float32)
    W, U, b = np.zeros((4, 5), np.float32), np.zeros((5, 5), np.float32), np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="kernel must have shape"):
        K.simple_rnn_forward(x, W[:3], U, b)
    with pytest.raises(TypeError, match="dtype float32"):
        K.simple_rnn_forward(x, W.astype(np.float64), U, b)
    with pytest.raises(ValueError, match="activation"):
        K.simple_rnn_forward(x, W, U, b, activation="sigmoid")
    with pytest.raises(ValueError, match="mask must have shape"):
        K.simple_rnn_forward(x, W, U, b, mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="ids"):
        K.embedding_rnn_forward(np.zeros((3, 4), np.float32), np.array([[0, 3]]), W, U, b)


def layer_ops_everything(seed, dtype):
    """Every compiled layer op on a batch of 330 (5 chunks): a dict of results."""
    rng = np.random.default_rng(seed)
    B, T, D, H, V = 330, 13, 4, 6, 17
    x = rng.standard_normal((B, T, D)).astype(dtype)
    W, U, b = (a.astype(dtype) for a in _params(rng, D, H, dtype))
    mask = rng.random((B, T)) > 0.2
    ids = rng.integers(0, V, (B, T))
    E = rng.standard_normal((V, D)).astype(dtype)
    out = {"hs": K.simple_rnn_forward(x, W, U, b, mask, "tanh", True)}
    dhs = rng.standard_normal((B, T, H)).astype(dtype)
    for i, g in enumerate(K.simple_rnn_backward(dhs, x, out["hs"], W, U, mask, "relu", False,
                                                None, 4)):
        out[f"g{i}"] = g
    out["hs_tokens"] = K.embedding_rnn_forward(E, ids, W, U, b, ids != 0)
    for i, g in enumerate(K.embedding_rnn_backward(dhs, ids, E, out["hs_tokens"], W, U,
                                                   ids != 0)):
        out[f"t{i}"] = g
    out["dE"] = K.embedding_backward(x, ids, V)
    return out


def test_layer_ops_give_identical_bits_for_1_to_5_threads():
    helpers.assert_same_bits_for_1_to_5_threads("test_layer_kernels", "layer_ops_everything", 5)
