"""Files: atomic, exclusive writes, and reading ``.npz`` archives without trusting them.

- `atomic_write`: a reader sees the old file or the new one, never a half-written one; two
  processes never write the same file at once (`exclusive`), and the temporary files of writers
  that were killed are removed by the next write.
- `open_regular`: opens a regular file only (no FIFO, device or directory, also behind symlinks).
- `NpzReader`: reads the plain arrays of an ``np.savez`` archive, checking every header and member
  size before it allocates anything and never unpickling (object arrays are refused, not loaded).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import threading
import zipfile

import numpy as np
from numpy.lib import format as npy_format

try:
    import fcntl
except ImportError:                                  # not POSIX: writes are not locked
    fcntl = None

# the process umask, to give atomically written files the permissions open() would give them
# (mkstemp creates them 0600)
_UMASK = os.umask(0o022)
os.umask(_UMASK)

MAX_RATIO = 20                 # a zip member may inflate at most this much (zip bombs: 1000x) ...
RATIO_FLOOR = 1 << 20          # ... unless it is at most 1 MiB


def open_regular(path):
    """``path`` opened for binary reading, if it is a regular file (symlinks resolved, and the
    opened file checked again to be the one that was checked).

    A FIFO would block ``open`` forever and a device (``/dev/zero``) never ends: both, and
    directories, are a ValueError naming ``path``; a missing file is FileNotFoundError.
    """
    path = os.fspath(path)
    real = os.path.realpath(path)
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path!r} is {_kind(st.st_mode)}, not a regular file")
    # O_NONBLOCK: should a FIFO replace the file meanwhile, open does not wait for a writer
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
                 | getattr(os, "O_NOFOLLOW", 0))
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise ValueError(f"{path!r} was replaced while it was opened")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


# --- exclusive writers -------------------------------------------------------------------------

class LockedError(BlockingIOError):
    """Another process is writing the same file: it holds the lock ``<path>.lock``."""


_held = {}                     # lock file -> [fd, depth]: the locks this process holds
_writing = set()               # temporary files this process is writing now
_state_lock = threading.Lock()


def _forget_locks():           # a forked child does not own its parent's locks
    for fd, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
    _writing.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks)


def _target(path):
    """``(path as given, folder with symlinks resolved, file name)``; clear errors for a
    directory or a missing folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path!r}: it is a directory (give a "
                                f"file name, e.g. {os.path.join(path, 'model.npz')!r})")
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path!r}: the directory {folder!r} "
                                "does not exist")
    return path, folder, os.path.basename(path)


@contextlib.contextmanager
def exclusive(path):
    """Hold the exclusive lock of ``path`` while the block runs: another process that tries to
    write ``path`` meanwhile gets :class:`LockedError` naming this process's pid.

    The lock is ``flock`` on the side file ``<path>.lock`` (which holds the pid and is removed on
    release); the kernel releases it when the process dies, even by SIGKILL. It is re-entrant
    within a process (threads of one process share it). Raises clear OSErrors when ``path`` is a
    directory or cannot be written.
    """
    path, folder, name = _target(path)
    lock = os.path.join(folder, name + ".lock")
    with _state_lock:
        entry = _held.get(lock)
        if entry is not None:
            entry[1] += 1
        else:
            _held[lock] = [_acquire(lock, path), 1]
    try:
        yield
    finally:
        with _state_lock:
            entry = _held[lock]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[lock]
                with contextlib.suppress(OSError):
                    os.unlink(lock)                 # while still holding it (see _acquire)
                os.close(entry[0])


def _acquire(lock, path):
    """An fd of ``lock`` holding its flock, with this pid written in it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise type(e)(e.errno, f"cannot write {path!r}: {e.strerror} "
                          f"({os.path.dirname(lock)!r})") from None
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(errno.EWOULDBLOCK, f"{path!r} is being written by another process "
                              f"(pid {pid}); two runs must not write the same file: wait for it "
                              "to finish or choose another path") from None
        except BaseException:
            os.close(fd)
            raise
        # a holder removes the file as it releases it: a lock on a removed file locks nothing
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev,
                                                                        opened.st_ino):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _remove_orphans(folder, name):
    """Remove the temporary files of earlier writers of ``folder/name`` that were killed (the
    caller holds the lock, so no other process is writing them; this one's are kept)."""
    pattern = re.compile(re.escape(name) + r"\.[a-z0-9_]{8}\.tmp")      # mkstemp's names
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if (pattern.fullmatch(entry.name) and entry.path not in _writing
                    and entry.is_file(follow_symlinks=False)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; on success flush, fsync and rename it over ``path``.

    Holds ``exclusive(path)`` throughout, and first removes the temporary files that killed
    writers of ``path`` left behind. On any error (including KeyboardInterrupt) the temporary
    file is removed and ``path`` is left as it was. The new file gets the permissions of the file
    it replaces, or those a plain ``open(path, "w")`` would give (``0o666`` less the umask).
    """
    path, folder, name = _target(path)
    try:
        mode_bits = os.stat(path).st_mode & 0o777
    except OSError:
        mode_bits = 0o666 & ~_UMASK
    with exclusive(path):
        with _state_lock:
            _remove_orphans(folder, name)
            try:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".tmp")
            except OSError as e:
                raise type(e)(e.errno, f"cannot write {path!r}: {e.strerror} ({folder!r})") \
                    from None
            _writing.add(tmp)
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
        finally:
            with _state_lock:
                _writing.discard(tmp)
    with contextlib.suppress(OSError):          # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- reading ---------------------------------------------------------------------------------

class NpzReader:
    """The arrays of an ``np.savez`` archive, read one at a time with their headers checked first.

    ``np.load`` trusts a file's headers: a damaged shape makes it try to allocate terabytes, and a
    damaged zip directory raises whatever ``zipfile`` raises (``RuntimeError`` for a set
    "encrypted" bit, ``NotImplementedError`` for an unknown compression method). This reader
    checks every member of the zip directory against the real size of the file first (stored or
    deflated only, not encrypted, data inside the file, inflating at most ``max_ratio`` times
    unless at most ``RATIO_FLOOR`` bytes), then dtype, shape and size of an array against what
    the caller expects and against its member's size before reading any data; it refuses object
    arrays (which would need pickle) and reads whole members so that zip's CRC is checked.
    Errors from ``zipfile`` and damaged headers still propagate as they are; the caller turns
    them into its own error.

    Parameters
    ----------
    f : binary file object
        Open for reading, seekable.
    max_ratio : float
        The largest ``uncompressed / compressed`` size of a member larger than ``RATIO_FLOOR``.
    """

    def __init__(self, f, max_ratio=MAX_RATIO):
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        self.zip = zipfile.ZipFile(f)
        self.members = {}
        for info in self.zip.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise ValueError(f"member {name!r} is not a .npy array")
            if name[:-4] in self.members:
                raise ValueError(f"member {name!r} appears twice")
            if info.flag_bits & 1:
                raise ValueError(f"member {name!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ValueError(f"member {name!r} uses compression method {info.compress_type}; "
                                 "expected stored (0) or deflated (8)")
            if info.header_offset + info.compress_size > size:
                raise ValueError(f"member {name!r} declares {info.compress_size} bytes at offset "
                                 f"{info.header_offset}, beyond the end of the {size}-byte file "
                                 "(truncated)")
            limit = (info.compress_size if info.compress_type == zipfile.ZIP_STORED
                     else max(info.compress_size * max_ratio, RATIO_FLOOR))
            if info.file_size > limit:
                raise ValueError(f"member {name!r} declares {info.file_size} bytes from "
                                 f"{info.compress_size} compressed, more than {limit:.0f} "
                                 f"(compression ratio above {max_ratio}: a zip bomb?)")
            self.members[name[:-4]] = info

    def names(self):
        """Array names in the archive (without ``.npy``)."""
        return set(self.members)

    def header(self, name):
        """``(shape, dtype)`` of the array ``name``, from its header alone."""
        with self._open(name) as (f, shape, fortran, dtype):
            return shape, dtype

    def check(self, name, dtype=None, shape=None, max_bytes=None):
        """``(shape, dtype, nbytes)`` of the array ``name`` from its header, after the checks of
        `read` that need no data (so a caller can check every array before allocating)."""
        with self._open(name) as (f, found_shape, fortran, found_dtype):
            return self._checked(name, found_shape, found_dtype, dtype, shape, max_bytes)

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

    def _checked(self, name, found_shape, found_dtype, dtype, shape, max_bytes):
        if found_dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects (dtype {found_dtype}); "
                             "they would need pickle, which is never used to load a model")
        if any(n < 0 for n in found_shape):
            raise ValueError(f"array {name!r} has a negative size in its shape {found_shape}")
        if dtype is not None and found_dtype != np.dtype(dtype):
            raise ValueError(f"array {name!r} has dtype {found_dtype}, "
                             f"expected {np.dtype(dtype)}")
        if shape is not None and tuple(found_shape) != tuple(shape):
            raise ValueError(f"array {name!r} has shape {found_shape}, expected {tuple(shape)}")
        nbytes = int(np.prod(found_shape, dtype=object)) * found_dtype.itemsize
        if max_bytes is not None and nbytes > max_bytes:
            raise ValueError(f"array {name!r} declares {nbytes} bytes, more than the "
                             f"{max_bytes} allowed")
        if nbytes > self.members[name].file_size:
            raise ValueError(f"array {name!r} declares {nbytes} bytes but its member holds "
                             f"only {self.members[name].file_size} (truncated)")
        return found_shape, found_dtype, nbytes

    def read(self, name, dtype=None, shape=None, max_bytes=None):
        """The array ``name``; ValueError unless it has ``dtype``/``shape`` (when given) and at
        most ``max_bytes`` bytes of data."""
        with self._open(name) as (f, found_shape, fortran, found_dtype):
            _, _, nbytes = self._checked(name, found_shape, found_dtype, dtype, shape, max_bytes)
            data = f.read(nbytes + 1)             # one byte more: reach the end, check the CRC
            if len(data) != nbytes:
                found = "more" if len(data) > nbytes else len(data)
                raise ValueError(f"array {name!r} has {found} bytes of data, expected {nbytes}")
        order = "F" if fortran else "C"
        return np.frombuffer(data, found_dtype).reshape(found_shape, order=order)

    def read_pickle(self, name):
        """The raw bytes after the header of the object array ``name`` (its pickle), for a
        caller that parses them itself; at most the member's size, which the constructor bounded.
        Nothing is unpickled here."""
        with self._open(name) as (f, shape, fortran, dtype):
            if not dtype.hasobject:
                raise ValueError(f"array {name!r} has dtype {dtype}, not an object array")
            data = f.read(self.members[name].file_size + 1)   # to the end: the CRC is checked
        return data
