"""Optimizer configurations.

An optimizer here is plain data: a kind and a vector of hyperparameters. The arithmetic lives in the
backends (``fastrnn.reference`` and ``fastrnn.kernels``: ``sgd_update``, ``rmsprop_update``,
``adam_update``, ``clip_by_global_norm``, and ``train_step`` which applies them in one pass). Every
optimizer keeps its state in two buffers shaped like the flat parameter buffer (``s1``, ``s2``):
Adam's ``m`` and ``v``, RMSprop's mean square (``s1``), SGD's momentum buffer (``s1``).

``global_clipnorm`` rescales the whole gradient when its L2 norm exceeds it (TensorFlow's
``clip_by_global_norm``: ``g * c / max(norm, c)``).
"""

from __future__ import annotations

import math

import numpy as np

# Kinds and the layout of the hyperparameter vector shared with the kernels.
SGD_KIND, RMSPROP_KIND, ADAM_KIND = 0, 1, 2
LR, BETA_1, BETA_2, EPSILON, WEIGHT_DECAY, MOMENTUM, RHO, CLIPNORM, KERAS_EPSILON = range(9)
N_HYPER = 9
KINDS = (SGD_KIND, RMSPROP_KIND, ADAM_KIND)


class Optimizer:
    """Base class: holds hyperparameters; ``hyper()`` packs them for the backends."""

    kind = -1

    def __init__(self, learning_rate, global_clipnorm=None):
        _positive("learning_rate", learning_rate)
        if global_clipnorm is not None:
            _positive("global_clipnorm", global_clipnorm)
        self.learning_rate = float(learning_rate)
        self.global_clipnorm = None if global_clipnorm is None else float(global_clipnorm)

    def hyper(self):
        """The float64 hyperparameter vector the backends read (unused slots are 0)."""
        h = np.zeros(N_HYPER)
        h[LR] = self.learning_rate
        h[CLIPNORM] = math.inf if self.global_clipnorm is None else self.global_clipnorm
        for index, value in self._hyper().items():
            h[index] = value
        return h

    def get_config(self):
        """Constructor arguments, for saving and ``from_config``."""
        return {"name": type(self).__name__, **vars(self)}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (PyTorch-style) momentum:
    ``buf = momentum * buf + g; p -= lr * buf`` (the same trajectory as Keras' form)."""

    kind = SGD_KIND

    def __init__(self, learning_rate=0.01, momentum=0.0, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        _unit("momentum", momentum)
        self.momentum = float(momentum)

    def _hyper(self):
        return {MOMENTUM: self.momentum}


class RMSprop(Optimizer):
    """RMSprop with Keras' defaults and epsilon placement:
    ``s = rho * s + (1 - rho) * g**2; p -= lr * g / sqrt(s + epsilon)``."""

    kind = RMSPROP_KIND

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        _unit("rho", rho)
        _positive("epsilon", epsilon)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def _hyper(self):
        return {RHO: self.rho, EPSILON: self.epsilon}


class Adam(Optimizer):
    """Adam with exact bias correction (Kingma & Ba; PyTorch's epsilon placement):
    ``p -= lr * m_hat / (sqrt(v_hat) + epsilon)``.

    ``keras_epsilon=True`` uses Keras' placement instead, ``epsilon`` added to ``sqrt(v)`` before
    bias correction (the same as ``epsilon / sqrt(1 - beta_2**t)`` above).
    """

    kind = ADAM_KIND

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 keras_epsilon=False, global_clipnorm=None):
        super().__init__(learning_rate, global_clipnorm)
        _unit("beta_1", beta_1)
        _unit("beta_2", beta_2)
        _positive("epsilon", epsilon)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        if not isinstance(keras_epsilon, (bool, np.bool_)):
            raise TypeError(f"keras_epsilon must be True or False, got {keras_epsilon!r}")
        self.keras_epsilon = bool(keras_epsilon)

    def _hyper(self):
        return {BETA_1: self.beta_1, BETA_2: self.beta_2, EPSILON: self.epsilon,
                KERAS_EPSILON: float(self.keras_epsilon)}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's ``AdamW``):
    ``p *= 1 - lr * weight_decay`` before the Adam step."""

    def __init__(self, learning_rate=0.001, weight_decay=0.01, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, keras_epsilon=False, global_clipnorm=None):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, keras_epsilon, global_clipnorm)
        if not (_number(weight_decay) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)

    def _hyper(self):
        return {**super()._hyper(), WEIGHT_DECAY: self.weight_decay}


OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, RMSprop, Adam, AdamW)}


def get(identifier):
    """An optimizer from an instance, a name (``"adam"``) or a ``get_config()`` dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if identifier is None:
        return Adam()
    if isinstance(identifier, str):
        name, config = identifier, {}
    elif isinstance(identifier, dict):
        config = dict(identifier)
        name = config.pop("name", "")
    else:
        raise TypeError(f"optimizer must be a fastrnn.optim.Optimizer, a name or a config dict, "
                        f"got {type(identifier).__name__}")
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return cls(**config)


def _number(value):
    """A real number that is not a bool (``True`` is not a learning rate)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _positive(name, value):
    if not (_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _unit(name, value):
    if not (_number(value) and 0 <= value < 1):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
