"""Keras' module name for the optimizers: the same classes as ``fastrnn.optim``.

A string in ``Sequential.compile`` ("rmsprop", "adam", "adamw", "sgd") gives Keras' defaults
(Adam and AdamW with Keras' epsilon, 1e-7 added before the bias correction); a class built here
directly keeps its own defaults (``Adam()``: epsilon 1e-8 after the bias correction, PyTorch's).
"""

from .optim import SGD, Adam, AdamW, Optimizer, RMSprop, get

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "get"]
