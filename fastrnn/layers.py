"""Keras 3's recurrent-model layers: ``Input``, ``Embedding``, ``SimpleRNN``, ``Bidirectional``,
``Dense``, ``Dropout``.

A layer here is configuration (Keras' arguments and defaults), shapes, its weights in Keras' order
and their initialisers, and which backend ops compute it: its ``forward`` and ``backward`` call
the same-named functions of ``fastrnn.reference.layers`` (NumPy) or ``fastrnn.kernels`` (Numba),
and do no arithmetic of their own. ``fastrnn.models.Sequential`` strings them together.

Shapes exclude the batch axis: ``(T,)`` token ids, ``(T, D)`` sequences, ``(D,)`` vectors.
"""

from __future__ import annotations

import itertools
import numbers
import re

import numpy as np

from . import initializers
from .reference.layers import ACTIVATIONS, RNN_ACTIVATIONS

MERGE_MODES = ("concat", "sum", "ave", "mul")
_counters = {}


def _auto_name(cls_name):
    """Keras' default names: ``simple_rnn``, ``simple_rnn_1``, ... counted per process."""
    base = re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls_name))
    base = base.lower()
    n = _counters.setdefault(base, itertools.count())
    i = next(n)
    return base if i == 0 else f"{base}_{i}"


def _int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _rate(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _choice(name, value, allowed):
    value = "linear" if value is None and "linear" in allowed else value
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


class LayerError(ValueError):
    """A layer that cannot work where it stands in a model (raised when the model is built)."""


class Layer:
    """Base class: ``name``, ``build(input_shape) -> output_shape``, weights, forward/backward."""

    supports_masking = True

    def __init__(self, name=None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        self.name = name or _auto_name(type(self).__name__)
        self.input_shape = self.output_shape = None

    def build(self, input_shape):
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        return self.output_shape

    def weight_specs(self):
        """``[(name, shape, initializer)]`` in Keras' ``get_weights()`` order."""
        return []

    def count_params(self):
        return sum(int(np.prod(shape)) for _, shape, _ in self.weight_specs())

    def get_config(self):
        return {"name": self.name}

    def forward(self, ops, w, x, mask, training, rng):
        """``(y, mask_out, cache)``; ``w`` the layer's weight views."""
        return x, mask, None

    def backward(self, ops, w, g, dy, cache):
        """``dx`` from ``dy``; writes the weight gradients into the views ``g``."""
        return dy

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Tokens:
    """An Embedding's output before the lookup: the table ``E (V, D)`` and ``ids (B, T)``. A
    recurrent layer reading it projects each distinct token once (``embedding_rnn_forward``);
    any other layer looks the vectors up (``dense``)."""

    def __init__(self, E, ids):
        self.E, self.ids = E, ids

    def dense(self, ops):
        return ops.embedding_forward(self.E, self.ids)


class TokenGrad:
    """The gradient of an Embedding's table from a layer that read ``Tokens``: the rows
    ``rows`` (ascending) have gradient ``values``, every other row 0."""

    def __init__(self, rows, values):
        self.rows, self.values = rows, values

    def __add__(self, other):                     # both directions of a Bidirectional: same rows
        return TokenGrad(self.rows, self.values + other.values)


def _dense(ops, x):
    return x.dense(ops) if isinstance(x, Tokens) else x


class Input:
    """``keras.Input``: the shape of one sample (no batch axis) and the dtype of the inputs."""

    def __init__(self, shape, batch_size=None, dtype=None, name=None):
        if isinstance(shape, numbers.Integral):
            shape = (shape,)
        shape = tuple(shape)
        for d in shape:
            if d is not None:
                _int("Input shape entries", d)
        if batch_size is not None:
            _int("batch_size", batch_size)
        self.shape, self.batch_size, self.dtype, self.name = shape, batch_size, dtype, name

    def get_config(self):
        return {"shape": list(self.shape), "batch_size": self.batch_size, "dtype": self.dtype}

    def __repr__(self):
        return f"Input(shape={self.shape})"


class Embedding(Layer):
    """Token ids ``(T,)`` -> vectors ``(T, output_dim)``; ``mask_zero`` makes id 0 padding (a
    masked step for the layers after it)."""

    def __init__(self, input_dim, output_dim, mask_zero=False, name=None):
        super().__init__(name)
        self.input_dim = _int("input_dim", input_dim)
        self.output_dim = _int("output_dim", output_dim)
        if not isinstance(mask_zero, (bool, np.bool_)):
            raise TypeError(f"mask_zero must be True or False, got {mask_zero!r}")
        self.mask_zero = bool(mask_zero)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def weight_specs(self):
        return [("embeddings", (self.input_dim, self.output_dim), initializers.uniform)]

    def get_config(self):
        return {"name": self.name, "input_dim": self.input_dim, "output_dim": self.output_dim,
                "mask_zero": self.mask_zero}

    def forward(self, ops, w, ids, mask, training, rng):
        return Tokens(w[0], ids), (ids != 0 if self.mask_zero else None), ids

    def backward(self, ops, w, g, dy, ids):
        if isinstance(dy, TokenGrad):
            # only the rows of this batch have a gradient: clear the last batch's, write these
            dirty = getattr(self, "_dirty", None)
            if dirty is None:                     # the first step, or after a dense gradient
                g[0][...] = 0
            else:
                g[0][dirty] = 0
            g[0][dy.rows] = dy.values
            self._dirty = dy.rows
        else:
            g[0][...] = ops.embedding_backward(dy, ids, self.input_dim)
            self._dirty = None
        return None


class SimpleRNN(Layer):
    """Keras' ``SimpleRNN``: ``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)``.

    ``dropout`` / ``recurrent_dropout``: one mask per sequence for the inputs and one for the
    state, fixed over time, in training only. ``stateful``: each sample's final state is the
    initial state of the same sample in the next batch (a fixed batch size; ``reset_states()``
    zeroes it); the gradient stops at the batch boundary. ``bptt_truncate`` (fastrnn's, not
    Keras'): backpropagate through the last ``k`` state updates of each sequence only.
    """

    def __init__(self, units, activation="tanh", use_bias=True, return_sequences=False,
                 go_backwards=False, stateful=False, return_state=False, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, bptt_truncate=None, name=None):
        super().__init__(name)
        self.units = _int("units", units)
        self.activation = _choice("activation", activation, RNN_ACTIVATIONS)
        for flag, value in (("use_bias", use_bias), ("return_sequences", return_sequences),
                            ("go_backwards", go_backwards), ("stateful", stateful),
                            ("return_state", return_state)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        self.use_bias, self.return_sequences = bool(use_bias), bool(return_sequences)
        self.go_backwards, self.stateful = bool(go_backwards), bool(stateful)
        if return_state:
            raise LayerError("return_state=True gives the layer several outputs, which a "
                             "Sequential cannot pass on; read a stateful layer's .states instead")
        self.return_state = False
        self.states = None                        # stateful: the last batch's final states (B, H)
        self.batch_size = None                    # stateful: fixed by Input(batch_size) or batch 1
        self.dropout, self.recurrent_dropout = (_rate("dropout", dropout),
                                                _rate("recurrent_dropout", recurrent_dropout))
        self.seed = None if seed is None else _int("seed", seed, minimum=0)
        self.bptt_truncate = None if bptt_truncate is None else _int("bptt_truncate",
                                                                     bptt_truncate)
        self.zero_output_for_mask = False         # Bidirectional sets it (as Keras)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise LayerError(f"expects a 3-D input (batch, time, features), got shape "
                             f"{(None, *input_shape)}")
        return (input_shape[0], self.units) if self.return_sequences else (self.units,)

    def weight_specs(self):
        D, H = self.input_shape[-1], self.units
        specs = [("kernel", (D, H), initializers.glorot_uniform),
                 ("recurrent_kernel", (H, H), initializers.orthogonal)]
        return specs + ([("bias", (H,), initializers.zeros)] if self.use_bias else [])

    def get_config(self):
        return {"name": self.name, "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "return_sequences": self.return_sequences,
                "go_backwards": self.go_backwards, "stateful": self.stateful,
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout, "seed": self.seed,
                "bptt_truncate": self.bptt_truncate}

    def forward(self, ops, w, x, mask, training, rng):
        keep = r = None
        if training and self.dropout:
            x = _dense(ops, x)
            B, _, D = x.shape
            keep = rng.random((B, 1, D)) >= self.dropout
            x = ops.dropout_forward(x, keep, self.dropout)
        tokens = isinstance(x, Tokens)
        B, dt = (x.ids if tokens else x).shape[0], w[0].dtype
        if training and self.recurrent_dropout:
            keep_r = rng.random((B, self.units)) >= self.recurrent_dropout
            r = ops.dropout_forward(np.ones((B, self.units), dt), keep_r, self.recurrent_dropout)
        bias = w[2] if self.use_bias else np.zeros(self.units, dt)
        h0 = self._initial_state(B, dt)
        if tokens:
            hs = ops.embedding_rnn_forward(x.E, x.ids, w[0], w[1], bias, mask, self.activation,
                                           self.go_backwards, r, h0)
        else:
            hs = ops.simple_rnn_forward(x, w[0], w[1], bias, mask, self.activation,
                                        self.go_backwards, r, h0)
        if self.stateful:                         # the next batch starts where this one ended
            self.states = np.array(ops.rnn_outputs(hs, None, False, self.go_backwards))
        y = ops.rnn_outputs(hs, mask, self.return_sequences, self.go_backwards,
                            self.zero_output_for_mask)
        return y, (mask if self.return_sequences else None), (x, hs, mask, keep, r, h0)

    def _initial_state(self, B, dt):
        """The state before the first step: the last batch's final states (stateful), else None."""
        if not self.stateful:
            return None
        if self.batch_size is None:
            self.batch_size = B
        if B != self.batch_size:
            raise ValueError(f"layer {self.name!r} is stateful with batch size {self.batch_size}, "
                             f"got a batch of {B}: every batch must have that size (sample i of "
                             "a batch continues sample i of the last one)")
        if self.states is None or self.states.dtype != dt:
            self.states = np.zeros((B, self.units), dt)
        return self.states

    def reset_states(self):
        """Zero the carried states of a stateful layer (Keras' ``reset_states``)."""
        if not self.stateful:
            raise AttributeError(f"layer {self.name!r} is not stateful")
        if self.states is not None:
            self.states[...] = 0

    reset_state = reset_states

    def backward(self, ops, w, g, dy, cache):
        x, hs, mask, keep, r, h0 = cache
        dhs = ops.rnn_outputs_backward(dy, mask, self.return_sequences, self.go_backwards,
                                       self.zero_output_for_mask)
        args = (w[0], w[1], mask, self.activation, self.go_backwards, r, self.bptt_truncate, h0)
        if isinstance(x, Tokens):
            rows, dE_rows, dk, dr, db = ops.embedding_rnn_backward(dhs, x.ids, x.E, hs, *args)
            dx = TokenGrad(rows, dE_rows)
        else:
            dx, dk, dr, db = ops.simple_rnn_backward(dhs, x, hs, *args)
        g[0][...], g[1][...] = dk, dr
        if self.use_bias:
            g[2][...] = db
        return dx if keep is None else ops.dropout_backward(dx, keep, self.dropout)


class Bidirectional(Layer):
    """Keras' ``Bidirectional``: a forward copy of ``layer`` and a ``go_backwards`` copy, their
    outputs merged by ``merge_mode`` ("concat", "sum", "ave", "mul"); weights: the forward copy's,
    then the backward copy's."""

    def __init__(self, layer, merge_mode="concat", name=None):
        if not isinstance(layer, SimpleRNN):
            raise LayerError(f"Bidirectional wraps a recurrent layer (SimpleRNN), got {layer!r}")
        if layer.stateful:
            raise LayerError("a stateful Bidirectional is not supported: its backward direction "
                             "reads each window from its end, so no state can be carried into "
                             "the next window")
        if layer.go_backwards:
            # Keras' backward copy always has go_backwards=True, and it refuses two copies that
            # read in the same direction
            raise LayerError("Bidirectional wraps a layer with go_backwards=False (the backward "
                             "copy reads the sequence backwards); got go_backwards=True")
        super().__init__(name)
        self.merge_mode = _choice("merge_mode", merge_mode, MERGE_MODES)
        config = layer.get_config()
        self.forward_layer = SimpleRNN(**{**config, "name": "forward_" + layer.name})
        self.backward_layer = SimpleRNN(**{**config, "name": "backward_" + layer.name,
                                           "go_backwards": True})
        self.layer = layer
        self.return_sequences = layer.return_sequences
        for copy in (self.forward_layer, self.backward_layer):
            copy.zero_output_for_mask = copy.return_sequences

    def build(self, input_shape):
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)
        return super().build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        return (*shape[:-1], shape[-1] * 2) if self.merge_mode == "concat" else shape

    def weight_specs(self):
        return self.forward_layer.weight_specs() + self.backward_layer.weight_specs()

    def get_config(self):
        return {"name": self.name, "layer": self.layer.get_config(), "merge_mode": self.merge_mode}

    def _split(self, w):
        n = len(self.forward_layer.weight_specs())
        return w[:n], w[n:]

    def forward(self, ops, w, x, mask, training, rng):
        wf, wb = self._split(w)
        yf, mask_out, cf = self.forward_layer.forward(ops, wf, x, mask, training, rng)
        yb, _, cb = self.backward_layer.forward(ops, wb, x, mask, training, rng)
        if self.return_sequences:
            yb = yb[:, ::-1]                       # back to the input's time order (Keras)
        return ops.merge_forward(yf, yb, self.merge_mode), mask_out, (yf, yb, cf, cb)

    def backward(self, ops, w, g, dy, cache):
        yf, yb, cf, cb = cache
        wf, wb = self._split(w)
        gf, gb = self._split(g)
        dyf, dyb = ops.merge_backward(dy, yf, yb, self.merge_mode)
        if self.return_sequences:
            dyb = dyb[:, ::-1]
        dx = self.forward_layer.backward(ops, wf, gf, dyf, cf)
        return dx + self.backward_layer.backward(ops, wb, gb, dyb, cb)


class Dense(Layer):
    """``activation(x @ kernel + bias)`` over the last axis (every step of a 3-D input)."""

    def __init__(self, units, activation=None, use_bias=True, name=None):
        super().__init__(name)
        self.units = _int("units", units)
        self.activation = _choice("activation", activation, ACTIVATIONS)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise TypeError(f"use_bias must be True or False, got {use_bias!r}")
        self.use_bias = bool(use_bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def weight_specs(self):
        D = self.input_shape[-1]
        specs = [("kernel", (D, self.units), initializers.glorot_uniform)]
        return specs + ([("bias", (self.units,), initializers.zeros)] if self.use_bias else [])

    def get_config(self):
        return {"name": self.name, "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias}

    def logits(self, ops, w, x):
        """``(z, x)``: the pre-activation, and the inputs as the backward pass reads them."""
        x = _dense(ops, x)
        bias = w[1] if self.use_bias else np.zeros(self.units, x.dtype)
        return ops.dense_forward(x, w[0], bias), x

    def forward(self, ops, w, x, mask, training, rng):
        z, x = self.logits(ops, w, x)
        y = ops.activation_forward(z, self.activation)
        return y, mask, (x, y)

    def backward(self, ops, w, g, dy, cache, dz=None):
        """``dz`` given: the gradient of the pre-activation (a fused loss), ``dy`` unused."""
        x, y = cache
        if dz is None:
            dz = ops.activation_backward(dy, y, self.activation)
        dx, dk, db = ops.dense_backward(dz, x, w[0])
        g[0][...] = dk
        if self.use_bias:
            g[1][...] = db
        return dx


class Dropout(Layer):
    """Inverted dropout of each element at ``rate``, in training only."""

    def __init__(self, rate, seed=None, name=None):
        super().__init__(name)
        self.rate = _rate("rate", rate)
        self.seed = None if seed is None else _int("seed", seed, minimum=0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {"name": self.name, "rate": self.rate, "seed": self.seed}

    def forward(self, ops, w, x, mask, training, rng):
        x = _dense(ops, x)
        if not (training and self.rate):
            return x, mask, None
        keep = rng.random(x.shape) >= self.rate
        return ops.dropout_forward(x, keep, self.rate), mask, keep

    def backward(self, ops, w, g, dy, keep):
        return dy if keep is None else ops.dropout_backward(dy, keep, self.rate)


LAYERS = {cls.__name__: cls for cls in (Embedding, SimpleRNN, Bidirectional, Dense, Dropout)}


def from_config(kind, config):
    """A layer from its class name and ``get_config()``."""
    cls = LAYERS.get(kind)
    if cls is None:
        raise ValueError(f"unknown layer {kind!r}; expected one of {sorted(LAYERS)}")
    config = dict(config)
    if cls is Bidirectional:
        config["layer"] = SimpleRNN(**config["layer"])
    return cls(**config)
