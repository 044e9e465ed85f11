"""Keras' loss classes. The maths is in ``fastrnn.reference.losses``; a model computes each
loss fused with its head (see there)."""

from __future__ import annotations

import numpy as np

from .reference import losses as _ops


class Loss:
    """A loss by name, with ``from_logits`` for the cross-entropies."""

    name = ""

    def __init__(self, from_logits=False):
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
        self.from_logits = bool(from_logits)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}

    def __call__(self, y_true, y_pred):
        """The mean loss of the outputs ``y_pred (..., C)`` (Keras' value)."""
        y_pred = np.asarray(y_pred, dtype=np.float64)
        return float(_ops.loss_value(self.name, "linear", self.from_logits, y_pred,
                                     np.asarray(y_true)))

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def __init__(self):
        super().__init__(False)


CLASSES = {cls.name: cls for cls in (SparseCategoricalCrossentropy, BinaryCrossentropy,
                                     MeanSquaredError)}


def get(name, from_logits=False):
    """A loss object from its Keras name ("mse" too)."""
    name = {"mse": "mean_squared_error"}.get(name, name)
    if name not in CLASSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(CLASSES)} or 'mse'")
    return CLASSES[name]() if name == "mean_squared_error" else CLASSES[name](from_logits)
