"""Both backends against PyTorch (CPU, float64): gradients of the classifier and optimizer steps.

Skipped when torch is not installed. The mapping of parameters (fastrnn / Keras layout -> torch)::

    Embedding.weight = E        RNN.weight_ih_l0 = W_xh.T   RNN.weight_hh_l0 = W_hh.T
    RNN.bias_ih_l0 = b_h        RNN.bias_hh_l0 = 0          Linear.weight = W_hy.T, Linear.bias = b_y
"""

import numpy as np
import pytest

from fastrnn import layout, optim

import helpers
from helpers import assert_close

torch = pytest.importorskip("torch")
F64 = np.float64


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=F64))


class TorchModel:
    """``nn.Embedding -> nn.RNN(tanh, batch_first) -> nn.Linear`` holding the weights of ``theta``."""

    def __init__(self, theta, dims, sparse=False):
        V, D, H, C = dims
        p = layout.unpack(theta, dims)
        self.dims = dims
        self.emb = torch.nn.Embedding(V, D, sparse=sparse).double() if V else None
        self.rnn = torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=True).double()
        self.lin = torch.nn.Linear(H, C).double()
        with torch.no_grad():
            if V:
                self.emb.weight.copy_(t(p.E))
            self.rnn.weight_ih_l0.copy_(t(p.W_xh.T))
            self.rnn.weight_hh_l0.copy_(t(p.W_hh.T))
            self.rnn.bias_ih_l0.copy_(t(p.b_h))
            self.rnn.bias_hh_l0.zero_()
            self.lin.weight.copy_(t(p.W_hy.T))
            self.lin.bias.copy_(t(p.b_y))

    def zero_grad(self):
        for m in (self.emb, self.rnn, self.lin):
            if m is not None:
                m.zero_grad(set_to_none=True)

    def loss(self, x, y, mask_zero=False):
        """Mean cross-entropy; with ``mask_zero`` each row runs on its nonzero tokens only (a masked
        step carries the state, so dropping it from the sequence is the same thing)."""
        H = self.dims[2]
        if self.emb is None:
            h_T = self.rnn(t(x))[1][0]
        elif not mask_zero:
            h_T = self.rnn(self.emb(torch.from_numpy(x)))[1][0]
        else:
            rows = []
            for ids in x:
                ids = ids[ids != 0]
                rows.append(self.rnn(self.emb(torch.from_numpy(ids))[None])[1][0, 0] if ids.size
                            else torch.zeros(H, dtype=torch.float64))
            h_T = torch.stack(rows)
        logits = self.lin(h_T)
        return torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)), logits

    def grad(self):
        """The gradient as a flat fastrnn buffer (E's gradient densified)."""
        g = np.zeros(layout.size(self.dims))
        q = layout.unpack(g, self.dims)
        if self.emb is not None:
            gE = self.emb.weight.grad
            q.E[...] = (gE.to_dense() if gE.is_sparse else gE).numpy()
        q.W_xh[...] = self.rnn.weight_ih_l0.grad.numpy().T
        q.W_hh[...] = self.rnn.weight_hh_l0.grad.numpy().T
        q.b_h[...] = self.rnn.bias_ih_l0.grad.numpy()
        np.testing.assert_allclose(self.rnn.bias_hh_l0.grad.numpy(), q.b_h, rtol=1e-14, atol=0)
        q.W_hy[...] = self.lin.weight.grad.numpy().T
        q.b_y[...] = self.lin.bias.grad.numpy()
        return g


GRAD_CASES = {
    # name: (B, T, V, D, H, C, mask_zero)
    "ids_C2": (4, 6, 9, 3, 5, 2, False),
    "ids_mask_C3": (5, 7, 9, 3, 4, 3, True),
    "ids_T1": (3, 1, 5, 2, 3, 2, False),
    "dense_C3": (4, 5, 0, 3, 4, 3, False),
}


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_loss_and_grad_matches_torch(backend, case):
    B, T, V, D, H, C, mask_zero = GRAD_CASES[case]
    rng = np.random.default_rng(17)
    dims = (V, D, H, C)
    theta = helpers.make_theta(rng, dims, scale=0.6)
    x = helpers.make_ids(rng, B, T, V) if V else helpers.make_dense(rng, B, T, D)
    y = helpers.make_labels(rng, B, C)
    grad = np.empty_like(theta)
    loss, logits = backend.loss_and_grad(theta, dims, x, y, grad, mask_zero=mask_zero)

    model = TorchModel(theta, dims)
    want_loss, want_logits = model.loss(x, y, mask_zero)
    want_loss.backward()
    want = model.grad()
    assert_close(loss, want_loss.item(), F64, T, "loss")
    assert_close(logits, want_logits.detach().numpy(), F64, T, "logits")
    for name, g, w in zip(layout.Params._fields, layout.unpack(grad, dims), layout.unpack(want, dims)):
        if g is not None:
            assert_close(g, w, F64, T, f"d{name}")
    assert np.abs(want).max() > 1e-3


# ------------------------------------------------------------------------------------------------
# optimizers: N steps on the same gradient sequence
# ------------------------------------------------------------------------------------------------

TORCH_OPTIMIZERS = {
    "adam": (optim.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6),
             lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    "adamw": (optim.AdamW(learning_rate=0.02, weight_decay=0.1),
              lambda ps: torch.optim.AdamW(ps, lr=0.02, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=0.1)),
    "sgd": (optim.SGD(learning_rate=0.1),
            lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd_momentum": (optim.SGD(learning_rate=0.05, momentum=0.9),
                     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    # torch's RMSprop puts eps outside the square root (g / (sqrt(s) + eps)), Keras and fastrnn inside
    # (g / sqrt(s + eps)); with eps = 1e-12 the two differ by ~1e-10 relative, far below rtol 1e-8.
    # torch calls rho "alpha".
    "rmsprop": (optim.RMSprop(learning_rate=0.01, rho=0.8, epsilon=1e-12),
                lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.8, eps=1e-12)),
}


@pytest.mark.parametrize("opt_id", list(TORCH_OPTIMIZERS))
def test_optimizer_matches_torch(backend, opt_id):
    opt, make_torch = TORCH_OPTIMIZERS[opt_id]
    rng = np.random.default_rng(23)
    n, n_steps = 31, 8
    p0 = rng.standard_normal(n)
    gs = rng.standard_normal((n_steps, n))
    gs = 0.5 * np.sign(gs) * (0.05 + np.abs(gs))           # |g| >= 0.025: no eps-dominated entries
    p, s1, s2 = p0.copy(), np.zeros(n), np.zeros(n)
    param = torch.nn.Parameter(t(p0).clone())              # from_numpy shares memory: copy
    topt = make_torch([param])
    for step, g in enumerate(gs, 1):
        backend.optimizer_update(opt.kind, opt.hyper(), step, p, g, s1, s2)
        param.grad = t(g).clone()
        topt.step()
        want = param.detach().numpy().copy()
        if opt_id == "rmsprop":
            np.testing.assert_allclose(p, want, rtol=1e-8, atol=1e-12, err_msg=f"step {step}")
        else:
            assert_close(p, want, F64, what=f"{opt_id} step {step}")
    assert np.abs(p - p0).min() > 0


def test_lazy_adam_matches_sparse_adam(backend):
    """Lazy (row-wise) Adam on the embedding against ``torch.optim.SparseAdam`` on an
    ``nn.Embedding(sparse=True)``: over 5 batches only the rows that occur are touched.

    SparseAdam computes ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, which is Keras'
    epsilon placement, so fastrnn runs with ``keras_epsilon=True``. No ``mask_zero`` here: the lazy
    rows of fastrnn are all ids in the batch, padding 0 included, and torch's sparse gradient has
    exactly those rows when every token is looked up.
    """
    rng = np.random.default_rng(29)
    V, D, H, C, B, T = 12, 3, 4, 2, 3, 4
    dims = (V, D, H, C)
    theta = helpers.make_theta(rng, dims)
    E0 = layout.unpack(theta, dims).E.copy()
    lr, b1, b2, eps = 0.05, 0.8, 0.95, 1e-3
    model = TorchModel(theta, dims, sparse=True)
    sparse_adam = torch.optim.SparseAdam([model.emb.weight], lr=lr, betas=(b1, b2), eps=eps)
    grad, m, v = np.zeros_like(theta), np.zeros((V, D)), np.zeros((V, D))
    E = layout.unpack(theta, dims).E
    seen = set()
    for step in range(1, 6):
        x = rng.integers(0, V - 3, size=(B, T))             # rows V-3.. never occur
        y = helpers.make_labels(rng, B, C)
        seen |= set(np.unique(x).tolist())
        backend.loss_and_grad(theta, dims, x, y, grad)
        gE = np.ascontiguousarray(layout.unpack(grad, dims).E)
        backend.adam_update(E, gE, m, v, step, lr, beta_1=b1, beta_2=b2, epsilon=eps,
                            keras_epsilon=True, rows=np.unique(x))

        model.zero_grad()
        model.loss(x, y)[0].backward()
        assert model.emb.weight.grad.is_sparse
        assert_close(gE, model.emb.weight.grad.to_dense().numpy(), F64, T, f"step {step} dE")
        sparse_adam.step()
        assert_close(E, model.emb.weight.detach().numpy(), F64, what=f"step {step} E")
    unseen = sorted(set(range(V)) - seen)
    assert len(unseen) >= 3
    np.testing.assert_array_equal(E[unseen], E0[unseen])
    np.testing.assert_array_equal(m[unseen], 0)
    assert np.abs(E[sorted(seen)] - E0[sorted(seen)]).min() > 0
