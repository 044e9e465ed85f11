"""The model class: buffers, a backend, and the training loop. No maths of its own.

All parameters live in one flat buffer ``theta`` (layout in ``fastrnn.layout``), with the gradient
and two optimizer-state buffers of the same shape; every computation is a call into the backend
module, ``fastrnn.kernels`` (Numba, imported on first use) or ``fastrnn.reference`` (NumPy).
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import signal
import sys
import threading
import time
import warnings

import numpy as np

from . import _checks, initializers, layout, optim, reference
from ._io import NpzReader, atomic_write, exclusive, open_regular
from .callbacks import Callback, History

FORMAT = "fastrnn-model"
FORMAT_VERSION = 1
BACKENDS = ("numba", "numpy")
META_MAX_BYTES = 64 << 20        # the JSON metadata of a model file (history included)

# Numba's threading layer once a parallel kernel has run ("omp", "tbb" or "workqueue"). omp and tbb
# run kernels called from several Python threads at once; workqueue aborts the process on
# concurrent use, so under it (and until the layer is known) kernel calls hold _NUMBA_LOCK.
_numba_layer = None
_NUMBA_LOCK = threading.RLock()


class TrainingError(FloatingPointError):
    """Training hit a non-finite loss or gradient; the weights are those before that step."""


class UnknownTextWarning(UserWarning):
    """A text given to ``encode`` / ``predict`` has no word in the model's vocabulary."""


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

    Notes
    -----
    Threads: different models may train in different Python threads at once, and one model may
    predict from several threads at once. The kernels release the GIL; with Numba's ``omp``
    threading layer (the default here, as GNU OpenMP is present) or ``tbb`` such calls run
    concurrently. Numba's ``workqueue`` layer aborts the process on concurrent use, so under it the
    model serialises its kernel calls with one process-wide lock. One model trains in one thread
    at a time: ``fit`` or ``train_on_batch`` while another thread trains the same model raises
    ``RuntimeError``. ``predict`` or ``evaluate`` while another thread trains the model is not
    guarded: it reads the weights as they are at that moment, possibly half-way through an update.
    ``omp`` is not fork-safe: start worker processes with ``spawn`` or ``forkserver`` after
    training in a process.
    """

    def __init__(self, vocab_size, embed_dim, hidden_dim, num_classes=2, bptt_truncate=None,
                 mask_zero=False, dtype="float32", backend="numba", optimizer=None, seed=None,
                 lazy_embedding=False, threads=None):
        for name, value in (("embed_dim", embed_dim), ("hidden_dim", hidden_dim)):
            _positive_int(name, value)
        _positive_int("num_classes", num_classes, minimum=2)
        if vocab_size is not None:
            _positive_int("vocab_size", vocab_size)
            vocab_size = int(vocab_size)
        if seed is not None:
            _positive_int("seed", seed, minimum=0)
            seed = int(seed)
        if mask_zero and vocab_size is None:
            raise ValueError("mask_zero needs token inputs (vocab_size); dense inputs have no padding id")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if threads is not None:
            _positive_int("threads", threads)
            threads = int(threads)
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
        self._training_lock = threading.RLock()     # one training thread (see Notes)
        self._bounds = np.full(3, np.nan)   # the overflow check's bounds (train_step); NaN: unknown

    # --- parameters ----------------------------------------------------------------------------

    @property
    def backend(self):
        """The backend module: ``fastrnn.kernels`` (Numba) or ``fastrnn.reference`` (NumPy)."""
        if self.backend_name == "numba":
            return _kernels()
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
            if w.dtype.kind != "f":
                raise TypeError(f"weight {name!r} must hold floats, got dtype {w.dtype}")
            with np.errstate(over="ignore"):         # too large for the model's dtype -> inf
                w = w.astype(view.dtype)
            if not np.isfinite(w).all():
                raise ValueError(f"weight {name!r} must be finite in {view.dtype} (NaN, inf or "
                                 "too large)")
            arrays.append(w)
        for (_, view), w in zip(views, arrays):
            view[...] = w
        self._bounds[:] = np.nan

    # --- one batch -----------------------------------------------------------------------------

    def _check(self, x, y=None):
        """Inputs as the backends take them: ids (N, T) or dense (N, T, D) in the model's dtype."""
        x = _as_array("x", x)
        if y is not None:
            y = _as_array("y", y)
        if self.dims[0] == 0:
            if x.dtype.kind not in "fiu":
                raise TypeError(f"x must hold numbers for a dense-input model, got dtype {x.dtype}")
            with np.errstate(over="ignore"):        # too large for the dtype -> inf, refused below
                x = np.ascontiguousarray(x, dtype=self.dtype)
        return _checks.model_batch(self.theta, self.dims, x, y)

    def train_on_batch(self, x, y):
        """One optimizer step on the batch; returns the batch loss (before the step).

        A non-finite loss or gradient, or an update that would make a weight or optimizer state
        non-finite, updates nothing; ``fit`` turns that into a :class:`TrainingError`.
        """
        x, y = self._check(x, y)
        with self._training():
            return self._train_batch(x, y)[0]

    def _train_batch(self, x, y):
        """One fused step; returns ``(loss, n_correct, grad_norm, applied)``."""
        with self._backend_call():
            result = self.backend.train_step(
                self.theta, self.grad, self.s1, self.s2, self.step_count + 1, self.dims, x, y,
                self.optimizer.kind, self.optimizer.hyper(), self.config["mask_zero"],
                self.config["bptt_truncate"], self.config["lazy_embedding"], self._bounds)
        if result[3]:
            self.step_count += 1
        return result

    def test_on_batch(self, x, y):
        """The loss on a batch, without training."""
        x, y = self._check(x, y)
        return self._evaluate(x, y, len(x))["loss"]

    def predict_logits(self, x, batch_size=None, verbose="auto"):
        """Logits ``(N, C)`` in the model's dtype (``batch_size`` None: 32, as Keras)."""
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        x, _ = self._check(x)
        return self._logits(x, batch_size, verbose)

    def _logits(self, x, batch_size, verbose=0):
        bar = _progress(-(-len(x) // batch_size), "predict", verbose == 1)
        parts = []
        with self._backend_call():
            for i in range(0, len(x), batch_size):
                parts.append(self.backend.forward(self.theta, self.dims, x[i:i + batch_size],
                                                  self.config["mask_zero"]))
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return np.concatenate(parts)

    def predict_proba(self, x, batch_size=None, verbose="auto"):
        """Class probabilities ``(N, C)``; ``x`` may also be raw review strings (see ``encode``).
        This is what Keras' ``predict`` returns for a softmax model."""
        if _is_text(x):
            x = self.encode(x)
        with np.errstate(invalid="ignore"):
            p = reference.softmax(self.predict_logits(x, batch_size, verbose).astype(np.float64))
        bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
        if bad.size:
            warnings.warn(f"{bad.size} of {len(p)} predictions (at {_positions(bad.tolist())}) are "
                          "NaN: the model's outputs overflow on these inputs (weights too large)",
                          RuntimeWarning, stacklevel=2)
        return p

    def predict(self, x, batch_size=None, verbose="auto"):
        """Predicted class labels ``(N,)`` (scikit-learn's meaning; ``predict_proba`` gives the
        probabilities that Keras' ``predict`` returns)."""
        return self.predict_proba(x, batch_size, verbose).argmax(axis=1)

    def encode(self, texts, maxlen=None, word_index=None):
        """Raw review strings -> padded token ids, as ``imdb.load_data(num_words=vocab_size)``
        encodes them, padded/truncated to ``maxlen`` (default: the length the model was fit on).

        ``word_index`` (word -> rank) defaults to ``fastrnn.datasets.imdb.get_word_index()``.
        """
        from .preprocessing import TextEncoder, pad_sequences
        if self.dims[0] == 0:
            raise ValueError("this model reads dense inputs; it has no vocabulary to encode text")
        maxlen = maxlen or self.config["maxlen"]
        if maxlen is None:
            raise ValueError("maxlen unknown: pass maxlen= (the model has not been fit yet)")
        if isinstance(texts, np.ndarray):
            texts = texts.tolist()
        encoder = TextEncoder(word_index=word_index, num_words=self.dims[0])
        ids = encoder.encode(texts)
        unknown = [i for i, row in enumerate(ids) if all(v < encoder.index_from for v in row)]
        if unknown:
            warnings.warn(f"{len(unknown)} of {len(ids)} texts (at {_positions(unknown)}) have no "
                          f"word in the model's vocabulary of {self.dims[0]:,}: the model sees "
                          "an empty review there, and its prediction says nothing about the "
                          "text", UnknownTextWarning, stacklevel=2)
        return pad_sequences(ids, maxlen=maxlen)

    def evaluate(self, x, y, batch_size=None, verbose="auto", return_dict=False):
        """Keras' ``evaluate``: ``[loss, accuracy]`` on ``(x, y)`` (mean cross-entropy, fraction
        correct), or ``{"loss": ..., "accuracy": ...}`` with ``return_dict=True``; ``batch_size``
        None is 32, as in Keras."""
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        x, y = self._check(x, y)
        logs = self._evaluate(x, y, batch_size, verbose)
        return logs if return_dict else [logs["loss"], logs["accuracy"]]

    def _evaluate(self, x, y, batch_size, verbose=0):
        logits = self._logits(x, batch_size, verbose)
        loss, _ = reference.softmax_xent(logits.astype(np.float64), y)
        return {"loss": float(loss), "accuracy": float(np.mean(logits.argmax(axis=1) == y))}

    def _training(self):
        return _training(self._training_lock)

    def _backend_call(self):
        return _backend_call(self.backend_name, self.threads)

    # --- training ------------------------------------------------------------------------------

    def fit(self, x, y, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, *, initial_epoch=0,
            checkpoint=None, checkpoint_every=None, on_nonfinite="raise"):
        """Train for epochs ``initial_epoch .. epochs - 1``, as Keras' ``fit`` does: ``epochs`` is
        the index of the final epoch, so ``fit(x, y, epochs=3)`` trains three epochs however often
        it is called, and ``fit(..., epochs=10, initial_epoch=model.epoch)`` continues a numbered
        run (a model loaded from a checkpoint, even one saved in the middle of an epoch, continues
        exactly where it stopped). ``batch_size`` None is 32; ``verbose``: "auto" or 1 a progress
        bar and a line per epoch, 2 the line only, 0 silent.

        Returns a :class:`History` (also ``self.history``) whose ``history`` dict has ``loss``,
        ``accuracy`` and, with validation data, ``val_loss`` and ``val_accuracy`` per epoch, and
        whose ``epoch`` lists the epoch indices. A fresh one for each call, as in Keras, except
        when the call resumes the model's own run (``initial_epoch == model.epoch`` and the
        model's history holds exactly those earlier epochs, as a loaded checkpoint does): then the
        record continues, so a resumed run logs the same history as an uninterrupted one.

        ``validation_split`` holds out the last fraction of ``(x, y)`` (before shuffling, and the
        same number of samples as Keras). ``checkpoint=PATH`` saves the model atomically after
        every epoch and, with ``checkpoint_every=N``, every N optimizer steps; training resumed
        from that file (``load`` + ``fit`` with the same data, batch size and
        ``initial_epoch=model.epoch``) gives the same weights as an uninterrupted run. A partly
        done epoch is finished when ``fit`` is given the same number of samples and batch size,
        and started over otherwise.

        A non-finite loss or gradient raises :class:`TrainingError` naming the epoch and step
        (``on_nonfinite="raise"``; the weights and the checkpoint are those before that step), or
        skips that batch and counts it in the logs as ``skipped`` (``"skip"``).

        Ctrl-C (SIGINT, when ``fit`` runs in the main thread): the current step finishes, the
        checkpoint is saved and ``KeyboardInterrupt`` is raised; a second Ctrl-C stops at once.

        ``fit`` holds the checkpoint's exclusive lock (``<checkpoint>.lock``) while it runs: a
        second process training to the same checkpoint gets ``fastrnn._io.LockedError``.
        """
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        _positive_int("epochs", epochs, minimum=0)
        _positive_int("initial_epoch", initial_epoch, minimum=0)
        if checkpoint_every is not None:
            _positive_int("checkpoint_every", checkpoint_every)
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        x, y, x_val, y_val = _fit_data(self._check, x, y, validation_split, validation_data)
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastrnn.callbacks.Callback objects, got {cb!r}")
        with self._training():
            if self.dims[0]:
                self.config["maxlen"] = int(x.shape[1])
            resuming = (initial_epoch == self.epoch and initial_epoch > 0
                        and self.history.epoch == list(range(initial_epoch)))
            if not resuming:
                self.history = History()
            if initial_epoch != self.epoch and self._resume is not None:
                # the interrupted epoch is not the one asked for: drop it and its order
                self.rng.bit_generator.state = self._resume["rng"]
                self._resume = None
            for cb in callbacks:
                cb.model = self
            self.stop_training = False
            self._bounds[:] = np.nan          # the weights may have been written since
            run = _Run(x, y, batch_size, shuffle, callbacks, verbose, epochs, checkpoint,
                       checkpoint_every, on_nonfinite)
            return self._epochs(run, initial_epoch, x_val, y_val)

    def _epochs(self, run, initial_epoch, x_val, y_val):
        """The epoch loop of ``fit``: epochs ``initial_epoch .. run.epochs - 1``."""
        with _DeferredInterrupt(run.verbose) as run.interrupt, _exclusive(run.checkpoint):
            for cb in run.callbacks:
                cb.on_train_begin()
            for epoch in range(initial_epoch, run.epochs):
                if self.stop_training:
                    break
                self.epoch = epoch
                logs = self._fit_epoch(run)
                if x_val is not None:
                    logs.update({"val_" + k: v
                                 for k, v in self._evaluate(x_val, y_val, 256).items()})
                self.epoch = epoch + 1
                self.history.on_epoch_end(epoch, logs)
                for cb in run.callbacks:
                    cb.on_epoch_end(epoch, logs)
                if run.checkpoint is not None:
                    self.save(run.checkpoint)
                if run.verbose:
                    print(f"Epoch {epoch + 1}/{run.epochs}: " +
                          ", ".join(f"{k}={v:.4f}" for k, v in logs.items()), flush=True)
                self._safe_point(run)
            for cb in run.callbacks:
                cb.on_train_end()
            self._safe_point(run)                  # a Ctrl-C during the last moments still counts
        return self.history

    def _safe_point(self, run):
        """Between steps the model is consistent: act on a Ctrl-C held back until now."""
        if run.interrupt.requested:
            if run.checkpoint is not None:
                self.save(run.checkpoint)
                print(f"\ninterrupted: checkpoint saved to {run.checkpoint}", file=sys.stderr,
                      flush=True)
            raise KeyboardInterrupt

    def _fit_epoch(self, run):
        """One epoch (or the rest of an interrupted one); returns its logs."""
        x, y, batch_size = run.x, run.y, run.batch_size
        n = len(x)
        n_batches = -(-n // batch_size)
        state = self._resume
        same_run = (n, batch_size, run.shuffle)
        if state is not None and (state.get("n", n), state.get("batch_size", batch_size),
                                  state.get("shuffle", run.shuffle)) != same_run:
            self.rng.bit_generator.state = state["rng"]     # other data: start the epoch over
            state = None
        if state is None:
            # the epoch's order comes from the generator state at its start, which is saved,
            # so a resumed epoch replays the same order
            state = {"rng": self.rng.bit_generator.state, "n": n, "batch_size": batch_size,
                     "shuffle": run.shuffle, "batch": 0, "loss": 0.0, "correct": 0, "seen": 0,
                     "skipped": 0}
            self._resume = state
        self.rng.bit_generator.state = state["rng"]
        order = self.rng.permutation(n) if run.shuffle else np.arange(n)
        bar = _progress(n_batches, f"Epoch {self.epoch + 1}/{run.epochs}", run.verbose == 1,
                        min(state["batch"], n_batches))
        start = time.perf_counter()
        seen_here = 0
        for b in range(state["batch"], n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss, correct, norm, stepped = self._train_batch(x[idx], y[idx])
            if not stepped:
                if run.on_nonfinite == "raise":
                    what = ("gradient" if not math.isfinite(norm) else
                            "loss" if not math.isfinite(loss) else
                            "update (it would make weights or optimizer state overflow)")
                    raise TrainingError(f"non-finite {what} at epoch {self.epoch + 1}, "
                                        f"step {b + 1} of {n_batches}; the weights are those "
                                        "before this step (lower the learning rate or set "
                                        "global_clipnorm on the optimizer)")
                state["skipped"] += 1
            else:
                state["loss"] += loss * len(idx)
                state["correct"] += correct
                state["seen"] += len(idx)
            state["batch"] = b + 1
            seen_here += len(idx)
            logs = _epoch_logs(state, run.on_nonfinite)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['accuracy']:.4f}",
                                samples_s=f"{seen_here / (time.perf_counter() - start):.0f}",
                                refresh=False)
            for cb in run.callbacks:
                cb.on_batch_end(self.step_count, logs)
            if (run.checkpoint is not None and run.checkpoint_every and stepped
                    and self.step_count % run.checkpoint_every == 0):
                self.save(run.checkpoint)
            self._safe_point(run)
        if bar is not None:
            bar.close()
        self._resume = None
        return _epoch_logs(state, run.on_nonfinite)

    # --- files ---------------------------------------------------------------------------------

    def save(self, path):
        """Write the model to one ``.npz`` file, atomically: weights, optimizer state, config,
        training progress (for exact resumption) and a format version. No pickle.

        A failed save leaves an existing file at ``path`` as it was. Non-finite weights or
        optimizer state are refused (:class:`TrainingError`), so no checkpoint ever holds NaN.
        """
        for name in ("theta", "s1", "s2"):
            if not np.isfinite(getattr(self, name)).all():
                what = "weights" if name == "theta" else "optimizer state"
                raise TrainingError(f"refusing to save non-finite {what} to {os.fspath(path)!r}")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config,
                "optimizer": self.optimizer.get_config(), "step_count": self.step_count,
                "epoch": self.epoch, "rng": self.rng.bit_generator.state, "resume": self._resume,
                "history": self.history.history}
        meta_bytes = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        try:                                   # what load checks: a saved file always loads
            _check_meta(json.loads(meta_bytes.tobytes()))
            if meta_bytes.size > META_MAX_BYTES:
                raise ValueError(f"metadata of {meta_bytes.size} bytes, more than "
                                 f"{META_MAX_BYTES}")
        except ValueError as e:
            raise ValueError(f"refusing to save {os.fspath(path)!r}: load would refuse it "
                             f"({e})") from None
        with atomic_write(path) as f:
            np.savez(f, theta=self.theta, s1=self.s1, s2=self.s2, meta=meta_bytes)

    @classmethod
    def load(cls, path, backend="numba", threads=None):
        """Read a model written by ``save``.

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for
        anything else wrong with it: not a regular file (a FIFO, a device, a directory, also
        behind a symlink), truncated, damaged, a zip member inflating more than
        ``fastrnn._io.MAX_RATIO`` times, not a model file, another format version, a metadata
        value of the wrong type or out of its bounds (see ``_check_meta``), arrays of the wrong
        shape or dtype, non-finite values. Nothing in the file is unpickled or executed, and
        nothing is allocated or initialised before every array's header has been checked against
        the configuration and against the bytes its member really holds.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if threads is not None:
            _positive_int("threads", threads)
        path = os.fspath(path)
        try:
            f = open_regular(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"model file {path!r} does not exist") from None
        except ValueError as e:                # a directory, FIFO, device
            raise ValueError(f"{e}; a fastrnn model file is a regular .npz file") from None
        with f:
            try:
                return cls._read(f, backend, threads)
            except Exception as e:     # whatever the bytes do to the parsers: one documented error
                raise ValueError(f"{path!r} is not a valid fastrnn model file "
                                 f"({type(e).__name__}: {e})") from e

    @classmethod
    def _read(cls, f, backend, threads):
        reader = NpzReader(f)
        names = reader.names()
        if names != {"theta", "s1", "s2", "meta"}:
            raise ValueError(f"arrays {sorted(names)}; a model file has meta, s1, s2 and theta")
        meta = reader.read("meta", dtype=np.uint8, max_bytes=META_MAX_BYTES)
        if meta.ndim != 1:
            raise ValueError(f"meta must be 1-D bytes, got shape {meta.shape}")
        meta = json.loads(meta.tobytes().decode("utf-8"))
        _check_meta(meta)
        c = meta["config"]
        # the sizes in the metadata must match the arrays in the file before anything of that
        # size is allocated (a damaged vocab_size must not make the constructor ask for 80 GB)
        sizes = (c["vocab_size"] or 0, c["embed_dim"], c["hidden_dim"], c["num_classes"])
        shape, _ = reader.header("theta")
        if shape != (layout.size(sizes),):
            raise ValueError(f"array 'theta' has shape {shape}; the config needs "
                             f"({layout.size(sizes)},)")
        for name in ("theta", "s1", "s2"):    # every array's bytes are really in the file
            reader.check(name, dtype=c["dtype"], shape=shape)
        model = cls(c["vocab_size"], c["embed_dim"], c["hidden_dim"], c["num_classes"],
                    c["bptt_truncate"], c["mask_zero"], c["dtype"], backend,
                    optim.get(meta["optimizer"]), c["seed"], c["lazy_embedding"], threads)
        model.config["maxlen"] = c["maxlen"]
        for name in ("theta", "s1", "s2"):
            a = reader.read(name, dtype=model.dtype, shape=model.theta.shape)
            if not np.isfinite(a).all():
                raise ValueError(f"array {name!r} holds NaN or inf")
            getattr(model, name)[...] = a
        model.step_count, model.epoch = meta["step_count"], meta["epoch"]
        model.rng.bit_generator.state = meta["rng"]
        model._resume = meta["resume"]
        model.history.history = {k: list(v) for k, v in meta["history"].items()}
        recorded = max(map(len, model.history.history.values()), default=0)
        model.history.epoch = list(range(model.epoch - recorded, model.epoch))
        return model

    def __repr__(self):
        V, D, H, C = self.dims
        return (f"SimpleRNNClassifier(vocab_size={V or None}, embed_dim={D}, hidden_dim={H}, "
                f"num_classes={C}, dtype={self.dtype.name!r}, backend={self.backend_name!r}, "
                f"optimizer={self.optimizer!r})")


class _Run:
    """The arguments of one ``fit`` call, as the epoch loop reads them."""

    def __init__(self, x, y, batch_size, shuffle, callbacks, verbose, epochs, checkpoint,
                 checkpoint_every, on_nonfinite):
        self.x, self.y, self.batch_size, self.shuffle = x, y, int(batch_size), bool(shuffle)
        self.callbacks, self.verbose, self.epochs = callbacks, verbose, epochs
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.on_nonfinite, self.interrupt = on_nonfinite, None


class _DeferredInterrupt:
    """Hold back the first SIGINT until the training loop reaches a safe point (``requested``).

    Only in the main thread and only while Python's default handler is installed (another
    program's handler is left alone); a second SIGINT goes to the previous handler at once.
    """

    def __init__(self, verbose):
        self.verbose, self.requested, self._previous = verbose, False, None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        if self.verbose:
            print("\nstopping after the current step (Ctrl-C again to stop at once)",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _exclusive(checkpoint):
    """``fit`` holds its checkpoint's lock throughout: another run with the same checkpoint is
    refused (``fastrnn._io.LockedError`` naming this process) instead of overwriting it."""
    return contextlib.nullcontext() if checkpoint is None else exclusive(checkpoint)


def _epoch_logs(state, on_nonfinite):
    seen = state["seen"]
    logs = {"loss": state["loss"] / seen if seen else math.nan,
            "accuracy": state["correct"] / seen if seen else math.nan}
    if on_nonfinite == "skip":
        logs["skipped"] = state["skipped"]
    return logs


def _fit_data(check, x, y, validation_split, validation_data):
    """``fit``'s data: ``(x, y, x_val, y_val)`` checked by ``check(x, y)``, the validation set
    from ``validation_data`` or the last ``validation_split`` of ``(x, y)`` (Keras' split point,
    before shuffling), or None."""
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
            or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be a number in [0, 1), got {validation_split!r}")
    x, y = check(x, y)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a tuple (x_val, y_val)")
        try:
            x_val, y_val = check(*validation_data)
        except (TypeError, ValueError) as e:
            raise type(e)(f"validation_data: {e}") from None
        return x, y, x_val, y_val
    if validation_split:
        split_at = int(math.floor(len(x) * (1.0 - validation_split)))   # Keras' split point
        if split_at in (0, len(x)):
            raise ValueError(f"validation_split={validation_split} leaves an empty train or "
                             f"validation set for {len(x)} samples")
        return x[:split_at], y[:split_at], x[split_at:], y[split_at:]
    return x, y, None, None


def _kernels():
    """``fastrnn.kernels``, imported (and compiled) only when used."""
    try:
        from . import kernels
    except RuntimeError as e:
        if "cannot cache function" not in str(e):
            raise
        raise RuntimeError("Numba found no writable directory for its cache of compiled kernels. "
                           "Set NUMBA_CACHE_DIR to a writable directory, or FASTRNN_NUMBA_CACHE=0 "
                           f"to compile without caching ({e})") from e
    return kernels


@contextlib.contextmanager
def _training(lock):
    """Hold a model (its ``lock``) for one training thread; another thread trying to train it
    is refused."""
    if not lock.acquire(blocking=False):
        raise RuntimeError("this model is being trained in another thread (fit or "
                           "train_on_batch); one model trains in one thread at a time")
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _backend_call(backend_name, threads):
    """Around every backend call: the thread count, and the lock Numba's workqueue layer needs.

    The NumPy backend runs without floating-point warnings, as the compiled one does: the
    model itself deals with a non-finite loss or gradient (``fit``'s ``on_nonfinite``).
    """
    if backend_name != "numba":
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            yield
        return
    import numba
    from .kernels import serial_blas
    # BLAS on one thread throughout: a threaded BLAS call between the kernels leaves BLAS threads
    # spinning, which then compete with the kernels' own threads for the cores
    with _NUMBA_LOCK if _serialise_numba() else contextlib.nullcontext(), serial_blas(), \
            np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        before = numba.get_num_threads()       # thread-local in Numba
        if threads is not None:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            numba.set_num_threads(before)


def _serialise_numba():
    """True when kernel calls must not overlap: Numba's workqueue layer, or not known yet."""
    global _numba_layer
    if _numba_layer is None:
        import numba
        try:
            _numba_layer = numba.threading_layer()
        except ValueError:                         # no parallel kernel has run yet
            return True
    return _numba_layer == "workqueue"


def _as_array(name, a):
    """``a`` as a non-empty array; ragged nested lists are a ValueError naming ``name``."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{name} must be a rectangular array of numbers; got sequences of "
                             "different lengths (pad them first with "
                             "fastrnn.preprocessing.pad_sequences)") from e
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}); need at least one sample")
    return a


def _positions(indices, most=5):
    """``indices`` as a short list for a message: "0, 3, 7" or "0, 3, 7, 9, 12, ... (20 in all)"."""
    head = ", ".join(map(str, indices[:most]))
    return head if len(indices) <= most else f"{head}, ... ({len(indices)} in all)"


def _is_text(x):
    if isinstance(x, str):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "U"
    return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], str)


def _batch_size(batch_size):
    """Keras' default batch size (32) for None; else a positive integer."""
    if batch_size is None:
        return 32
    _positive_int("batch_size", batch_size)
    return int(batch_size)


def _verbose(verbose):
    """Keras' verbosity: "auto" is 1 (a progress bar), 2 one line per epoch, 0 silent."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, np.bool_)) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    return int(verbose)


def _positive_int(name, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


# --- model file metadata ---------------------------------------------------------------------

_CONFIG_KEYS = {"vocab_size", "embed_dim", "hidden_dim", "num_classes", "bptt_truncate",
                "mask_zero", "dtype", "seed", "lazy_embedding", "maxlen"}
_RESUME_KEYS = {"rng", "n", "batch_size", "shuffle", "batch", "loss", "correct", "seen", "skipped"}
MAX_DIM = 2**31 - 1            # vocab_size, embed_dim, hidden_dim, num_classes, bptt_truncate
MAX_MAXLEN = 2**20             # the sequence length ``encode`` pads to (predict allocates it)
MAX_COUNT = 2**53              # steps, epochs, samples: exact in float64, far beyond any run


def _check_meta(meta):
    """ValueError unless the metadata of a model file has every field with its type and within
    its bounds: counts are ints (a bool is not a number), flags are bools (a string is not a
    bool), sizes at most ``MAX_DIM``, ``maxlen`` at most ``MAX_MAXLEN``, step and epoch counts at
    most ``MAX_COUNT``, and a resume position inside its epoch. ``save`` checks the same, so a
    saved file always loads."""
    def need(ok, what):
        if not ok:
            raise ValueError(f"metadata: {what}")

    def count(value, minimum=0, maximum=MAX_COUNT):
        return type(value) is int and minimum <= value <= maximum

    def number(value):
        return type(value) in (int, float)

    need(isinstance(meta, dict), "not a JSON object")
    need(meta.get("format") == FORMAT, "not a fastrnn model")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format version {meta.get('format_version')!r}; this fastrnn reads "
                         f"version {FORMAT_VERSION}")
    c = meta.get("config")
    need(isinstance(c, dict) and set(c) == _CONFIG_KEYS, "bad config")
    need(type(c["mask_zero"]) is bool and type(c["lazy_embedding"]) is bool, "bad config flags")
    need(c["dtype"] in ("float32", "float64"), "bad dtype")
    need(all(count(c[k], 1, MAX_DIM) for k in ("embed_dim", "hidden_dim", "num_classes"))
         and (c["vocab_size"] is None or count(c["vocab_size"], 1, MAX_DIM)),
         f"bad sizes (integers in [1, {MAX_DIM}])")
    need(c["bptt_truncate"] is None or count(c["bptt_truncate"], 1, MAX_DIM), "bad bptt_truncate")
    need(c["maxlen"] is None or count(c["maxlen"], 1, MAX_MAXLEN),
         f"bad maxlen (None or an integer in [1, {MAX_MAXLEN}])")
    need(c["seed"] is None or count(c["seed"]), "bad seed")
    def option(key, value):
        if key == "keras_epsilon":
            return type(value) is bool
        return number(value) or (key == "global_clipnorm" and value is None)

    o = meta.get("optimizer")
    need(isinstance(o, dict) and type(o.get("name")) is str
         and all(option(k, v) for k, v in o.items() if k != "name"),
         "bad optimizer (its settings are numbers, keras_epsilon a bool)")
    need(count(meta.get("step_count")) and count(meta.get("epoch")),
         f"bad step or epoch count (integers in [0, {MAX_COUNT}])")
    need(isinstance(meta.get("rng"), dict), "bad generator state")
    np.random.PCG64().state = meta["rng"]          # raises for a state it cannot take
    r = meta.get("resume", ())
    if r is not None:
        need(isinstance(r, dict) and _RESUME_KEYS <= set(r), "bad resume state")
        need(count(r["n"], 1) and count(r["batch_size"], 1), "bad resume sizes")
        need(type(r["shuffle"]) is bool, "bad resume shuffle")
        batches = -(-r["n"] // r["batch_size"])
        need(count(r["batch"], 0, batches) and count(r["skipped"], 0, r["batch"])
             and count(r["seen"], 0, min(r["n"], r["batch"] * r["batch_size"]))
             and count(r["correct"], 0, r["seen"]),
             f"bad resume position (batch {r['batch']!r} of {batches}, or its counts)")
        need(number(r["loss"]) and math.isfinite(r["loss"]) and r["loss"] >= 0,
             "bad resume loss")
        need(isinstance(r["rng"], dict), "bad resume generator state")
        np.random.PCG64().state = r["rng"]
    h = meta.get("history")
    need(isinstance(h, dict) and all(isinstance(v, list) for v in h.values()), "bad history")
    need(all(number(v) for values in h.values() for v in values), "bad history values")
    need(all(len(v) <= meta["epoch"] for v in h.values()), "more history than epochs")


def _progress(total, desc, verbose, initial=0):
    if not verbose:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                dynamic_ncols=True)
