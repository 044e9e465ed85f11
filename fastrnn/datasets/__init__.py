"""Datasets with Keras-compatible loaders.

``fastrnn.datasets.imdb`` mirrors ``keras.datasets.imdb``: ``load_data`` and
``get_word_index`` give the same arrays as Keras, found locally or downloaded
into the user cache and checked by sha256.
"""

from . import imdb

__all__ = ["imdb"]
