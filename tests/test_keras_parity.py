"""``fastrnn.models.Sequential`` (both backends) against Keras 3 itself, with the same weights.

Each case builds one model in Keras and the same model in fastrnn, gives it Keras' weights
(``fastrnn_model.set_weights(keras_model.get_weights())``) and compares ``predict``, the weight
shapes and order, the parameter count and ``evaluate``. Skipped, without a warning, when Keras or
its JAX backend is not installed (``pip install -e ".[keras]"``).

Tolerances: both sides compute in float32; predictions agree to ``rtol=1e-5, atol=1e-6`` (the
observed difference is a few float32 ulps: about 2e-7 on outputs of size 1 after 7 steps). A
loss or metric value is a float32 sum over at most a few hundred terms, compared to the same.
Accuracies count thresholds (``p > 0.5``, argmax); the inputs are checked to keep every
prediction at least ``MARGIN`` away from a tie, so a last-ulp difference cannot flip a count.
"""

import contextlib
import os
import random
import warnings

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if os.environ["KERAS_BACKEND"] == "jax":
        pytest.importorskip("jax")
    keras = pytest.importorskip("keras")

from fastrnn import layers as fl                                  # noqa: E402
from fastrnn import losses as flosses                             # noqa: E402
from fastrnn.models import Sequential                             # noqa: E402

# Keras 3.15's Variable.numpy() calls np.array(variable) on a Variable whose __array__ takes no
# `copy` argument, which NumPy >= 2 warns about on every get_weights(); Keras' issue, not ours
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

BACKENDS = ["numpy", "numba"]
RTOL, ATOL = 1e-5, 1e-6
MARGIN = 1e-4
V, T, D, N = 20, 7, 3, 70          # vocabulary, time, features; N = 2 full batches of 32 + 6


# --- inputs ------------------------------------------------------------------------------------

def _padded_ids():
    """``(N, T)`` token ids: even rows right-padded, odd rows left-padded (random lengths), one
    row all padding and one with none."""
    rng = np.random.default_rng(7)
    ids = rng.integers(1, V, (N, T))
    lengths = rng.integers(1, T, N)
    for i, n in enumerate(lengths):
        if i % 2:
            ids[i, :T - n] = 0
        else:
            ids[i, n:] = 0
    ids[0] = 0
    ids[1] = rng.integers(1, V, T)
    return ids


IDS = _padded_ids()
PLAIN_IDS = np.random.default_rng(8).integers(0, V, (N, T))      # 0 is an ordinary token here
FLOATS = np.random.default_rng(9).normal(size=(N, T, D)).astype(np.float32)


# --- models: one spec, built by both libraries -------------------------------------------------
# a spec is (input, [layer, ...]); a layer is (class name, args, kwargs); Bidirectional's args
# hold the wrapped layer's spec

def emb(mask_zero=False):
    return ("Embedding", (V, 4), dict(mask_zero=mask_zero))


def rnn(units, **kw):
    return ("SimpleRNN", (units,), kw)


def bi(layer, merge_mode):
    return ("Bidirectional", (layer,), dict(merge_mode=merge_mode))


def dense(units, activation=None, **kw):
    return ("Dense", (units,), dict(activation=activation, **kw))


SEQ = dict(return_sequences=True)
IDS_INPUT, FLOAT_INPUT = (T,), (T, D)

CASES = {
    "last_state": (IDS_INPUT, [emb(), rnn(6), dense(1, "sigmoid")]),
    "stacked": (IDS_INPUT, [emb(), rnn(6, **SEQ), rnn(5, **SEQ), rnn(4), dense(1, "sigmoid")]),
    "go_backwards": (IDS_INPUT, [emb(), rnn(6, go_backwards=True), dense(1, "sigmoid")]),
    "go_backwards_sequences": (IDS_INPUT, [emb(), rnn(6, go_backwards=True, **SEQ)]),
    "go_backwards_stacked": (IDS_INPUT, [emb(), rnn(6, go_backwards=True, **SEQ), rnn(4),
                                         dense(1, "sigmoid")]),
    **{f"bidirectional_{mode}_{out}": (IDS_INPUT, [emb(), bi(rnn(5, return_sequences=seq), mode)])
       for mode in ("concat", "sum", "ave", "mul") for out, seq in (("last", False),
                                                                    ("sequences", True))},
    "masked_sequences": (IDS_INPUT, [emb(True), rnn(5, **SEQ)]),
    "masked_stacked": (IDS_INPUT, [emb(True), rnn(5, **SEQ), rnn(4, **SEQ), rnn(3),
                                   dense(1, "sigmoid")]),
    "masked_go_backwards": (IDS_INPUT, [emb(True), rnn(5, go_backwards=True, **SEQ),
                                        rnn(4, go_backwards=True), dense(1, "sigmoid")]),
    "masked_go_backwards_sequences": (IDS_INPUT, [emb(True), rnn(5, go_backwards=True, **SEQ)]),
    "masked_bidirectional_sequences": (IDS_INPUT, [emb(True), bi(rnn(4, **SEQ), "concat"),
                                                   bi(rnn(3, **SEQ), "ave")]),
    "masked_bidirectional_last": (IDS_INPUT, [emb(True), bi(rnn(4, **SEQ), "mul"),
                                              bi(rnn(3), "sum"), dense(1, "sigmoid")]),
    "masked_through_dense_and_dropout": (IDS_INPUT, [emb(True), ("Dropout", (0.3,), {}),
                                                     dense(4, "tanh"), rnn(5)]),
    "masked_per_step_softmax": (IDS_INPUT, [emb(True), rnn(5, **SEQ), dense(3, "softmax")]),
    "relu": (IDS_INPUT, [emb(), rnn(6, activation="relu", **SEQ), rnn(4, activation="relu"),
                         dense(1, "sigmoid")]),
    "per_step_softmax": (IDS_INPUT, [emb(), rnn(6, **SEQ), dense(3, "softmax")]),
    "float_inputs": (FLOAT_INPUT, [rnn(6, **SEQ), rnn(4), dense(2)]),
    "float_inputs_bidirectional": (FLOAT_INPUT, [bi(rnn(4), "concat"), dense(1, "sigmoid")]),
    "dropout_in_inference": (IDS_INPUT, [emb(), rnn(6, dropout=0.3, recurrent_dropout=0.2, **SEQ),
                                         ("Dropout", (0.5,), {}),
                                         rnn(4, dropout=0.2, recurrent_dropout=0.5),
                                         dense(1, "sigmoid")]),
    "no_bias": (FLOAT_INPUT, [rnn(5, use_bias=False), dense(2, use_bias=False)]),
    **{f"dense_{act}": (FLOAT_INPUT, [rnn(5), dense(3, act)])
       for act in ("linear", "tanh", "relu", "softmax")},
    "dense_linear_1": (FLOAT_INPUT, [rnn(5), dense(1)]),
}


def _inputs(name):
    shape = CASES[name][0]
    if shape == FLOAT_INPUT:
        return FLOATS
    return IDS if name.startswith("masked") else PLAIN_IDS


def _layer(module, spec):
    kind, args, kwargs = spec
    if kind == "Bidirectional":
        return module.Bidirectional(_layer(module, args[0]), **kwargs)
    return getattr(module, kind)(*args, **kwargs)


@contextlib.contextmanager
def _seeded(seed):
    """Keras' initializers seeded, and Python's and NumPy's global generators left as found."""
    py_state, np_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


_keras_models = {}


def keras_model(name):
    """The Keras model of case ``name``, built once: Keras' initial weights, perturbed so that no
    bias is zero and every weight matters; and its predictions."""
    if name not in _keras_models:
        shape, specs = CASES[name]
        seed = sorted(CASES).index(name)
        with _seeded(seed):
            model = keras.Sequential([keras.Input(shape)] + [_layer(keras.layers, s)
                                                             for s in specs])
        rng = np.random.default_rng(seed)
        model.set_weights([w + rng.normal(0, 0.2, w.shape).astype(w.dtype)
                           for w in model.get_weights()])
        # calling the model is predict's forward pass (training=False), without compiling a
        # predict function: about twice as fast on these sizes
        _keras_models[name] = model, np.asarray(model(_inputs(name), training=False))
    return _keras_models[name]


def fastrnn_model(name, backend, weights):
    shape, specs = CASES[name]
    model = Sequential([fl.Input(shape)] + [_layer(fl, s) for s in specs], backend=backend)
    model.set_weights(weights)
    return model


def assert_close(actual, desired, rtol=RTOL, atol=ATOL, what=""):
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=(
        f"{what}: max abs diff {np.max(np.abs(actual - desired)):.3g}"))


# --- predict, weights, parameter counts -------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_predict_matches_keras(name, backend):
    kmodel, expected = keras_model(name)
    model = fastrnn_model(name, backend, kmodel.get_weights())
    got = model.predict(_inputs(name), verbose=0)
    assert got.dtype == np.float32
    assert_close(got, expected, what=f"{name} ({backend})")


@pytest.mark.parametrize("name", list(CASES))
def test_weights_and_parameter_count_match_keras(name):
    kmodel, _ = keras_model(name)
    kweights = kmodel.get_weights()
    model = fastrnn_model(name, "numpy", kweights)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [w.shape for w in kweights]
    for w, kw in zip(weights, kweights):
        np.testing.assert_array_equal(w, kw)          # set_weights then get_weights round trip
    lines = []
    model.summary(print_fn=lines.append)
    total = next(line for line in "\n".join(lines).splitlines() if "Total params:" in line)
    assert int(total.split(":")[1].split("(")[0].replace(",", "")) == kmodel.count_params()
    assert model.count_params() == kmodel.count_params()
    assert [layer.output_shape for layer in model.layers] == \
        [tuple(layer.output.shape[1:]) for layer in kmodel.layers]


def test_bidirectional_refuses_go_backwards_like_keras():
    with pytest.raises(ValueError, match="go_backwards"):
        keras.layers.Bidirectional(keras.layers.SimpleRNN(3, go_backwards=True))
    with pytest.raises(ValueError, match="go_backwards"):
        fl.Bidirectional(fl.SimpleRNN(3, go_backwards=True))


# --- evaluate: losses and metrics --------------------------------------------------------------

def _targets():
    rng = np.random.default_rng(10)
    return {"binary": rng.integers(0, 2, N).astype(np.float32), "class": rng.integers(0, 3, N),
            "per_step_class": rng.integers(0, 3, (N, T)),
            "real": rng.normal(size=(N, 3)).astype(np.float32)}


Y = _targets()
# (model case, loss name, from_logits, targets, metrics)
EVALUATIONS = {
    "binary_crossentropy": ("masked_stacked", "binary_crossentropy", False, "binary",
                            ["acc", "accuracy", "mae"]),
    "binary_crossentropy_from_logits": ("dense_linear_1", "binary_crossentropy", True, "binary",
                                        ["mae"]),
    "sparse_categorical_crossentropy": ("dense_softmax", "sparse_categorical_crossentropy", False,
                                        "class", ["acc", "accuracy"]),
    "sparse_categorical_crossentropy_masked_per_step": (
        "masked_per_step_softmax", "sparse_categorical_crossentropy", False, "per_step_class",
        ["acc", "accuracy"]),
    "mse": ("dense_tanh", "mse", False, "real", ["mae"]),
}


def _check_margin(name, p):
    """Every prediction clear of the accuracy thresholds (see the module docstring)."""
    if p.shape[-1] == 1:
        gap = np.abs(p - 0.5).min()
    else:
        top2 = np.sort(p, axis=-1)[..., -2:]
        gap = (top2[..., 1] - top2[..., 0]).min()
    assert gap > MARGIN, f"{name}: a prediction is within {gap:.2g} of a tie; change the seed"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("evaluation", list(EVALUATIONS))
def test_evaluate_matches_keras(evaluation, backend):
    name, loss, from_logits, target, metrics = EVALUATIONS[evaluation]
    x, y = _inputs(name), Y[target]
    kmodel, p = keras_model(name)
    if "acc" in metrics:
        _check_margin(name, p)
    kloss = keras.losses.BinaryCrossentropy(from_logits=True) if from_logits else loss
    kmodel.compile(loss=kloss, metrics=metrics)
    expected = kmodel.evaluate(x, y, verbose=0, return_dict=True)
    model = fastrnn_model(name, backend, kmodel.get_weights())
    model.compile(loss=flosses.BinaryCrossentropy(from_logits=True) if from_logits else loss,
                  metrics=metrics)
    got = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(got) == ["loss", *metrics] and set(got) == set(expected)   # Keras sorts its dict
    for key in expected:
        assert_close(got[key], expected[key], what=f"{evaluation} {key} ({backend})")
    as_list = model.evaluate(x, y, verbose=0)
    assert_close(as_list, kmodel.evaluate(x, y, verbose=0), what=f"{evaluation} as a list")


# --- fit's history -----------------------------------------------------------------------------

def test_fit_history_keys_match_keras():
    kmodel, _ = keras_model("last_state")
    weights = kmodel.get_weights()
    kmodel.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
    x, y = PLAIN_IDS, Y["binary"]
    try:
        expected = set(kmodel.fit(x, y, epochs=1, batch_size=32, validation_split=0.25,
                                  verbose=0).history)
    finally:
        kmodel.set_weights(weights)                   # the cached model stays as built
    assert expected == {"loss", "acc", "val_loss", "val_acc"}
    model = fastrnn_model("last_state", "numpy", weights)
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
    history = model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25, verbose=0)
    assert set(history.history) == expected
    assert all(len(v) == 2 for v in history.history.values())
