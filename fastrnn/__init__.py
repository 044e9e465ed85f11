"""fastrnn: recurrent networks trained from NumPy code at compiled speed.

``fastrnn.reference`` (NumPy) defines the maths; ``fastrnn.kernels`` (Numba) computes the same
functions fast and is imported only when the Numba backend is used, so ``import fastrnn`` compiles
nothing. ``fastrnn.models.Sequential`` and ``fastrnn.layers`` follow Keras 3's API.
"""

from . import (callbacks, datasets, layers, losses, models, optim, optimizers, preprocessing,
               reference, utils)
from .callbacks import EarlyStopping, History, ModelCheckpoint
from .model import SimpleRNNClassifier, TrainingError, UnknownTextWarning
from .models import Sequential, load_model
from .optim import SGD, Adam, AdamW, RMSprop

__version__ = "0.1.0"

__all__ = ["Sequential", "load_model", "SimpleRNNClassifier", "TrainingError",
           "UnknownTextWarning", "SGD", "Adam", "AdamW", "RMSprop", "EarlyStopping", "History",
           "ModelCheckpoint", "callbacks", "datasets", "layers", "losses", "models", "optim",
           "optimizers", "preprocessing", "reference", "utils"]
