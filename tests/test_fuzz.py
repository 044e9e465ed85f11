"""Damaged model files and malformed inputs: only the documented exceptions, never a crash of
another type, never code execution.

- ``SimpleRNNClassifier.load`` on mutated copies of a valid file raises ValueError (or loads a
  working model when the damage missed everything that matters);
- ``predict`` / ``fit`` on arbitrary arrays raise ValueError or TypeError, or succeed.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tempfile
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastrnn import SimpleRNNClassifier

# When a property fails, hypothesis' pytest plugin imports this module to suggest a patch; it pulls
# in libcst, whose import warns (mypy_extensions.TypedDict, DeprecationWarning), and under
# filterwarnings=error that warning becomes an INTERNALERROR hiding the real failure. Import it
# once here with the warning silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass

SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
V, D, H, C = 12, 3, 4, 3

_TMP = tempfile.mkdtemp(prefix="fastrnn-fuzz-")
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def _model(backend="numpy", vocab_size=V, seed=0):
    return SimpleRNNClassifier(vocab_size, D, H, C, dtype="float64", backend=backend, seed=seed)


def _valid_file():
    """The bytes of a valid model file (trained one epoch, saved mid-epoch state included)."""
    if not hasattr(_valid_file, "raw"):
        m = _model()
        x = np.random.default_rng(0).integers(0, V, size=(20, 5))
        m.fit(x, np.arange(20) % C, epochs=1, batch_size=4, verbose=0)
        path = os.path.join(_TMP, "valid.npz")
        m.save(path)
        with open(path, "rb") as f:
            _valid_file.raw = f.read()
        with np.load(path) as f:
            _valid_file.arrays = {k: f[k] for k in f.files}
    return _valid_file.raw


def _valid_arrays():
    """The arrays of the valid file, by name (a fresh dict)."""
    _valid_file()
    return dict(_valid_file.arrays)


def _load_bytes(raw, name="fuzzed.npz"):
    """``load`` on ``raw``: the model, or the ValueError it raised (any other exception fails)."""
    path = os.path.join(_TMP, name)
    with open(path, "wb") as f:
        f.write(raw)
    try:
        model = SimpleRNNClassifier.load(path, backend="numpy")
    except ValueError as e:
        assert str(path) in str(e)                  # the message names the file
        cause = e.__cause__
        event(f"refused: {type(cause).__name__ if cause else 'ValueError'}")
        return e
    event("loaded")
    # the damage missed what matters: the model must be whole and usable
    assert np.isfinite(model.theta).all()
    x = np.random.default_rng(1).integers(0, model.dims[0] or 1, size=(2, 3))
    if model.dims[0]:
        assert np.isfinite(model.predict_proba(x)).all()
    return model


def _npz(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# damaged files
# ------------------------------------------------------------------------------------------------

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(None)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
)


def _mutate(raw, mutations):
    raw = bytearray(raw)
    for kind, position, arg in mutations:
        i = position % max(len(raw), 1)
        if kind == "flip" and raw:
            raw[i] ^= arg
        elif kind == "insert":
            raw[i:i] = arg
        elif kind == "delete":
            del raw[i:i + arg]
        elif kind == "truncate":
            del raw[i:]
        elif kind == "overwrite":
            raw[i:i + len(arg)] = arg
    return bytes(raw)


@settings(max_examples=300, **SETTINGS)
@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_load_mutated_bytes(mutations):
    _load_bytes(_mutate(_valid_file(), mutations))


@settings(max_examples=150, **SETTINGS)
@given(mutations=st.lists(_mutation, min_size=1, max_size=3), region=st.sampled_from(
    ["header", "directory"]))
def test_load_mutated_zip_structure(mutations, region):
    """Damage aimed at the zip's local headers or central directory (flags, sizes, methods)."""
    raw = _valid_file()
    start = raw.index(b"PK\x01\x02") if region == "directory" else 0
    span = len(raw) - start if region == "directory" else 200
    aimed = [(kind, start + position % span, arg) for kind, position, arg in mutations]
    _load_bytes(_mutate(raw, aimed))


def _meta():
    return json.loads(_valid_arrays()["meta"].tobytes())


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                       children, max_size=3),
    max_leaves=8)


@settings(max_examples=200, **SETTINGS)
@given(path=st.lists(st.sampled_from(["config", "optimizer", "rng", "resume", "history",
                                      "step_count", "epoch", "format_version", "vocab_size",
                                      "embed_dim", "dtype", "seed", "maxlen", "state",
                                      "learning_rate", "batch", "loss", "name"]),
                     min_size=1, max_size=3),
       value=_json)
def test_load_mutated_metadata(path, value):
    """Valid zip and arrays, metadata JSON with one field (at any depth) replaced by junk."""
    meta = _meta()
    node = meta
    for key in path[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            break
        node = child
    if isinstance(node, dict):
        node[path[-1]] = value
    arrays = _valid_arrays()
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    _load_bytes(_npz(**arrays))


_replacement = st.one_of(
    hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_,
                                np.complex128, "U3"]),
               hnp.array_shapes(min_dims=0, max_dims=3, max_side=40)),
    hnp.arrays("V4", st.integers(0, 5), elements=st.binary(min_size=4, max_size=4)),
    st.just(np.zeros((0,))),
    st.just(np.zeros((10, 0, 3))),
)


@settings(max_examples=150, **SETTINGS)
@given(name=st.sampled_from(["theta", "s1", "s2", "meta", "extra"]), array=_replacement,
       drop=st.sampled_from([None, "theta", "s1", "s2", "meta"]))
def test_load_wrong_arrays(name, array, drop):
    """Arrays of other shapes and dtypes, extra and missing arrays."""
    arrays = _valid_arrays()
    arrays[name] = array
    if drop is not None:
        arrays.pop(drop, None)
    _load_bytes(_npz(**arrays))


class _Payload:
    """Unpickling this creates the directory ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("name", ["theta", "meta", "s2", "extra"])
def test_pickle_payload_never_runs(tmp_path, name):
    marker = tmp_path / "pwned"
    arrays = _valid_arrays()
    arrays[name] = np.array([_Payload(str(marker)), 1], dtype=object)
    raw = _npz(**arrays)
    with pytest.raises(ValueError, match="Python objects|pickle|a model file has"):
        SimpleRNNClassifier.load(_write(tmp_path / "m.npz", raw), backend="numpy")
    assert not marker.exists()
    # the payload is real: unpickling it does create the directory
    with np.load(tmp_path / "m.npz", allow_pickle=True) as f:
        f[name]
    assert marker.exists()


def _write(path, raw):
    path.write_bytes(raw)
    return path


def test_not_a_zip_and_zip_of_other_things(tmp_path):
    for raw in [b"", b"PK", b"\x93NUMPY", os.urandom(500), _valid_file()[:100]]:
        with pytest.raises(ValueError):
            SimpleRNNClassifier.load(_write(tmp_path / "m.npz", raw), backend="numpy")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("theta.npy", b"\x93NUMPY\x01\x00" + b"\x00" * 20)
        z.writestr("README.txt", "hello")
    with pytest.raises(ValueError, match="not a .npy array"):
        SimpleRNNClassifier.load(_write(tmp_path / "m.npz", buf.getvalue()), backend="numpy")


@pytest.mark.parametrize("shape", [(10**12,), (2**62, 4), (10**6, 10**6)])
def test_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path, shape):
    """A .npy header may claim any shape; nothing is allocated before it is checked."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, a in _valid_arrays().items():
            member = io.BytesIO()
            if name == "meta":
                np.lib.format.write_array_header_1_0(
                    member, {"descr": "|u1", "fortran_order": False, "shape": shape})
                member.write(a.tobytes())
            else:
                np.save(member, a)
            z.writestr(name + ".npy", member.getvalue())
    with pytest.raises(ValueError, match="declares"):
        SimpleRNNClassifier.load(_write(tmp_path / "m.npz", buf.getvalue()), backend="numpy")


# ------------------------------------------------------------------------------------------------
# malformed inputs
# ------------------------------------------------------------------------------------------------

_dtypes = st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64,
                           np.float16, np.float32, np.float64, np.bool_, np.complex64, "U2",
                           "datetime64[s]", object])
_elements = {
    "f": st.floats(allow_nan=True, allow_infinity=True, width=16),
}


def _array(dtype):
    kind = np.dtype(dtype).kind
    if kind == "O":
        return hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
                          elements=st.one_of(st.integers(-5, 20), st.none(), st.text(max_size=2),
                                             st.lists(st.integers(0, 5), max_size=3)))
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
                      elements=_elements.get(kind))


_valid_ids = hnp.arrays(st.sampled_from([np.int64, np.int32, np.uint8, np.int16]),
                       st.tuples(st.integers(1, 6), st.integers(1, 6)),
                       elements=st.integers(0, V - 1))
_dense = hnp.arrays(st.sampled_from([np.float64, np.float32, np.float16]),
                    st.tuples(st.integers(0, 5), st.integers(0, 5), st.sampled_from([D, D, 1])),
                    elements=st.floats(-1e3, 1e3, width=16))
_inputs = st.one_of(
    _valid_ids, _valid_ids, _dense, _dense,
    _dtypes.flatmap(_array),
    hnp.arrays(np.int64, st.tuples(st.integers(0, 6), st.integers(0, 6)),
               elements=st.integers(-3, V + 3)),                     # near-valid ids
    hnp.arrays(np.int64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
               elements=st.sampled_from([0, 1, V - 1, 2**31, 2**40, -(2**63)])),
    hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4), st.just(D)),
               elements=st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, 1e300, 3e38, 1e-320])),
    st.lists(st.lists(st.integers(-2, V + 2), max_size=5), max_size=5),   # maybe ragged
    st.lists(st.floats(), max_size=4),
    st.none(), st.integers(), st.text(max_size=4),
)


def _labels(n):
    """Labels for ``n`` samples: mostly the right length, sometimes anything."""
    return st.one_of(
        hnp.arrays(st.sampled_from([np.int64, np.int8, np.uint64, np.bool_]), st.just(n),
                   elements=st.integers(0, 1)),
        hnp.arrays(np.int64, st.just(n), elements=st.integers(-2, C + 1)),
        hnp.arrays(np.float64, st.just(n), elements=st.sampled_from([0.0, 1.0, 2.0, 0.5, np.nan])),
        hnp.arrays(st.sampled_from([np.int64, np.float64, np.bool_]),
                   hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)),
        st.lists(st.integers(-1, C), max_size=6),
        st.none(),
    )


def _length(x):
    try:
        return max(len(x), 0)
    except TypeError:
        return 1


def _check_predictions(m, x, p):
    assert p.ndim == 2 and p.shape[1] == C and p.shape[0] >= 1
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-9)


@settings(max_examples=150, **SETTINGS)
@given(x=_inputs, backend=st.sampled_from(["numpy", "numba"]), dense=st.booleans())
def test_predict_malformed_inputs(x, backend, dense):
    m = _model(backend, vocab_size=None if dense else V)
    try:
        p = m.predict_proba(x, batch_size=4)
    except (ValueError, TypeError) as e:
        event(f"refused: {type(e).__name__}")
        return
    event("predicted")
    _check_predictions(m, x, p)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), x=_inputs, backend=st.sampled_from(["numpy", "numba"]),
       dense=st.booleans())
def test_fit_malformed_inputs(data, x, backend, dense):
    y = data.draw(_labels(_length(x)))
    m = _model(backend, vocab_size=None if dense else V)
    before = m.theta.copy()
    try:
        m.fit(x, y, epochs=1, batch_size=3, verbose=0)
    except (ValueError, TypeError) as e:
        event(f"refused: {type(e).__name__}")
        np.testing.assert_array_equal(m.theta, before)      # refused before any step
        assert m.step_count == 0
        return
    event("trained")
    assert m.step_count >= 1 and np.isfinite(m.theta).all()
