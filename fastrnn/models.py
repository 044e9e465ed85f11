"""``Sequential``: Keras 3's model API over a stack of ``fastrnn.layers``. No maths of its own.

The model owns one flat buffer for all weights (``theta``, Keras' ``get_weights()`` order, each
weight a view into it), one for their gradient and two for the optimizer's state; every
computation is a backend call, the layers' ops in ``fastrnn.kernels`` (Numba) or
``fastrnn.reference`` (NumPy), the loss in ``fastrnn.reference.losses``.
"""

from __future__ import annotations

import json
import math
import os
import threading

import numpy as np

from . import _checks, layers as layers_module, optim, utils
from ._io import NpzReader, atomic_write, open_regular
from .callbacks import Callback, History
from .layers import Dense, Embedding, Input, Layer, LayerError
from .model import (BACKENDS, META_MAX_BYTES, TrainingError, _as_array, _backend_call,
                    _batch_size, _fit_data, _kernels, _positive_int, _progress, _training,
                    _verbose)
from . import reference
from .reference import losses as loss_ops

FORMAT = "fastrnn-sequential"
FORMAT_VERSION = 1
LOSS_ALIASES = {"mse": "mean_squared_error", "mean_squared_error": "mean_squared_error",
                "binary_crossentropy": "binary_crossentropy",
                "sparse_categorical_crossentropy": "sparse_categorical_crossentropy"}
METRICS = ("accuracy", "acc", "mae", "mean_absolute_error")
# Keras' defaults for an optimizer named by a string (its Adam adds epsilon before the bias
# correction, and its epsilon is 1e-7)
KERAS_OPTIMIZERS = {"rmsprop": dict(name="RMSprop"), "sgd": dict(name="SGD"),
                    "adam": dict(name="Adam", epsilon=1e-7, keras_epsilon=True),
                    "adamw": dict(name="AdamW", weight_decay=0.004, epsilon=1e-7,
                                  keras_epsilon=True)}


def _where(i, layer):
    return f"layer {i} ({layer.name!r}, {type(layer).__name__})"


class Sequential:
    """A linear stack of layers, as ``keras.Sequential``.

    Parameters
    ----------
    layers : list of layers (optionally starting with ``fastrnn.layers.Input``), or None.
    dtype : "float32" or "float64"; every weight, gradient and activation has it.
    backend : "numba" or "numpy" (the compiled kernels or the NumPy reference).
    seed : int or None; seeds the initial weights, the shuffling and the dropout masks (None: a
        seed from ``fastrnn.utils.set_random_seed`` if it was called, else fresh entropy).
    threads : int or None; Numba threads (default: Numba's).
    """

    def __init__(self, layers=None, *, dtype="float32", backend="numba", seed=None,
                 threads=None, name="sequential"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if seed is not None:
            _positive_int("seed", seed, minimum=0)
        else:
            seed = utils.next_seed()              # fastrnn.utils.set_random_seed, if called
        if threads is not None:
            _positive_int("threads", threads)
        self.dtype = np.dtype(_checks.dtype(dtype))
        self.backend_name, self.seed, self.threads, self.name = backend, seed, threads, name
        self.layers, self._input = [], None
        self.built = self.compiled = False
        self.rng = np.random.default_rng(seed)
        self.step_count = self.epoch = 0
        self._bounds = np.full(3, np.nan)         # the overflow check's bounds (update_step)
        self.history = History()
        self.stop_training = False
        self._training_lock = threading.RLock()
        self.extra = None                         # what save(extra=...) stored, after load_model
        for layer in layers or []:
            self.add(layer)

    # --- building ------------------------------------------------------------------------------

    def add(self, layer):
        """Append a layer (or, first, an ``Input``)."""
        if self.built:
            raise ValueError("add: the model is already built; add layers before using it")
        if isinstance(layer, Input):
            if self.layers or self._input is not None:
                raise ValueError("an Input can only come first")
            self._input = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"add expects a fastrnn.layers layer, got {layer!r}")
        self.layers.append(layer)
        if self._input is not None:
            self._shapes(self._input.shape)              # raise at once for a misplaced layer

    def _shapes(self, input_shape):
        """Build every layer for ``input_shape`` (no batch axis); errors name the layer."""
        shape = tuple(input_shape)
        if not self.layers:
            raise ValueError("the model has no layers")
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Embedding) and len(shape) != 1:
                raise LayerError(f"{_where(i, layer)} expects token ids of shape (batch, time), "
                                 f"got shape {(None, *shape)}")
            if i and isinstance(layer, Embedding):
                raise LayerError(f"{_where(i, layer)}: an Embedding must be the first layer")
            if i == 0 and not isinstance(layer, Embedding) and len(shape) < 1:
                raise LayerError(f"{_where(i, layer)} got inputs of shape {(None, *shape)}")
            try:
                shape = layer.build(shape)
            except LayerError as e:
                raise LayerError(f"{_where(i, layer)} {e}") from None
        return shape

    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (Keras' form: batch axis first, None
        allowed)."""
        if self.built:
            return
        input_shape = tuple(input_shape)[1:]
        self.output_shape = self._shapes(input_shape)
        self._input_shape = input_shape
        specs = [layer.weight_specs() for layer in self.layers]
        n = sum(int(np.prod(shape)) for layer_specs in specs for _, shape, _ in layer_specs)
        self.theta, self.grad, self.s1, self.s2 = (np.zeros(n, self.dtype) for _ in range(4))
        self._w, self._g, start = [], [], 0
        for layer_specs in specs:
            w, g = [], []
            for _, shape, init in layer_specs:
                size = int(np.prod(shape))
                w.append(self.theta[start:start + size].reshape(shape))
                g.append(self.grad[start:start + size].reshape(shape))
                w[-1][...] = init(self.rng, shape)
                start += size
            self._w.append(w)
            self._g.append(g)
        for layer in self.layers:                 # Input(batch_size=...) fixes a stateful batch
            if getattr(layer, "stateful", False) and self._input is not None:
                layer.batch_size = self._input.batch_size
        self._layer_rngs = [np.random.default_rng(getattr(layer, "seed", None))
                            if getattr(layer, "seed", None) is not None else self.rng
                            for layer in self.layers]
        self.built = True

    def _ensure_built(self, x=None):
        """Build from the Input, else from the first data (as Keras)."""
        if not self.built and (self._input is not None or x is not None):
            self.build((None, *(self._input.shape if self._input else x.shape[1:])))

    # --- compiling -----------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Choose the optimizer, the loss and the metrics (Keras' names)."""
        if isinstance(optimizer, str) and optimizer.lower() in KERAS_OPTIMIZERS:
            optimizer = dict(KERAS_OPTIMIZERS[optimizer.lower()])
        self.optimizer = optim.get(optimizer)
        from_logits = False
        if hasattr(loss, "get_config"):                 # a fastrnn.losses class
            config = loss.get_config()
            loss, from_logits = config["name"], config["from_logits"]
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='binary_crossentropy'")
        if loss not in LOSS_ALIASES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSS_ALIASES)}")
        self.loss, self.from_logits = LOSS_ALIASES[loss], bool(from_logits)
        metrics = list(metrics or [])
        for m in metrics:
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; expected one of {list(METRICS)}")
        self.metrics = metrics
        self.compiled = True
        self._head_checked = False
        if self.built or self._input is not None:
            self._check_head()

    def _head(self):
        last = self.layers[-1]
        return last.activation if isinstance(last, Dense) else "linear"

    def _check_head(self):
        """The loss must fit the last layer (raised at compile time when the shapes are known)."""
        if not self.built:
            shape = self._shapes(self._input.shape)
        else:
            shape = self.output_shape
        i, last = len(self.layers) - 1, self.layers[-1]
        act, units = self._head(), shape[-1]
        if self.loss == "sparse_categorical_crossentropy":
            ok = units >= 2 and (act, self.from_logits) in (("softmax", False), ("linear", True))
            need = "at least 2 units with activation='softmax' (or 'linear' and from_logits=True)"
        elif self.loss == "binary_crossentropy":
            ok = (act, self.from_logits) in (("sigmoid", False), ("linear", True))
            need = "activation='sigmoid' (or 'linear' and from_logits=True)"
        else:
            ok, need = True, ""
        self._head_checked = ok
        if not ok:
            raise ValueError(f"loss {self.loss!r} does not fit the output of {_where(i, last)}: "
                             f"{units} unit(s), activation {act!r}, from_logits="
                             f"{self.from_logits}; it needs {need}")

    # --- inputs --------------------------------------------------------------------------------

    @property
    def _ops(self):
        """The backend: ``fastrnn.kernels`` (Numba, imported on first use) or
        ``fastrnn.reference`` (NumPy); both have the same functions."""
        return _kernels() if self.backend_name == "numba" else reference

    def _x(self, x):
        x = _as_array("x", x)
        self._ensure_built(x)
        if x.shape[1:] != tuple(d if d is not None else x.shape[1 + j]
                                for j, d in enumerate(self._input_shape)) \
                or x.ndim != len(self._input_shape) + 1:
            raise ValueError(f"x has shape {x.shape}; the model expects (batch, "
                             f"{', '.join(map(str, self._input_shape))})")
        if isinstance(self.layers[0], Embedding):
            return _checks.token_ids(x, self.layers[0].input_dim)
        if x.dtype.kind not in "fiub":
            raise TypeError(f"x must hold numbers, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if not np.isfinite(x).all():
            raise ValueError("x holds NaN or inf")
        return x

    def _y(self, y, n, out_shape):
        """Targets checked against the outputs ``(n, *out_shape)``."""
        y = _as_array("y", y)
        if len(y) != n:
            raise ValueError(f"x has {n} samples but y has {len(y)}")
        per_step = len(out_shape) == 2
        units = out_shape[-1]
        expected = [(n, *out_shape[:-1])]
        if self.loss == "sparse_categorical_crossentropy":
            if y.shape != expected[0]:
                raise ValueError(f"y has shape {y.shape}; sparse_categorical_crossentropy on "
                                 f"{'per-step' if per_step else 'last-step'} outputs "
                                 f"{(None, *out_shape)} needs integer labels of shape "
                                 f"{expected[0]}")
            if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and (y == np.round(y)).all()):
                raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
            y = y.astype(np.int64)
            if y.min() < 0 or y.max() >= units:
                raise ValueError(f"y must hold class labels in [0, {units}), got values in "
                                 f"[{y.min()}, {y.max()}]")
            return y
        if units == 1:
            expected.append((n, *out_shape))
        else:
            expected = [(n, *out_shape)]
        if y.shape not in expected:
            raise ValueError(f"y has shape {y.shape}; {self.loss} on "
                             f"{'per-step' if per_step else 'last-step'} outputs "
                             f"{(None, *out_shape)} needs targets of shape "
                             f"{' or '.join(map(str, expected))}")
        if y.dtype.kind not in "fiub":
            raise TypeError(f"y must hold numbers, got dtype {y.dtype}")
        y = y.astype(self.dtype)
        if not np.isfinite(y).all():
            raise ValueError("y holds NaN or inf")
        return y

    def _data(self, x, y):
        if not self.compiled:
            raise ValueError("You must call compile() before training or evaluating the model")
        x = self._x(x)
        if not self._head_checked:
            self._check_head()
        # an Input((None,)) leaves the time axis open: the outputs have this batch's
        out_shape = tuple(x.shape[1] if d is None else d for d in self.output_shape)
        return x, self._y(y, len(x), out_shape)

    # --- forward and backward ------------------------------------------------------------------

    def _forward(self, x, training):
        """``(z, mask, caches)``: the head's pre-activation (the last layer's output when it is
        not a Dense), the output mask, and each layer's cache for the backward pass (for a Dense
        head, its input)."""
        ops, mask, caches, h = self._ops, None, [], x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == last and isinstance(layer, Dense):
                z, head_input = layer.logits(ops, self._w[i], h)
                caches.append((head_input, None))
                return z, mask, caches
            h, mask, cache = layer.forward(ops, self._w[i], h, mask, training,
                                           self._layer_rngs[i])
            caches.append(cache)
        return h, mask, caches

    def _loss_and_grad(self, x, y):
        """Forward, loss and backward on a batch: fills ``self.grad``; returns ``(loss, outputs,
        output mask)``."""
        ops = self._ops
        z, mask, caches = self._forward(x, True)
        head = self._head()
        loss, d = loss_ops.loss_and_grad(self.loss, head, self.from_logits, z, y, mask)
        last = len(self.layers) - 1
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if i == last and isinstance(layer, Dense):
                d = layer.backward(ops, self._w[i], self._g[i], None, caches[i], dz=d)
            else:
                d = layer.backward(ops, self._w[i], self._g[i], d, caches[i])
        return float(loss), ops.activation_forward(z, head), mask

    def _metric_sums(self, y, p, mask):
        """``({name: weighted sum}, weight)`` of the compiled metrics on a batch."""
        w = np.ones(p.shape[:-1]) if mask is None else mask.astype(np.float64)
        sums = {}
        for m in self.metrics:
            kind = "mae" if m in ("mae", "mean_absolute_error") else "accuracy"
            sums[m] = float((w * loss_ops.metric_values(kind, y, p)).sum())
        return sums, float(w.sum())

    def _train_batch(self, x, y):
        """One step: ``(loss, metric sums, weight, norm, applied)``."""
        with _backend_call(self.backend_name, self.threads):
            loss, p, mask = self._loss_and_grad(x, y)
            sums, weight = self._metric_sums(y, p, mask)
            if not math.isfinite(loss):
                return loss, sums, weight, math.nan, False
            norm, applied = self._ops.update_step(self.optimizer.kind, self.optimizer.hyper(),
                                                  self.step_count + 1, self.theta, self.grad,
                                                  self.s1, self.s2, self._bounds)
            if not applied:
                return loss, sums, weight, norm, False
        self.step_count += 1
        return loss, sums, weight, norm, True

    # --- Keras API -----------------------------------------------------------------------------

    def train_on_batch(self, x, y):
        """One optimizer step; the batch loss (before the step), with metrics a list."""
        x, y = self._data(x, y)
        with self._training():
            loss, sums, weight, norm, applied = self._train_batch(x, y)
        if not applied:
            raise TrainingError(f"non-finite {_what(loss, norm)}; the weights are unchanged")
        return self._result(loss, {m: s / weight for m, s in sums.items()})

    def _result(self, loss, metrics, return_dict=False):
        logs = {"loss": loss, **metrics}
        if return_dict:
            return logs
        return loss if not self.metrics else [loss, *metrics.values()]

    def test_on_batch(self, x, y, return_dict=False):
        x, y = self._data(x, y)
        return self._result(*self._evaluate(x, y, len(x)), return_dict=return_dict)

    def predict_on_batch(self, x):
        return self._predict(self._x(x), len(x))

    def evaluate(self, x, y, batch_size=None, verbose="auto", return_dict=False):
        """Keras' ``evaluate``: the loss, or ``[loss, *metrics]`` (a dict with ``return_dict``)."""
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        x, y = self._data(x, y)
        return self._result(*self._evaluate(x, y, batch_size, verbose), return_dict=return_dict)

    def _evaluate(self, x, y, batch_size, verbose=0):
        """``(loss, {metric: value})``: batch losses weighted by their samples (Keras)."""
        loss = weight_total = 0.0
        sums = dict.fromkeys(self.metrics, 0.0)
        for batch in self._batches(len(x), batch_size, "evaluate", verbose):
            xb, yb = x[batch], y[batch]
            z, p, mask = self._head_outputs(xb)
            loss += len(xb) * float(loss_ops.loss_value(self.loss, self._head(),
                                                        self.from_logits, z, yb, mask))
            batch_sums, weight = self._metric_sums(yb, p, mask)
            for m in self.metrics:
                sums[m] += batch_sums[m]
            weight_total += weight
        return loss / len(x), {m: s / weight_total if weight_total else 0.0
                               for m, s in sums.items()}

    def _batches(self, n, batch_size, desc, verbose):
        """The slices of ``n`` samples in batches of ``batch_size``, inside the backend's context,
        with a progress bar when ``verbose`` is 1."""
        bar = _progress(-(-n // batch_size), desc, verbose == 1)
        with _backend_call(self.backend_name, self.threads):
            for i in range(0, n, batch_size):
                yield slice(i, i + batch_size)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()

    def _head_outputs(self, x):
        """``(z, p, mask)`` in inference mode."""
        z, mask, _ = self._forward(x, False)
        return z, self._ops.activation_forward(z, self._head()), mask

    def predict(self, x, batch_size=None, verbose="auto"):
        """The model's outputs (e.g. probabilities), in batches of ``batch_size`` (None: 32)."""
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        return self._predict(self._x(x), batch_size, verbose)

    def _predict(self, x, batch_size, verbose=0):
        return np.concatenate([self._head_outputs(x[batch])[1]
                               for batch in self._batches(len(x), batch_size, "predict", verbose)])

    def _training(self):
        return _training(self._training_lock)

    def fit(self, x, y, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        """Keras' ``fit``: epochs ``initial_epoch .. epochs - 1``; returns a ``History`` whose
        keys are ``loss``, the metrics as named in ``compile`` and their ``val_`` twins."""
        batch_size, verbose = _batch_size(batch_size), _verbose(verbose)
        _positive_int("epochs", epochs, minimum=0)
        _positive_int("initial_epoch", initial_epoch, minimum=0)
        x, y, x_val, y_val = _fit_data(self._data, x, y, validation_split, validation_data)
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastrnn.callbacks.Callback objects, got {cb!r}")
            cb.model = self
        with self._training():
            if not (initial_epoch == self.epoch and initial_epoch > 0
                    and self.history.epoch == list(range(initial_epoch))):
                self.history = History()
            self.stop_training = False
            self._bounds[:] = np.nan              # the weights may have been written since
            for cb in callbacks:
                cb.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                if self.stop_training:
                    break
                logs = self._fit_epoch(x, y, batch_size, shuffle, verbose, epoch, epochs,
                                       callbacks)
                if x_val is not None:
                    loss, metrics = self._evaluate(x_val, y_val, batch_size)
                    logs.update({"val_" + k: v for k, v in {"loss": loss, **metrics}.items()})
                self.epoch = epoch + 1
                self.history.on_epoch_end(epoch, logs)
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if verbose:
                    print(f"Epoch {epoch + 1}/{epochs} - " +
                          " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
            for cb in callbacks:
                cb.on_train_end()
        return self.history

    def _fit_epoch(self, x, y, batch_size, shuffle, verbose, epoch, epochs, callbacks):
        n = len(x)
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        n_batches = -(-n // batch_size)
        bar = _progress(n_batches, f"Epoch {epoch + 1}/{epochs}", verbose == 1)
        loss_sum, sums, weight_sum, seen = 0.0, dict.fromkeys(self.metrics, 0.0), 0.0, 0
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss, batch_sums, weight, norm, applied = self._train_batch(x[idx], y[idx])
            if not applied:
                raise TrainingError(f"non-finite {_what(loss, norm)} at epoch {epoch + 1}, step "
                                    f"{b + 1} of {n_batches}; the weights are those before this "
                                    "step (lower the learning rate or set global_clipnorm on the "
                                    "optimizer)")
            loss_sum += loss * len(idx)
            seen += len(idx)
            for m in self.metrics:
                sums[m] += batch_sums[m]
            weight_sum += weight
            logs = {"loss": loss_sum / seen, **{m: s / weight_sum if weight_sum else 0.0
                                                for m, s in sums.items()}}
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)
            for cb in callbacks:
                cb.on_batch_end(self.step_count, logs)
        if bar is not None:
            bar.close()
        return logs

    def reset_states(self):
        """Zero the carried states of every stateful layer (Keras' ``reset_states``)."""
        for layer in self.layers:
            if getattr(layer, "stateful", False):
                layer.reset_states()

    reset_state = reset_states

    # --- weights, summary, files ---------------------------------------------------------------

    def get_weights(self):
        """Copies of every weight, in Keras' order and shapes."""
        self._ensure_built()
        return [w.copy() for layer_w in self._w for w in layer_w]

    def set_weights(self, weights):
        """Load weights in Keras' order (e.g. a Keras model's ``get_weights()``)."""
        self._ensure_built()
        views = [w for layer_w in self._w for w in layer_w]
        weights = list(weights)
        if len(weights) != len(views):
            raise ValueError(f"set_weights got {len(weights)} arrays; the model has {len(views)}")
        for i, (view, value) in enumerate(zip(views, weights)):
            value = np.asarray(value)
            if value.shape != view.shape:
                raise ValueError(f"weight {i} has shape {value.shape}; expected {view.shape}")
            if not np.isfinite(value).all():
                raise ValueError(f"weight {i} holds NaN or inf")
        for view, value in zip(views, weights):
            view[...] = value
        self._bounds[:] = np.nan

    @property
    def weights(self):
        return [w for layer_w in self._w for w in layer_w]

    def count_params(self):
        return int(self.theta.size)

    def summary(self, print_fn=print):
        """Keras' table: each layer, its output shape and its number of parameters."""
        self._ensure_built()
        if not self.built:
            raise ValueError("summary: the model is not built yet (give it an Input or call it "
                             "on data first)")
        rows = [(f"{layer.name} ({type(layer).__name__})", str((None, *layer.output_shape)),
                 f"{layer.count_params():,}") for layer in self.layers]
        widths = (33, 24, 15)
        line = lambda l, m, r, f: l + m.join(f * w for w in widths) + r    # noqa: E731
        cell = lambda cells, bar="│": bar + bar.join(                     # noqa: E731
            f" {c:<{w - 2}} " if j < 2 else f" {c:>{w - 2}} "
            for j, (c, w) in enumerate(zip(cells, widths))) + bar
        n = self.count_params()
        size = n * self.dtype.itemsize
        out = [f'Model: "{self.name}"', line("┏", "┳", "┓", "━"),
               cell(("Layer (type)", "Output Shape", "Param #"), "┃"), line("┡", "╇", "┩", "━")]
        for k, row in enumerate(rows):
            out.append(cell(row))
            last = k == len(rows) - 1
            out.append(line("└", "┴", "┘", "─") if last else line("├", "┼", "┤", "─"))
        out += [f" Total params: {n:,} ({_bytes(size)})",
                f" Trainable params: {n:,} ({_bytes(size)})",
                " Non-trainable params: 0 (0.00 B)"]
        print_fn("\n".join(out))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype.name, "seed": self.seed,
                "input_shape": list(self._input_shape) if self.built else None,
                "input_dtype": self._input.dtype if self._input else None,
                "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    def save(self, path, extra=None):
        """Write the model to one ``.npz`` file, atomically: layer config, weights, optimizer
        and its state, step and epoch counts, the random generator's state, the history, and
        ``extra`` (JSON-able data of the caller's, e.g. a vocabulary; ``load_model`` sets it as
        ``model.extra``). No pickle; ``load_model`` reads it back and ``fit(...,
        initial_epoch=model.epoch)`` continues exactly."""
        self._ensure_built()
        if not self.built:
            raise ValueError("save: the model is not built yet")
        for name in ("theta", "s1", "s2"):
            if not np.isfinite(getattr(self, name)).all():
                raise TrainingError(f"refusing to save non-finite {name} to {os.fspath(path)!r}")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.get_config(),
                "compile": ({"optimizer": self.optimizer.get_config(), "loss": self.loss,
                             "from_logits": self.from_logits, "metrics": self.metrics}
                            if self.compiled else None),
                "step_count": self.step_count, "epoch": self.epoch,
                "rng": self.rng.bit_generator.state,
                "layer_rngs": [None if r is self.rng else r.bit_generator.state
                               for r in self._layer_rngs],
                "history": self.history.history, "extra": extra}
        meta_bytes = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        if meta_bytes.size > META_MAX_BYTES:
            raise ValueError(f"refusing to save {os.fspath(path)!r}: its metadata would be "
                             f"{meta_bytes.size} bytes, more than load_model reads "
                             f"({META_MAX_BYTES})")
        with atomic_write(path) as f:
            np.savez(f, theta=self.theta, s1=self.s1, s2=self.s2, meta=meta_bytes)

    def __repr__(self):
        return (f"Sequential({self.layers!r}, dtype={self.dtype.name!r}, "
                f"backend={self.backend_name!r})")


def _what(loss, norm):
    """What a refused step had that was not finite."""
    if not math.isfinite(loss):
        return "loss"
    if not math.isfinite(norm):
        return "gradient"
    return "update (it would make weights or optimizer state overflow)"


def _bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024


def load_model(path, backend="numba", threads=None):
    """Read a model written by ``Sequential.save``. A damaged or hostile file raises
    ``ValueError`` naming it; nothing in it is unpickled or executed, and nothing is allocated
    before the arrays' headers have been checked against the layer config."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = os.fspath(path)
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {path!r} does not exist") from None
    with f:
        try:
            return _read(f, backend, threads)
        except Exception as e:
            raise ValueError(f"{path!r} is not a valid fastrnn Sequential model file "
                             f"({type(e).__name__}: {e})") from e


def _read(f, backend, threads):
    reader = NpzReader(f)
    if reader.names() != {"theta", "s1", "s2", "meta"}:
        raise ValueError(f"arrays {sorted(reader.names())}; a model file has meta, s1, s2, theta")
    meta = reader.read("meta", dtype=np.uint8, max_bytes=META_MAX_BYTES)
    meta = json.loads(meta.tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        if isinstance(meta, dict) and meta.get("format") == "fastrnn-model":
            raise ValueError("it holds a SimpleRNNClassifier (saved by fastrnn 0.1): load it with "
                             "fastrnn.SimpleRNNClassifier.load")
        raise ValueError("not a fastrnn Sequential model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format version {meta.get('format_version')!r}; this fastrnn reads "
                         f"{FORMAT_VERSION}")
    c = meta["config"]
    model = Sequential([layers_module.from_config(item["class_name"], item["config"])
                        for item in c["layers"]], dtype=c["dtype"], backend=backend,
                       seed=c["seed"], threads=threads, name=str(c["name"]))
    shape = (None, *[None if d is None else int(d) for d in c["input_shape"]])
    model._shapes(shape[1:])                          # sizes known before any allocation
    n = sum(layer.count_params() for layer in model.layers)
    header, _ = reader.header("theta")
    if header != (n,):
        raise ValueError(f"array 'theta' has shape {header}; the layers need ({n},)")
    for name in ("theta", "s1", "s2"):
        reader.check(name, dtype=c["dtype"], shape=header)
    model.build(shape)
    for name in ("theta", "s1", "s2"):
        a = reader.read(name, dtype=model.dtype, shape=(n,))
        if not np.isfinite(a).all():
            raise ValueError(f"array {name!r} holds NaN or inf")
        getattr(model, name)[...] = a
    if meta["compile"] is not None:
        cc = meta["compile"]
        from .losses import get as get_loss
        model.compile(optim.get(cc["optimizer"]), get_loss(cc["loss"], cc["from_logits"]),
                      cc["metrics"])
    model.step_count, model.epoch = int(meta["step_count"]), int(meta["epoch"])
    model.rng.bit_generator.state = meta["rng"]
    for r, state in zip(model._layer_rngs, meta["layer_rngs"]):
        if state is not None:
            r.bit_generator.state = state
    model.history.history = {k: list(v) for k, v in meta["history"].items()}
    recorded = max(map(len, model.history.history.values()), default=0)
    model.history.epoch = list(range(model.epoch - recorded, model.epoch))
    model.extra = meta.get("extra")
    return model
