"""Tests for fastrnn.preprocessing: pad_sequences, the tokenizer and TextEncoder."""

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from fastrnn.datasets import imdb
from fastrnn.preprocessing import TextEncoder, pad_sequences, text_to_word_sequence

# --- pad_sequences ------------------------------------------------------------------


def _pad_loop(seqs, maxlen, dtype, padding, truncating, value):
    """Keras' per-sequence algorithm, as the reference."""
    out = np.full((len(seqs), maxlen), value, dtype=dtype)
    for i, s in enumerate(seqs):
        t = (s[-maxlen:] if truncating == "pre" else s[:maxlen]) if maxlen else []
        if len(t):
            if padding == "post":
                out[i, :len(t)] = t
            else:
                out[i, -len(t):] = t
    return out


def test_pad_keras_docstring_examples():
    seqs = [[1], [2, 3], [4, 5, 6]]
    out = pad_sequences(seqs)
    assert out.dtype == np.int32
    assert out.tolist() == [[0, 0, 1], [0, 2, 3], [4, 5, 6]]
    assert pad_sequences(seqs, value=-1).tolist() == [[-1, -1, 1], [-1, 2, 3], [4, 5, 6]]
    assert pad_sequences(seqs, padding="post").tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]
    assert pad_sequences(seqs, maxlen=2).tolist() == [[0, 1], [2, 3], [5, 6]]
    assert pad_sequences(seqs, maxlen=2, truncating="post").tolist() == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
@pytest.mark.parametrize("maxlen", [None, 0, 1, 7, 40])
def test_pad_matches_loop(padding, truncating, maxlen):
    rng = np.random.default_rng(1)
    seqs = [rng.integers(1, 1000, size=rng.integers(0, 20)).tolist() for _ in range(50)]
    out = pad_sequences(seqs, maxlen=maxlen, padding=padding, truncating=truncating, value=-3)
    expected = _pad_loop(seqs, max(map(len, seqs)) if maxlen is None else maxlen,
                         "int32", padding, truncating, -3)
    np.testing.assert_array_equal(out, expected)


def test_pad_float_dtype_and_input_kinds():
    out = pad_sequences([np.array([0.5, 1.5]), (2.5,)], dtype="float32", value=np.nan)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.5, 1.5], [np.nan, 2.5]])
    x = np.empty(2, dtype=object)
    x[0], x[1] = [1, 2, 3], [4]
    assert pad_sequences(x, maxlen=2, dtype="int64").tolist() == [[2, 3], [0, 4]]
    assert pad_sequences(np.arange(6).reshape(2, 3), maxlen=2).tolist() == [[1, 2], [4, 5]]
    assert pad_sequences(iter([[1], [2, 3]])).tolist() == [[0, 1], [2, 3]]
    assert pad_sequences([[1.0, 2.0]]).tolist() == [[1, 2]]  # integral floats are fine


def test_pad_empty_inputs():
    assert pad_sequences([[], []]).shape == (2, 0)
    np.testing.assert_array_equal(pad_sequences([[], [5]], value=9), [[9], [5]])
    np.testing.assert_array_equal(pad_sequences([[], []], maxlen=3, value=7), np.full((2, 3), 7))
    assert pad_sequences([]).shape == (0, 0)
    assert pad_sequences([], maxlen=5).shape == (0, 5)


@pytest.mark.parametrize("kwargs, match", [
    ({"padding": "middle"}, "`padding` must be 'pre' or 'post'"),
    ({"truncating": "both"}, "`truncating` must be 'pre' or 'post'"),
    ({"maxlen": -1}, "`maxlen`"),
    ({"maxlen": 2.5}, "`maxlen`"),
    ({"dtype": "U3"}, "`dtype`"),
    ({"value": 0.5}, "`value`"),
    ({"value": "x"}, "`value`"),
    ({"value": np.nan}, "`value`"),
])
def test_pad_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pad_sequences([[1, 2]], **kwargs)


@pytest.mark.parametrize("seqs, dtype", [
    ([[1, 2.5]], "int32"),
    ([[1, np.nan]], "int32"),
    ([[1, np.inf]], "int64"),
    ([[1, 300]], "int8"),
    ([[-1]], "uint8"),
    ([["a", "b"]], "int32"),
    (["ab"], "float32"),
    ([[1, [2]]], "int32"),
    ([[1], 5], "int32"),
    (5, "int32"),
])
def test_pad_bad_sequences(seqs, dtype):
    with pytest.raises(ValueError, match="`sequences`"):
        pad_sequences(seqs, dtype=dtype)


def test_pad_only_checks_kept_values():
    assert pad_sequences([[2.5, 1, 2]], maxlen=2).tolist() == [[1, 2]]


# --- tokenizer ------------------------------------------------------------------------


@pytest.mark.parametrize("text, words", [
    ("Hello, World!", ["hello", "world"]),
    ("It's GREAT!<br /><br />Really.", ["it's", "great", "br", "br", "really"]),
    ("a\tb\nc--d  e", ["a", "b", "c", "d", "e"]),
    ("ÁNGELA Ángela ÉCOLE naïve", ["Ángela", "Ángela", "École", "naïve"]),
    ("x\ry\xa0z", ["x\ry\xa0z"]),  # only ' ', tab and newline separate
    ("", []),
    ("!!!", []),
])
def test_text_to_word_sequence(text, words):
    assert text_to_word_sequence(text) == words


def test_text_to_word_sequence_needs_str():
    with pytest.raises(TypeError, match="`text` must be a str"):
        text_to_word_sequence(b"bytes")


# --- TextEncoder ----------------------------------------------------------------------

WORDS = {"the": 1, "movie": 2, "was": 3, "great": 4, "bad": 5, "br": 6}


def test_encoder_default_ids():
    enc = TextEncoder(WORDS)
    assert enc.encode("The movie was GREAT, truly.") == [[1, 4, 5, 6, 7]]  # no "truly"
    assert enc.encode(["bad<br />movie", ""]) == [[1, 8, 2, 5], [1]]


def test_encoder_limits_like_load_data():
    text = "the movie was great bad br unknownword"
    # num_words=None: largest rank + index_from, which is itself OOV (as load_data)
    assert TextEncoder(WORDS).encode(text) == [[1, 4, 5, 6, 7, 8, 2]]
    assert TextEncoder(WORDS, num_words=7).encode(text) == [[1, 4, 5, 6, 2, 2, 2]]
    assert TextEncoder(WORDS, skip_top=5, num_words=8).encode(text) == [[2, 2, 5, 6, 7, 2, 2]]
    assert TextEncoder(WORDS, num_words=7, oov_char=None).encode(text) == [[1, 4, 5, 6]]
    oov = TextEncoder(WORDS, num_words=100, unknown="oov")
    assert oov.encode(text) == [[1, 4, 5, 6, 7, 8, 9, 2]]
    assert TextEncoder(WORDS, start_char=None, index_from=0, num_words=100).encode(text) == [
        [1, 2, 3, 4, 5, 6]]


def test_encoder_decode():
    enc = TextEncoder(WORDS, num_words=100)
    assert enc.decode([0, 0, 1, 4, 5, 2, 9, 99]) == "[START] the movie [OOV] br [OOV]"
    assert enc.decode(np.array(enc.encode("Great movie!")[0])) == "[START] great movie"


def test_encoder_bad_arguments():
    with pytest.raises(ValueError, match="`unknown`"):
        TextEncoder(WORDS, unknown="skip")
    with pytest.raises(ValueError, match="`oov_char`"):
        TextEncoder(WORDS, unknown="oov", oov_char=None)
    enc = TextEncoder(WORDS)
    with pytest.raises(TypeError, match=r"`texts\[1\]` must be a str, got int"):
        enc.encode(["fine", 3])
    with pytest.raises(TypeError, match="`texts` must be a str or an iterable"):
        enc.encode(3)


def test_encoder_loads_word_index(tmp_path, monkeypatch):
    (tmp_path / "imdb_word_index.json").write_text(json.dumps(WORDS))
    monkeypatch.setenv("FASTRNN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FASTRNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTRNN_OFFLINE", "1")
    assert TextEncoder(num_words=100).encode("great movie") == [[1, 7, 5]]


# --- the real data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dir():
    path = os.environ.get("FASTRNN_DATA_DIR")
    needed = ("imdb.npz", "imdb_word_index.json", "train.jsonl.gz", "test.jsonl.gz")
    if not path or not all((Path(path) / name).is_file() for name in needed):
        pytest.skip("FASTRNN_DATA_DIR not set: real IMDB data needed")
    return Path(path)


def _reviews(real_dir, split):
    """Raw reviews in imdb.npz's stored order: pos then neg, by file name."""
    with gzip.open(real_dir / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return sorted(rows, key=lambda r: (-r["label"], f"{r['id']}_{r['rating']}.txt"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_real_texts_reproduce_stored_sequences(real_dir, split):
    rows = _reviews(real_dir, split)
    enc = TextEncoder(imdb.get_word_index(real_dir), start_char=None, index_from=0,
                      num_words=10**6)
    with np.load(real_dir / "imdb.npz", allow_pickle=True) as f:  # trusted copy
        stored, labels = f[f"x_{split}"], f[f"y_{split}"]
    assert enc.encode(r["text"] for r in rows) == stored.tolist()  # all 25,000 reviews
    assert [r["label"] for r in rows] == labels.tolist()


def test_real_train_vocabulary_is_the_word_index(real_dir):
    words = {w for r in _reviews(real_dir, "train") for w in text_to_word_sequence(r["text"])}
    assert words == set(imdb.get_word_index(real_dir))


def test_real_first_review_round_trip(real_dir):
    text = next(r["text"] for r in _reviews(real_dir, "train") if (r["label"], r["id"]) == (1, 576))
    assert text.startswith("this film was just brilliant,casting")
    for num_words in (None, 5000):
        (x_train, _), _ = imdb.load_data(real_dir, num_words=num_words)
        enc = TextEncoder(imdb.get_word_index(real_dir), num_words=num_words)
        assert enc.encode(text) == [x_train[0]] and len(x_train[0]) == 218
    assert enc.decode(x_train[0]).startswith("[START] this film was just brilliant casting")
    padded = pad_sequences(x_train[:3], maxlen=200)
    assert padded.shape == (3, 200) and padded[0].tolist() == x_train[0][-200:]
    assert padded[2, :59].tolist() == [0] * 59 and padded[2, 59:].tolist() == x_train[2]
