"""The NumPy reference of each layer of ``fastrnn.layers``: the specification of its maths.

One forward and one backward function per op, plain vectorised NumPy over the batch with one loop
over time; ``fastrnn.kernels`` computes the same functions with the same names, arguments and
results. Shapes::

    B batch   T time   V vocabulary   D input   H units   C outputs   (...) any leading axes

    ids   (B, T) int token ids              x    (B, T, D) a recurrent layer's inputs
    mask  (B, T) bool, True where the step is real (False: padding, token 0 with ``mask_zero``)
    hs    (B, T, H) states by sequence position: hs[:, s] = the state after the step that read
          position s (in both directions); the state before the first step is h_0 = 0

The recurrent layer (Keras' SimpleRNN; weights ``kernel (D, H)``, ``recurrent_kernel (H, H)``,
``bias (H,)``). Step ``t`` reads position ``s = t`` of the sequence, or ``s = T - 1 - t`` with
``go_backwards`` (Keras reverses the inputs and the mask together)::

    a_t = x[:, s] @ kernel + (h_{t-1} * r) @ recurrent_kernel + bias      r: the recurrent dropout
    h_t = act(a_t)  (tanh or relu)         h_t = h_{t-1} where mask[:, s] is False (carried)

Input dropout is applied to ``x`` before the layer (``dropout_forward``: one mask per sequence and
feature, the same at every step, as Keras' cell does); recurrent dropout ``r (B, H)`` is one mask
per sequence too, fixed over time.

The state before the first step is ``initial_state (B, H)``, 0 when None: a stateful layer passes
each sample's final state of the last batch (Keras' ``stateful=True``). The gradient never flows
into ``initial_state``: it stops at the batch boundary, which is truncated BPTT over a stream cut
into windows (PyTorch's word_language_model detaching its hidden state).

Truncated BPTT (``bptt_truncate=k``; None: full): the gradient flows back through the last ``k``
state updates of each sequence and stops; masked steps pass it on unchanged and do not count.
Both truncations combine: within a window the gradient goes back at most ``k`` updates, and never
past the window's first step.
Gradients arriving at steps before those ``k`` updates (per-step outputs) are dropped with them:
the truncated gradient is the exact gradient with everything before the last ``k`` updates of
each sequence held constant. With ``k >= T`` it is the full gradient.
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("linear", "sigmoid", "softmax", "relu", "tanh")
RNN_ACTIVATIONS = ("tanh", "relu")


# ---------------------------------------------------------------------------------------------
# Embedding
# ---------------------------------------------------------------------------------------------

def embedding_forward(E, ids):
    """``x = E[ids]``: ``(B, T, D)`` from ``E (V, D)`` and ``ids (B, T)``."""
    return E[ids]


def embedding_backward(dx, ids, V):
    """``dE (V, D)``: the rows of ``dx (B, T, D)`` added into the rows their ids name."""
    dE = np.zeros((V, dx.shape[-1]), dx.dtype)
    np.add.at(dE, ids, dx)
    return dE


# ---------------------------------------------------------------------------------------------
# SimpleRNN
# ---------------------------------------------------------------------------------------------

def _positions(T, go_backwards):
    """The sequence positions in the order the steps read them."""
    return list(range(T - 1, -1, -1)) if go_backwards else list(range(T))


def simple_rnn_forward(x, kernel, recurrent_kernel, bias, mask=None, activation="tanh",
                       go_backwards=False, recurrent_dropout=None, initial_state=None):
    """The recurrence over ``x (B, T, D)``; returns ``hs (B, T, H)`` by sequence position.

    ``mask (B, T)`` bool or None; ``recurrent_dropout (B, H)`` multiplier of the previous state, or
    None; ``initial_state (B, H)`` or None (zeros).
    """
    B, T, _ = x.shape
    H = recurrent_kernel.shape[0]
    hs = np.zeros((B, T, H), x.dtype)
    h = np.zeros((B, H), x.dtype) if initial_state is None else initial_state.astype(x.dtype)
    for s in _positions(T, go_backwards):
        h_in = h if recurrent_dropout is None else h * recurrent_dropout
        a = x[:, s] @ kernel + h_in @ recurrent_kernel + bias
        new = np.tanh(a) if activation == "tanh" else np.maximum(a, 0)
        h = new if mask is None else np.where(mask[:, s, None], new, h)
        hs[:, s] = h
    return hs


def simple_rnn_backward(dhs, x, hs, kernel, recurrent_kernel, mask=None, activation="tanh",
                        go_backwards=False, recurrent_dropout=None, bptt_truncate=None,
                        initial_state=None):
    """Backpropagate through ``simple_rnn_forward``.

    ``dhs`` is d loss / d hs from the layer's outputs: ``(B, T, H)`` like ``hs``, or ``(B, H)``
    for a layer whose output is its final state only. Returns ``dx (B, T, D)``,
    ``dkernel (D, H)``, ``drecurrent_kernel (H, H)``, ``dbias (H,)``.
    """
    B, T, _ = x.shape
    last_only = dhs.ndim == 2
    if mask is None:
        mask = np.ones((B, T), dtype=bool)
    left = np.full(B, T if bptt_truncate is None else bptt_truncate)   # updates left to go through
    dx = np.zeros_like(x)
    dkernel, drecurrent = np.zeros_like(kernel), np.zeros_like(recurrent_kernel)
    dbias = np.zeros(recurrent_kernel.shape[0], x.dtype)
    dh = dhs.copy() if last_only else np.zeros_like(dhs[:, 0])
    positions = _positions(T, go_backwards)
    for t in reversed(range(T)):
        s = positions[t]
        if not last_only:
            dh = dh + dhs[:, s]
        update = mask[:, s] & (left > 0)          # rows whose step t is a counted state update
        h = hs[:, s]
        if t > 0:
            h_prev = hs[:, positions[t - 1]]
        else:
            h_prev = np.zeros_like(h) if initial_state is None else initial_state.astype(x.dtype)
        if recurrent_dropout is not None:
            h_prev = h_prev * recurrent_dropout
        dact = 1 - h ** 2 if activation == "tanh" else (h > 0).astype(x.dtype)
        da = dh * dact * update[:, None]
        dkernel += x[:, s].T @ da
        drecurrent += h_prev.T @ da
        dbias += da.sum(axis=0)
        dx[:, s] = da @ kernel.T
        dh_prev = da @ recurrent_kernel.T
        if recurrent_dropout is not None:
            dh_prev = dh_prev * recurrent_dropout
        # an update passes the gradient on through the weights; a masked step copies h, so it
        # passes dh on unchanged; a row that has used up its k updates stops here
        dh = np.where(update[:, None], dh_prev, np.where(mask[:, s, None], 0, dh))
        left = left - update
    return dx, dkernel, drecurrent, dbias


def embedding_rnn_forward(E, ids, kernel, recurrent_kernel, bias, mask=None, activation="tanh",
                          go_backwards=False, recurrent_dropout=None, initial_state=None):
    """An Embedding feeding a SimpleRNN as one op: ``simple_rnn_forward(E[ids], ...)``."""
    return simple_rnn_forward(embedding_forward(E, ids), kernel, recurrent_kernel, bias, mask,
                              activation, go_backwards, recurrent_dropout, initial_state)


def embedding_rnn_backward(dhs, ids, E, hs, kernel, recurrent_kernel, mask=None,
                           activation="tanh", go_backwards=False, recurrent_dropout=None,
                           bptt_truncate=None, initial_state=None):
    """The backward pass of ``embedding_rnn_forward``: ``(rows, dE_rows, dkernel,
    drecurrent_kernel, dbias)``, where ``rows = np.unique(ids)`` are the embedding rows with a
    gradient and ``dE_rows (len(rows), D)`` theirs (every other row's is 0)."""
    dx, dkernel, drecurrent, dbias = simple_rnn_backward(
        dhs, embedding_forward(E, ids), hs, kernel, recurrent_kernel, mask, activation,
        go_backwards, recurrent_dropout, bptt_truncate, initial_state)
    rows = np.unique(ids)
    return rows, embedding_backward(dx, ids, E.shape[0])[rows], dkernel, drecurrent, dbias


def rnn_outputs(hs, mask=None, return_sequences=False, go_backwards=False, zero_masked=False):
    """A recurrent layer's output from its states: the final state ``(B, H)``, or with
    ``return_sequences`` every state ``(B, T, H)`` in processing order (reversed for
    ``go_backwards``, as Keras returns it). ``zero_masked``: masked steps output 0 instead of the
    carried state (Keras' ``zero_output_for_mask``, which Bidirectional sets for sequence
    outputs)."""
    if not return_sequences:
        return hs[:, 0] if go_backwards else hs[:, -1]
    y = hs * mask[:, :, None] if zero_masked and mask is not None else hs
    return y[:, ::-1] if go_backwards else y


def rnn_outputs_backward(dy, mask=None, return_sequences=False, go_backwards=False,
                         zero_masked=False):
    """The ``dhs`` for ``simple_rnn_backward`` from the gradient ``dy`` of ``rnn_outputs``."""
    if not return_sequences:
        return dy
    d = dy[:, ::-1] if go_backwards else dy
    if zero_masked and mask is not None:
        d = d * mask[:, :, None]
    return np.ascontiguousarray(d)


# ---------------------------------------------------------------------------------------------
# Dense, activations, dropout
# ---------------------------------------------------------------------------------------------

def dense_forward(x, kernel, bias):
    """``z = x @ kernel + bias`` over the last axis of ``x (..., D)``: ``(..., C)``."""
    return x @ kernel + bias


def dense_backward(dz, x, kernel):
    """Returns ``dx (..., D)``, ``dkernel (D, C)``, ``dbias (C,)``."""
    D, C = kernel.shape
    dz2, x2 = dz.reshape(-1, C), x.reshape(-1, D)
    return dz @ kernel.T, x2.T @ dz2, dz2.sum(axis=0)


def activation_forward(z, activation):
    """``activation(z)`` elementwise (softmax over the last axis)."""
    if activation == "sigmoid":
        e = np.exp(-np.abs(z))                     # never overflows
        return np.where(z >= 0, 1, e) / (1 + e)
    if activation == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if activation == "relu":
        return np.maximum(z, 0)
    if activation == "tanh":
        return np.tanh(z)
    return z


def activation_backward(dy, y, activation):
    """d loss / d z from ``dy = d loss / d y`` and the output ``y = activation(z)``."""
    if activation == "sigmoid":
        return dy * y * (1 - y)
    if activation == "softmax":
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    if activation == "relu":
        return dy * (y > 0)
    if activation == "tanh":
        return dy * (1 - y ** 2)
    return dy


def dropout_forward(x, keep, rate):
    """Inverted dropout: ``x * keep / (1 - rate)`` with ``keep`` a 0/1 mask broadcast to ``x``."""
    return x * (keep / (1 - rate)).astype(x.dtype)


def dropout_backward(dy, keep, rate):
    return dy * (keep / (1 - rate)).astype(dy.dtype)


def merge_forward(y_forward, y_backward, mode):
    """Bidirectional's merge of the two directions' outputs (both in the input's time order)."""
    if mode == "concat":
        return np.concatenate((y_forward, y_backward), axis=-1)
    if mode == "sum":
        return y_forward + y_backward
    if mode == "ave":
        return (y_forward + y_backward) / 2
    return y_forward * y_backward


def merge_backward(dy, y_forward, y_backward, mode):
    """The gradients of the two directions' outputs from ``dy``."""
    if mode == "concat":
        H = y_forward.shape[-1]
        return dy[..., :H], dy[..., H:]
    if mode == "sum":
        return dy, dy
    if mode == "ave":
        return dy / 2, dy / 2
    return dy * y_backward, dy * y_forward
