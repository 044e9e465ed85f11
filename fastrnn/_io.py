"""Files: atomic writes, and reading ``.npz`` archives without trusting them.

- `atomic_write`: a reader sees the old file or the new one, never a half-written one.
- `NpzReader`: reads the plain arrays of an ``np.savez`` archive, checking every header before it
  allocates anything and never unpickling (object arrays are refused, not loaded).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile

import numpy as np
from numpy.lib import format as npy_format

# the process umask, to give atomically written files the permissions open() would give them
# (mkstemp creates them 0600)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; on success flush, fsync and rename it over ``path``.

    On any error (including KeyboardInterrupt) the temporary file is removed and ``path`` is left
    as it was. The new file gets the permissions of the file it replaces, or those a plain
    ``open(path, "w")`` would give (``0o666`` less the umask).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode_bits = os.stat(path).st_mode & 0o777
    except OSError:
        mode_bits = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode_bits)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):          # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class NpzReader:
    """The arrays of an ``np.savez`` archive, read one at a time with their headers checked first.

    ``np.load`` trusts a file's headers: a damaged shape makes it try to allocate terabytes, and a
    damaged zip directory raises whatever ``zipfile`` raises (``RuntimeError`` for a set
    "encrypted" bit, ``NotImplementedError`` for an unknown compression method). This reader
    checks dtype, shape and size against what the caller expects before reading any data, refuses
    object arrays (which would need pickle) and reads whole members so that zip's CRC is checked.
    Errors from ``zipfile`` and damaged headers still propagate as they are; the caller turns
    them into its own error.

    Parameters
    ----------
    f : binary file object
        Open for reading, seekable.
    """

    def __init__(self, f):
        self.zip = zipfile.ZipFile(f)
        self.members = {}
        for info in self.zip.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise ValueError(f"member {name!r} is not a .npy array")
            self.members[name[:-4]] = info

    def names(self):
        """Array names in the archive (without ``.npy``)."""
        return set(self.members)

    def header(self, name):
        """``(shape, dtype)`` of the array ``name``, from its header alone."""
        with self._open(name) as (f, shape, fortran, dtype):
            return shape, dtype

    @contextlib.contextmanager
    def _open(self, name):
        info = self.members.get(name)
        if info is None:
            raise ValueError(f"array {name!r} is missing")
        with self.zip.open(info) as f:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            else:
                raise ValueError(f"array {name!r} has .npy format version {version}; "
                                 "expected 1.0 or 2.0")
            yield f, tuple(shape), fortran, dtype

    def read(self, name, dtype=None, shape=None, max_bytes=None):
        """The array ``name``; ValueError unless it has ``dtype``/``shape`` (when given) and at
        most ``max_bytes`` bytes of data."""
        info = self.members.get(name)
        with self._open(name) as (f, found_shape, fortran, found_dtype):
            if found_dtype.hasobject:
                raise ValueError(f"array {name!r} holds Python objects (dtype {found_dtype}); "
                                 "they would need pickle, which is never used to load a model")
            if dtype is not None and found_dtype != np.dtype(dtype):
                raise ValueError(f"array {name!r} has dtype {found_dtype}, "
                                 f"expected {np.dtype(dtype)}")
            if shape is not None and tuple(found_shape) != tuple(shape):
                raise ValueError(f"array {name!r} has shape {found_shape}, expected {tuple(shape)}")
            nbytes = int(np.prod(found_shape, dtype=object)) * found_dtype.itemsize
            if max_bytes is not None and nbytes > max_bytes:
                raise ValueError(f"array {name!r} declares {nbytes} bytes, more than the "
                                 f"{max_bytes} allowed")
            if nbytes > info.file_size:
                raise ValueError(f"array {name!r} declares {nbytes} bytes but its member holds "
                                 f"only {info.file_size} (truncated)")
            data = f.read(nbytes + 1)             # one byte more: reach the end, check the CRC
            if len(data) != nbytes:
                found = "more" if len(data) > nbytes else len(data)
                raise ValueError(f"array {name!r} has {found} bytes of data, expected {nbytes}")
        order = "F" if fortran else "C"
        return np.frombuffer(data, found_dtype).reshape(found_shape, order=order)
