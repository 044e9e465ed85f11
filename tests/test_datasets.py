"""Tests for fastrnn.datasets.imdb: Keras semantics, file lookup, download, safe loading."""

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastrnn.datasets import imdb

# --- helpers -------------------------------------------------------------------


def _objects(seqs):
    x = np.empty(len(seqs), dtype=object)
    for i, s in enumerate(seqs):
        x[i] = list(s)
    return x


def _write_npz(file, x_train, y_train, x_test, y_test, **extra):
    np.savez(file, x_train=_objects(x_train), y_train=np.asarray(y_train, dtype=np.int64),
             x_test=_objects(x_test), y_test=np.asarray(y_test, dtype=np.int64), **extra)
    return Path(file)


def _keras_load_data(file, num_words=None, skip_top=0, maxlen=None, seed=113,
                     start_char=1, oov_char=2, index_from=3):
    """Line-by-line transcription of keras.datasets.imdb.load_data (Keras 3)."""
    with np.load(file, allow_pickle=True) as f:
        x_train, labels_train = f["x_train"], f["y_train"]
        x_test, labels_test = f["x_test"], f["y_test"]
    rng = np.random.RandomState(seed)
    indices = np.arange(len(x_train))
    rng.shuffle(indices)
    x_train, labels_train = x_train[indices], labels_train[indices]
    indices = np.arange(len(x_test))
    rng.shuffle(indices)
    x_test, labels_test = x_test[indices], labels_test[indices]
    if start_char is not None:
        x_train = [[start_char] + [w + index_from for w in x] for x in x_train]
        x_test = [[start_char] + [w + index_from for w in x] for x in x_test]
    else:
        x_train = [[w + index_from for w in x] for x in x_train]
        x_test = [[w + index_from for w in x] for x in x_test]
    if maxlen:
        keep = [i for i, x in enumerate(x_train) if len(x) < maxlen]
        x_train, labels_train = [x_train[i] for i in keep], labels_train[keep]
        keep = [i for i, x in enumerate(x_test) if len(x) < maxlen]
        x_test, labels_test = [x_test[i] for i in keep], labels_test[keep]
    xs = x_train + x_test
    labels = np.concatenate([labels_train, labels_test])
    if not num_words:  # Keras has max(max(x) for x in xs), which fails on an empty x
        num_words = max((max(x) for x in xs if x), default=0)
    if oov_char is not None:
        xs = [[w if skip_top <= w < num_words else oov_char for w in x] for x in xs]
    else:
        xs = [[w for w in x if skip_top <= w < num_words] for x in xs]
    n = len(x_train)
    return (xs[:n], labels[:n]), (xs[n:], labels[n:])


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test touches the real cache, $FASTRNN_DATA_DIR or the network by accident."""
    monkeypatch.setenv("FASTRNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTRNN_OFFLINE", "1")
    monkeypatch.delenv("FASTRNN_DATA_DIR", raising=False)


@pytest.fixture
def small_npz(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 40, size=rng.integers(0, 12)).tolist() for _ in range(60)]
    labels = rng.integers(0, 2, size=60)
    return _write_npz(tmp_path / "imdb.npz", seqs[:35], labels[:35], seqs[35:], labels[35:])


# --- Keras semantics on synthetic data --------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"num_words": 20},
    {"num_words": 20, "skip_top": 6},
    {"num_words": 20, "oov_char": None},
    {"skip_top": 5, "oov_char": None},
    {"maxlen": 8},
    {"maxlen": 8, "num_words": 15, "seed": 7},
    {"start_char": None, "index_from": 0},
    {"start_char": None, "maxlen": 5, "oov_char": None, "num_words": 10},
    {"start_char": 9, "oov_char": 4, "index_from": 10, "skip_top": 12},
])
def test_load_data_matches_keras(small_npz, kwargs):
    (x_train, y_train), (x_test, y_test) = imdb.load_data(small_npz, **kwargs)
    (kx_train, ky_train), (kx_test, ky_test) = _keras_load_data(small_npz, **kwargs)
    assert list(x_train) == kx_train and list(x_test) == kx_test
    np.testing.assert_array_equal(y_train, ky_train)
    np.testing.assert_array_equal(y_test, ky_test)


def test_load_data_types(small_npz):
    (x_train, y_train), (x_test, y_test) = imdb.load_data(small_npz)
    assert x_train.dtype == object and x_train.shape == (35,) and x_test.shape == (25,)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert all(type(s) is list and all(type(w) is int for w in s) for s in x_train)
    assert all(s[0] == 1 for s in x_test)


def test_equal_length_sequences_stay_a_1d_array_of_lists(tmp_path):
    file = _write_npz(tmp_path / "imdb.npz", [[1, 2], [3, 4]], [0, 1], [[5, 6]], [1])
    (x_train, _), (x_test, _) = imdb.load_data(file)
    assert x_train.shape == (2,) and sorted(x_train.tolist()) == [[1, 4, 5], [1, 6, 7]]
    assert x_test[0] == [1, 8, 2]  # the largest id is OOV when num_words=None, as in Keras


def test_maxlen_counts_start_char_and_keeps_shorter_only(tmp_path):
    file = _write_npz(tmp_path / "imdb.npz", [[1, 2, 3], [1, 2], [1]], [1, 0, 1], [[4]], [0])
    (x_train, y_train), _ = imdb.load_data(file, maxlen=3, num_words=100)  # len(with start) < 3
    assert x_train.tolist() == [[1, 4]] and y_train.tolist() == [1]


def test_maxlen_that_keeps_nothing_raises(small_npz):
    with pytest.raises(ValueError, match="maxlen=1"):
        imdb.load_data(small_npz, maxlen=1)


# --- file lookup and download -----------------------------------------------------


def test_path_can_be_file_or_directory(small_npz):
    a = imdb.load_data(small_npz)
    b = imdb.load_data(small_npz.parent)
    assert list(a[0][0]) == list(b[0][0])


def test_lookup_order_and_cache_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    _write_npz(data / "imdb.npz", [[5]], [1], [[6]], [0])
    cache = tmp_path / "cache"
    cache.mkdir()
    _write_npz(cache / "imdb.npz", [[7]], [0], [[8]], [1])
    other = _write_npz(tmp_path / "mine.npz", [[9]], [1], [[9]], [1])

    assert imdb.load_data()[0][1].tolist() == [0]  # cache
    monkeypatch.setenv("FASTRNN_DATA_DIR", str(data))
    assert imdb.load_data()[0][1].tolist() == [1]  # $FASTRNN_DATA_DIR before the cache
    assert imdb.load_data(other, num_words=100)[0][0].tolist() == [[1, 12]]  # path= first
    assert imdb.load_data(tmp_path / "missing.npz")[0][1].tolist() == [1]  # falls through


def test_cache_dir_resolution(monkeypatch, tmp_path):
    assert imdb.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("FASTRNN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert imdb.cache_dir() == tmp_path / "xdg" / "fastrnn" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert imdb.cache_dir() == tmp_path / "home" / ".cache" / "fastrnn" / "datasets"


def test_not_found_offline_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRNN_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(imdb.DataNotFoundError) as info:
        imdb.load_data(tmp_path / "nowhere")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, OSError)
    for place in (tmp_path / "nowhere", tmp_path / "data" / "imdb.npz",
                  tmp_path / "cache" / "imdb.npz"):
        assert str(place) in msg
    assert "FASTRNN_OFFLINE" in msg and "FASTRNN_DATA_DIR" in msg and "path=" in msg


def test_download_false_is_respected(monkeypatch):
    monkeypatch.delenv("FASTRNN_OFFLINE")
    with pytest.raises(imdb.DataNotFoundError, match="download=False") as info:
        imdb.get_word_index(download=False)
    assert "imdb_word_index.json not found" in str(info.value)
    assert "$FASTRNN_DATA_DIR: not set" in str(info.value)


def test_download_good_hash(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3000))
    dest = tmp_path / "new" / "dir" / "file.bin"
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    assert imdb._download(src.as_uri(), dest, ("0" * 64, good)) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert os.listdir(dest.parent) == ["file.bin"]  # no temporary file left


def test_download_bad_hash_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"not the data")
    dest = tmp_path / "dl" / "imdb.npz"
    actual = hashlib.sha256(b"not the data").hexdigest()
    with pytest.raises(ValueError, match=actual):
        imdb._download(src.as_uri(), dest, ("ab" * 32,))
    assert os.listdir(dest.parent) == []


def test_load_data_downloads_into_cache(tmp_path, monkeypatch, small_npz):
    digest = hashlib.sha256(small_npz.read_bytes()).hexdigest()
    monkeypatch.setattr(imdb, "BASE_URL", small_npz.parent.as_uri() + "/")
    monkeypatch.setitem(imdb._SHA256, "imdb.npz", (digest,))
    monkeypatch.delenv("FASTRNN_OFFLINE")
    (x_train, _), _ = imdb.load_data()
    assert (tmp_path / "cache" / "imdb.npz").read_bytes() == small_npz.read_bytes()
    assert list(x_train) == _keras_load_data(small_npz)[0][0]


def test_failed_download_is_data_not_found(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb, "BASE_URL", (tmp_path / "empty").as_uri() + "/")
    monkeypatch.delenv("FASTRNN_OFFLINE")
    with pytest.raises(imdb.DataNotFoundError, match="failed"):
        imdb.load_data()
    assert not (tmp_path / "cache" / "imdb.npz").exists()


def test_get_word_index(tmp_path):
    (tmp_path / "imdb_word_index.json").write_text('{"the": 1, "Ángela": 2}', encoding="utf-8")
    assert imdb.get_word_index(tmp_path) == {"the": 1, "Ángela": 2}
    (tmp_path / "imdb_word_index.json").write_text('{"the": 1, "an', encoding="utf-8")
    with pytest.raises(ValueError, match="damaged or truncated"):
        imdb.get_word_index(tmp_path)
    (tmp_path / "imdb_word_index.json").write_text('{"the": "1"}', encoding="utf-8")
    with pytest.raises(ValueError, match="int ranks"):
        imdb.get_word_index(tmp_path)


def test_word_index_that_is_huge_or_not_a_file_is_refused(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:                          # sparse: no disk used
        f.truncate(imdb.WORD_INDEX_MAX_BYTES + 1)
    with pytest.raises(ValueError, match=r"big.json is damaged .*larger than 64 MiB"):
        imdb.get_word_index(big)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"is a FIFO \(named pipe\), not a regular file"):
        imdb.get_word_index(fifo)


# --- safe loading and validation ---------------------------------------------------


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(marker)
    file = tmp_path / "imdb.npz"
    np.savez(file, x_train=evil, y_train=np.zeros(1, np.int64),
             x_test=evil, y_test=np.zeros(1, np.int64))
    with pytest.raises(imdb.UnsafePickleError, match="refusing to unpickle .*system") as info:
        imdb.load_data(file)
    assert isinstance(info.value, ValueError) and str(file) in str(info.value)
    assert not marker.exists()


def test_compressed_npz_loads(tmp_path):
    file = tmp_path / "imdb.npz"
    np.savez_compressed(file, x_train=_objects([[3, 1]]), y_train=np.array([1]),
                        x_test=_objects([[2]]), y_test=np.array([0]))
    assert imdb.load_data(file, num_words=7)[0][0].tolist() == [[1, 6, 4]]


@pytest.mark.parametrize("cut", [10, 200, 0.5, -30])
def test_truncated_file(small_npz, cut):
    data = small_npz.read_bytes()
    small_npz.write_bytes(data[:int(cut * len(data)) if isinstance(cut, float) else cut])
    with pytest.raises(ValueError, match="damaged or truncated.*delete it and retry"):
        imdb.load_data(small_npz)


@pytest.mark.parametrize("key", ["x_train", "y_test"])
def test_truncated_member(tmp_path, key):
    arrays = {"x_train": _objects([[1, 2, 3]] * 50), "y_train": np.ones(50, np.int64),
              "x_test": _objects([[4]]), "y_test": np.ones(1, np.int64)}
    file = tmp_path / "imdb.npz"
    with zipfile.ZipFile(file, "w") as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.save(buf, array)
            zf.writestr(f"{name}.npy", buf.getvalue()[:-5] if name == key else buf.getvalue())
    with pytest.raises(ValueError, match="damaged or truncated"):
        imdb.load_data(file)


def test_not_a_zip(tmp_path):
    (tmp_path / "imdb.npz").write_text("<html>404</html>")
    with pytest.raises(ValueError, match="damaged or truncated"):
        imdb.load_data(tmp_path)


def test_bad_npy_header(tmp_path):
    file = tmp_path / "imdb.npz"
    with zipfile.ZipFile(file, "w") as zf:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            zf.writestr(f"{key}.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}\n")
    with pytest.raises(ValueError, match="damaged or truncated"):
        imdb.load_data(file)


def test_missing_keys(tmp_path):
    file = tmp_path / "imdb.npz"
    np.savez(file, x_train=_objects([[1]]), y_train=np.array([1]))
    with pytest.raises(ValueError, match="missing array.*x_test, y_test"):
        imdb.load_data(file)


@pytest.mark.parametrize("x_train, y_train, match", [
    (np.array([[1, 2]]), [1], "x_train must be a 1-D object array"),
    (_objects([[1, 2], [3]]), [1], "x_train has 2 sequences but y_train 1"),
    (_objects([[1, 2.5]]), [1], "not .*ints"),
    (_objects([[1, [2]]]), [1], "not .*ints"),
    (_objects([[1, "a"]]), [1], "not .*ints"),
    (_objects([[1, 2**70]]), [1], "not .*ints"),
    (_objects([[1]]), [0.5], "y_train must be a 1-D int array"),
])
def test_invalid_contents(tmp_path, x_train, y_train, match):
    file = tmp_path / "imdb.npz"
    np.savez(file, x_train=x_train, y_train=np.asarray(y_train),
             x_test=_objects([[1]]), y_test=np.array([1]))
    with pytest.raises(ValueError, match=match) as info:
        imdb.load_data(file)
    assert str(file) in str(info.value)


def test_element_that_is_not_a_list(tmp_path):
    x = np.empty(2, dtype=object)
    x[0], x[1] = [1], (2, 3)
    file = tmp_path / "imdb.npz"
    np.savez(file, x_train=x, y_train=np.array([0, 1]),
             x_test=_objects([[1]]), y_test=np.array([1]))
    with pytest.raises(ValueError, match=r"x_train\[1\] is a tuple"):
        imdb.load_data(file)


# --- the real data (published Keras values, see PROVENANCE.md) ---------------------


@pytest.fixture(scope="module")
def real_dir():
    path = os.environ.get("FASTRNN_DATA_DIR")
    if not path or not (Path(path) / "imdb.npz").is_file():
        pytest.skip("FASTRNN_DATA_DIR not set: real IMDB data needed")
    return Path(path)


@pytest.fixture(scope="module")
def real_default(real_dir):
    return imdb.load_data(real_dir)


def test_real_default(real_default):
    (x_train, y_train), (x_test, y_test) = real_default
    assert x_train.shape == x_test.shape == y_train.shape == y_test.shape == (25000,)
    assert y_train[:10].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 1, 0]
    assert y_test[:10].tolist() == [0, 1, 1, 0, 1, 1, 1, 0, 0, 1]
    assert y_train.sum() == y_test.sum() == 12500
    assert [len(x) for x in x_train[:3]] == [218, 189, 141]
    assert [len(x) for x in x_test[:3]] == [68, 260, 603]
    assert x_train[0][:10] == [1, 14, 22, 16, 43, 530, 973, 1622, 1385, 65]
    assert x_train[0][-5:] == [16, 5345, 19, 178, 32]
    x0 = x_test[0]  # published full-vocabulary x_test[0] contains ...18142, 10698...15387...
    i = x0.index(18142)
    assert x0[i + 1] == 10698 and 15387 in x0[i:]


def test_real_vocabulary_stats(real_default):
    (x_train, _), (x_test, _) = real_default
    seqs = list(x_train) + list(x_test)
    lengths = np.array([len(s) for s in seqs])
    ids = np.concatenate([np.array(s) for s in seqs])
    assert round(lengths.mean(), 2) == 234.76 and round(lengths.std(), 2) == 172.91
    assert ids.max() == 88586 and len(np.unique(ids)) == 88585


@pytest.mark.parametrize("maxlen, counts", [(50, (477, 558)), (100, (2773, 2963)),
                                            (200, (14244, 14669))])
def test_real_maxlen_counts(real_dir, maxlen, counts):
    (x_train, y_train), (x_test, y_test) = imdb.load_data(real_dir, maxlen=maxlen)
    assert (len(x_train), len(x_test)) == (len(y_train), len(y_test)) == counts
    assert max(map(len, x_train)) < maxlen


def test_real_num_words(real_dir, real_default):
    (x_train, _), (x_test, _) = imdb.load_data(real_dir, num_words=10000)
    assert max(max(s) for s in x_train) == max(max(s) for s in x_test) == 9999
    assert any(2 in s for s in x_train)
    full = real_default[0][0][0]
    assert x_train[0] == [w if w < 10000 else 2 for w in full]


def test_real_word_index(real_dir):
    index = imdb.get_word_index(real_dir)
    assert len(index) == 88584
    assert [index[w] for w in ("the", "and", "a", "br")] == [1, 2, 3, 7]
    assert sorted(index.values()) == list(range(1, 88585))


def test_real_files_match_known_hashes(real_dir):
    for name, hashes in imdb._SHA256.items():
        assert hashlib.sha256((real_dir / name).read_bytes()).hexdigest() in hashes


def test_real_safe_loader_matches_np_load(real_dir):
    arrays = imdb._read_npz(real_dir / "imdb.npz")
    with np.load(real_dir / "imdb.npz", allow_pickle=True) as f:
        for key in ("x_train", "x_test"):
            assert imdb._to_lists(*arrays[key]).tolist() == f[key].tolist()
        for key in ("y_train", "y_test"):
            assert arrays[key].tolist() == f[key].tolist()
