"""``fastrnn.models.Sequential``: the Keras API (fit, evaluate, predict, weights, summary, files),
errors raised before training, and reproducibility (seeds, threads, resuming from a file)."""

import numpy as np
import pytest

import fastrnn
import helpers
from fastrnn import layers
from fastrnn.models import Sequential, load_model

T, V = 9, 30


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, V, (n, T))
    x[: n // 3, :3] = 0                                  # some left padding
    y = (x[:, -1] > V // 2).astype(np.int64)
    return x, y


def model(backend="numba", seed=0, bidirectional=True, dtype="float32", dropout=0.0):
    rnn = layers.SimpleRNN(6, return_sequences=True, dropout=dropout)
    return Sequential([layers.Input((T,)), layers.Embedding(V, 5, mask_zero=True),
                       layers.Bidirectional(rnn) if bidirectional else rnn,
                       layers.SimpleRNN(4), layers.Dense(1, activation="sigmoid")],
                      backend=backend, seed=seed, dtype=dtype)


def compiled(*args, metrics=("acc",), **kwargs):
    m = model(*args, **kwargs)
    m.compile("rmsprop", "binary_crossentropy", list(metrics))
    return m


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_fit_history_keys_and_epochs_as_keras(backend):
    x, y = data()
    m = compiled(backend)
    h = m.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    assert set(h.history) == {"loss", "acc", "val_loss", "val_acc"}
    assert h.epoch == [0, 1, 2] and all(len(v) == 3 for v in h.history.values())
    again = m.fit(x, y, epochs=2, batch_size=16, verbose=0)       # epochs per call, as Keras
    assert again.epoch == [0, 1] and m.epoch == 2
    assert m.step_count == 3 * 3 + 2 * 3
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_evaluate_returns_what_keras_returns():
    x, y = data()
    m = compiled()
    loss, acc = m.evaluate(x, y, verbose=0)
    assert 0 <= acc <= 1 and loss > 0
    assert m.evaluate(x, y, verbose=0, return_dict=True) == {"loss": loss, "acc": acc}
    bare = compiled(metrics=())
    assert isinstance(bare.evaluate(x, y, verbose=0), float)


def test_predict_gives_probabilities_in_any_batch_size():
    x, _ = data()
    m = compiled()
    p = m.predict(x, verbose=0)
    assert p.shape == (len(x), 1) and p.dtype == np.float32 and np.all((p > 0) & (p < 1))
    np.testing.assert_array_equal(m.predict(x, batch_size=7, verbose=0), p)
    np.testing.assert_array_equal(m.predict_on_batch(x), p)


def test_backends_agree_after_training():
    x, y = data()
    a, b = compiled("numpy", dtype="float64"), compiled("numba", dtype="float64")
    for m in (a, b):
        m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_allclose(b.theta, a.theta, rtol=1e-9, atol=1e-12)


def test_training_is_the_same_for_one_and_two_threads(num_threads):
    x, y = data(130)
    runs = []
    for n in (1, 2):
        num_threads(n)
        m = compiled(dropout=0.3)
        m.fit(x, y, epochs=2, batch_size=65, verbose=0)
        runs.append(m.theta.copy())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_seeded_dropout_makes_training_reproducible():
    x, y = data()
    runs = []
    for _ in range(2):
        m = compiled(dropout=0.4, seed=3)
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
        runs.append(m.theta.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    other = compiled(dropout=0.4, seed=4)
    other.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(other.theta, runs[0])


def test_weights_in_keras_order_and_shapes():
    m = model()
    shapes = [w.shape for w in m.get_weights()]
    assert shapes == [(V, 5), (5, 6), (6, 6), (6,), (5, 6), (6, 6), (6,), (12, 4), (4, 4), (4,),
                      (4, 1), (1,)]
    w = [np.full(s, 0.01 * i) for i, s in enumerate(shapes)]
    m.set_weights(w)
    for got, want in zip(m.get_weights(), w):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    with pytest.raises(ValueError, match="set_weights got 11 arrays; the model has 12"):
        m.set_weights(w[:-1])
    with pytest.raises(ValueError, match=r"weight 0 has shape \(2, 2\); expected \(30, 5\)"):
        m.set_weights([np.zeros((2, 2))] + w[1:])


def test_summary_prints_keras_table(capsys):
    m = model()
    m.summary()
    out = capsys.readouterr().out
    assert "embedding" in out and "(None, 9, 5)" in out and "(None, 9, 12)" in out
    assert f"Total params: {m.count_params():,}" in out
    assert m.count_params() == sum(w.size for w in m.get_weights())


def test_save_and_load_model_resumes_exactly(tmp_path):
    x, y = data()
    straight = compiled(dropout=0.2)
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)
    first = compiled(dropout=0.2)
    first.fit(x, y, epochs=2, batch_size=16, verbose=0)
    first.save(tmp_path / "m.npz")
    resumed = load_model(tmp_path / "m.npz")
    assert resumed.epoch == 2 and resumed.history.epoch == [0, 1]
    resumed.fit(x, y, epochs=4, batch_size=16, verbose=0, initial_epoch=resumed.epoch)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    assert resumed.history.history == straight.history.history


def test_load_model_names_a_classifier_file(tmp_path):
    clf = fastrnn.SimpleRNNClassifier(V, 4, 3, backend="numpy")
    clf.save(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="SimpleRNNClassifier.*saved by fastrnn 0.1"):
        load_model(tmp_path / "c.npz")


def test_load_model_refuses_garbage(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="not a valid fastrnn Sequential model file"):
        load_model(tmp_path / "g.npz")


# --- errors before any training ----------------------------------------------------------------

def test_a_2d_input_to_a_recurrent_layer_names_the_layer():
    with pytest.raises(ValueError, match=r"layer 1 \('simple_rnn.*', SimpleRNN\) expects a 3-D "
                                         r"input \(batch, time, features\), got shape \(None, 4\)"):
        Sequential([layers.Input((4,)), layers.Dense(4), layers.SimpleRNN(3)])


def test_bidirectional_needs_a_recurrent_layer():
    with pytest.raises(ValueError, match="Bidirectional wraps a recurrent layer"):
        layers.Bidirectional(layers.Dense(3))


SCCE = "sparse_categorical_crossentropy"


@pytest.mark.parametrize("units, activation, loss", [(3, None, "binary_crossentropy"),
                                                     (1, "sigmoid", SCCE), (3, "sigmoid", SCCE)])
def test_a_loss_that_does_not_fit_the_head_is_refused_at_compile(units, activation, loss):
    m = Sequential([layers.Input((T,)), layers.Embedding(V, 4), layers.SimpleRNN(3),
                    layers.Dense(units, activation=activation)])
    with pytest.raises(ValueError, match=rf"loss '{loss}' does not fit the output of layer 2 "):
        m.compile("adam", loss)


def test_labels_that_do_not_fit_the_outputs_are_refused():
    x, y = data()
    m = compiled()
    with pytest.raises(ValueError, match=r"y has shape \(48, 9\); binary_crossentropy on "
                                         r"last-step outputs"):
        m.fit(x, np.zeros((48, T)), verbose=0)
    per_step = Sequential([layers.Input((T,)), layers.Embedding(V, 4, mask_zero=True),
                           layers.SimpleRNN(3, return_sequences=True),
                           layers.Dense(5, activation="softmax")])
    per_step.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"per-step outputs \(None, 9, 5\) needs integer labels "
                                         r"of shape \(48, 9\)"):
        per_step.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"class labels in \[0, 5\)"):
        per_step.fit(x, np.full((48, T), 7), verbose=0)


def test_fit_before_compile_and_unknown_names():
    x, y = data()
    with pytest.raises(ValueError, match="compile"):
        model().fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="unknown loss 'hinge'; expected one of"):
        model().compile("adam", "hinge")
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        model().compile("adam", "binary_crossentropy", ["auc"])
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        model().compile("adagrad", "binary_crossentropy")
    with pytest.raises(ValueError, match="activation must be one of"):
        layers.Dense(3, activation="gelu")
    with pytest.raises(ValueError, match="merge_mode must be one of"):
        layers.Bidirectional(layers.SimpleRNN(2), merge_mode="max")


def test_per_step_loss_ignores_masked_steps():
    x, _ = data()
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, x.shape)
    m = Sequential([layers.Input((T,)), layers.Embedding(V, 4, mask_zero=True),
                    layers.SimpleRNN(3, return_sequences=True),
                    layers.Dense(5, activation="softmax")], seed=0)
    m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    before = m.evaluate(x, y, verbose=0)
    y2 = np.where(x == 0, (y + 1) % 5, y)                  # other labels on the padding only
    assert m.evaluate(x, y2, verbose=0) == before


def test_keras_module_names():
    from fastrnn.preprocessing.sequence import pad_sequences
    from fastrnn.utils import pad_sequences as same
    assert pad_sequences is same is fastrnn.preprocessing.pad_sequences
    assert fastrnn.optimizers.Adam is fastrnn.optim.Adam
    assert fastrnn.losses.get("mse").name == "mean_squared_error"


def test_an_update_that_would_overflow_is_refused_and_changes_nothing():
    x, y = data()
    m = Sequential([layers.Input((T,)), layers.Embedding(V, 4), layers.SimpleRNN(3),
                    layers.Dense(1, activation="sigmoid")], seed=0)
    m.compile(fastrnn.optimizers.SGD(learning_rate=1e39), "binary_crossentropy")
    before = m.get_weights()
    with pytest.raises(fastrnn.TrainingError, match="non-finite update .* at epoch 1, step 1"):
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for got, want in zip(m.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    assert m.step_count == 0


COMPILED = """
import sys
import fastrnn
assert "numba" not in sys.modules, "import fastrnn imported numba"
import numpy as np
from fastrnn import layers
m = fastrnn.Sequential([layers.Embedding(20, 4), layers.SimpleRNN(3),
                        layers.Dense(1, activation="sigmoid")])
m.compile("rmsprop", "binary_crossentropy")
x = np.random.default_rng(0).integers(0, 20, (8, 5))
m.fit(x, x[:, 0] > 9, epochs=1, verbose=0)
from fastrnn.kernels import _jit, layers as L, step as S, tasks
kernels = {name: k for mod in (L, S, tasks) for name, k in vars(mod).items()
           if isinstance(k, _jit.Kernel)}
print(sorted(name for name, k in kernels.items() if k._compiled))
"""


def test_a_model_compiles_only_the_kernels_it_uses():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", COMPILED], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    compiled = eval(out.stdout.strip().splitlines()[-1])
    # the layers' ops, the norm and the optimizer update: not the classifier's fused step
    assert compiled == ["backward_chunk", "clip_by_global_norm", "distinct", "forward_chunk",
                        "rnn_backward", "rnn_forward", "update_flat"]


def _rewrite(path, out, **changes):
    """Copy the model file ``path`` to ``out`` with some arrays or metadata changed."""
    import json
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays["meta"].tobytes())
    for key, value in changes.items():
        if key in ("theta", "s1", "s2"):
            arrays[key] = value
        else:
            meta[key] = value(meta[key]) if callable(value) else value
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(out, **arrays)
    return out


def test_load_model_refuses_damaged_and_hostile_files(tmp_path):
    m = model()
    m.save(tmp_path / "m.npz")
    good = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    cases = {
        "truncated": tmp_path / "cut.npz",
        "wrong size": _rewrite(tmp_path / "m.npz", tmp_path / "a.npz",
                               theta=np.zeros(3, np.float32)),
        "nan weights": _rewrite(tmp_path / "m.npz", tmp_path / "b.npz",
                                theta=np.full(m.theta.size, np.nan, np.float32)),
        "unknown layer": _rewrite(tmp_path / "m.npz", tmp_path / "c.npz", config=lambda c: {
            **c, "layers": [{"class_name": "Lambda", "config": {}}]}),
        "huge layer": _rewrite(tmp_path / "m.npz", tmp_path / "d.npz", config=lambda c: {
            **c, "layers": [{"class_name": "Embedding",
                             "config": {"input_dim": 2**40, "output_dim": 2**20}}]}),
        "other version": _rewrite(tmp_path / "m.npz", tmp_path / "e.npz", format_version=99),
    }
    for what, path in cases.items():
        with pytest.raises(ValueError, match="not a valid fastrnn Sequential model file"):
            load_model(path)
    with pytest.raises(ValueError):
        load_model(tmp_path)                                  # a directory
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


# --- stateful layers: the state carried from batch to batch ------------------------------------

def stateful_model(backend, B=4, dtype="float64"):
    return Sequential([layers.Input((5,), batch_size=B), layers.Embedding(V, 3),
                       layers.SimpleRNN(4, return_sequences=True, stateful=True),
                       layers.SimpleRNN(3, return_sequences=True, stateful=True),
                       layers.Dense(V, activation=None)], backend=backend, seed=1, dtype=dtype)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_stateful_windows_equal_one_long_sequence(backend):
    rng = np.random.default_rng(2)
    ids = rng.integers(0, V, (4, 15))
    m = stateful_model(backend)
    windows = [m.predict(ids[:, i:i + 5], batch_size=4, verbose=0) for i in (0, 5, 10)]
    long = Sequential([layers.Embedding(V, 3), layers.SimpleRNN(4, return_sequences=True),
                       layers.SimpleRNN(3, return_sequences=True), layers.Dense(V)],
                      backend=backend, dtype="float64")
    long.build((None, 15))
    long.set_weights(m.get_weights())
    np.testing.assert_allclose(np.concatenate(windows, axis=1), long.predict(ids, verbose=0),
                               rtol=1e-12, atol=1e-14)
    m.reset_states()
    np.testing.assert_allclose(m.predict(ids[:, :5], batch_size=4, verbose=0), windows[0],
                               rtol=1e-12, atol=1e-14)


def test_stateful_training_matches_on_both_backends_and_stops_the_gradient_at_the_window():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, (4, 16))
    runs = {}
    for backend in ("numpy", "numba"):
        m = stateful_model(backend)
        m.compile(fastrnn.optimizers.SGD(learning_rate=0.5),
                  fastrnn.losses.SparseCategoricalCrossentropy(from_logits=True))
        losses = [m.train_on_batch(ids[:, i:i + 5], ids[:, i + 1:i + 6]) for i in (0, 5, 10)]
        runs[backend] = (losses, m.theta.copy())
    np.testing.assert_allclose(runs["numba"][0], runs["numpy"][0], rtol=1e-10)
    np.testing.assert_allclose(runs["numba"][1], runs["numpy"][1], rtol=1e-9, atol=1e-12)
    # the third window's gradient is that of the window alone from the carried state, held fixed
    m = stateful_model("numpy")
    m.compile("sgd", fastrnn.losses.SparseCategoricalCrossentropy(from_logits=True))
    for i in (0, 5):
        m.predict(ids[:, i:i + 5], batch_size=4, verbose=0)
    carried = [layer.states.copy() for layer in m.layers if getattr(layer, "stateful", False)]
    x, y = m._data(ids[:, 10:15], ids[:, 11:16])
    m._loss_and_grad(x, y)
    analytic = m.grad.copy()

    def loss():
        for layer, state in zip([la for la in m.layers if getattr(la, "stateful", False)],
                                carried):
            layer.states = state.copy()
        return m._evaluate(x, y, 4)[0]
    numeric = helpers.central_differences(loss, m.theta, 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_stateful_errors():
    m = stateful_model("numpy")
    with pytest.raises(ValueError, match="stateful with batch size 4, got a batch of 3"):
        m.predict(np.zeros((3, 5), int), batch_size=3, verbose=0)
    with pytest.raises(ValueError, match="stateful Bidirectional is not supported"):
        layers.Bidirectional(layers.SimpleRNN(3, stateful=True))
    with pytest.raises(ValueError, match="return_state=True"):
        layers.SimpleRNN(3, return_state=True)
    with pytest.raises(AttributeError, match="not stateful"):
        layers.SimpleRNN(3).reset_states()
