"""Argument checks shared by both backends and the model. Each raises a TypeError or ValueError that
names the argument and says what was expected; the kernels run without bounds checks, so everything
they index with is checked here first."""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def dtype(value, name="dtype"):
    """``value`` as float32 or float64, else ValueError."""
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {value!r}")
    return dt


def floats(name, a, ndim, dt=None):
    """A float32/float64 array with ``ndim`` dimensions (of dtype ``dt`` when given)."""
    if dt is None and ndim and isinstance(a, np.ndarray) and a.dtype.kind != "f":
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if dt is not None and a.dtype != dt:
        raise TypeError(f"{name} must have dtype {np.dtype(dt)} like the parameters, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def shape(name, a, expected):
    """``a.shape == expected`` (None in ``expected`` matches any size)."""
    if len(a.shape) != len(expected) or any(e is not None and s != e for s, e in zip(a.shape, expected)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")


def token_ids(x, vocab_size, name="x"):
    """Integer token ids ``(B, T)`` with every id in ``[0, vocab_size)``, B >= 1 and T >= 1."""
    x = np.asarray(x)
    if x.dtype == object:
        raise ValueError(f"{name} must be a rectangular (B, T) array of token ids; got ragged "
                         "sequences: pad them first with fastrnn.preprocessing.pad_sequences")
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token ids, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, time) of token ids, got shape {x.shape}")
    nonempty(name, x)
    lo, hi = x.min(), x.max()
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} has token id {bad} outside [0, {vocab_size}) (vocab_size={vocab_size})")
    return x


def dense_inputs(x, D, dt, name="x"):
    """Dense inputs ``(B, T, D)``, finite."""
    floats(name, x, 3, dt)
    shape(name, x, (None, None, D))
    nonempty(name, x)
    if not np.isfinite(x.sum(dtype=np.float64)) and not np.isfinite(x).all():   # sum: fast path
        raise ValueError(f"{name} contains NaN or inf")
    return x


def nonempty(name, x):
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B=0); need at least one sequence")
    if x.ndim > 1 and x.shape[1] == 0:
        raise ValueError(f"{name} has no time steps (T=0); need at least one")


def labels(y, batch, num_classes, name="y"):
    """Integer class labels ``(B,)`` in ``[0, num_classes)``."""
    y = np.asarray(y)
    if y.dtype == bool:                   # as int64: a bool array would index as a mask
        y = y.astype(np.int64)
    if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        bad = y[(y < 0) | (y >= num_classes)]        # whole-number floats: range first, then cast
        if bad.size:
            raise ValueError(f"{name} has label {bad[0]:g} outside [0, {num_classes})")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},) to match x, got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = y.min() if y.min() < 0 else y.max()
        raise ValueError(f"{name} has label {bad} outside [0, {num_classes})")
    return y


def truncate(k):
    """``bptt_truncate``: None (full BPTT) or an integer >= 1."""
    if k is None:
        return None
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"bptt_truncate must be None or a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"bptt_truncate must be None or >= 1, got {k}")
    return int(k)


def buffer(name, a, like):
    """A flat float buffer with ``like``'s dtype and size (gradient, optimizer state)."""
    floats(name, a, 1, like.dtype)
    if a.size != like.size:
        raise ValueError(f"{name} must have {like.size} elements like theta, got {a.size}")
    return a


def model_batch(theta, dims, x, y=None):
    """Check a call on the whole classifier; return ``(x, y)`` as arrays.

    ``theta`` is the flat buffer for ``dims = (V, D, H, C)``; ``x`` holds token ids ``(B, T)`` when
    ``V > 0``, dense inputs ``(B, T, D)`` otherwise; ``y`` (optional) holds class labels.
    """
    from .layout import size

    floats("theta", theta, 1)
    V, D, H, C = dims
    if min(D, H, C) < 1 or V < 0 or C < 2:
        raise ValueError(f"dims (V, D, H, C) must have D, H >= 1, C >= 2 and V >= 0, got {dims}")
    if theta.size != size(dims):
        raise ValueError(f"theta must have {size(dims)} elements for dims {tuple(dims)}, got {theta.size}")
    x = token_ids(x, V) if V else dense_inputs(x, D, theta.dtype)
    if y is not None:
        y = labels(y, x.shape[0], C)
    return x, y


def rnn_args(x, W_xh, W_hh, b_h, mask=None):
    """Check the arguments of ``rnn_forward`` / ``rnn_backward``; return the mask as bool or None."""
    floats("x", x, 3)
    dt = x.dtype
    B, T, D = x.shape
    nonempty("x", x)
    floats("W_xh", W_xh, 2, dt)
    H = W_xh.shape[1]
    shape("W_xh", W_xh, (D, H))
    floats("W_hh", W_hh, 2, dt)
    shape("W_hh", W_hh, (H, H))
    if b_h is not None:
        floats("b_h", b_h, 1, dt)
        shape("b_h", b_h, (H,))
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask must be a boolean array, got dtype {mask.dtype}")
    shape("mask", mask, (B, T))
    return mask


def rnn_backward_args(dh, x, hs, W_xh, W_hh, mask, bptt_truncate):
    """Check ``rnn_backward``'s arguments; return ``(mask, k)``."""
    mask = rnn_args(x, W_xh, W_hh, None, mask)
    B, T, _ = x.shape
    H = W_hh.shape[0]
    floats("dh", dh, 2, x.dtype)
    shape("dh", dh, (B, H))
    floats("hs", hs, 3, x.dtype)
    shape("hs", hs, (T + 1, B, H))
    return mask, truncate(bptt_truncate)


def logits_labels(logits, y):
    """Check ``softmax_xent``'s arguments; return ``y`` as an integer array."""
    floats("logits", logits, 2)
    nonempty("logits", logits)
    return labels(y, logits.shape[0], logits.shape[1])


def optimizer(kind, hyper):
    """An optimizer kind and hyperparameter vector from ``fastrnn.optim``; return ``hyper`` as
    float64."""
    from .optim import KINDS, N_HYPER

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (fastrnn.optim SGD, RMSprop, Adam), got {kind!r}")
    hyper = np.asarray(hyper, dtype=np.float64)
    if hyper.shape != (N_HYPER,):
        raise ValueError(f"hyper must have shape ({N_HYPER},) (Optimizer.hyper()), got {hyper.shape}")
    return hyper


def train_step_args(theta, grad, s1, s2, dims, x, y, kind, hyper, bptt_truncate):
    """Check ``train_step``'s arguments; return ``(x, y, hyper, k)``."""
    x, y = model_batch(theta, dims, x, y)
    for name, a in (("grad", grad), ("s1", s1), ("s2", s2)):
        buffer(name, a, theta)
    for name, a in (("theta", theta), ("grad", grad), ("s1", s1), ("s2", s2)):
        inplace(name, a)
    return x, y, optimizer(kind, hyper), truncate(bptt_truncate)


def update_bounds(bounds):
    """``train_step``'s ``bounds``: None, or a writable float64 array of shape (3,)."""
    if bounds is None:
        return None
    if not isinstance(bounds, np.ndarray) or bounds.dtype != np.float64 or bounds.shape != (3,):
        raise TypeError("bounds must be None or a float64 array of shape (3,), got "
                        f"{getattr(bounds, 'dtype', type(bounds).__name__)} "
                        f"{getattr(bounds, 'shape', '')}")
    inplace("bounds", bounds)
    return bounds


def inplace(name, a):
    """An array the call updates in place: writable and C-contiguous."""
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"{name} is updated in place and must be a writable C-contiguous array")


def layer_rnn_args(x, kernel, recurrent_kernel, bias, mask, activation, recurrent_dropout,
                   initial_state=None):
    """The arguments of ``simple_rnn_forward`` / ``_backward``; returns the mask (bool or None)."""
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError(f"x must be a (B, T, D) array, got {getattr(x, 'shape', type(x))}")
    floats("x", x, 3)
    B, T, D = x.shape
    floats("kernel", kernel, 2, x.dtype)
    H = kernel.shape[1]
    shape("kernel", kernel, (D, H))
    floats("recurrent_kernel", recurrent_kernel, 2, x.dtype)
    shape("recurrent_kernel", recurrent_kernel, (H, H))
    if bias is not None:
        floats("bias", bias, 1, x.dtype)
        shape("bias", bias, (H,))
    if activation not in ("tanh", "relu"):
        raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
    if recurrent_dropout is not None:
        floats("recurrent_dropout", recurrent_dropout, 2, x.dtype)
        shape("recurrent_dropout", recurrent_dropout, (B, H))
    if initial_state is not None:
        floats("initial_state", initial_state, 2, x.dtype)
        shape("initial_state", initial_state, (B, H))
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"mask must be a bool array, got dtype {mask.dtype}")
        shape("mask", mask, (B, T))
    return mask


def layer_rnn_states(hs, dhs, B, T, H):
    """``hs (B, T, H)`` and its gradient ``dhs``: ``(B, T, H)``, or ``(B, H)`` (final state)."""
    shape("hs", hs, (B, T, H))
    shape("dhs", dhs, (B, H) if dhs.ndim == 2 else (B, T, H))
