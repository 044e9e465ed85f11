"""The contract of SimpleRNNClassifier: construction, Keras initialisation and weights, training,
callbacks, prediction on ids and raw text, save/load and exact resumption, and its errors."""

from __future__ import annotations

import json
import os
import stat
import warnings
import zipfile

import numpy as np
import pytest

import _train_worker as w
import fastrnn
from fastrnn import (SGD, Adam, EarlyStopping, ModelCheckpoint, SimpleRNNClassifier, TrainingError,
                     reference)
from fastrnn.callbacks import Callback

V, D, H, C = w.V, w.D, w.H, w.C
SHARED_IMDB = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "imdb")


def model(backend="numpy", dtype="float64", seed=7, **kwargs):
    kwargs.setdefault("optimizer", Adam(learning_rate=0.01))
    return SimpleRNNClassifier(V, D, H, C, dtype=dtype, backend=backend, seed=seed, **kwargs)


def data(n=64, seed=0):
    return w.make_data(seed=seed, n=n)


class Record(Callback):
    """Weights at the end of every epoch, and the logs of every batch."""

    def __init__(self):
        self.weights, self.batches = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())

    def on_batch_end(self, step, logs=None):
        self.batches.append((step, dict(logs)))


class Stop(Exception):
    pass


class StopAtStep(Callback):
    """Raise in the middle of training, after step ``step``'s callbacks (a crash)."""

    def __init__(self, step):
        self.step = step

    def on_batch_end(self, step, logs=None):
        if step == self.step:
            raise Stop


def assert_weights_equal(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------------------------------------------
# construction and initialisation
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(vocab_size=0), ValueError, "vocab_size"),
    (dict(vocab_size=2.5), TypeError, "vocab_size"),
    (dict(embed_dim=0), ValueError, "embed_dim"),
    (dict(hidden_dim=-3), ValueError, "hidden_dim"),
    (dict(hidden_dim=True), TypeError, "hidden_dim"),
    (dict(num_classes=1), ValueError, "num_classes"),
    (dict(bptt_truncate=0), ValueError, "bptt_truncate"),
    (dict(bptt_truncate=1.5), TypeError, "bptt_truncate"),
    (dict(dtype="float16"), ValueError, "dtype"),
    (dict(backend="torch"), ValueError, "backend"),
    (dict(optimizer="adamax"), ValueError, "optimizer"),
    (dict(optimizer=3), TypeError, "optimizer"),
    (dict(threads=0), ValueError, "threads"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed="x"), TypeError, "seed"),
    (dict(vocab_size=None, mask_zero=True), ValueError, "mask_zero"),
])
def test_constructor_validation(kwargs, error, match):
    args = dict(vocab_size=V, embed_dim=D, hidden_dim=H)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        SimpleRNNClassifier(**args)


def test_keras_initialisation():
    m = model(dtype="float32", seed=3)
    E, W_xh, W_hh, b_h, W_hy, b_y = m.get_weights()
    assert [a.shape for a in m.get_weights()] == [(V, D), (D, H), (H, H), (H,), (H, C), (C,)]
    assert all(a.dtype == np.float32 for a in m.get_weights())
    assert np.abs(E).max() <= 0.05 and np.abs(E).max() > 0.04          # U(-0.05, 0.05)
    for a, (fan_in, fan_out) in ((W_xh, (D, H)), (W_hy, (H, C))):    # glorot uniform
        limit = np.sqrt(6 / (fan_in + fan_out))
        assert np.abs(a).max() <= limit and np.abs(a).max() > 0.5 * limit
    np.testing.assert_allclose(W_hh.T @ W_hh, np.eye(H), atol=1e-6)   # orthogonal
    assert not b_h.any() and not b_y.any()


def test_same_seed_same_weights_on_both_backends_and_seeds_differ():
    a, b = model("numpy", seed=11), model("numba", seed=11)
    assert_weights_equal(a.get_weights(), b.get_weights())
    c = model("numpy", seed=12)
    assert all(not np.array_equal(u, v) for u, v in zip(a.get_weights()[:3], c.get_weights()[:3]))


def test_dense_input_model_has_no_embedding():
    m = SimpleRNNClassifier(None, D, H, backend="numpy", seed=0)
    assert [a.shape for a in m.get_weights()] == [(D, H), (H, H), (H,), (H, C), (C,)]
    x = np.random.default_rng(0).standard_normal((5, 4, D))
    assert m.predict_proba(x).shape == (5, C)


# ------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------

def test_get_set_weights_round_trip():
    m = model()
    weights = m.get_weights()
    assert [a.shape for a in weights] == [(V, D), (D, H), (H, H), (H,), (H, C), (C,)]
    weights[0][0, 0] = 123.0                       # copies: the model is unchanged
    assert m.get_weights()[0][0, 0] != 123.0
    new = [np.full(a.shape, i + 0.5) for i, a in enumerate(weights)]
    m.set_weights(new)
    assert_weights_equal(m.get_weights(), new)
    assert m.parameters()["recurrent_kernel"][0, 0] == 2.5             # views into theta
    m.set_weights([a.astype(np.float32) for a in new])                  # any float dtype
    assert_weights_equal(m.get_weights(), new)


@pytest.mark.parametrize("change, error, match", [
    (lambda ws: ws[:-1], ValueError, "list of 6 arrays"),
    (lambda ws: ws[:2] + [ws[2][:, :-1]] + ws[3:], ValueError, "recurrent_kernel.*shape"),
    (lambda ws: ws[:3] + [ws[3].astype(int)] + ws[4:], TypeError, "bias.*floats"),
    (lambda ws: ws[:1] + [np.full_like(ws[1], np.nan)] + ws[2:], ValueError, "kernel.*finite"),
    (lambda ws: ws[:4] + [np.full_like(ws[4], 1e300)] + ws[5:], ValueError, "dense_kernel"),
])
def test_set_weights_errors_leave_weights_alone(change, error, match):
    m = model(dtype="float32")
    before = m.get_weights()
    with pytest.raises(error, match=match):
        m.set_weights(change([a.astype(np.float64) for a in before]))
    assert_weights_equal(m.get_weights(), before)


# ------------------------------------------------------------------------------------------------
# one batch
# ------------------------------------------------------------------------------------------------

def test_train_on_batch_returns_loss_and_changes_weights():
    x, y = data(16)
    m = model()
    before = m.get_weights()
    loss_before = m.test_on_batch(x, y)
    loss = m.train_on_batch(x, y)
    assert isinstance(loss, float) and loss == pytest.approx(loss_before, rel=1e-12)
    assert m.step_count == 1
    assert all(not np.array_equal(u, v) for u, v in zip(before, m.get_weights()))
    assert m.test_on_batch(x, y) < loss_before
    assert m.test_on_batch(x, y) == pytest.approx(m.evaluate(x, y, verbose=0)[0], rel=1e-12)


def test_numpy_and_numba_backends_train_the_same():
    x, y = data(64)
    losses, weights = {}, {}
    for backend in ("numpy", "numba"):
        m = model(backend, mask_zero=True)
        losses[backend] = [m.train_on_batch(x[i % 4 * 16:][:16], y[i % 4 * 16:][:16])
                           for i in range(20)]
        weights[backend] = m.get_weights()
    np.testing.assert_allclose(losses["numba"], losses["numpy"], rtol=1e-10, atol=1e-12)
    for a, b in zip(weights["numba"], weights["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------------------------------------
# fit, History, callbacks
# ------------------------------------------------------------------------------------------------

def test_fit_returns_keras_history():
    x, y = data(64)
    m = model()
    history = m.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    assert history is m.history
    assert history.epoch == [0, 1, 2]
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert all(0 <= a <= 1 for a in history.history["accuracy"])
    assert m.epoch == 3 and m.step_count == 3 * 3


def test_fit_epochs_counts_epochs_per_call_as_keras():
    """Keras: ``epochs`` is the final epoch index and ``initial_epoch`` (default 0) the first, so
    ``fit(epochs=1)`` in a loop trains one epoch each time."""
    x, y = data(32)
    m = model()
    for i in range(3):
        history = m.fit(x, y, epochs=1, batch_size=8, verbose=0)
        assert m.step_count == 4 * (i + 1)
        assert history.epoch == [0] and len(history.history["loss"]) == 1
    history = m.fit(x, y, epochs=5, initial_epoch=3, batch_size=8, verbose=0)
    assert m.step_count == 12 + 8 and history.epoch == [3, 4] and m.epoch == 5
    assert m.fit(x, y, epochs=2, initial_epoch=2, batch_size=8, verbose=0).epoch == []
    assert m.step_count == 20


def test_fit_with_initial_epoch_continues_a_run_exactly():
    x, y = data(32)
    whole = model()
    whole.fit(x, y, epochs=4, batch_size=8, verbose=0)
    parts = model()
    parts.fit(x, y, epochs=2, batch_size=8, verbose=0)
    history = parts.fit(x, y, epochs=4, initial_epoch=parts.epoch, batch_size=8, verbose=0)
    np.testing.assert_array_equal(parts.theta, whole.theta)
    assert history.history == whole.history.history and history.epoch == [0, 1, 2, 3]


@pytest.mark.parametrize("verbose", [0, 1, 2, "auto"])
def test_verbose_and_batch_size_as_keras(capsys, verbose):
    x, y = data(16)
    m = model()
    m.fit(x, y, epochs=1, verbose=verbose)                    # batch_size None: 32, one step
    assert m.step_count == 1
    out = capsys.readouterr()
    assert ("Epoch 1/1:" in out.out) == (verbose != 0)
    assert bool(out.err) == (verbose in (1, "auto"))          # the progress bar
    p = m.predict_proba(x, batch_size=3, verbose=verbose)
    np.testing.assert_array_equal(p, m.predict_proba(x, verbose=0))
    np.testing.assert_array_equal(m.predict(x, batch_size=5, verbose=verbose), p.argmax(axis=1))
    assert m.evaluate(x, y, batch_size=4, verbose=verbose) == pytest.approx(
        list(m.evaluate(x, y, verbose=0, return_dict=True).values()), rel=1e-12)


@pytest.mark.parametrize("bad", [3, -1, True, "yes", None])
def test_bad_verbose_is_refused(bad):
    x, y = data(8)
    for call in (lambda: model().fit(x, y, verbose=bad), lambda: model().predict(x, verbose=bad),
                 lambda: model().evaluate(x, y, verbose=bad)):
        with pytest.raises(ValueError, match="verbose must be 'auto', 0, 1 or 2"):
            call()


def test_encoding_text_with_no_known_word_warns():
    m = model()
    index = {"good": 1, "film": 2}
    with pytest.warns(fastrnn.UnknownTextWarning, match=r"^1 of 3 texts \(at 1\) have no word in the "
                                                r"model's vocabulary of 40"):
        ids = m.encode(["a good film", "", "film"], maxlen=4, word_index=index)
    np.testing.assert_array_equal(ids, [[0, 1, 4, 5], [0, 0, 0, 1], [0, 0, 1, 5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.encode(["good"], maxlen=4, word_index=index)      # known words: no warning


def test_validation_split_holds_out_the_last_fraction_like_keras():
    x, y = data(10)
    m = model()
    history = m.fit(x, y, epochs=1, batch_size=4, validation_split=0.25, verbose=0)
    # Keras: split_at = floor(10 * 0.75) = 7, so the last 3 samples validate
    assert history.history["val_loss"][0] == pytest.approx(m.evaluate(x[7:], y[7:], verbose=0)[0],
                                                           rel=1e-12)
    assert history.history["val_loss"][0] != pytest.approx(m.evaluate(x[8:], y[8:], verbose=0)[0],
                                                           rel=1e-6)
    assert m.step_count == 2                         # 7 training samples in batches of 4


def test_validation_data_and_evaluate():
    x, y = data(64)
    m = model()
    history = m.fit(x[:48], y[:48], epochs=2, batch_size=16, validation_data=(x[48:], y[48:]),
                    verbose=0)
    result = m.evaluate(x[48:], y[48:], verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    assert history.history["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-12)
    assert result["accuracy"] == pytest.approx(np.mean(m.predict(x[48:], verbose=0) == y[48:]))
    loss, accuracy = m.evaluate(x[48:], y[48:], batch_size=5, verbose=0)   # Keras' return
    assert [loss, accuracy] == pytest.approx([result["loss"], result["accuracy"]], rel=1e-12)
    assert isinstance(loss, float) and isinstance(accuracy, float)


def overfitting_data():
    """Validation labels are the opposite of the training labels on the same inputs: the better
    the model fits, the worse the validation loss, from the first epoch on."""
    x, y = data(64)
    return x, y, (x, 1 - y)


def test_early_stopping_restores_the_best_weights():
    x, y, val = overfitting_data()
    m = model(optimizer=Adam(learning_rate=0.05))
    record = Record()
    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = m.fit(x, y, epochs=20, batch_size=16, validation_data=val, callbacks=[record, stop],
                    verbose=0)
    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert best == 0 and len(val_loss) == 3          # patience=2: two epochs without improvement
    assert stop.best_epoch == 0 and stop.stopped_epoch == 2
    assert_weights_equal(m.get_weights(), record.weights[best])
    assert not np.array_equal(m.get_weights()[1], record.weights[-1][1])


def test_early_stopping_without_restore_keeps_the_last_weights():
    x, y, val = overfitting_data()
    m = model(optimizer=Adam(learning_rate=0.05))
    record = Record()
    m.fit(x, y, epochs=20, batch_size=16, validation_data=val,
          callbacks=[record, EarlyStopping(patience=0)], verbose=0)
    assert m.epoch == 2
    assert_weights_equal(m.get_weights(), record.weights[-1])


def test_model_checkpoint_every_epoch_every_n_steps_and_best_only(tmp_path):
    x, y, val = overfitting_data()                   # 4 batches per epoch
    m = model(optimizer=Adam(learning_rate=0.05))
    callbacks = [ModelCheckpoint(tmp_path / "e{epoch:02d}-{val_loss:.2f}.npz"),
                 ModelCheckpoint(tmp_path / "s{epoch}.npz", save_freq=3),
                 ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss", save_best_only=True)]
    history = m.fit(x, y, epochs=3, batch_size=16, validation_data=val, callbacks=callbacks,
                    verbose=0)
    names = sorted(p.name for p in tmp_path.iterdir())
    per_epoch = [f"e{e + 1:02d}-{v:.2f}.npz" for e, v in enumerate(history.history["val_loss"])]
    assert names == sorted(per_epoch + ["s1.npz", "s2.npz", "s3.npz", "best.npz"])
    # steps 3, 6, 9, 12 fall in epochs 1, 2, 3, 3: s3 holds step 12, s1 step 3
    assert SimpleRNNClassifier.load(tmp_path / "s1.npz", backend="numpy").step_count == 3
    assert SimpleRNNClassifier.load(tmp_path / "s3.npz", backend="numpy").step_count == 12
    best = SimpleRNNClassifier.load(tmp_path / "best.npz", backend="numpy")
    assert best.epoch == 1                            # the val loss only got worse after epoch 1
    last = SimpleRNNClassifier.load(tmp_path / per_epoch[-1], backend="numpy")
    assert_weights_equal(last.get_weights(), m.get_weights())


def test_callbacks_must_be_callbacks():
    x, y = data(16)
    with pytest.raises(TypeError, match="callbacks"):
        model().fit(x, y, callbacks=[print], verbose=0)
    with pytest.raises(ValueError, match="save_freq"):
        ModelCheckpoint("m.npz", save_freq=0)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")


def test_early_stopping_needs_its_monitor():
    x, y = data(16)
    with pytest.raises(ValueError, match="val_loss"):
        model().fit(x, y, callbacks=[EarlyStopping()], verbose=0)


# ------------------------------------------------------------------------------------------------
# prediction
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_predict_proba_and_predict(backend):
    x, y = data(40)
    m = model(backend)
    p = m.predict_proba(x, batch_size=16)
    assert p.shape == (40, C) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)
    assert (p >= 0).all()
    np.testing.assert_array_equal(m.predict(x), p.argmax(axis=1))
    np.testing.assert_allclose(p, reference.softmax(m.predict_logits(x)), rtol=1e-12)


WORD_INDEX = {"the": 1, "movie": 2, "was": 3, "great": 4, "awful": 5, "fun": 6}


def test_encode_and_predict_raw_text():
    m = SimpleRNNClassifier(10, D, H, backend="numpy", seed=0)
    ids = m.encode(["The movie was GREAT!", "awful, awful movie"], maxlen=6,
                   word_index=WORD_INDEX)
    # start_char 1, then rank + 3; words missing from the index dropped; rank + 3 >= 10 -> oov 2
    np.testing.assert_array_equal(ids, [[0, 1, 4, 5, 6, 7], [0, 0, 1, 8, 8, 5]])
    m.fit(ids, np.array([1, 0]), epochs=1, verbose=0)
    assert m.config["maxlen"] == 6
    np.testing.assert_array_equal(m.encode("fun fun", word_index=WORD_INDEX), [[0, 0, 0, 1, 9, 9]])
    assert m.predict(ids).shape == (2,)
    with pytest.raises(ValueError, match="maxlen"):
        SimpleRNNClassifier(10, D, H, backend="numpy").encode("fun", word_index=WORD_INDEX)
    with pytest.raises(ValueError, match="dense"):
        SimpleRNNClassifier(None, D, H, backend="numpy").encode("fun", maxlen=3)


def test_predict_on_strings_uses_the_imdb_word_index(monkeypatch):
    if not os.path.exists(os.path.join(SHARED_IMDB, "imdb_word_index.json")):
        pytest.skip("no IMDB word index in ../shared/data/imdb")
    monkeypatch.setenv("FASTRNN_DATA_DIR", os.path.abspath(SHARED_IMDB))
    monkeypatch.setenv("FASTRNN_OFFLINE", "1")
    m = SimpleRNNClassifier(1000, D, H, backend="numpy", seed=0)
    texts = ["This movie was great fun", "An awful, boring film."]
    ids = m.encode(texts, maxlen=20)
    assert ids.shape == (2, 20) and ids.max() < 1000 and (ids[:, -4:] > 2).all()
    m.config["maxlen"] = 20                          # as fit would have set it
    np.testing.assert_array_equal(m.predict(texts), m.predict(ids))
    np.testing.assert_allclose(m.predict_proba(texts), m.predict_proba(ids))
    np.testing.assert_allclose(m.predict_proba(texts[0]), m.predict_proba(ids[:1]))


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

def _bad_inputs():
    x, y = data(8)
    return [
        ("labels >= C", x, np.full(8, C), ValueError, "y has label"),
        ("labels < 0", x, -np.ones(8, int), ValueError, "y has label"),
        ("fractional labels", x, y + 0.5, TypeError, "y must hold integer"),
        ("NaN labels", x, np.full(8, np.nan), TypeError, "y must hold integer"),
        ("length mismatch", x, y[:5], ValueError, r"y must have shape \(8,\)"),
        ("2-D labels", x, y[:, None], ValueError, "y must have shape"),
        ("empty", np.zeros((0, 5), int), np.zeros(0, int), ValueError, "x is empty"),
        ("empty list", [], [], ValueError, "x is empty"),
        ("no time steps", np.zeros((8, 0), int), y, ValueError, "x is empty"),
        ("ragged lists", [[1, 2, 3], [4, 5]], [0, 1], ValueError, "x must be a rectangular"),
        ("float ids", x.astype(float), y, TypeError, "x must hold integer token ids"),
        ("string ids", [["a", "b"]], [0], TypeError, "x must hold integer"),
        ("3-D ids", x[:, :, None], y, ValueError, r"x must have shape \(batch, time\)"),
        ("1-D ids", x[0], y[:1], ValueError, r"x must have shape \(batch, time\)"),
        ("id >= vocab_size", np.full((8, 5), V), y, ValueError, f"token id {V} outside"),
        ("negative id", -x, y, ValueError, "outside"),
        ("ragged labels", x[:2], [[0], [1, 0]], ValueError, "y must be a rectangular"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_bad_input_to_fit_and_predict(case):
    _, x, y, error, match = case
    m = model()
    before = m.get_weights()
    with pytest.raises(error, match=match):
        m.fit(x, y, verbose=0)
    with pytest.raises((ValueError, TypeError)):
        m.train_on_batch(x, y)
    if not match.startswith("y"):
        with pytest.raises(error, match=match):
            m.predict(x)
    assert_weights_equal(m.get_weights(), before)
    assert m.step_count == 0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(epochs=1.5), TypeError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(validation_split=1.0), ValueError, "validation_split"),
    (dict(validation_split=0.95), ValueError, "validation_split"),     # no training sample
    (dict(validation_data=([[1]],)), ValueError, "validation_data"),
    (dict(validation_data=(np.ones((2, 3)), [0, 1])), TypeError, "validation_data: x"),
    (dict(on_nonfinite="ignore"), ValueError, "on_nonfinite"),
    (dict(checkpoint_every=0), ValueError, "checkpoint_every"),
])
def test_bad_fit_arguments(kwargs, error, match):
    x, y = data(16)
    with pytest.raises(error, match=match):
        model().fit(x, y, verbose=0, **kwargs)


def test_bad_dense_input():
    m = SimpleRNNClassifier(None, D, H, dtype="float32", backend="numpy", seed=0)
    x = np.ones((3, 4, D))
    with pytest.raises(ValueError, match="NaN or inf"):
        m.predict(np.full((3, 4, D), np.nan))
    with pytest.raises(ValueError, match="NaN or inf"):
        m.predict(np.full((3, 4, D), 1e300))           # overflows float32: refused, no warning
    with pytest.raises(ValueError, match=r"x must have shape \(\*, \*, 6\)"):
        m.predict(x[:, :, :2])
    with pytest.raises(TypeError, match="numbers"):
        m.predict(x.astype(bool))
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(x, batch_size=0)


# ------------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_save_load_round_trip(tmp_path, backend):
    x, y = data(64)
    m = model(backend, optimizer=Adam(learning_rate=0.02, global_clipnorm=2.0), mask_zero=True,
              bptt_truncate=5)
    m.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    path = tmp_path / "model.npz"
    m.save(path)
    k = SimpleRNNClassifier.load(path, backend=backend)
    assert_weights_equal(k.get_weights(), m.get_weights())
    for name in ("theta", "s1", "s2"):
        np.testing.assert_array_equal(getattr(k, name), getattr(m, name))
    assert k.step_count == m.step_count == 6 and k.epoch == m.epoch == 2
    assert k.config == m.config and k.config["maxlen"] == x.shape[1]
    assert k.optimizer == m.optimizer
    assert k.history.history == m.history.history and k.history.epoch == [0, 1]
    assert k.rng.bit_generator.state == m.rng.bit_generator.state
    assert k.dtype == np.float64 and k.backend_name == backend
    np.testing.assert_array_equal(k.predict_proba(x), m.predict_proba(x))


def test_save_load_float32_and_dense(tmp_path):
    m = SimpleRNNClassifier(None, 3, 4, num_classes=3, dtype="float32", backend="numpy", seed=0,
                            optimizer=SGD(0.1, momentum=0.9))
    x = np.random.default_rng(0).standard_normal((12, 5, 3))
    m.fit(x, np.arange(12) % 3, epochs=1, batch_size=4, verbose=0)
    m.save(tmp_path / "m")                                       # any name; no suffix added
    k = SimpleRNNClassifier.load(tmp_path / "m", backend="numpy")
    assert k.dtype == np.float32 and k.dims == (0, 3, 4, 3) and k.optimizer == m.optimizer
    assert_weights_equal(k.get_weights(), m.get_weights())


def uninterrupted(epochs=3, **fit_kwargs):
    m = w.make_model()
    w.fit(m, epochs=epochs, **fit_kwargs)
    return m


@pytest.mark.parametrize("stop_step", [7, 12, 13, 18])
def test_resume_from_a_checkpoint_continues_exactly(tmp_path, stop_step):
    """A run that crashes after step ``stop_step``, reloaded from its checkpoint (saved every 3
    steps and at every epoch end; an epoch has 12 steps), ends with the same weights, optimizer
    state and history as a run never interrupted."""
    path = tmp_path / "ckpt.npz"
    reference_run = uninterrupted()
    crashed = w.make_model()
    with pytest.raises(Stop):
        w.fit(crashed, path, epochs=3, every=3, callbacks=[StopAtStep(stop_step)])
    resumed = SimpleRNNClassifier.load(path, backend="numpy")
    # the crash comes in the step's callbacks, before its checkpoint: the file holds the last
    # multiple of 3 before it, or the end of epoch 1 (step 12)
    assert resumed.step_count == (stop_step - 1) // 3 * 3
    w.fit(resumed, path, epochs=3, every=3)
    assert resumed.step_count == reference_run.step_count == 36
    for name in ("theta", "s1", "s2"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference_run, name))
    assert resumed.history.history == reference_run.history.history


def test_resume_after_a_save_at_the_last_step_of_an_epoch(tmp_path):
    """checkpoint_every falls on an epoch's last step; the run dies before the epoch-end save."""
    class DieAtEpochEnd(Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Stop

    path = tmp_path / "ckpt.npz"
    crashed = w.make_model()
    with pytest.raises(Stop):
        w.fit(crashed, path, epochs=3, every=12, callbacks=[DieAtEpochEnd()])
    resumed = SimpleRNNClassifier.load(path, backend="numpy")
    assert resumed.epoch == 0 and resumed._resume["batch"] == 12
    w.fit(resumed, path, epochs=3, every=12)
    reference_run = uninterrupted()
    np.testing.assert_array_equal(resumed.theta, reference_run.theta)
    assert resumed.history.history == reference_run.history.history


def test_resume_with_other_data_starts_the_epoch_over(tmp_path):
    path = tmp_path / "ckpt.npz"
    with pytest.raises(Stop):
        w.fit(w.make_model(), path, epochs=3, every=3, callbacks=[StopAtStep(6)])
    resumed = SimpleRNNClassifier.load(path, backend="numpy")
    x, y = w.make_data()
    assert resumed.step_count == 3 and resumed._resume["batch"] == 3
    resumed.fit(x[:40], y[:40], epochs=1, batch_size=8, verbose=0)    # 5 steps, not 12 - 3
    assert resumed.step_count == 3 + 5 and resumed.epoch == 1


def write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def saved(tmp_path, **kwargs):
    m = model(**kwargs)
    x, y = data(16)
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "model.npz"
    m.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return path, arrays, json.loads(arrays["meta"].tobytes())


def meta_array(meta):
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SimpleRNNClassifier.load(tmp_path / "nope.npz")


@pytest.mark.parametrize("damage, match", [
    ("truncate", "not a valid fastrnn model file"),
    ("truncate_tail", "not a valid fastrnn model file"),
    ("flip_data", "CRC|not a valid"),
    ("garbage", "not a valid fastrnn model file"),
    ("empty", "not a valid fastrnn model file"),
    ("directory", "is a directory"),
    ("version", "format version 2"),
    ("format", "not a fastrnn model"),
    ("short_theta", "array 'theta' has shape"),
    ("float32_theta", "array 'theta' has dtype float32"),
    ("nan_s2", "array 's2' holds NaN"),
    ("missing", "a model file has meta, s1, s2 and theta"),
    ("extra", "a model file has meta, s1, s2 and theta"),
    ("pickled", "Python objects"),
    ("bad_json", "not a valid fastrnn model file"),
    ("bad_config", "bad config"),
    ("huge_count", "bad step or epoch count"),
    ("huge_vocab", r"array 'theta' has shape \(\d+,\); the config needs"),   # no 40 GB model
    ("keras_imdb", "a model file has meta"),
])
def test_load_damaged_files(tmp_path, damage, match):
    path, arrays, meta = saved(tmp_path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "truncate_tail":
        path.write_bytes(raw[:-30])
    elif damage == "flip_data":
        i = raw.index(arrays["theta"].tobytes()[:16]) + 40
        path.write_bytes(raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:])
    elif damage == "garbage":
        path.write_bytes(os.urandom(2000))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    elif damage in ("version", "format", "bad_config", "huge_count", "huge_vocab"):
        meta = dict(meta)
        if damage == "version":
            meta["format_version"] = 2
        elif damage == "format":
            meta["format"] = "keras"
        elif damage == "bad_config":
            meta["config"] = dict(meta["config"], mask_zero="yes")
        elif damage == "huge_vocab":
            meta["config"] = dict(meta["config"], vocab_size=10**9)
        else:
            meta["step_count"] = 1e400
        write_npz(path, **dict(arrays, meta=meta_array(meta)))
    elif damage == "short_theta":
        write_npz(path, **dict(arrays, theta=arrays["theta"][:-1]))
    elif damage == "float32_theta":
        write_npz(path, **dict(arrays, theta=arrays["theta"].astype(np.float32)))
    elif damage == "nan_s2":
        s2 = arrays["s2"].copy()
        s2[3] = np.nan
        write_npz(path, **dict(arrays, s2=s2))
    elif damage == "missing":
        write_npz(path, **{k: v for k, v in arrays.items() if k != "s1"})
    elif damage == "extra":
        write_npz(path, **arrays, more=np.zeros(3))
    elif damage == "pickled":
        write_npz(path, **dict(arrays, s1=np.array([{"a": 1}, None], dtype=object)))
    elif damage == "bad_json":
        write_npz(path, **dict(arrays, meta=np.frombuffer(b"{not json", np.uint8)))
    elif damage == "keras_imdb":
        write_npz(path, x_train=np.array([[1, 2], [3]], dtype=object), y_train=np.zeros(2))
    error = FileNotFoundError if damage == "missing_file" else ValueError
    with pytest.raises(error, match=match):
        SimpleRNNClassifier.load(path, backend="numpy")


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path, _, _ = saved(tmp_path)
    good = path.read_bytes()
    m = model()

    def exploding_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    monkeypatch.undo()

    def interrupted_savez(f, **arrays):
        f.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        m.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]      # no temp files left
    SimpleRNNClassifier.load(path, backend="numpy")


def test_save_into_a_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, so no directory can be made below it (even as root)")
    with pytest.raises(OSError):
        model().save(blocker / "sub" / "model.npz")
    target = tmp_path / "model.npz"
    target.mkdir()                                   # the path is a directory: replace fails
    with pytest.raises(OSError):
        model().save(target)
    assert target.is_dir() and not any(target.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "model.npz"]


def test_save_refuses_non_finite_state(tmp_path):
    path, _, _ = saved(tmp_path)
    good = path.read_bytes()
    m = model()
    m.s2[5] = np.inf
    with pytest.raises(TrainingError, match="optimizer state"):
        m.save(path)
    m.s2[5] = 0
    m.theta[0] = np.nan
    with pytest.raises(TrainingError, match="weights"):
        m.save(path)
    assert path.read_bytes() == good


def test_saved_file_has_normal_permissions(tmp_path):
    path = tmp_path / "model.npz"
    model().save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    path.chmod(0o640)
    model().save(path)                               # an existing file keeps its mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_model_file_is_a_plain_npz_without_pickle(tmp_path):
    path, arrays, meta = saved(tmp_path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["meta.npy", "s1.npy", "s2.npy", "theta.npy"]
    with np.load(path, allow_pickle=False) as f:
        assert f["theta"].dtype == np.float64
    assert meta["format"] == "fastrnn-model" and meta["format_version"] == 1
    assert fastrnn.SimpleRNNClassifier.load(path, backend="numpy").epoch == 1
