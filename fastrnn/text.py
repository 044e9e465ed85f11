"""Text for language models: tokenizers and vocabularies, streams cut into windows for a
stateful model, perplexity, and generation.

A corpus becomes one stream of token ids (``Vocabulary.encode``: an ``<eos>`` after each text),
``batchify`` cuts it into ``B`` parallel streams (row ``b`` is stream ``b``), and ``windows`` gives
the inputs and next-token targets of ``k`` steps in the order a stateful model needs them:
``fit(x, y, batch_size=B, shuffle=False)`` then sees window ``j`` of every stream as batch ``j``,
so sample ``i`` of batch ``j + 1`` continues sample ``i`` of batch ``j`` (PyTorch's
word_language_model ``batchify`` / ``get_batch``, batch first).
"""

from __future__ import annotations

import collections
import gzip
import json
import math
import os
import re

import numpy as np

from .layers import _int

# Keras' Tokenizer default filters (every one becomes a space), and its lower-casing
FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
UNK, EOS = "<unk>", "<eos>"
_TABLE = str.maketrans({c: " " for c in FILTERS})
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def words(text):
    """The words of ``text`` as Keras' Tokenizer splits them: ``<br />`` removed, lower case,
    the default filter characters as spaces."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _BR.sub(" ", text).lower().translate(_TABLE).split()


def characters(text):
    """The characters of ``text`` (a character-level model's tokens)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return list(text)


class Vocabulary:
    """Tokens <-> ids. Word level: ``<unk>`` is 0, ``<eos>`` 1, then the ``num_words - 2`` most
    frequent words (ties in order of first appearance); character level: every character of
    the corpus, in sorted order, and no ``<unk>``."""

    def __init__(self, tokens, level):
        if level not in ("word", "char"):
            raise ValueError(f"level must be 'word' or 'char', got {level!r}")
        self.level, self.itos = level, list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("the tokens of a vocabulary must be distinct")

    @classmethod
    def build(cls, texts, level="word", num_words=None):
        """The vocabulary of ``texts`` (an iterable of str)."""
        texts = _texts(texts)
        if level == "char":
            return cls(sorted({c for t in texts for c in t} | {"\n"}), "char")
        if num_words is not None and (isinstance(num_words, bool) or not isinstance(
                num_words, (int, np.integer)) or num_words < 3):
            raise ValueError(f"num_words must be an integer >= 3 (<unk>, <eos> and a word), "
                             f"got {num_words!r}")
        counts = collections.Counter(w for t in texts for w in words(t))
        ranked = [w for w, _ in sorted(counts.items(), key=lambda kv: -kv[1])]   # stable
        keep = ranked if num_words is None else ranked[:num_words - 2]
        return cls([UNK, EOS, *keep], "word")

    def __len__(self):
        return len(self.itos)

    def tokens(self, text):
        return words(text) if self.level == "word" else characters(text)

    def encode(self, texts, eos=True):
        """One stream of ids (int64) for ``texts``: each text's tokens, then ``<eos>`` (word level;
        a newline at character level) after each one when ``eos``. Unknown words are ``<unk>``;
        an unknown character is an error naming it."""
        texts, out = _texts(texts), []
        end = self.stoi[EOS] if self.level == "word" else self.stoi.get("\n")
        for t in texts:
            for tok in self.tokens(t):
                i = self.stoi.get(tok)
                if i is None:
                    if self.level == "char":
                        raise ValueError(f"character {tok!r} is not in the vocabulary")
                    i = self.stoi[UNK]
                out.append(i)
            if eos and end is not None:
                out.append(end)
        return np.array(out, np.int64)

    def decode(self, ids):
        """Text from ids (words joined by spaces, characters by nothing)."""
        toks = [self.itos[int(i)] for i in ids]
        return " ".join(toks) if self.level == "word" else "".join(toks)


def _texts(texts):
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must be strings, got {type(t).__name__}")
    if not texts or not any(t.strip() for t in texts):
        raise ValueError("the corpus is empty")
    return texts


def batchify(ids, batch_size):
    """``B`` parallel streams ``(B, L)`` from one stream of ids: the first ``B L`` ids, ``L =
    len(ids) // B``, stream ``b`` the ``b``-th stretch of ``L``."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be a 1-D array of token ids, got shape {ids.shape} and dtype "
                         f"{ids.dtype}")
    batch_size = _int("batch_size", batch_size)
    L = len(ids) // batch_size
    if L < 2:
        raise ValueError(f"a stream of {len(ids)} ids gives {batch_size} streams of {L}: need at "
                         "least 2 ids per stream (an input and its next token)")
    return ids[:batch_size * L].reshape(batch_size, L)


def windows(streams, k):
    """``(x, y)``, each ``(n B, k)``: window ``j`` of every stream is rows ``j B .. (j + 1) B``,
    ``y`` the next tokens of ``x``; the last partial window is dropped. For ``fit(x, y,
    batch_size=B, shuffle=False)`` on a stateful model."""
    streams = np.asarray(streams)
    if streams.ndim != 2:
        raise ValueError(f"streams must be (B, L) from batchify, got shape {streams.shape}")
    k = _int("k", k)
    B, L = streams.shape
    n = (L - 1) // k
    if n == 0:
        raise ValueError(f"streams of {L} tokens are shorter than one window of {k} steps "
                         "(and its next token)")
    x = streams[:, :n * k].reshape(B, n, k).transpose(1, 0, 2).reshape(n * B, k)
    y = streams[:, 1:n * k + 1].reshape(B, n, k).transpose(1, 0, 2).reshape(n * B, k)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def perplexity(model, x, y, batch_size):
    """``exp`` of the mean per-token cross-entropy of ``model`` on the windows ``(x, y)``, its
    states reset first (and carried through the windows, as in training)."""
    model.reset_states()
    loss = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)["loss"]
    model.reset_states()
    return math.exp(loss)


def generate(model, vocab, prompt, length, temperature=1.0, top_k=None, seed=None):
    """Text continuing ``prompt``: ``length`` tokens sampled one at a time from the model's next-
    token distribution (``softmax(logits / temperature)``, among the ``top_k`` most likely when
    given; the most likely one at temperature 0), the state carried from token to token.

    Runs a copy of ``model`` with batch size 1 in which every recurrent layer is stateful.
    """
    from . import layers as L
    from .models import Sequential
    length = _int("length", length, minimum=0)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature >= 0):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or not 1 <= top_k <= len(vocab)):
        raise ValueError(f"top_k must be an integer in [1, {len(vocab)}], got {top_k!r}")
    tokens = vocab.tokens(prompt)
    if not tokens:
        raise ValueError("prompt has no token: give at least one word or character")
    unknown = [t for t in tokens if t not in vocab.stoi]
    if unknown:
        raise ValueError(f"prompt has tokens that are not in the vocabulary: {unknown[:5]}")
    stack = []
    for layer in model.layers:
        config = dict(layer.get_config())
        config.pop("name", None)
        if isinstance(layer, L.SimpleRNN):
            config["stateful"] = True
        stack.append(L.from_config(type(layer).__name__, config))
    runner = Sequential([L.Input((None,), batch_size=1), *stack], dtype=model.dtype.name,
                        backend=model.backend_name)
    runner.set_weights(model.get_weights())
    logits_head = model._head() == "linear"
    rng = np.random.default_rng(seed)
    ids = [vocab.stoi[t] for t in tokens]
    out = runner.predict(np.array([ids]), batch_size=1, verbose=0)[0, -1]
    generated = []
    for _ in range(length):
        z = out.astype(np.float64) if logits_head else np.log(np.maximum(out, 1e-30))
        if temperature == 0:
            nxt = int(np.argmax(z))
        else:
            z = z / temperature
            if top_k is not None:
                z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        generated.append(nxt)
        out = runner.predict(np.array([[nxt]]), batch_size=1, verbose=0)[0, -1]
    return vocab.decode(ids + generated)


CORPORA = ("imdb", "tinyshakespeare")
MAX_CORPUS_BYTES = 1 << 30                 # a corpus is read whole: at most 1 GiB of text


def read_corpus(corpus, data_dir=None):
    """``(train_texts, validation_texts)`` of a corpus: ``"imdb"`` (the raw reviews,
    ``train.jsonl.gz`` / ``test.jsonl.gz``), ``"tinyshakespeare"`` (``input.txt``, split 90/10 by
    position) or the path of a UTF-8 text file (split 90/10 by position, one text per line).
    The named corpora are looked for in ``data_dir``, else ``$FASTRNN_DATA_DIR`` and its sibling
    directories (``imdb/``, ``tinyshakespeare/``)."""
    if corpus in CORPORA:
        folder = _corpus_dir(corpus, data_dir)
        if corpus == "imdb":
            return (_jsonl_texts(os.path.join(folder, "train.jsonl.gz")),
                    _jsonl_texts(os.path.join(folder, "test.jsonl.gz")))
        path = os.path.join(folder, "input.txt")
        whole = True
    else:
        path, whole = os.fspath(corpus), False
    data = _read_text(path)
    cut = int(len(data) * 0.9)
    if whole:                                      # one text: the stream keeps its newlines
        return [data[:cut]], [data[cut:]]
    lines = [line for line in data.splitlines() if line.strip()]
    cut = int(len(lines) * 0.9)
    if cut == 0 or cut == len(lines):
        raise ValueError(f"corpus {path!r} has {len(lines)} non-empty lines: too few to hold "
                         "out a tenth for validation")
    return lines[:cut], lines[cut:]


def _corpus_dir(corpus, data_dir):
    candidates = [data_dir] if data_dir else []
    env = os.environ.get("FASTRNN_DATA_DIR")
    if env:
        candidates += [env, os.path.join(env, corpus), os.path.join(os.path.dirname(
            os.path.abspath(env)), corpus)]
    want = "train.jsonl.gz" if corpus == "imdb" else "input.txt"
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, want)):
            return folder
    raise FileNotFoundError(f"corpus {corpus!r}: no {want} in {candidates or 'any directory'} "
                            "(pass --data-dir DIR or set FASTRNN_DATA_DIR)")


def _read_text(path):
    from ._io import open_regular
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"corpus file {path!r} does not exist") from None
    with f:
        raw = f.read(MAX_CORPUS_BYTES + 1)
    if len(raw) > MAX_CORPUS_BYTES:
        raise ValueError(f"corpus file {path!r} is larger than {MAX_CORPUS_BYTES} bytes")
    try:
        text_ = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus file {path!r} is not UTF-8 text ({e})") from None
    if not text_.strip():
        raise ValueError(f"corpus file {path!r} is empty")
    return text_


def _jsonl_texts(path):
    from ._io import open_regular
    with open_regular(path) as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        texts, size = [], 0
        for line in f:
            size += len(line)
            if size > MAX_CORPUS_BYTES:
                raise ValueError(f"{path!r} holds more than {MAX_CORPUS_BYTES} bytes of text")
            texts.append(json.loads(line)["text"])
    if not texts:
        raise ValueError(f"{path!r} holds no review")
    return texts
