"""fastrnn: recurrent networks trained from NumPy code at compiled speed.

``fastrnn.reference`` (NumPy) defines the maths; ``fastrnn.kernels`` (Numba) computes the same
functions fast and is imported only when the Numba backend is used, so ``import fastrnn`` compiles
nothing.
"""

from . import callbacks, datasets, optim, preprocessing, reference
from .callbacks import EarlyStopping, History, ModelCheckpoint
from .model import SimpleRNNClassifier, TrainingError, UnknownTextWarning
from .optim import SGD, Adam, AdamW, RMSprop

__version__ = "0.1.0"

__all__ = ["SimpleRNNClassifier", "TrainingError", "UnknownTextWarning", "SGD", "Adam", "AdamW",
           "RMSprop", "EarlyStopping", "History", "ModelCheckpoint", "callbacks", "datasets",
           "optim", "preprocessing", "reference"]
