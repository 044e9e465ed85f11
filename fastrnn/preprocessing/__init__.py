"""Turn raw reviews into the padded id matrices the models take.

- `pad_sequences`: Keras' ``pad_sequences`` (same defaults and results), vectorised.
- `text_to_word_sequence`: the tokenizer the IMDB data was built with.
- `TextEncoder`: raw text -> the same ids as ``fastrnn.datasets.imdb.load_data``.
"""

import string
from itertools import chain

import numpy as np

_FILTERS = string.punctuation.replace("'", "") + "\t\n"
_TABLE = str.maketrans(
    {**{c: " " for c in _FILTERS}, **{c: c.lower() for c in string.ascii_uppercase}}
)


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0):
    """Pad (and truncate) sequences of numbers to one length, as Keras does.

    Parameters
    ----------
    sequences : iterable of sequences of numbers
        E.g. a list of lists of ints, or ``x_train`` from ``imdb.load_data``.
    maxlen : int, optional
        Output length; defaults to the longest sequence.
    dtype : numpy dtype, default "int32"
        Numeric dtype of the result.
    padding : {"pre", "post"}, default "pre"
        Pad before or after each sequence.
    truncating : {"pre", "post"}, default "pre"
        Drop values from the beginning or the end of sequences longer than `maxlen`.
    value : number, default 0.0
        Padding value.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(sequences), maxlen)``.

    Raises
    ------
    ValueError
        For a bad `padding` / `truncating` / `maxlen` / `value`, an element of
        `sequences` that is not a flat sequence of numbers, or values that do
        not fit an integer `dtype` (non-integer, non-finite or out of range).
    """
    for name, arg in (("padding", padding), ("truncating", truncating)):
        if arg not in ("pre", "post"):
            raise ValueError(f"`{name}` must be 'pre' or 'post', got {arg!r}")
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise ValueError(f"`dtype` must be a numeric dtype, got {dtype}")
    try:
        sequences = list(sequences)
        lengths = np.array([len(s) for s in sequences], dtype=np.intp)
    except TypeError as e:
        raise ValueError(f"`sequences` must be an iterable of sequences of numbers ({e})") from e
    if maxlen is None:
        maxlen = int(lengths.max(initial=0))
    elif isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)) or maxlen < 0:
        raise ValueError(f"`maxlen` must be None or an int >= 0, got {maxlen!r}")
    _check_fits(np.array([value]), dtype, "value")

    try:
        flat = np.asarray(list(chain.from_iterable(sequences)))
    except (ValueError, TypeError) as e:  # ragged nested items
        raise ValueError("`sequences` must hold flat sequences of numbers") from e
    if flat.ndim != 1 or (flat.size and flat.dtype.kind not in "biuf"):
        raise ValueError("`sequences` must hold flat sequences of numbers")

    kept = np.minimum(lengths, maxlen)
    starts = np.cumsum(lengths) - lengths
    if truncating == "pre":
        starts += lengths - kept
    kept_starts = np.cumsum(kept) - kept
    pos = np.arange(kept.sum()) - np.repeat(kept_starts, kept)  # index inside the kept part
    values = flat[np.repeat(starts, kept) + pos]
    _check_fits(values, dtype, "sequences")

    out = np.full((len(sequences), maxlen), value, dtype=dtype)
    rows = np.repeat(np.arange(len(sequences)), kept)
    cols = pos if padding == "post" else pos + np.repeat(maxlen - kept, kept)
    out[rows, cols] = values
    return out


def _check_fits(values, dtype, name):
    """Raise ValueError unless numeric `values` convert exactly to integer `dtype`."""
    if values.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must be numeric for dtype {dtype}, got {values.dtype}")
    if dtype.kind not in "iu" or values.size == 0:
        return
    if values.dtype.kind == "f" and not (np.isfinite(values) & (values == np.round(values))).all():
        raise ValueError(
            f"`{name}` holds non-integer or non-finite values; dtype {dtype} needs integers"
        )
    info = np.iinfo(dtype)
    if values.min() < info.min or values.max() > info.max:
        raise ValueError(f"`{name}` holds values outside the range of dtype {dtype}")


def text_to_word_sequence(text):
    """Split a review into words the way the IMDB word index was built.

    Old Keras (Python 2) defaults: ASCII letters are lower-cased (other letters
    keep their case), each character of ``string.punctuation`` except ``'``,
    and tab and newline, becomes a space, and the text is split on spaces.
    HTML line breaks ``<br />`` therefore give the word ``"br"``, as in the data.

    Parameters
    ----------
    text : str

    Returns
    -------
    list of str

    Examples
    --------
    >>> text_to_word_sequence("It's GREAT!<br />Ángela")
    ["it's", 'great', 'br', 'Ángela']
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")
    return [w for w in text.translate(_TABLE).split(" ") if w]


class TextEncoder:
    """Encode raw text into the ids ``imdb.load_data`` gives for the same arguments.

    Each word becomes ``rank + index_from`` (ranks from the word index), the
    sequence starts with `start_char`, and ids outside ``[skip_top, num_words)``
    become `oov_char` (or are dropped when it is ``None``) -- the same rules as
    ``load_data``, including for `start_char`.

    Parameters
    ----------
    word_index : dict of str to int, optional
        Word -> rank; defaults to ``fastrnn.datasets.imdb.get_word_index()``.
    num_words : int, optional
        As in ``load_data``. ``None`` means the largest rank + `index_from`,
        which is what ``load_data(num_words=None)`` uses on the full data.
    skip_top, start_char, oov_char, index_from
        As in ``load_data``.
    unknown : {"drop", "oov"}, default "drop"
        Words missing from the word index are dropped (as in the IMDB test
        split) or mapped to `oov_char`.
    """

    def __init__(self, word_index=None, num_words=None, skip_top=0, start_char=1,
                 oov_char=2, index_from=3, unknown="drop"):
        if unknown not in ("drop", "oov"):
            raise ValueError(f"`unknown` must be 'drop' or 'oov', got {unknown!r}")
        if unknown == "oov" and oov_char is None:
            raise ValueError("unknown='oov' needs an `oov_char`, got None")
        if word_index is None:
            from fastrnn.datasets import imdb

            word_index = imdb.get_word_index()
        if not num_words:
            num_words = max(word_index.values(), default=0) + index_from
        self.num_words, self.skip_top = num_words, skip_top
        self.start_char, self.oov_char, self.index_from = start_char, oov_char, index_from
        self.unknown = unknown
        self._ids = {w: self._limit(r + index_from) for w, r in word_index.items()}
        self._words = {r + index_from: w for w, r in word_index.items()}

    def _limit(self, i):
        return i if self.skip_top <= i < self.num_words else self.oov_char

    def encode(self, texts):
        """Ids for each text.

        Parameters
        ----------
        texts : str or iterable of str
            A single string counts as one text.

        Returns
        -------
        list of list of int
            One id list per text.
        """
        if isinstance(texts, str):
            texts = [texts]
        try:
            texts = iter(texts)
        except TypeError:
            raise TypeError(f"`texts` must be a str or an iterable of str, got "
                            f"{type(texts).__name__}") from None
        start = [] if self.start_char is None else [self._limit(self.start_char)]
        unk = self.oov_char if self.unknown == "oov" else None
        out = []
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"`texts[{n}]` must be a str, got {type(text).__name__}")
            ids = start + [self._ids.get(w, unk) for w in text_to_word_sequence(text)]
            out.append([i for i in ids if i is not None])
        return out

    def decode(self, ids):
        """Words of one id sequence, joined by spaces, for inspection.

        Padding (0) is skipped, `start_char` shows as ``[START]`` and
        `oov_char` or any id without a word as ``[OOV]``.

        Parameters
        ----------
        ids : iterable of int

        Returns
        -------
        str
        """
        special = {self.start_char: "[START]", self.oov_char: "[OOV]"}
        return " ".join(
            special.get(i) or self._words.get(i, "[OOV]") for i in map(int, ids) if i != 0
        )
