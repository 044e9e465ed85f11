"""``keras.preprocessing.sequence``'s name for ``pad_sequences``."""

from . import pad_sequences

__all__ = ["pad_sequences"]
