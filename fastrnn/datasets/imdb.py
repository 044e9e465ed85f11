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

``imdb.npz`` stores its sequences as pickled object arrays. They are read by a
parser of their own (see "safe reading" below), which builds only lists of ints
and never hands file data to NumPy's unpickling code or any other object: a
tampered file cannot run code, crash the interpreter or make it allocate much
more than the file's size; it gets a ``ValueError`` naming the file.
"""

import contextlib
import hashlib
import http.client
import json
import os
import pickle
import re
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .._io import NpzReader, open_regular

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


_MAX_RATIO = 10      # a member may inflate 10x (the real file: 1.6x; zip bombs: 1000x)


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


WORD_INDEX_MAX_BYTES = 64 << 20


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
        with open_regular(file) as f:
            raw = f.read(WORD_INDEX_MAX_BYTES + 1)
        if len(raw) > WORD_INDEX_MAX_BYTES:
            raise ValueError(f"larger than {WORD_INDEX_MAX_BYTES >> 20} MiB (the real word "
                             "index is 1.6 MB)")
        index = json.loads(raw.decode("utf-8"))
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
        if file and file.exists() and not file.is_dir():      # a FIFO, a device: say so
            open_regular(file)

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
#
# ``imdb.npz`` holds two object arrays, pickled by NumPy: ``_reconstruct(ndarray, (0,), b"b")``,
# then BUILD with the state ``(1, (n,), dtype("O8") + its state, False, [list, list, ...])``.
# Unpickling that with NumPy runs ``ndarray.__setstate__`` and ``dtype.__setstate__`` on data from
# the file, which are not memory-safe on hostile input (a list shorter than the shape, an object
# dtype with its flags cleared and raw bytes for data: both crash the interpreter). So nothing here
# calls NumPy, or any other object, on file data: `_parse_pickle` interprets the few opcodes such a
# stream uses into plain tuples, lists and markers, `_object_array` checks that the result is
# exactly that structure, and the ints come out of runs of BININT opcodes (see `_decode`).


class _Global:
    """One of the allowed globals (``_reconstruct``, ``ndarray``, ``dtype``), never imported."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _Call:
    """``func(*args)`` as the pickle asked for it (REDUCE), with the ``state`` of a BUILD."""

    __slots__ = ("func", "args", "state")

    def __init__(self, func, args):
        self.func, self.args, self.state = func, args, None


class _Run:
    """``data[start:end]``: consecutive BININT1 / BININT2 / BININT opcodes inside a list."""

    __slots__ = ("start", "end")

    def __init__(self, start, end):
        self.start, self.end = start, end


# at most 1024 per match: the regex engine keeps state per repetition (a run of millions ran out
# of memory); longer runs become several _Runs (the pickler writes at most 1000 per APPENDS)
_INT_RUN = re.compile(rb"(?:K.|M..|J....){1,1024}", re.DOTALL)
_GETTABLE = (str, bytes, int, _Global, type(None))   # a memo reference to a list would alias it
_MAX_NAME = 256                                     # longest module or global name read


def _parse_pickle(data, count):
    """The object tree of the pickle ``data`` of an object array of ``count`` items.

    Only the opcodes NumPy's pickles of such arrays use (protocols 3 to 5; protocol 2 pickles
    bytes through a global, which is refused) are understood; lists
    become Python lists whose int items are `_Run`s, REDUCE becomes a `_Call`, globals `_Global`s.
    Bounds derived from ``len(data)``: at most ``100 + 6 * count + len(data) // 500`` opcodes
    besides the ints, memo indices below ``len(data)``, and no memo reference (GET) to a list or
    tuple, so no item is counted twice. ValueError for anything else.
    """
    n = len(data)
    if count > n:
        raise ValueError(f"the header declares {count} sequences, more than the {n} bytes of "
                         "pickle can hold")
    budget = 100 + 6 * count + n // 500
    stack, marks, memo = [], [], {}
    i = 0

    def fail(what):
        raise ValueError(f"pickle opcode at byte {i}: {what}")

    def take(k):
        nonlocal i
        if i + k > n:
            fail(f"needs {k} more bytes, but the pickle ends")
        i += k
        return data[i - k:i]

    def pop():
        if len(stack) <= (marks[-1] if marks else 0):
            fail("pops from an empty stack")
        item = stack.pop()
        if type(item) is _Run:
            fail("takes a run of ints where one value belongs")
        return item

    def pop_mark():
        if not marks:
            fail("no MARK to pop to")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def remember(index):
        if index >= n:
            fail(f"memo index {index} beyond the {n} bytes of the stream (a memo bomb)")
        if not stack or type(stack[-1]) is _Run:
            fail("memoizes nothing")
        memo[index] = stack[-1]

    def recall(index):
        if index not in memo:
            fail(f"memo index {index} was never stored")
        value = memo[index]
        if not isinstance(value, _GETTABLE):
            fail(f"refers again to a {type(value).__name__} (items would be counted twice)")
        stack.append(value)

    def find_global(module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(f"refusing to unpickle {module}.{name}: only NumPy arrays of "
                                    "lists of ints are allowed in a dataset file")
        stack.append(_Global(name))

    for _ in range(budget):
        if i >= n:
            fail("the pickle ends before its STOP opcode")
        op = data[i]
        i += 1
        if op in b"KMJ":                                          # BININT1, BININT2, BININT
            # right after a MARK above a list (or after a run there): the items of that list
            if marks and marks[-1] > 0 and type(stack[marks[-1] - 1]) is list \
                    and (len(stack) == marks[-1] or type(stack[-1]) is _Run):
                run = _INT_RUN.match(data, i - 1)
                if run is None:
                    fail("an int cut off by the end of the pickle")
                stack.append(_Run(i - 1, run.end()))
                i = run.end()
            else:
                width = {75: 1, 77: 2, 74: 4}[op]
                stack.append(int.from_bytes(take(width), "little", signed=op == 74))
        elif op == 0x5D:                                          # EMPTY_LIST
            stack.append([])
        elif op == 0x71:                                          # BINPUT
            remember(take(1)[0])
        elif op == 0x72:                                          # LONG_BINPUT
            remember(int.from_bytes(take(4), "little"))
        elif op == 0x94:                                          # MEMOIZE
            remember(len(memo))
        elif op == 0x28:                                          # MARK
            marks.append(len(stack))
        elif op == 0x65:                                          # APPENDS
            items = pop_mark()
            if not stack or type(stack[-1]) is not list:
                fail("APPENDS to something that is not a list")
            stack[-1].extend(items)
        elif op == 0x61:                                          # APPEND
            item = pop()
            if not stack or type(stack[-1]) is not list:
                fail("APPEND to something that is not a list")
            stack[-1].append(item)
        elif op == 0x95:                                          # FRAME
            if int.from_bytes(take(8), "little") > n - i:
                fail("a frame longer than the rest of the pickle")
        elif op == 0x68:                                          # BINGET
            recall(take(1)[0])
        elif op == 0x6A:                                          # LONG_BINGET
            recall(int.from_bytes(take(4), "little"))
        elif op == 0x8C:                                          # SHORT_BINUNICODE
            stack.append(take(take(1)[0]).decode("utf-8"))
        elif op == 0x58:                                          # BINUNICODE
            stack.append(take(int.from_bytes(take(4), "little")).decode("utf-8"))
        elif op == 0x43:                                          # SHORT_BINBYTES
            stack.append(take(take(1)[0]))
        elif op == 0x42:                                          # BINBYTES
            stack.append(take(int.from_bytes(take(4), "little")))
        elif op == 0x8A:                                          # LONG1
            stack.append(int.from_bytes(take(take(1)[0]), "little", signed=True))
        elif op == 0x47:                                          # BINFLOAT
            stack.append(struct.unpack(">d", take(8))[0])
        elif op == 0x4E:                                          # NONE
            stack.append(None)
        elif op in (0x88, 0x89):                                  # NEWTRUE, NEWFALSE
            stack.append(op == 0x88)
        elif op == 0x29:                                          # EMPTY_TUPLE
            stack.append(())
        elif op in (0x85, 0x86, 0x87):                            # TUPLE1, TUPLE2, TUPLE3
            items = [pop() for _ in range(op - 0x84)]
            stack.append(tuple(reversed(items)))
        elif op == 0x74:                                          # TUPLE
            items = pop_mark()
            if any(type(item) is _Run for item in items):
                fail("a tuple of a run of ints")
            stack.append(tuple(items))
        elif op == 0x52:                                          # REDUCE
            args, func = pop(), pop()
            if type(func) is not _Global or type(args) is not tuple:
                fail("REDUCE of something that is not an allowed global and a tuple")
            stack.append(_Call(func.name, args))
        elif op == 0x62:                                          # BUILD
            state = pop()
            if not stack or type(stack[-1]) is not _Call or stack[-1].state is not None:
                fail("BUILD of something that is not a new object")
            stack[-1].state = state
        elif op == 0x63:                                          # GLOBAL
            end = data.find(b"\n", i, i + _MAX_NAME)
            end2 = data.find(b"\n", end + 1, end + 1 + _MAX_NAME) if end >= 0 else -1
            if end2 < 0:
                fail("GLOBAL without two short lines")
            module, name = data[i:end].decode("ascii"), data[end + 1:end2].decode("ascii")
            i = end2 + 1
            find_global(module, name)
        elif op == 0x93:                                          # STACK_GLOBAL
            name, module = pop(), pop()
            if type(module) is not str or type(name) is not str:
                fail("STACK_GLOBAL of something that is not two strings")
            find_global(module, name)
        elif op == 0x80:                                          # PROTO
            if i != 1 or not 2 <= take(1)[0] <= 5:
                fail("a protocol other than 2 to 5, or not at the start")
        elif op == 0x2E:                                          # STOP
            result = pop()
            if stack or marks:
                fail("STOP with more than one object on the stack")
            if i != n:
                fail(f"{n - i} bytes after the end of the pickle")
            return result
        else:
            fail(f"unexpected opcode {bytes([op])!r} (not used to pickle a list of ints)")
    raise ValueError(f"more than {budget} pickle opcodes besides ints for {count} sequences")


def _object_array(tree, count, name):
    """The items of the `_parse_pickle` tree of NumPy's pickle of a 1-D object array of
    ``count`` items; ValueError (starting with ``name``) unless it is exactly that."""
    expected_dtype_state = (3, "|", None, None, None, -1, -1, 63)   # the object dtype's flags
    if not (type(tree) is _Call and tree.func == "_reconstruct" and len(tree.args) == 3
            and type(tree.args[0]) is _Global and tree.args[0].name == "ndarray"
            and type(tree.state) is tuple and len(tree.state) == 5):
        raise ValueError(f"{name} is not a pickled NumPy array")
    version, shape, dtype, fortran, items = tree.state
    if not (type(dtype) is _Call and dtype.func == "dtype" and dtype.args == ("O8", False, True)
            and dtype.state == expected_dtype_state):
        raise ValueError(f"{name} is pickled with a dtype other than NumPy's object dtype")
    if version != 1 or shape != (count,) or type(fortran) is not bool:
        raise ValueError(f"{name}: the pickled array has shape {shape!r}, the header says "
                         f"({count},)")
    if type(items) is not list:
        raise ValueError(f"{name}: the pickled array holds {type(items).__name__}, expected a "
                         "list of sequences")
    if len(items) != count:
        raise ValueError(f"{name} holds {len(items)} sequences but its shape says {count}")
    for k, seq in enumerate(items):
        if type(seq) is not list:
            kind = {_Call: "object", _Run: "int"}.get(type(seq), type(seq).__name__)
            raise ValueError(f"{name}[{k}] is a {kind}, expected a list of ints")
        for item in seq:
            if type(item) is not _Run and not (type(item) is int and -2**63 <= item < 2**63):
                raise ValueError(f"{name}[{k}] holds values that are not (64-bit) ints")
    return items


def _decode(data, seqs, batch_bytes=1 << 22):
    """``(tokens int64, lengths intp)`` of the sequences from `_object_array`.

    A `_Run` is bytes already checked to be nothing but BININT1/BININT2/BININT opcodes; batches
    of runs (about ``batch_bytes`` of them) are framed as ``MARK (MARK <run> LIST)... LIST
    STOP``, a pickle that can only make lists of ints, and decoded by the standard C unpickler
    (ten times faster than a Python loop over six million opcodes). Memory beyond the result:
    one batch.
    """
    runs, owners = [], []                       # each run's opcodes, and its sequence
    for k, seq in enumerate(seqs):
        for item in seq:
            if type(item) is _Run:
                runs.append(data[item.start:item.end])
            else:                               # a single APPENDed int: LONG1, 8 bytes
                runs.append(b"\x8a\x08" + item.to_bytes(8, "little", signed=True))
            owners.append(k)
    tokens, counts = [], []
    start = 0
    while start < len(runs):
        stop, size = start, 0
        while stop < len(runs) and (size < batch_bytes or stop == start):
            size += len(runs[stop])
            stop += 1
        lists = pickle.loads(b"".join([b"\x80\x02(", *chain.from_iterable(
            (b"(", run, b"l") for run in runs[start:stop]), b"l."]))
        n = np.fromiter(map(len, lists), dtype=np.intp, count=len(lists))
        counts.append(n)
        tokens.append(np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(n.sum())))
        start = stop
    lengths = np.bincount(np.asarray(owners, dtype=np.intp),
                          weights=np.concatenate(counts) if counts else None,
                          minlength=len(seqs)).astype(np.intp)
    return (np.concatenate(tokens) if tokens else np.zeros(0, np.int64)), lengths


def _damaged(file, err):
    return ValueError(
        f"{file} is damaged or truncated ({err}); delete it and retry"
    )


def _read_npz(file):
    """Read the members named in ``_KEYS`` of ``imdb.npz``, never unpickling anything.

    Returns
    -------
    dict of str to object
        ``x_*``: ``(tokens int64, lengths intp)`` of the sequences, in stored order; ``y_*``: the
        label arrays as stored.
    """
    try:
        with open_regular(file) as f:
            try:
                reader = NpzReader(f, max_ratio=_MAX_RATIO)
            except ValueError as e:
                raise _damaged(file, e) from e
            names = reader.names()
            missing = [k for k in _KEYS if k not in names]
            if missing:
                raise ValueError(
                    f"{file}: missing array(s) {', '.join(missing)}; expected "
                    f"{', '.join(_KEYS)}, found {', '.join(sorted(names)) or 'nothing'}"
                )
            arrays = {}
            for k in _KEYS:
                try:
                    shape, dtype = reader.header(k)
                except ValueError as e:
                    raise _damaged(file, e) from e
                if k.startswith("x"):
                    if not (dtype.hasobject and len(shape) == 1):
                        raise ValueError(f"{file}: {k} must be a 1-D object array of lists of "
                                         f"ints, got dtype {dtype} and shape {shape}")
                    try:
                        data = reader.read_pickle(k)
                        seqs = _object_array(_parse_pickle(data, shape[0]), shape[0], k)
                    except UnsafePickleError as e:
                        raise UnsafePickleError(f"{file}: {e}") from None
                    except ValueError as e:
                        raise _damaged(file, f"{k}: {e}") from None
                    arrays[k] = _decode(data, seqs)
                else:
                    if dtype.kind not in "iu" or len(shape) != 1:
                        raise ValueError(f"{file}: {k} must be a 1-D int array, got dtype "
                                         f"{dtype} and shape {shape}")
                    try:
                        arrays[k] = reader.read(k, dtype=dtype, shape=shape)
                    except ValueError as e:
                        raise _damaged(file, e) from e
            return arrays
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise _damaged(file, e) from e


def _load_arrays(file):
    """Read and validate ``imdb.npz``.

    Returns
    -------
    dict
        ``{"train": (tokens, lengths, labels), "test": ...}``: all tokens of a
        split concatenated (int64), the length of each sequence (intp) and the
        labels (int64, 0 or 1), in stored order.
    """
    arrays = _read_npz(file)
    out = {}
    for split in ("train", "test"):
        (tokens, lengths), y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(y) != len(lengths):
            raise ValueError(
                f"{file}: x_{split} has {len(lengths)} sequences but y_{split} {len(y)} labels"
            )
        bad = y[(y != 0) & (y != 1)]
        if bad.size:
            raise ValueError(f"{file}: y_{split} holds the label {bad[0]}; IMDB labels are 0 "
                             "(negative) or 1 (positive)")
        out[split] = (tokens, lengths, y.astype(np.int64))
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
