"""Crafted files for the hardening tests: hostile or broken ``imdb.npz`` and model files, built
opcode by opcode, and a child-process loader that reports how loading them ended.

Run as a program, ``python crafted.py {data|arrays|model} PATH`` loads PATH with
``imdb.load_data`` (``arrays``: only its safe reader of ``x_train``) or
``SimpleRNNClassifier.load`` and prints one line: ``OK ...`` (exit 0), or
``ERROR <type>: <message>`` (exit 3) for the documented errors (ValueError, FileNotFoundError); anything else is a traceback
(exit 1) and a crash is a signal. ``tests/test_hardening.py`` runs it under a memory limit and a
timeout.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile

import numpy as np
from numpy.lib import format as npy_format

# --- pickle opcodes ------------------------------------------------------------------------------

MARK, STOP, TUPLE, TUPLE1, TUPLE3 = b"(", b".", b"t", b"\x85", b"\x87"
REDUCE, BUILD, APPEND, APPENDS, EMPTY_LIST = b"R", b"b", b"a", b"e", b"]"
NONE, NEWTRUE, NEWFALSE = b"N", b"\x88", b"\x89"


def K(v):
    """BININT1."""
    return b"K" + bytes([v])


def J(v):
    """BININT (signed 32-bit)."""
    return b"J" + struct.pack("<i", v)


def U(s):
    """BINUNICODE."""
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def GLOBAL(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def LONG_BINPUT(i):
    return b"r" + struct.pack("<I", i)


def BINGET(i):
    return b"h" + bytes([i])


def BINPUT(i):
    return b"q" + bytes([i])


def int_list(values):
    """A pickled list of ints, as the pickler writes it (APPEND for one item, APPENDS else)."""
    if len(values) == 1:
        return EMPTY_LIST + J(values[0]) + APPEND
    return EMPTY_LIST + (MARK + b"".join(J(v) for v in values) + APPENDS if values else b"")


OBJECT_DTYPE = (GLOBAL("numpy", "dtype") + U("O8") + NEWFALSE + NEWTRUE + TUPLE3 + REDUCE
                + MARK + K(3) + U("|") + NONE * 3 + J(-1) + J(-1) + K(63) + TUPLE + BUILD)
# the same dtype with its flags zeroed: NumPy then takes raw bytes as object pointers
ZEROED_FLAGS_DTYPE = OBJECT_DTYPE.replace(K(63) + TUPLE, K(0) + TUPLE)


def object_array(items=b"", count=None, data=None, dtype=OBJECT_DTYPE, proto=3, head=None):
    """The pickle NumPy writes for a 1-D object array (protocol 3), from its parts.

    ``items``: the pickled elements (``int_list(...)`` each) between the outer list's MARK and
    APPENDS; ``count``: the shape in the pickle; ``data``: the fifth item of the state instead of
    the outer list; ``dtype``: the pickled dtype and its state; ``head``: replaces the
    ``_reconstruct(ndarray, (0,), b"b")`` call.
    """
    if head is None:
        head = (GLOBAL("numpy.core.multiarray", "_reconstruct") + GLOBAL("numpy", "ndarray")
                + K(0) + TUPLE1 + b"C\x01b" + TUPLE3 + REDUCE)
    if data is None:
        data = EMPTY_LIST + MARK + items + APPENDS
    return (b"\x80" + bytes([proto]) + head + MARK + K(1) + J(count or 0) + TUPLE1 + dtype
            + NEWFALSE + data + TUPLE + BUILD + STOP)


def seqs_pickle(seqs, count=None):
    """``object_array`` of the lists of ints ``seqs`` (shape ``count``, default their number)."""
    return object_array(b"".join(int_list(s) for s in seqs),
                        len(seqs) if count is None else count)


# --- .npy and .npz -------------------------------------------------------------------------------

def npy_object(payload, shape):
    """A ``.npy`` file of an object array with shape ``shape`` whose data is ``payload``."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False,
                                            "shape": tuple(shape)})
    return buf.getvalue() + payload


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=array.dtype.hasobject)
    return buf.getvalue()


def npz(members, compression=zipfile.ZIP_STORED):
    """A zip of ``{name: bytes}`` (``.npy`` added to each name)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, raw in members.items():
            z.writestr(name + ".npy", raw)
    return buf.getvalue()


def imdb_members(x_train=None, y_train=None, x_test=None, y_test=None):
    """The members of a small valid ``imdb.npz`` (3 train, 2 test reviews), any replaced."""
    seqs = {"train": [[1, 14, 22], [5, 6], [7]], "test": [[1, 2], [9, 9, 9, 9]]}
    members = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        n = len(seqs[split])
        members[f"x_{split}"] = x if x is not None else npy_object(seqs_pickle(seqs[split]), (n,))
        members[f"y_{split}"] = y if y is not None else npy(np.arange(n, dtype=np.int64) % 2)
    return members


def imdb_npz(**replace):
    return npz(imdb_members(**replace))


def deflated_member(name, chunks):
    """A zip holding one deflated member ``name`` written from the byte ``chunks`` (so a member
    of gigabytes is built without holding it in memory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            for chunk in chunks:
                f.write(chunk)
    return buf.getvalue()


def with_members(raw, extra):
    """The zip ``raw`` with the members of the zip ``extra`` added (replacing same names)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(extra)) as e:
        names = set(e.namelist())
        with zipfile.ZipFile(io.BytesIO(raw)) as z, zipfile.ZipFile(out, "w") as o:
            for info in z.infolist():
                if info.filename not in names:
                    o.writestr(info, z.read(info))
        with zipfile.ZipFile(out, "a") as o:
            for info in e.infolist():
                o.writestr(info, e.read(info), compress_type=info.compress_type)
    return out.getvalue()


def patch_central_directory(raw, name, **fields):
    """``raw`` with the central-directory entry of ``name`` changed: ``file_size``,
    ``compress_size``, ``compress_type`` or ``flag_bits`` (the data stays as it is)."""
    layout = {"flag_bits": (8, "<H"), "compress_type": (10, "<H"), "compress_size": (20, "<I"),
              "file_size": (24, "<I")}
    entry = raw.index(b"PK\x01\x02")
    data = bytearray(raw)
    while True:
        n = struct.unpack("<H", data[entry + 28:entry + 30])[0]
        if data[entry + 46:entry + 46 + n].decode() == name:
            break
        entry = raw.index(b"PK\x01\x02", entry + 4)
    for field, value in fields.items():
        offset, fmt = layout[field]
        data[entry + offset:entry + offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


# --- model files ---------------------------------------------------------------------------------

def model_parts():
    """``(arrays, meta)`` of a small valid model file, as ``save`` writes it (float64, trained an
    epoch and stopped in the middle of the next, so that it has a resume state)."""
    import os
    import tempfile

    from fastrnn import SimpleRNNClassifier
    from fastrnn.callbacks import Callback

    class Stop(Callback):
        def on_batch_end(self, step, logs=None):
            if step == 7:
                raise KeyboardInterrupt

    m = SimpleRNNClassifier(12, 3, 4, 2, dtype="float64", backend="numpy", seed=0)
    x, y = np.random.default_rng(0).integers(0, 12, size=(20, 5)), np.arange(20) % 2
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    try:
        m.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[Stop()])
    except KeyboardInterrupt:
        pass
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.npz")
        m.save(path)
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    assert meta["resume"] is not None and meta["resume"]["batch"] == 2
    return arrays, meta


def model_npz(arrays, meta, compression=zipfile.ZIP_STORED):
    """A model file from its arrays and its metadata (a dict, or raw JSON bytes)."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    members = {k: npy(v) for k, v in arrays.items()}
    members["meta"] = npy(np.frombuffer(raw, np.uint8))
    return npz(members, compression)


# --- the child-process loader --------------------------------------------------------------------

def main(argv):
    kind, path = argv
    try:
        if kind == "arrays":                   # the safe reader alone, without load_data
            from fastrnn.datasets import imdb
            tokens, lengths = imdb._read_npz(path)["x_train"]
            print("OK", len(lengths), len(tokens), flush=True)
        elif kind == "data":
            from fastrnn.datasets import imdb
            (x, y), (xt, yt) = imdb.load_data(path, download=False)
            print("OK", len(x), len(xt), sum(map(len, x)), flush=True)
        else:
            from fastrnn import SimpleRNNClassifier
            m = SimpleRNNClassifier.load(path, backend="numpy")
            print("OK", m.dims, m.step_count, flush=True)
    except (ValueError, FileNotFoundError) as e:
        print(f"ERROR {type(e).__name__}: {e}", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
