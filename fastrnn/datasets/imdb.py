"""IMDB movie-review sentiment dataset (Maas et al., 2011), Keras-compatible.

``load_data`` returns exactly what ``keras.datasets.imdb.load_data`` returns
for the same arguments; ``get_word_index`` returns Keras' word -> rank mapping.

Each file (``imdb.npz``, ``imdb_word_index.json``) is looked for, in order:

1. the ``path`` argument (the file itself, or a directory containing it);
2. ``$FASTRNN_DATA_DIR``;
3. the user cache directory (see `cache_dir`);
4. otherwise it is downloaded from Keras' public URL into the cache directory,
   unless ``download=False`` or ``$FASTRNN_OFFLINE=1``. The download is checked
   against known-good sha256 hashes before it is moved into place.

``imdb.npz`` stores its sequences as pickled object arrays. It is read with a
restricted unpickler that only rebuilds NumPy arrays and plain lists of ints,
so a tampered file cannot run code.
"""

import contextlib
import hashlib
import http.client
import json
import os
import pickle
import tempfile
import urllib.request
import zipfile
import zlib
from itertools import chain
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format
from tqdm import tqdm

BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"

_SHA256 = {
    "imdb.npz": (
        "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",  # Keras
        "cf7338e70c6a73c5afa20299201407a34a3d44801a5836d7baede35166423f2c",  # rebuild
    ),
    "imdb_word_index.json": (
        "027313fe9a320280f3bf0fac5baf58c4a683cf39a7ed9c3d3d3912bde4284cf6",
    ),
}
_KEYS = ("x_train", "y_train", "x_test", "y_test")
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class DataNotFoundError(FileNotFoundError):
    """A data file is in none of the places looked and could not be downloaded."""


class UnsafePickleError(ValueError):
    """A pickled array refers to something other than plain NumPy arrays."""


def cache_dir():
    """Directory where downloaded dataset files are kept.

    ``$FASTRNN_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fastrnn/datasets``,
    else ``~/.cache/fastrnn/datasets``.

    Returns
    -------
    pathlib.Path
    """
    if os.environ.get("FASTRNN_CACHE_DIR"):
        return Path(os.environ["FASTRNN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastrnn" / "datasets"


def load_data(
    path=None,
    num_words=None,
    skip_top=0,
    maxlen=None,
    seed=113,
    start_char=1,
    oov_char=2,
    index_from=3,
    download=True,
):
    """Load the IMDB dataset exactly as ``keras.datasets.imdb.load_data`` does.

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``imdb.npz`` or a directory containing it. Looked at first; see the
        module docstring for the other places.
    num_words : int, optional
        Keep ids below ``num_words``; others become `oov_char`. ``None`` (or 0)
        means the largest id in the data, which -- as in Keras -- itself
        becomes `oov_char`.
    skip_top : int, default 0
        Ids below ``skip_top`` become `oov_char` (this includes `start_char`
        when it is below ``skip_top``, as in Keras).
    maxlen : int, optional
        Keep only sequences with ``len < maxlen``, counting `start_char`.
    seed : int, default 113
        Seed of the ``np.random.RandomState`` that shuffles train, then test.
    start_char : int or None, default 1
        Id prepended to every sequence; ``None`` for none.
    oov_char : int or None, default 2
        Id replacing the ids cut by `num_words` / `skip_top`; ``None`` drops them.
    index_from : int, default 3
        Offset added to every stored word rank.
    download : bool, default True
        Download the file when it is not found locally.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x_*`` are 1-D object arrays of lists of ints, ``y_*`` int64 arrays
        of 0 (negative) / 1 (positive); 25,000 reviews per split.

    Raises
    ------
    DataNotFoundError
        If ``imdb.npz`` is nowhere and cannot be downloaded.
    ValueError
        If the file is damaged or unsafe, or `maxlen` leaves no sequence.
    """
    arrays = _load_arrays(_locate("imdb.npz", path, download))
    rng = np.random.RandomState(seed)
    splits = []
    for name in ("train", "test"):
        tokens, lengths, labels = arrays[name]
        order = np.arange(len(lengths))
        rng.shuffle(order)
        tokens, lengths = _take(tokens, lengths, order)
        labels = labels[order]
        tokens = tokens + index_from
        if start_char is not None:
            tokens, lengths = _prepend(tokens, lengths, start_char)
        if maxlen:
            keep = np.flatnonzero(lengths < maxlen)
            tokens, lengths = _take(tokens, lengths, keep)
            labels = labels[keep]
        splits.append([tokens, lengths, labels])
    if maxlen and not all(len(labels) for _, _, labels in splits):
        raise ValueError(
            f"After filtering for sequences shorter than maxlen={maxlen}, no "
            "sequence was kept. Increase maxlen."
        )

    if not num_words:
        num_words = max((t.max() for t, _, _ in splits if t.size), default=0)
    for split in splits:
        tokens, lengths, _ = split
        kept = (tokens >= skip_top) & (tokens < num_words)
        if oov_char is not None:
            split[0] = np.where(kept, tokens, oov_char)
        else:
            rows = np.repeat(np.arange(len(lengths)), lengths)
            split[0] = tokens[kept]
            split[1] = np.bincount(rows[kept], minlength=len(lengths))
    (xtr, ltr, ytr), (xte, lte, yte) = splits
    return (_to_lists(xtr, ltr), ytr), (_to_lists(xte, lte), yte)


def get_word_index(path=None, download=True):
    """Keras' IMDB word index: word -> frequency rank (1 = most frequent).

    Parameters
    ----------
    path : str or os.PathLike, optional
        ``imdb_word_index.json`` or a directory containing it.
    download : bool, default True
        Download the file when it is not found locally.

    Returns
    -------
    dict of str to int
        88,584 words for the real file (``"the"`` -> 1, ``"br"`` -> 7).
    """
    file = _locate("imdb_word_index.json", path, download)
    try:
        with open(file, encoding="utf-8") as f:
            index = json.load(f)
    except ValueError as e:  # includes JSONDecodeError and UnicodeDecodeError
        raise _damaged(file, e) from e
    if not isinstance(index, dict) or not all(
        isinstance(w, str) and type(r) is int for w, r in index.items()
    ):
        raise ValueError(f"{file}: expected a JSON object mapping words to int ranks")
    return index


# --- locating and downloading ------------------------------------------------


def _locate(fname, path, download):
    """Return the first existing copy of `fname`, downloading it if allowed."""
    places = []
    if path is not None:
        p = Path(path).expanduser()
        places.append(("path argument", p / fname if p.is_dir() else p))
    data_dir = os.environ.get("FASTRNN_DATA_DIR")
    places.append(("$FASTRNN_DATA_DIR", data_dir and Path(data_dir).expanduser() / fname))
    cached = cache_dir() / fname
    places.append(("cache directory", cached))
    for _, file in places:
        if file and file.is_file():
            return file

    url = BASE_URL + fname
    if not download:
        why = "download=False was passed"
    elif os.environ.get("FASTRNN_OFFLINE", "") not in ("", "0"):
        why = "$FASTRNN_OFFLINE is set"
    else:
        try:
            return _download(url, cached, _SHA256[fname])
        except (OSError, http.client.HTTPException) as e:
            why = f"downloading {url} failed: {e}"
    looked = "\n".join(f"  - {label}: {file or 'not set'}" for label, file in places)
    raise DataNotFoundError(
        f"{fname} not found. Looked in:\n{looked}\nand did not download it: {why}.\n"
        f"Provide it by setting FASTRNN_DATA_DIR to a directory containing {fname}, "
        f"passing path=..., or copying it to {cached}."
    )


def _download(url, dest, sha256s):
    """Download `url` to `dest` atomically, accepting only the given sha256 hashes.

    The data goes to a temporary file next to `dest`, is flushed and fsync'ed,
    and replaces `dest` only if its sha256 is one of `sha256s`; otherwise the
    temporary file is removed and ``ValueError`` is raised.

    Returns
    -------
    pathlib.Path
        `dest`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=None) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() not in sha256s:
            raise ValueError(
                f"{url}: sha256 {digest.hexdigest()} matches none of the known-good "
                f"hashes ({', '.join(sha256s)}); the download was discarded"
            )
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


# --- safe reading ------------------------------------------------------------


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals needed to rebuild ndarrays."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only NumPy arrays of lists "
                "of ints are allowed in a dataset file"
            )
        return super().find_class(module, name)


def _damaged(file, err):
    return ValueError(
        f"{file} is damaged or truncated ({err}); delete it and retry"
    )


def _read_npz(file):
    """Read the members named in ``_KEYS`` of an ``.npz`` without unsafe unpickling.

    Returns
    -------
    dict of str to object
        Usually arrays; a tampered file may unpickle to other plain objects.
    """
    try:
        with zipfile.ZipFile(file) as zf:
            names = set(zf.namelist())
            missing = [k for k in _KEYS if f"{k}.npy" not in names]
            if missing:
                raise ValueError(
                    f"{file}: missing array(s) {', '.join(missing)}; expected "
                    f"{', '.join(_KEYS)}, found {', '.join(sorted(names)) or 'nothing'}"
                )
            arrays = {}
            for k in _KEYS:
                with zf.open(f"{k}.npy") as fp:
                    arrays[k] = _read_npy(fp, file)
            return arrays
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise _damaged(file, e) from e


def _read_npy(fp, file):
    """Read one ``.npy`` stream; object arrays go through `_SafeUnpickler`."""
    try:
        version = npy_format.read_magic(fp)
        read_header = {(1, 0): npy_format.read_array_header_1_0,
                       (2, 0): npy_format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran_order, dtype = read_header(fp)
    except ValueError as e:
        raise _damaged(file, e) from e
    if dtype.hasobject:
        try:
            return _SafeUnpickler(fp).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{file}: {e}") from None
        except Exception as e:  # a corrupt pickle can fail in many ways
            raise _damaged(file, e) from e
    count = int(np.prod(shape))
    buf = fp.read(count * dtype.itemsize)
    if len(buf) < count * dtype.itemsize:
        raise _damaged(file, "array data is shorter than its header says")
    order = "F" if fortran_order else "C"
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape, order=order).copy()


def _load_arrays(file):
    """Read and validate ``imdb.npz``.

    Returns
    -------
    dict
        ``{"train": (tokens, lengths, labels), "test": ...}``: all tokens of a
        split concatenated (int64), the length of each sequence (intp) and the
        labels (int64), in stored order.
    """
    arrays = _read_npz(file)
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if not (isinstance(x, np.ndarray) and x.dtype == object and x.ndim == 1):
            raise ValueError(f"{file}: x_{split} must be a 1-D object array of lists of ints")
        bad = next((i for i, s in enumerate(x) if type(s) is not list), None)
        if bad is not None:
            raise ValueError(
                f"{file}: x_{split}[{bad}] is a {type(x[bad]).__name__}, expected a list of ints"
            )
        try:
            tokens = np.array(list(chain.from_iterable(x)))
            ints = tokens.ndim == 1 and (tokens.dtype.kind == "i" or tokens.size == 0)
        except (ValueError, TypeError):  # nested lists
            ints = False
        if not ints:
            raise ValueError(f"{file}: x_{split} holds values that are not (64-bit) ints")
        if not (isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "iu"):
            raise ValueError(f"{file}: y_{split} must be a 1-D int array")
        if len(y) != len(x):
            raise ValueError(
                f"{file}: x_{split} has {len(x)} sequences but y_{split} {len(y)} labels"
            )
        lengths = np.fromiter(map(len, x), dtype=np.intp, count=len(x))
        out[split] = (tokens.astype(np.int64), lengths, y.astype(np.int64))
    return out


# --- vectorised ragged-array helpers -----------------------------------------


def _take(tokens, lengths, idx):
    """Select sequences `idx` from a ragged array stored as (tokens, lengths)."""
    starts = np.cumsum(lengths) - lengths
    new_lengths = lengths[idx]
    new_starts = np.cumsum(new_lengths) - new_lengths
    src = np.repeat(starts[idx] - new_starts, new_lengths) + np.arange(new_lengths.sum())
    return tokens[src], new_lengths


def _prepend(tokens, lengths, value):
    """Put `value` in front of every sequence."""
    new_lengths = lengths + 1
    first = np.cumsum(new_lengths) - new_lengths
    out = np.empty(len(tokens) + len(lengths), dtype=tokens.dtype)
    is_first = np.zeros(len(out), dtype=bool)
    is_first[first] = True
    out[is_first] = value
    out[~is_first] = tokens
    return out, new_lengths


def _to_lists(tokens, lengths):
    """Object array of Python lists of ints, one per sequence."""
    flat = tokens.tolist()
    ends = np.cumsum(lengths).tolist()
    x = np.empty(len(lengths), dtype=object)
    for i, (start, end) in enumerate(zip([0] + ends[:-1], ends)):
        x[i] = flat[start:end]
    return x
