"""Hardening (issue #11): hostile files, special paths, two writers, a read-only kernel cache.

- Crafted ``imdb.npz`` and model files (built in ``crafted.py``) are each loaded in a child process
  with a 1 GiB address-space limit and a timeout: each must end in its documented error (exit 3,
  ``ValueError`` or ``FileNotFoundError`` naming the file and what is wrong), never a signal, a
  traceback, a ``MemoryError`` or a hang.
- A hypothesis fuzz mutates the pickle stream of a small ``imdb.npz``: it loads or is refused.
- Two processes writing one file: the second is refused with the first one's pid; temporary
  files of killed writers are removed by the next save; ``fastrnn train`` checks its files first.
- A filled but read-only Numba cache is used (cache hit, nothing compiled).
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import pickletools
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crafted as c
from fastrnn import SimpleRNNClassifier, layout
from fastrnn import model as model_module
from fastrnn._io import LockedError, atomic_write
from fastrnn.datasets import imdb

ROOT = Path(__file__).resolve().parent.parent
CRAFTED = Path(__file__).with_name("crafted.py")
MEMORY = 1 << 30               # address space of a loading child (numpy itself takes ~0.3 GiB)
TIMEOUT = 60


def child_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "FASTRNN_DATA_DIR"}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", FASTRNN_OFFLINE="1",
               FASTRNN_CACHE_DIR=os.path.join(tempfile.gettempdir(), "fastrnn-no-cache"))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def load_in_child(kind, path):
    """``python crafted.py kind path`` under the memory limit; ``(exit status, output)``."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    r = subprocess.run([sys.executable, str(CRAFTED), kind, str(path)], preexec_fn=limit,
                       capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
                       env=child_env())
    assert r.returncode >= 0, f"killed by signal {-r.returncode}: {r.stderr[-2000:]}"
    return r.returncode, r.stdout.strip() + r.stderr.strip()


def assert_refused(kind, path, match):
    code, out = load_in_child(kind, path)
    assert code == 3, out
    assert out.startswith("ERROR "), out
    assert str(path) in out, out                     # the message names the file
    assert re.search(match, out), out


# --- crafted imdb.npz files ----------------------------------------------------------------------

def _zip_bomb_x():
    """x_train: one list of 32 M zeros (64 MB of pickle) deflated to about 64 KB."""
    head, tail = c.object_array(b"\x00SPLIT\x00", 1).split(b"\x00SPLIT\x00")
    head = c.npy_object(b"", (1,)) + head + c.EMPTY_LIST + c.MARK
    chunks = [head] + [b"K\x00" * (1 << 19)] * 64 + [c.APPENDS + tail]
    bomb = c.deflated_member("x_train.npy", chunks)
    return c.with_members(c.imdb_npz(), bomb)


def _duplicate_member():
    raw = c.imdb_npz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # zipfile warns about the duplicate name
        buf = io.BytesIO(raw)
        with zipfile.ZipFile(buf, "a") as z:
            z.writestr("x_train.npy", c.npy_object(c.seqs_pickle([[1]]), (1,)))
    return buf.getvalue()


def _x(payload, n=3):
    return c.npy_object(payload, (n,))


PROTO4_EVAL = (b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94" + c.U("1+1") + c.TUPLE1
               + c.REDUCE + c.STOP)
DATA_CASES = {
    "valid": (lambda: c.imdb_npz(), None),
    "short_object_list": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.int_list([1, 2]), count=3))), "holds 1 sequences but its shape says 3"),
    "pickled_shape_differs_from_header": (lambda: c.imdb_npz(x_train=_x(c.seqs_pickle(
        [[1], [2], [3]], count=5))), r"shape \(5,\), the header says \(3,\)"),
    "zeroed_flags_dtype_with_raw_pointers": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        data=b"C\x18" + (0x4141414141414141).to_bytes(8, "little") * 3, count=3,
        dtype=c.ZEROED_FLAGS_DTYPE))), "dtype other than NumPy's object dtype"),
    "raw_bytes_as_data": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        data=b"C\x18" + bytes(24), count=3))), "holds bytes, expected a list"),
    "memo_bomb": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.EMPTY_LIST + c.LONG_BINPUT(0xFFFFFFF0) + b"".join(c.int_list([i]) for i in (1, 2)),
        count=3))), "memo index 4294967280 beyond"),
    "memo_bomb_many_puts": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.int_list([1]) + b"".join(c.LONG_BINPUT(0x7FFFFFFF - i) for i in range(2000))
        + c.int_list([2]) + c.int_list([3]), count=3))), "memo index 2147483647 beyond"),
    "one_list_referenced_many_times": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.EMPTY_LIST + c.BINPUT(0) + c.MARK + c.J(7) * 1000 + c.APPENDS
        + c.BINGET(0) * 4999, count=5000), n=5000), y_train=c.npy(np.zeros(5000, np.int64))),
        "refers again to a list"),
    "os_system": (lambda: c.imdb_npz(x_train=_x(c.object_array(head=c.GLOBAL("posix", "system")
        + c.U("touch /tmp/fastrnn-pwned") + c.TUPLE1 + c.REDUCE))),
        "refusing to unpickle posix.system"),
    "builtins_eval_stack_global": (lambda: c.imdb_npz(x_train=_x(PROTO4_EVAL)),
                                   "refusing to unpickle builtins.eval"),
    "deep_nesting": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        (c.EMPTY_LIST + c.MARK) * 100_000, count=3))), "more than .* pickle opcodes"),
    "string_longer_than_file": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        head=b"X\x00\x00\x00\x80"))), "needs 2147483648 more bytes"),
    "truncated_pickle": (lambda: c.imdb_npz(x_train=_x(c.seqs_pickle([[1], [2], [3]])[:-9])),
                         "ends before its STOP|needs|MARK"),
    "bytes_after_stop": (lambda: c.imdb_npz(x_train=_x(c.seqs_pickle([[1], [2], [3]]) + b"KKK")),
                         "3 bytes after the end of the pickle"),
    "bools_as_ids": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.EMPTY_LIST + c.MARK + c.NEWTRUE + c.NEWFALSE + c.APPENDS + c.int_list([1])
        + c.int_list([2]), count=3))), r"x_train\[0\] holds values that are not \(64-bit\) ints"),
    "nested_list": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.EMPTY_LIST + c.int_list([1]) + c.APPEND + c.int_list([1]) + c.int_list([2]),
        count=3))), "not .*ints"),
    "int_beyond_64_bits": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.EMPTY_LIST + b"\x8a\x09" + (2**70).to_bytes(9, "little") + c.APPEND
        + c.int_list([1]) + c.int_list([2]), count=3))), "not .*ints"),
    "float_id": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.EMPTY_LIST + b"G" + struct.pack(">d", 2.5)
        + c.APPEND + c.int_list([1]) + c.int_list([2]), count=3))), "not .*ints"),
    "tuple_item": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.int_list([1]) + c.K(1) + c.K(2) + b"\x86" + c.int_list([2]), count=3))),
        r"x_train\[1\] is a tuple"),
    "tuple_first_item": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.K(1) + c.K(2) + b"\x86" + c.int_list([1]) + c.int_list([2]), count=3))),
        "takes a run of ints where one value belongs"),
    "one_run_of_32_million_ints_stored": (lambda: c.imdb_npz(x_train=_x(c.object_array(
        c.EMPTY_LIST + c.MARK + b"K\x05" * (1 << 25) + c.APPENDS + c.int_list([1])
        + c.int_list([2]), count=3))), None),
    "labels_7_and_minus_3": (lambda: c.imdb_npz(y_train=c.npy(np.array([7, -3, 1]))),
                             "holds the label 7"),
    "float_labels": (lambda: c.imdb_npz(y_train=c.npy(np.array([0.0, 1.0, 1.0]))),
                     "y_train must be a 1-D int array"),
    "bool_labels": (lambda: c.imdb_npz(y_train=c.npy(np.array([True, False, True]))),
                    "y_train must be a 1-D int array"),
    "two_dimensional_x": (lambda: c.imdb_npz(x_train=c.npy_object(
        c.seqs_pickle([[1], [2], [3]]), (3, 1))), "x_train must be a 1-D object array"),
    "plain_int_x": (lambda: c.imdb_npz(x_train=c.npy(np.zeros(3, np.int64))),
                    "x_train must be a 1-D object array"),
    "fewer_labels_than_reviews": (lambda: c.imdb_npz(y_train=c.npy(np.zeros(2, np.int64))),
                                  "x_train has 3 sequences but y_train 2"),
    "truncated_file": (lambda: c.imdb_npz()[:700], "damaged or truncated"),
    "zip_bomb": (_zip_bomb_x, "compression ratio above 10"),
    "encrypted_member": (lambda: c.patch_central_directory(c.imdb_npz(), "x_train.npy",
                                                           flag_bits=1), "encrypted"),
    "bzip2_member": (lambda: c.patch_central_directory(c.imdb_npz(), "x_train.npy",
                                                       compress_type=12), "compression method 12"),
    "member_beyond_end_of_file": (lambda: c.patch_central_directory(
        c.imdb_npz(), "y_test.npy", compress_size=10**9, file_size=10**9), "beyond the end"),
    "member_size_understated": (lambda: c.patch_central_directory(
        c.imdb_npz(), "x_train.npy", file_size=50), "damaged or truncated"),
    "duplicate_member": (_duplicate_member, "appears twice"),
    "not_a_zip": (lambda: b"<html>404</html>" * 10, "damaged or truncated"),
}


def test_crafted_builder_is_numpy_s_format(tmp_path):
    """The builder writes what NumPy writes: np.load (trusted here, on our own benign file) reads
    the valid crafted file, and load_data gives the same values."""
    path = tmp_path / "imdb.npz"
    path.write_bytes(c.imdb_npz())
    with np.load(path, allow_pickle=True) as f:
        assert f["x_train"].tolist() == [[1, 14, 22], [5, 6], [7]]
        assert f["x_test"].tolist() == [[1, 2], [9, 9, 9, 9]]
    (x, y), (xt, yt) = imdb.load_data(path, num_words=100, start_char=None, index_from=0)
    assert sorted(x.tolist()) == sorted([[1, 14, 22], [5, 6], [7]])
    assert sorted(map(tuple, xt.tolist())) == [(1, 2), (9, 9, 9, 9)]


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_crafted_data_file(tmp_path, case):
    build, match = DATA_CASES[case]
    path = tmp_path / "imdb.npz"
    path.write_bytes(build())
    if case == "one_run_of_32_million_ints_stored":    # valid, 64 MB: parsed within the limit
        assert load_in_child("arrays", path) == (0, f"OK 3 {2**25 + 2}")
    elif match is None:
        assert load_in_child("data", path) == (0, "OK 3 2 9")
    else:
        assert_refused("data", path, match)
    assert not Path("/tmp/fastrnn-pwned").exists()


@pytest.mark.parametrize("special", ["fifo", "dev_zero", "dev_urandom", "dangling_symlink"])
def test_data_special_paths(tmp_path, special):
    path = tmp_path / "imdb.npz"
    match = {"fifo": "is a FIFO", "dev_zero": "is a character device",
             "dev_urandom": "is a character device", "dangling_symlink": "imdb.npz not found"}
    if special == "fifo":
        os.mkfifo(path)
    elif special == "dangling_symlink":
        path.symlink_to(tmp_path / "nothing")
    else:
        path.symlink_to("/dev/" + special[4:])
    code, out = load_in_child("data", path)
    assert code == 3 and match[special] in out, out


# --- crafted model files -------------------------------------------------------------------------

def _meta(**changes):
    """The valid model's metadata with ``changes`` ("config.hidden_dim": value, ...)."""
    arrays, meta = c.model_parts()
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = meta
        for p in parents:
            target = target[p]
        target[last] = value
    return arrays, meta


def _model_file(**changes):
    return c.model_npz(*_meta(**changes))


def _big_model(theta, compression=zipfile.ZIP_STORED, **config):
    """A model file whose config claims ``config`` and whose theta member is ``theta`` (raw
    .npy bytes or a zip to merge in)."""
    arrays, meta = _meta(**{f"config.{k}": v for k, v in config.items()})
    raw = c.model_npz(arrays, meta)
    if isinstance(theta, bytes) and theta.startswith(b"PK"):
        return c.with_members(raw, theta)
    return c.with_members(raw, c.npz({"theta": theta}))


def _theta_header_only(n):
    """A theta member whose header declares ``n`` float64 but which holds 80 bytes."""
    buf = io.BytesIO()
    c.npy_format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                              "shape": (n,)})
    return buf.getvalue() + bytes(80)


def _theta_bomb():
    n = layout.size((2**20, 3, 4, 2))                     # 3.1 M float64 zeros: 25 MB
    buf = io.BytesIO()
    c.npy_format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                              "shape": (n,)})
    chunks = [buf.getvalue()] + [bytes(1 << 20)] * (n * 8 >> 20) + [bytes(n * 8 % (1 << 20))]
    return c.deflated_member("theta.npy", chunks)


def _with_array(name, value):
    arrays, meta = c.model_parts()
    arrays[name] = value(arrays[name])
    return c.model_npz(arrays, meta)


def _nan(a):
    a = a.copy()
    a[2] = np.nan
    return a


def _huge(a):
    a = a.copy()
    a[0] = np.inf
    return a


H8000 = layout.size((12, 3, 8000, 2))
MODEL_CASES = {
    "valid": (lambda: _model_file(), None),
    "truncated": (lambda: _model_file()[:1500], "not a valid fastrnn model file"),
    "hidden_dim_8000_theta_too_short": (lambda: _model_file(**{"config.hidden_dim": 8000}),
                                        r"array 'theta' has shape \(\d+,\); the config needs"),
    "hidden_dim_8000_header_without_data": (lambda: _big_model(
        _theta_header_only(H8000), hidden_dim=8000),
        f"'theta' declares {H8000 * 8} bytes but its member holds only"),
    "zip_bomb_theta": (lambda: _big_model(_theta_bomb(), vocab_size=2**20),
                       "compression ratio above 20"),
    "float32_theta": (lambda: _with_array("theta", lambda a: a.astype(np.float32)),
                      "array 'theta' has dtype float32"),
    "int_theta": (lambda: _with_array("theta", lambda a: a.astype(np.int64)),
                  "array 'theta' has dtype int64"),
    "nan_weight": (lambda: _with_array("theta", _nan), "array 'theta' holds NaN or inf"),
    "inf_optimizer_state": (lambda: _with_array("s1", _huge), "array 's1' holds NaN or inf"),
    "learning_rate_true": (lambda: _model_file(**{"optimizer.learning_rate": True}),
                           "bad optimizer"),
    "keras_epsilon_string": (lambda: _model_file(**{"optimizer.keras_epsilon": "no"}),
                             "bad optimizer"),
    "hidden_dim_float": (lambda: _model_file(**{"config.hidden_dim": 4.0}), "bad sizes"),
    "embed_dim_true": (lambda: _model_file(**{"config.embed_dim": True}), "bad sizes"),
    "mask_zero_int": (lambda: _model_file(**{"config.mask_zero": 1}), "bad config flags"),
    "maxlen_10_7": (lambda: _model_file(**{"config.maxlen": 10**7}), "bad maxlen"),
    "maxlen_2_31": (lambda: _model_file(**{"config.maxlen": 2**31 - 1}), "bad maxlen"),
    "dtype_float16": (lambda: _model_file(**{"config.dtype": "float16"}), "bad dtype"),
    "seed_true": (lambda: _model_file(**{"config.seed": True}), "bad seed"),
    "step_count_2_62": (lambda: _model_file(step_count=2**62 - 1), "bad step or epoch count"),
    "negative_epoch": (lambda: _model_file(epoch=-1), "bad step or epoch count"),
    "resume_batch_10_15": (lambda: _model_file(**{"resume.batch": 10**15}),
                           "bad resume position"),
    "resume_seen_beyond_n": (lambda: _model_file(**{"resume.seen": 10**6}),
                             "bad resume position"),
    "resume_loss_string": (lambda: _model_file(**{"resume.loss": "1"}), "bad resume loss"),
    "resume_without_n": (lambda: _model_file(resume={"rng": {}, "batch": 1, "loss": 0.0,
                                                     "correct": 0, "seen": 0, "skipped": 0}),
                         "bad resume state"),
    "history_bools": (lambda: _model_file(history={"loss": [True]}), "bad history values"),
    "history_longer_than_epochs": (lambda: _model_file(history={"loss": [0.5] * 10**6}),
                                   "more history than epochs"),
    "meta_not_json": (lambda: c.model_npz(c.model_parts()[0], b"\xff{"),
                      "not a valid fastrnn model file"),
    "pickled_array": (lambda: _with_array("s1", lambda a: np.array([{}], dtype=object)),
                      "Python objects"),
    "deflate_method_patched": (lambda: c.patch_central_directory(
        _model_file(), "theta.npy", compress_type=14), "compression method 14"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_crafted_model_file(tmp_path, case):
    build, match = MODEL_CASES[case]
    path = tmp_path / "model.npz"
    path.write_bytes(build())
    if match is None:
        code, out = load_in_child("model", path)
        assert (code, out) == (0, "OK (12, 3, 4, 2) 7"), out
    else:
        assert_refused("model", path, match)


@pytest.mark.parametrize("special", ["fifo", "dev_zero", "dev_urandom", "directory",
                                     "symlink_to_fifo", "dangling_symlink"])
def test_model_special_paths(tmp_path, special):
    path = tmp_path / "model.npz"
    if special in ("fifo", "symlink_to_fifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        if special == "fifo":
            os.rename(fifo, path)
        else:
            path.symlink_to(fifo)
    elif special == "directory":
        path.mkdir()
    elif special == "dangling_symlink":
        path.symlink_to(tmp_path / "nothing")
    else:
        path.symlink_to("/dev/" + special[4:])
    match = {"fifo": "is a FIFO", "symlink_to_fifo": "is a FIFO", "directory": "is a directory",
             "dev_zero": "is a character device", "dev_urandom": "is a character device",
             "dangling_symlink": "FileNotFoundError: model file .* does not exist"}[special]
    assert_refused("model", path, match)


# --- model files: a loaded model can always be saved and loaded again ---------------------------

def test_loaded_model_saves_and_loads_again_at_the_bounds(tmp_path):
    arrays, meta = c.model_parts()
    meta["step_count"] = meta["epoch"] = model_module.MAX_COUNT
    meta["config"]["maxlen"] = model_module.MAX_MAXLEN
    path = tmp_path / "a.npz"
    path.write_bytes(c.model_npz(arrays, meta))
    m = SimpleRNNClassifier.load(path, backend="numpy")
    m.save(tmp_path / "b.npz")
    again = SimpleRNNClassifier.load(tmp_path / "b.npz", backend="numpy")
    assert again.step_count == model_module.MAX_COUNT and again.config["maxlen"] == 2**20
    np.testing.assert_array_equal(again.theta, arrays["theta"])
    m.step_count += 1                                   # beyond what load takes: refused here
    with pytest.raises(ValueError, match="refusing to save .*load would refuse it .*step"):
        m.save(tmp_path / "b.npz")
    assert SimpleRNNClassifier.load(tmp_path / "b.npz", backend="numpy").step_count == 2**53


def test_save_into_a_directory_or_a_missing_folder_says_so(tmp_path):
    m = SimpleRNNClassifier(5, 2, 3, backend="numpy", seed=0)
    with pytest.raises(IsADirectoryError, match=r"cannot write .*: it is a directory \(give a "
                       r"file name, e\.g\. .*model\.npz"):
        m.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="the directory .*nowhere.* does not exist"):
        m.save(tmp_path / "nowhere" / "m.npz")
    assert list(tmp_path.iterdir()) == []                # no temporary or lock file left


# --- processes that read only: dropping root's override of file permissions ----------------------

def _without_dac_override():
    """preexec_fn: as root, drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so
    that after exec even root obeys file permissions (a read-only directory is read-only)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):                               # PR_CAPBSET_DROP = 24
            if libc.prctl(24, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _read_only_tree(path):
    for folder, dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


def _writable_tree(path):
    for folder, dirs, files in os.walk(path):
        os.chmod(folder, 0o755)


def _read_only_works():
    """Whether a child started with ``_without_dac_override`` really cannot write into a 0555
    directory (not where root cannot drop capabilities)."""
    if not sys.platform.startswith("linux"):
        return False
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            r = subprocess.run([sys.executable, "-c", f"open({folder!r} + '/x', 'w')"],
                               preexec_fn=_without_dac_override, capture_output=True,
                               timeout=TIMEOUT)
        except (OSError, subprocess.SubprocessError):
            return False
        finally:
            os.chmod(folder, 0o755)
        return r.returncode != 0 and b"PermissionError" in r.stderr


needs_read_only = pytest.mark.skipif(not _read_only_works(),
                                 reason="needs a child that cannot write a read-only directory "
                                 "(Linux; as root, prctl(PR_CAPBSET_DROP))")


@needs_read_only
def test_unwritable_folder_says_so(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    _read_only_tree(folder)
    code = f"""
        from fastrnn import SimpleRNNClassifier
        try:
            SimpleRNNClassifier(5, 2, 3, backend="numpy").save({str(folder / 'm.npz')!r})
        except PermissionError as e:
            print(e.strerror)
    """
    try:
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                           text=True, timeout=TIMEOUT, preexec_fn=_without_dac_override,
                           env=child_env(), cwd=ROOT)
    finally:
        _writable_tree(folder)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"cannot write {str(folder / 'm.npz')!r}: Permission denied " \
                               f"({str(folder)!r})"


# --- the read-only kernel cache ------------------------------------------------------------------

XENT = """
    import numpy as np
    from fastrnn import SimpleRNNClassifier
    m = SimpleRNNClassifier(5, 2, 3, backend="numba")
    ready = m.backend.step.xent.is_ready("float64")         # what fastrnn.kernels.is_compiled reads
    loss, _ = m.backend.softmax_xent(np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([1, 0]))
    stats = m.backend.step.xent[np.float64].stats
    print(ready, repr(float(loss)), sum(stats.cache_hits.values()),
          sum(stats.cache_misses.values()), stats.cache_path)
"""


@needs_read_only
def test_filled_read_only_kernel_cache_is_used(tmp_path):
    """A cache filled by one process, then made read-only: a fresh process loads the kernel from
    it (a cache hit, no compile) instead of skipping it for a writable place or none."""
    cache = tmp_path / "cache"
    run = dict(capture_output=True, text=True, timeout=600, cwd=ROOT,
               env=child_env(NUMBA_CACHE_DIR=cache))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(XENT)], **run)
    assert r.returncode == 0, r.stderr
    ready, loss, hits, misses, where = r.stdout.split()
    assert (ready, hits, misses) == ("False", "0", "1") and where.startswith(str(cache))
    files = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    assert any(p.suffix == ".nbi" for p in files)
    _read_only_tree(cache)
    try:
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(XENT)],
                           preexec_fn=_without_dac_override, **run)
    finally:
        _writable_tree(cache)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", loss, "1", "0", where]    # loaded from the read-only one
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == files


# --- two writers ---------------------------------------------------------------------------------

HOLDER = """
    import os, sys, time
    import numpy as np
    from fastrnn import SimpleRNNClassifier
    from fastrnn.callbacks import Callback
    go = sys.argv[2]

    class Wait(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:                      # the checkpoint of epoch 1 is saved
                print("ready", os.getpid(), flush=True)
                while not os.path.exists(go):
                    time.sleep(0.01)

    m = SimpleRNNClassifier(12, 3, 4, 2, dtype="float64", backend="numpy", seed=0)
    x = np.random.default_rng(0).integers(0, 12, size=(16, 5))
    m.fit(x, np.arange(16) % 2, epochs=3, batch_size=4, verbose=0, checkpoint=sys.argv[1],
          callbacks=[Wait()])
    print("done", flush=True)
"""


def _start_holder(tmp_path, ckpt):
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), str(ckpt),
                          str(tmp_path / "go")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT, env=child_env())
    line = p.stdout.readline().split()
    assert line[:1] == ["ready"], p.stderr.read()
    return p, line[1]


def test_two_writers_of_one_checkpoint(tmp_path):
    """A training run holds its checkpoint: another process saving there, or ``fastrnn train``
    with it as --checkpoint or --output, is refused with the run's pid; the run's file is intact
    and the lock is gone once it ends."""
    ckpt = tmp_path / "run.ckpt.npz"
    holder, pid = _start_holder(tmp_path, ckpt)
    try:
        saver = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from fastrnn import SimpleRNNClassifier
            from fastrnn._io import LockedError
            try:
                SimpleRNNClassifier(5, 2, 3, backend="numpy").save({str(ckpt)!r})
            except LockedError as e:
                print(e.strerror)
        """)], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=child_env())
        assert saver.returncode == 0, saver.stderr
        assert saver.stdout.strip() == (f"{str(ckpt)!r} is being written by another process "
                                        f"(pid {pid}); two runs must not write the same file: "
                                        "wait for it to finish or choose another path")
        for flags in (["--checkpoint", str(ckpt), "--output", str(tmp_path / "o.npz")],
                      ["--output", str(ckpt), "--checkpoint", str(tmp_path / "c.npz")]):
            cli = subprocess.run([sys.executable, "-m", "fastrnn", "train", *flags, "--data-dir",
                                  str(tmp_path / "no-data")], capture_output=True, text=True,
                                 timeout=TIMEOUT, cwd=ROOT, env=child_env())
            assert cli.returncode == 2, cli.stderr
            assert f"fastrnn: error: {flags[0]}: {str(ckpt)!r} is being written by another " \
                   f"process (pid {pid})" in cli.stderr
        assert SimpleRNNClassifier.load(ckpt, backend="numpy").epoch == 1   # the run's file
    finally:
        (tmp_path / "go").write_text("")
        out, err = holder.communicate(timeout=TIMEOUT)
    assert holder.returncode == 0 and out.split() == ["done"], err
    assert SimpleRNNClassifier.load(ckpt, backend="numpy").epoch == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", ckpt.name]    # no lock, no tmp
    SimpleRNNClassifier(5, 2, 3, backend="numpy").save(ckpt)                   # free again


KILLED_WRITER = """
    import os, sys, time
    from fastrnn._io import atomic_write
    with atomic_write(sys.argv[1]) as f:
        f.write(b"half a file")
        f.flush()
        print("writing", flush=True)
        time.sleep(600)
"""


def test_killed_writer_leaves_nothing_the_next_save_does_not_clean(tmp_path):
    """SIGKILL in the middle of a save: the file is as before, the lock dies with the process,
    and the next save removes the orphaned temporary file (but not other files)."""
    path = tmp_path / "m.npz"
    SimpleRNNClassifier(5, 2, 3, backend="numpy", seed=1).save(path)
    before = path.read_bytes()
    keep = [tmp_path / "m.npz.notours.tmp", tmp_path / "other.npz.abcdefgh.tmp"]
    for p in keep:
        p.write_text("not a temporary file of m.npz")
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(path)],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT, env=child_env())
    try:
        assert p.stdout.readline().strip() == "writing"
        (orphan,) = tmp_path.glob("m.npz.????????.tmp")
        with pytest.raises(LockedError, match=f"pid {p.pid}"):             # a live writer's
            SimpleRNNClassifier(5, 2, 3, backend="numpy").save(path)       # temp file is kept
        assert orphan.exists()
    finally:
        p.kill()
        p.wait(TIMEOUT)
        p.stdout.close()
    assert p.returncode == -signal.SIGKILL
    assert path.read_bytes() == before and orphan.exists()
    SimpleRNNClassifier(5, 2, 3, backend="numpy", seed=2).save(path)
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(["m.npz"] + [q.name for q in keep])
    assert SimpleRNNClassifier.load(path, backend="numpy").config["seed"] == 2


def test_threads_of_one_process_share_the_lock(tmp_path):
    """The lock is the process's: saving from inside another save's lock (a checkpoint callback
    inside fit, or two threads) does not refuse, and the other writer's temp file is kept."""
    path = tmp_path / "m.npz"
    m = SimpleRNNClassifier(5, 2, 3, backend="numpy", seed=0)
    with atomic_write(path) as f:
        f.write(b"x")
        (tmp,) = tmp_path.glob("m.npz.*.tmp")
        m.save(path)                                        # re-entrant; does not remove tmp
        assert tmp.exists()
    assert path.read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_train_checks_its_files_before_loading_data(tmp_path):
    """--output a directory, or in a missing folder: refused before the data is looked for."""
    folder = tmp_path / "out"
    folder.mkdir()
    r = subprocess.run([sys.executable, "-m", "fastrnn", "train", "--output", str(folder),
                        "--data-dir", str(tmp_path / "no-data")], capture_output=True, text=True,
                       timeout=TIMEOUT, cwd=ROOT, env=child_env())
    assert r.returncode == 2
    assert r.stderr.strip() == (f"fastrnn: error: --output: cannot write {str(folder)!r}: it is "
                                f"a directory (give a file name, e.g. "
                                f"{str(folder / 'model.npz')!r})")
    assert list(folder.iterdir()) == []


# --- fuzzing the pickle stream of a small imdb.npz -----------------------------------------------

SEQS = [[1, 14, 22, 300, 70000], [5], [], [7, 8]]
_ARRAY = np.empty(len(SEQS), dtype=object)
_ARRAY[:] = SEQS
BASE = {proto: pickle.dumps(_ARRAY, protocol=proto) for proto in (3, 4, 5)}    # as NumPy writes


@pytest.mark.parametrize("proto", [3, 4, 5])
def test_numpy_pickles_of_every_protocol_load(tmp_path, proto):
    path = tmp_path / "imdb.npz"
    path.write_bytes(c.imdb_npz(x_train=c.npy_object(BASE[proto], (4,)),
                                y_train=c.npy(np.zeros(4, np.int64))))
    arrays = imdb._read_npz(path)
    assert imdb._to_lists(*arrays["x_train"]).tolist() == SEQS


_LOADS = pickle.loads
_INT_OPCODES = {"PROTO", "MARK", "BININT1", "BININT2", "BININT", "LONG1", "LIST", "STOP"}


def _only_ints_loads(stream):
    """``pickle.loads`` for the reader's decoding step, checking it only ever decodes ints."""
    used = {op.name for op, _, _ in pickletools.genops(stream)}
    assert used <= _INT_OPCODES, used
    return _LOADS(stream)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(proto=st.sampled_from([3, 4, 5]), data=st.data())
def test_fuzz_pickle_stream(tmp_path, proto, data):
    """Any mutation of the stream (bytes replaced, cut out, inserted, the end cut off) loads
    lists of ints or is a ValueError naming the file; nothing else escapes, and the only pickle
    the reader hands to Python's unpickler is one of ints (MARK, BININT*, LIST) it built."""
    raw = bytearray(BASE[proto])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
        at = data.draw(st.integers(0, len(raw)))
        if kind == "replace" and at < len(raw):
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "delete":
            del raw[at:at + data.draw(st.integers(1, 8))]
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[at:]
    path = tmp_path / "fuzz.npz"
    path.write_bytes(c.imdb_npz(x_train=c.npy_object(bytes(raw), (4,)),
                                y_train=c.npy(np.zeros(4, np.int64))))
    try:
        with mock.patch.object(imdb.pickle, "loads", _only_ints_loads):
            tokens, lengths = imdb._read_npz(path)["x_train"]
    except ValueError as e:
        assert str(path) in str(e)
        return
    assert tokens.dtype == np.int64 and lengths.shape == (4,) and lengths.sum() == len(tokens)
