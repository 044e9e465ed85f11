"""The recurrent layer ops and ``Sequential`` stacks against ``torch.nn.RNN`` (CPU, float64):
outputs and gradients w.r.t. every weight and the inputs, for stacked, bidirectional and relu
layers, and masked (right-padded) sequences against torch's packed sequences.

Skipped when torch is not installed. The mapping of parameters (fastrnn / Keras -> torch), for
layer ``k`` and, in the backward direction, the suffix ``_reverse``::

    weight_ih_l{k} (H, D) = kernel.T     weight_hh_l{k} (H, H) = recurrent_kernel.T
    bias_ih_l{k}   (H,)   = bias         bias_hh_l{k}   (H,)   = 0      (torch adds the two)

torch's bidirectional output at time ``t`` is ``[forward h_t, backward h_t]`` aligned in input
time: Keras' ``Bidirectional(SimpleRNN(..., return_sequences=True), merge_mode="concat")``, whose
backward sequence is re-reversed before the merge. Stacking such layers is torch's
``num_layers``.

Tolerance: both sides compute the same float64 arithmetic in different orders, so they agree to
rounding (about 1e-15 relative on these tiny sizes); ``rtol = 1e-10`` with ``atol = 1e-12`` for
entries near 0 leaves a wide margin and still catches any wrong term.
"""

import numpy as np
import pytest

from fastrnn import layers as L
from fastrnn.models import Sequential
from fastrnn.reference import layers as ref

torch = pytest.importorskip("torch")

F64 = np.float64
RTOL, ATOL = 1e-10, 1e-12
B, T, D, H, C = 3, 5, 3, 4, 2


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=F64))


def close(actual, desired, what):
    actual, desired = np.asarray(actual, F64), np.asarray(desired, F64)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    diff = float(np.abs(actual - desired).max())
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=ATOL,
                               err_msg=f"{what}: max abs diff {diff:.3e}")


# ---------------------------------------------------------------------------------------------
# weights: fastrnn's per layer and direction (kernel, recurrent_kernel, bias) <-> torch's
# ---------------------------------------------------------------------------------------------

def random_weights(rng, num_layers, bidirectional, activation):
    """``[layer][direction] = (kernel (D_in, H), recurrent_kernel (H, H), bias (H,))``."""
    dirs = 2 if bidirectional else 1
    weights = []
    for k in range(num_layers):
        D_in = D if k == 0 else H * dirs
        shift = 0.3 if activation == "relu" else 0.0           # keep relu units alive
        weights.append([(0.6 * rng.standard_normal((D_in, H)), 0.4 * rng.standard_normal((H, H)),
                         0.3 * rng.standard_normal(H) + shift) for _ in range(dirs)])
    return weights


def torch_rnn(weights, activation):
    """``torch.nn.RNN`` (float64, batch_first) holding ``weights``."""
    num_layers, dirs = len(weights), len(weights[0])
    rnn = torch.nn.RNN(D, H, num_layers=num_layers, nonlinearity=activation, bias=True,
                       batch_first=True, bidirectional=dirs == 2).double()
    with torch.no_grad():
        for k, layer in enumerate(weights):
            for d, (kernel, recurrent, bias) in enumerate(layer):
                suffix = f"l{k}" + ("_reverse" if d else "")
                getattr(rnn, f"weight_ih_{suffix}").copy_(t(kernel.T))
                getattr(rnn, f"weight_hh_{suffix}").copy_(t(recurrent.T))
                getattr(rnn, f"bias_ih_{suffix}").copy_(t(bias))
                getattr(rnn, f"bias_hh_{suffix}").zero_()
    return rnn


def torch_grads(rnn, num_layers, dirs):
    """torch's gradients in fastrnn's layout: ``[layer][direction] = (dkernel, drecurrent,
    dbias)``; d bias is the gradient of ``bias_ih`` (equal to that of ``bias_hh``)."""
    out = []
    for k in range(num_layers):
        layer = []
        for d in range(dirs):
            suffix = f"l{k}" + ("_reverse" if d else "")
            g = lambda name: getattr(rnn, f"{name}_{suffix}").grad.numpy()   # noqa: E731
            np.testing.assert_allclose(g("bias_ih"), g("bias_hh"), rtol=1e-13, atol=1e-15)
            layer.append((g("weight_ih").T, g("weight_hh").T, g("bias_ih")))
        out.append(layer)
    return out


# ---------------------------------------------------------------------------------------------
# the reference stack: simple_rnn_forward / backward per layer and direction, concat merge
# ---------------------------------------------------------------------------------------------

def final_state(hs, go_backwards):
    """The state after the last step of ``hs (B, T, H)`` (by sequence position): that of
    position ``T - 1``, or of position 0 with ``go_backwards``."""
    return hs[:, 0] if go_backwards else hs[:, -1]


def reference_stack_forward(x, weights, activation, mask=None):
    """Outputs ``(B, T, H * directions)`` of the stack and the caches for the backward pass."""
    caches = []
    h = x
    for layer in weights:
        ys, layer_cache = [], []
        for d, (kernel, recurrent, bias) in enumerate(layer):
            go_backwards = d == 1
            hs = ref.simple_rnn_forward(h, kernel, recurrent, bias, mask, activation, go_backwards)
            # Bidirectional zeroes the masked steps of sequence outputs (Keras)
            y = ref.rnn_outputs(hs, mask, True, go_backwards, zero_masked=len(layer) == 2)
            ys.append(y[:, ::-1] if go_backwards else y)
            layer_cache.append((h, hs))
        caches.append((layer_cache, ys))
        h = ys[0] if len(ys) == 1 else ref.merge_forward(ys[0], ys[1], "concat")
    return h, caches


def reference_stack_backward(dy, weights, caches, activation, mask=None):
    """``dx (B, T, D)`` and the gradients ``[layer][direction] = (dkernel, drecurrent, dbias)``."""
    grads = [None] * len(weights)
    for k in reversed(range(len(weights))):
        layer_cache, ys = caches[k]
        dys = [dy] if len(ys) == 1 else list(ref.merge_backward(dy, ys[0], ys[1], "concat"))
        dx, layer_grads = 0, []
        for d, (kernel, recurrent, _) in enumerate(weights[k]):
            go_backwards = d == 1
            h, hs = layer_cache[d]
            dyd = dys[d][:, ::-1] if go_backwards else dys[d]
            dhs = ref.rnn_outputs_backward(dyd, mask, True, go_backwards,
                                           zero_masked=len(ys) == 2)
            dh, dk, dr, db = ref.simple_rnn_backward(dhs, h, hs, kernel, recurrent, mask,
                                                     activation, go_backwards)
            dx = dx + dh
            layer_grads.append((dk, dr, db))
        grads[k] = layer_grads
        dy = dx
    return dy, grads


CASES = [
    pytest.param(2, False, "tanh", id="2layer-unidirectional-tanh"),
    pytest.param(2, True, "tanh", id="2layer-bidirectional-tanh"),
    pytest.param(2, False, "relu", id="2layer-unidirectional-relu"),
    pytest.param(2, True, "relu", id="2layer-bidirectional-relu"),
    pytest.param(1, True, "tanh", id="1layer-bidirectional-tanh"),
]


def torch_run(rnn, x, G, lengths=None):
    """``(outputs, h_n, dx)`` of ``sum(G * outputs)`` through ``rnn``, packed for ``lengths``."""
    xt = t(x).requires_grad_(True)
    if lengths is None:
        out, h_n = rnn(xt)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths),
                                                         batch_first=True, enforce_sorted=False)
        out, h_n = rnn(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    (out * t(G)).sum().backward()
    return out.detach().numpy(), h_n.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("num_layers,bidirectional,activation", CASES)
def test_reference_ops_match_torch_rnn(rng, num_layers, bidirectional, activation):
    """Outputs, final states, and the gradients of ``sum(G * outputs)`` w.r.t. the inputs and every
    weight: a stack of reference ops against ``torch.nn.RNN(num_layers, bidirectional)``."""
    dirs = 2 if bidirectional else 1
    weights = random_weights(rng, num_layers, bidirectional, activation)
    x = rng.standard_normal((B, T, D))
    G = rng.standard_normal((B, T, H * dirs))
    rnn = torch_rnn(weights, activation)
    out, h_n, dx_torch = torch_run(rnn, x, G)

    y, caches = reference_stack_forward(x, weights, activation)
    close(y, out, "outputs")
    for k in range(num_layers):                    # h_n: (layers * directions, B, H)
        for d in range(dirs):
            close(final_state(caches[k][0][d][1], d == 1), h_n[k * dirs + d],
                  f"h_n layer {k} direction {d}")
            close(ref.rnn_outputs(caches[k][0][d][1], None, False, d == 1), h_n[k * dirs + d],
                  f"rnn_outputs(return_sequences=False) layer {k} direction {d}")
    if activation == "relu":                       # the relu case exercises both branches
        assert (y == 0).any() and (y > 0).any()
    dx, grads = reference_stack_backward(G, weights, caches, activation)
    close(dx, dx_torch, "dx")
    for k, layer in enumerate(torch_grads(rnn, num_layers, dirs)):
        for d, expected in enumerate(layer):
            for name, a, b in zip(("dkernel", "drecurrent_kernel", "dbias"), grads[k][d],
                                  expected):
                close(a, b, f"{name} layer {k} direction {d}")


@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidirectional", "bidirectional"])
def test_right_padded_mask_matches_torch_packed_sequences(rng, bidirectional):
    """A mask of right padding (Keras ``padding="post"``) against ``pack_padded_sequence``:
    the forward direction carries its state over the padding, the backward one starts at the last
    real step; torch's padded outputs are 0, as Bidirectional's zeroed masked sequence outputs.
    (Unidirectional: the carried outputs at padded steps differ from torch's zeros by design, so
    only the real steps are compared there and the loss ignores the padded ones.)"""
    dirs = 2 if bidirectional else 1
    weights = random_weights(rng, 2, bidirectional, "tanh")
    lengths = [T, 2, T - 1]
    mask = np.arange(T)[None, :] < np.array(lengths)[:, None]
    x = rng.standard_normal((B, T, D))
    G = rng.standard_normal((B, T, H * dirs)) * mask[:, :, None]
    rnn = torch_rnn(weights, "tanh")
    out, h_n, dx_torch = torch_run(rnn, x, G, lengths)

    y, caches = reference_stack_forward(x, weights, "tanh", mask)
    close(np.where(mask[:, :, None], y, 0), out, "outputs")
    for d in range(dirs):                      # h_n of the last layer: the real steps' final states
        close(final_state(caches[-1][0][d][1], d == 1), h_n[dirs + d], f"h_n direction {d}")
        close(ref.rnn_outputs(caches[-1][0][d][1], mask, False, d == 1), h_n[dirs + d],
              f"rnn_outputs(return_sequences=False) direction {d}")
    dx, grads = reference_stack_backward(G, weights, caches, "tanh", mask)
    close(dx, dx_torch, "dx")
    for k, layer in enumerate(torch_grads(rnn, 2, dirs)):
        for d, expected in enumerate(layer):
            for name, a, b in zip(("dkernel", "drecurrent_kernel", "dbias"), grads[k][d],
                                  expected):
                close(a, b, f"{name} layer {k} direction {d}")


@pytest.mark.parametrize("num_layers,bidirectional,activation", CASES)
def test_sequential_matches_torch_rnn_with_a_dense_head(rng, num_layers, bidirectional,
                                                        activation):
    """``Sequential([SimpleRNN or Bidirectional(SimpleRNN), ..., Dense(C)])`` with per-step
    outputs and mse against ``nn.RNN -> nn.Linear -> MSELoss`` (the mean over all B * T * C
    entries = Keras' mean over the units, then over the samples and steps): the loss and every
    entry of ``model.grad``."""
    dirs = 2 if bidirectional else 1
    weights = random_weights(rng, num_layers, bidirectional, activation)
    W_out = 0.5 * rng.standard_normal((H * dirs, C))
    b_out = 0.5 * rng.standard_normal(C)
    x = rng.standard_normal((B, T, D))
    y = rng.standard_normal((B, T, C))

    def rnn_layer():
        layer = L.SimpleRNN(H, activation=activation, return_sequences=True)
        return L.Bidirectional(layer, "concat") if bidirectional else layer

    model = Sequential([L.Input((T, D)), *[rnn_layer() for _ in range(num_layers)], L.Dense(C)],
                       dtype="float64", backend="numpy", seed=0)
    model.compile("sgd", "mse")
    flat = [w for layer in weights for direction in layer for w in direction]
    model.set_weights(flat + [W_out, b_out])
    xx, yy = model._data(x, y)
    loss, _, _ = model._loss_and_grad(xx, yy)

    rnn = torch_rnn(weights, activation)
    head = torch.nn.Linear(H * dirs, C).double()
    with torch.no_grad():
        head.weight.copy_(t(W_out.T))
        head.bias.copy_(t(b_out))
    out, _ = rnn(t(x))
    torch_loss = torch.nn.functional.mse_loss(head(out), t(y))
    torch_loss.backward()

    close(loss, torch_loss.item(), "loss")
    expected = [g for layer in torch_grads(rnn, num_layers, dirs) for direction in layer
                for g in direction] + [head.weight.grad.numpy().T, head.bias.grad.numpy()]
    grads = [g for layer_g in model._g for g in layer_g]
    assert len(grads) == len(expected)
    for i, (a, b) in enumerate(zip(grads, expected)):
        close(a, b, f"model weight {i} ({model.weights[i].shape})")
