"""The model class: buffers, a backend, and the training loop. No maths of its own.

All parameters live in one flat buffer ``theta`` (layout in ``fastrnn.layout``), with the gradient
and two optimizer-state buffers of the same shape; every computation is a call into the backend
module, ``fastrnn.kernels`` (Numba, imported on first use) or ``fastrnn.reference`` (NumPy).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import zipfile

import numpy as np

from . import _checks, initializers, layout, optim, reference
from ._io import atomic_write
from .callbacks import Callback, History

FORMAT = "fastrnn-model"
FORMAT_VERSION = 1
BACKENDS = ("numba", "numpy")


class TrainingError(FloatingPointError):
    """Training hit a non-finite loss or gradient; the weights are those before that step."""


class SimpleRNNClassifier:
    """Embedding -> SimpleRNN(tanh) -> Dense(softmax), trained with one fused kernel per batch.

    Parameters
    ----------
    vocab_size : int or None
        Number of token ids (ids lie in ``[0, vocab_size)``). ``None`` makes a model on dense inputs
        ``(N, T, embed_dim)`` with no embedding layer.
    embed_dim, hidden_dim, num_classes : int
        ``D``, ``H`` and ``C``.
    bptt_truncate : int or None
        Backpropagate through the last ``k`` state updates of each sequence only (None: all).
    mask_zero : bool
        Token 0 is padding: the state is carried unchanged over it (as Keras' ``mask_zero``).
    dtype : "float32" or "float64"
        The dtype of every buffer.
    backend : "numba" or "numpy"
        Compiled kernels or the NumPy reference (same maths, same results up to rounding).
    optimizer : fastrnn.optim.Optimizer, name or config dict; default ``Adam(learning_rate=1e-3)``.
    seed : int or None
        Seeds the Keras-style initialisation and the shuffling in ``fit``.
    lazy_embedding : bool
        Update only the embedding rows present in each batch (TF LazyAdam / torch SparseAdam).
        The default updates every row, as Keras and PyTorch do.
    threads : int or None
        Numba threads to use (default: Numba's, i.e. ``NUMBA_NUM_THREADS`` or all cores).
    """

    def __init__(self, vocab_size, embed_dim, hidden_dim, num_classes=2, bptt_truncate=None,
                 mask_zero=False, dtype="float32", backend="numba", optimizer=None, seed=None,
                 lazy_embedding=False, threads=None):
        for name, value in (("embed_dim", embed_dim), ("hidden_dim", hidden_dim)):
            _positive_int(name, value)
        _positive_int("num_classes", num_classes, minimum=2)
        if vocab_size is not None:
            _positive_int("vocab_size", vocab_size)
        if mask_zero and vocab_size is None:
            raise ValueError("mask_zero needs token inputs (vocab_size); dense inputs have no padding id")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if threads is not None:
            _positive_int("threads", threads)
        self.config = {
            "vocab_size": vocab_size, "embed_dim": int(embed_dim), "hidden_dim": int(hidden_dim),
            "num_classes": int(num_classes), "bptt_truncate": _checks.truncate(bptt_truncate),
            "mask_zero": bool(mask_zero), "dtype": _checks.dtype(dtype).name, "seed": seed,
            "lazy_embedding": bool(lazy_embedding), "maxlen": None}
        self.dims = (vocab_size or 0, int(embed_dim), int(hidden_dim), int(num_classes))
        self.backend_name, self.threads = backend, threads
        self.optimizer = optim.get(optimizer)
        dt = np.dtype(self.config["dtype"])
        n = layout.size(self.dims)
        self.theta, self.grad, self.s1, self.s2 = (np.zeros(n, dt) for _ in range(4))
        self.rng = np.random.default_rng(seed)
        for view, value in zip(self._views(), initializers.keras_weights(self.rng, self.dims)):
            if view is not None:
                view[...] = value
        self.step_count = 0          # optimizer steps taken (Adam's t)
        self.epoch = 0               # completed epochs
        self._resume = None          # position inside an interrupted epoch (see fit)
        self.history = History()
        self.stop_training = False

    # --- parameters ----------------------------------------------------------------------------

    @property
    def backend(self):
        if self.backend_name == "numba":
            from . import kernels            # imported (and compiled) only when used
            return kernels
        return reference

    @property
    def dtype(self):
        return self.theta.dtype

    def _views(self):
        return layout.unpack(self.theta, self.dims)

    def parameters(self):
        """Name -> view into the flat buffer (writing into a view changes the model)."""
        return {name: view for name, view in zip(layout.NAMES, self._views()) if view is not None}

    def get_weights(self):
        """Copies of the weights in Keras order: ``[embedding (V, D), kernel (D, H),
        recurrent_kernel (H, H), bias (H,), dense_kernel (H, C), dense_bias (C,)]`` (no embedding
        for a dense-input model)."""
        return [w.copy() for w in self.parameters().values()]

    def set_weights(self, weights):
        """Set the weights from a list in ``get_weights()`` order (any float dtype, same shapes)."""
        views = list(self.parameters().items())
        if len(weights) != len(views):
            raise ValueError(f"weights must be a list of {len(views)} arrays "
                             f"({', '.join(n for n, _ in views)}), got {len(weights)}")
        arrays = []
        for (name, view), w in zip(views, weights):
            w = np.asarray(w)
            if w.shape != view.shape:
                raise ValueError(f"weight {name!r} must have shape {view.shape}, got {w.shape}")
            if w.dtype.kind != "f" or not np.isfinite(w).all():
                raise ValueError(f"weight {name!r} must be finite floats, got dtype {w.dtype}")
            arrays.append(w)
        for (_, view), w in zip(views, arrays):
            view[...] = w

    # --- one batch -----------------------------------------------------------------------------

    def _check(self, x, y=None):
        """Inputs as the backends take them: ids (N, T) or dense (N, T, D) in the model's dtype."""
        if self.dims[0] == 0:
            x = np.asarray(x)
            if x.dtype.kind not in "fiu":
                raise TypeError(f"x must hold numbers for a dense-input model, got dtype {x.dtype}")
            x = np.ascontiguousarray(x, dtype=self.dtype)
        return _checks.model_batch(self.theta, self.dims, x, y)

    def train_on_batch(self, x, y):
        """One optimizer step on the batch; returns the batch loss (before the step)."""
        x, y = self._check(x, y)
        return self._train_batch(x, y)[0]

    def _train_batch(self, x, y):
        with self._threads():
            loss, correct, norm = self.backend.train_step(
                self.theta, self.grad, self.s1, self.s2, self.step_count + 1, self.dims, x, y,
                self.optimizer.kind, self.optimizer.hyper(), self.config["mask_zero"],
                self.config["bptt_truncate"], self.config["lazy_embedding"])
        if math.isfinite(norm):
            self.step_count += 1
        return loss, correct, norm

    def test_on_batch(self, x, y):
        """The loss on a batch, without training."""
        return self.evaluate(x, y, batch_size=len(y))["loss"]

    def predict_logits(self, x, batch_size=256):
        x, _ = self._check(x)
        with self._threads():
            return np.concatenate([self.backend.forward(self.theta, self.dims, x[i:i + batch_size],
                                                        self.config["mask_zero"])
                                   for i in range(0, len(x), batch_size)])

    def predict_proba(self, x, batch_size=256):
        """Class probabilities ``(N, C)``; ``x`` may also be raw review strings (see ``encode``)."""
        if isinstance(x, str) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], str)):
            x = self.encode(x)
        return reference.softmax(self.predict_logits(x, batch_size).astype(np.float64))

    def predict(self, x, batch_size=256):
        """Predicted class labels ``(N,)``."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def encode(self, texts, maxlen=None):
        """Raw review strings -> padded token ids, as ``imdb.load_data(num_words=vocab_size)``
        encodes them, padded/truncated to ``maxlen`` (default: the length the model was fit on)."""
        from .preprocessing import TextEncoder, pad_sequences
        if self.dims[0] == 0:
            raise ValueError("this model reads dense inputs; it has no vocabulary to encode text")
        maxlen = maxlen or self.config["maxlen"]
        if maxlen is None:
            raise ValueError("maxlen unknown: pass maxlen= (the model has not been fit yet)")
        ids = TextEncoder(num_words=self.dims[0]).encode(texts)
        return pad_sequences(ids, maxlen=maxlen)

    def evaluate(self, x, y, batch_size=256):
        """``{"loss": mean cross-entropy, "accuracy": fraction correct}`` on ``(x, y)``."""
        x, y = self._check(x, y)
        logits = self.predict_logits(x, batch_size)
        loss, _ = reference.softmax_xent(logits.astype(np.float64), y)
        return {"loss": float(loss), "accuracy": float(np.mean(logits.argmax(axis=1) == y))}

    @contextlib.contextmanager
    def _threads(self):
        if self.threads is None or self.backend_name != "numba":
            yield
            return
        import numba
        before = numba.get_num_threads()
        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            numba.set_num_threads(before)

    # --- training ------------------------------------------------------------------------------

    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, callbacks=None, verbose=1, checkpoint=None, checkpoint_every=None,
            on_nonfinite="raise"):
        """Train until ``epochs`` epochs are complete (counting those already done, as Keras'
        ``initial_epoch``: a model loaded from a checkpoint continues where it stopped).

        Returns ``self.history``, a :class:`History` whose ``history`` dict has ``loss``,
        ``accuracy`` and, with validation data, ``val_loss`` and ``val_accuracy`` per epoch.

        ``validation_split`` holds out the last fraction of ``(x, y)`` (before shuffling, as
        Keras). ``checkpoint=PATH`` saves the model atomically after every epoch and, with
        ``checkpoint_every=N``, every N steps; training resumed from that file (``load`` + ``fit``)
        gives the same result as an uninterrupted run. A non-finite loss or gradient raises
        :class:`TrainingError` (``on_nonfinite="raise"``), weights untouched, or skips that batch
        and counts it in the logs as ``skipped`` (``"skip"``). Ctrl-C saves the checkpoint (at
        the last completed step) and re-raises.
        """
        x, y = self._check(x, y)
        _positive_int("epochs", epochs, minimum=0)
        _positive_int("batch_size", batch_size)
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            x_val, y_val = self._check(*validation_data)
        elif validation_split:
            n_val = int(len(x) * validation_split)
            if n_val == 0 or n_val == len(x):
                raise ValueError(f"validation_split={validation_split} leaves an empty train or "
                                 f"validation set for {len(x)} samples")
            x, x_val, y, y_val = x[:-n_val], x[-n_val:], y[:-n_val], y[-n_val:]
        else:
            x_val = y_val = None
        if self.dims[0]:
            self.config["maxlen"] = int(x.shape[1])
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastrnn.callbacks.Callback objects, got {cb!r}")
            cb.model = self
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin()
        n = len(x)
        n_batches = -(-n // batch_size)
        try:
            while self.epoch < epochs and not self.stop_training:
                logs = self._fit_epoch(x, y, batch_size, n_batches, shuffle, callbacks, verbose,
                                       epochs, checkpoint, checkpoint_every, on_nonfinite)
                if x_val is not None:
                    logs.update({"val_" + k: v for k, v in self.evaluate(x_val, y_val).items()})
                self.epoch += 1
                self.history.on_epoch_end(self.epoch - 1, logs)
                for cb in callbacks:
                    cb.on_epoch_end(self.epoch - 1, logs)
                if checkpoint is not None:
                    self.save(checkpoint)
                if verbose:
                    print(f"Epoch {self.epoch}/{epochs}: " +
                          ", ".join(f"{k}={v:.4f}" for k, v in logs.items()), flush=True)
        except KeyboardInterrupt:
            if checkpoint is not None:
                self.save(checkpoint)
                print(f"\ninterrupted: checkpoint saved to {checkpoint}", flush=True)
            raise
        for cb in callbacks:
            cb.on_train_end()
        return self.history

    def _fit_epoch(self, x, y, batch_size, n_batches, shuffle, callbacks, verbose, epochs,
                   checkpoint, checkpoint_every, on_nonfinite):
        """One epoch (or the rest of an interrupted one); returns its logs."""
        if self._resume is None:
            # the epoch's order comes from the generator state at its start, which is saved,
            # so a resumed epoch replays the same order
            self._resume = {"rng": self.rng.bit_generator.state, "batch": 0, "loss": 0.0,
                            "correct": 0, "seen": 0, "skipped": 0}
        state = self._resume
        self.rng.bit_generator.state = state["rng"]
        order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))
        bar = _progress(n_batches, f"Epoch {self.epoch + 1}/{epochs}", verbose, state["batch"])
        start = time.perf_counter()
        seen_here = 0
        for b in range(state["batch"], n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss, correct, norm = self._train_batch(x[idx], y[idx])
            if not (math.isfinite(loss) and math.isfinite(norm)):
                if on_nonfinite == "raise":
                    raise TrainingError(f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'} "
                                        f"at epoch {self.epoch + 1}, step {b + 1} of {n_batches}; "
                                        "the weights are those before this step (lower the learning "
                                        "rate or set global_clipnorm on the optimizer)")
                state["skipped"] += 1
            else:
                state["loss"] += loss * len(idx)
                state["correct"] += correct
                state["seen"] += len(idx)
            state["batch"] = b + 1
            seen_here += len(idx)
            logs = {"loss": state["loss"] / max(state["seen"], 1),
                    "accuracy": state["correct"] / max(state["seen"], 1)}
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['accuracy']:.4f}",
                                samples_s=f"{seen_here / (time.perf_counter() - start):.0f}",
                                refresh=False)
            for cb in callbacks:
                cb.on_batch_end(self.step_count, logs)
            if checkpoint is not None and checkpoint_every and self.step_count % checkpoint_every == 0:
                self.save(checkpoint)
        if bar is not None:
            bar.close()
        if state["skipped"]:
            logs["skipped"] = state["skipped"]
        self._resume = None
        return logs

    # --- files ---------------------------------------------------------------------------------

    def save(self, path):
        """Write the model to one ``.npz`` file, atomically: weights, optimizer state, config,
        training progress (for exact resumption) and a format version. No pickle."""
        if not np.isfinite(self.theta).all():
            raise TrainingError(f"refusing to save non-finite weights to {path}")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config,
                "optimizer": self.optimizer.get_config(), "step_count": self.step_count,
                "epoch": self.epoch, "rng": self.rng.bit_generator.state, "resume": self._resume,
                "history": self.history.history}
        with atomic_write(path) as f:
            np.savez(f, theta=self.theta, s1=self.s1, s2=self.s2,
                     meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))

    @classmethod
    def load(cls, path, backend="numba", threads=None):
        """Read a model written by ``save``. A missing, truncated, damaged or foreign file, or
        one of another format version, raises ``ValueError``/``FileNotFoundError`` naming it."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"model file {path!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
            raise ValueError(f"{path!r} is not a readable fastrnn model file (damaged, truncated "
                             f"or another format): {e}") from None
        missing = {"theta", "s1", "s2", "meta"} - set(arrays)
        if missing:
            raise ValueError(f"{path!r} is not a fastrnn model file: missing {sorted(missing)}")
        try:
            meta = json.loads(arrays["meta"].tobytes().decode())
            if meta.get("format") != FORMAT:
                raise ValueError("not a fastrnn model")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format version {meta.get('format_version')!r}; this fastrnn "
                                 f"reads version {FORMAT_VERSION}")
            c = meta["config"]
            model = cls(c["vocab_size"], c["embed_dim"], c["hidden_dim"], c["num_classes"],
                        c["bptt_truncate"], c["mask_zero"], c["dtype"], backend,
                        optim.get(meta["optimizer"]), c["seed"], c["lazy_embedding"], threads)
            model.config["maxlen"] = c.get("maxlen")
            for name in ("theta", "s1", "s2"):
                a = arrays[name]
                if a.dtype != model.dtype or a.shape != model.theta.shape:
                    raise ValueError(f"array {name!r} has dtype {a.dtype} and shape {a.shape}, "
                                     f"expected {model.dtype} {model.theta.shape}")
                if not np.isfinite(a).all():
                    raise ValueError(f"array {name!r} holds NaN or inf")
                getattr(model, name)[...] = a
            model.step_count, model.epoch = int(meta["step_count"]), int(meta["epoch"])
            model.rng.bit_generator.state = meta["rng"]
            model._resume = meta["resume"]
            model.history.history = {k: list(v) for k, v in meta["history"].items()}
            model.history.epoch = list(range(model.epoch))
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError, json.JSONDecodeError,
                ValueError) as e:
            raise ValueError(f"{path!r} is not a valid fastrnn model file: {e}") from None
        return model

    def __repr__(self):
        V, D, H, C = self.dims
        return (f"SimpleRNNClassifier(vocab_size={V or None}, embed_dim={D}, hidden_dim={H}, "
                f"num_classes={C}, dtype={self.dtype.name!r}, backend={self.backend_name!r}, "
                f"optimizer={self.optimizer!r})")


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _progress(total, desc, verbose, initial=0):
    if not verbose:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                dynamic_ncols=True)
