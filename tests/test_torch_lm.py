"""A stateful language model against PyTorch's word_language_model loop, step by step (float64).

PyTorch's examples/word_language_model trains ``Embedding -> nn.RNN -> Linear`` on windows of a
batchified stream, carrying the hidden state from window to window and detaching it
(``repackage_hidden``), with ``cross_entropy`` from logits averaged over the ``B k`` tokens and a
plain SGD step (``p -= lr * grad``). The same loop in fastrnn is a stateful ``Sequential`` fit on
``fastrnn.text.windows`` with ``shuffle=False``. Three consecutive windows must give the same
losses and the same weights after each step, on both backends. (word_language_model also clips
the gradient norm at 0.25; torch's clip divides by ``norm + 1e-6``, Keras' and fastrnn's by
``norm``, so the test does not clip.) Skipped when torch is not installed.
"""

import numpy as np
import pytest

import fastrnn
from fastrnn import layers, text
from fastrnn.models import Sequential

torch = pytest.importorskip("torch")

V, D, H, B, K, LR = 11, 4, 5, 3, 6, 0.7


def torch_loop(weights, x, y, num_layers):
    """word_language_model's training loop (RNN_TANH), float64, no clipping."""
    emb = torch.nn.Embedding(V, D, dtype=torch.float64)
    rnn = torch.nn.RNN(D, H, num_layers=num_layers, nonlinearity="tanh", batch_first=True,
                       dtype=torch.float64)
    lin = torch.nn.Linear(H, V, dtype=torch.float64)
    w = iter(weights)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(next(w)))
        for k in range(num_layers):
            getattr(rnn, f"weight_ih_l{k}").copy_(torch.from_numpy(next(w).T.copy()))
            getattr(rnn, f"weight_hh_l{k}").copy_(torch.from_numpy(next(w).T.copy()))
            getattr(rnn, f"bias_ih_l{k}").copy_(torch.from_numpy(next(w)))
            getattr(rnn, f"bias_hh_l{k}").zero_()
            # one bias, as Keras: torch's second (hh) bias stays 0, or the summed bias would move
            # twice per step
            getattr(rnn, f"bias_hh_l{k}").requires_grad_(False)
        lin.weight.copy_(torch.from_numpy(next(w).T.copy()))
        lin.bias.copy_(torch.from_numpy(next(w)))
    params = [p for m in (emb, rnn, lin) for p in m.parameters() if p.requires_grad]
    hidden, losses, after = torch.zeros(num_layers, B, H, dtype=torch.float64), [], []
    for j in range(len(x) // B):
        xb = torch.from_numpy(x[j * B:(j + 1) * B])
        yb = torch.from_numpy(y[j * B:(j + 1) * B])
        hidden = hidden.detach()                          # repackage_hidden
        for p in params:
            p.grad = None
        out, hidden = rnn(emb(xb), hidden)
        loss = torch.nn.functional.cross_entropy(lin(out).reshape(-1, V), yb.reshape(-1))
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-LR)
        losses.append(loss.item())
        after.append(np.concatenate([emb.weight.detach().numpy().ravel()] + [
            a.ravel() for k in range(num_layers) for a in (
                getattr(rnn, f"weight_ih_l{k}").detach().numpy().T,
                getattr(rnn, f"weight_hh_l{k}").detach().numpy().T,
                (getattr(rnn, f"bias_ih_l{k}") + getattr(rnn, f"bias_hh_l{k}")).detach().numpy())]
            + [lin.weight.detach().numpy().T.ravel(), lin.bias.detach().numpy()]))
    return losses, after


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_three_stateful_windows_equal_word_language_model(backend, num_layers):
    rng = np.random.default_rng(7)
    x, y = text.windows(text.batchify(rng.integers(0, V, 3 * B * K + B), B), K)
    assert len(x) == 3 * B                                 # three windows of each stream
    model = Sequential([layers.Input((None,), batch_size=B), layers.Embedding(V, D),
                        *[layers.SimpleRNN(H, return_sequences=True, stateful=True)
                          for _ in range(num_layers)], layers.Dense(V)],
                       dtype="float64", backend=backend, seed=3)
    model.compile(fastrnn.optimizers.SGD(learning_rate=LR),
                  fastrnn.losses.SparseCategoricalCrossentropy(from_logits=True))
    weights = [w + 0.1 * rng.standard_normal(w.shape) for w in model.get_weights()]
    model.set_weights(weights)                             # nonzero biases
    losses, after = torch_loop(weights, x, y, num_layers)
    for j in range(3):
        loss = model.train_on_batch(x[j * B:(j + 1) * B], y[j * B:(j + 1) * B])
        np.testing.assert_allclose(loss, losses[j], rtol=1e-10, err_msg=f"loss of window {j}")
        np.testing.assert_allclose(model.theta, after[j], rtol=1e-9, atol=1e-12,
                                   err_msg=f"weights after window {j}")
