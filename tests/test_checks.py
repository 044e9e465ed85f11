"""Bad input through the public functions of both backends: the exception type, and a message that
starts with the name of the offending argument. The kernels run without bounds checks, so for them
every check must fire before any compiled code runs (a tripwire replaces the compiled entry points).
"""

import types

import numpy as np
import pytest

from fastrnn import optim

import helpers

B, T, V, D, H, C = 2, 3, 6, 2, 3, 2
DIMS, DENSE = (V, D, H, C), (0, D, H, C)


def valid(dtype=np.float64):
    """A namespace of valid arguments; each case breaks one of them."""
    rng = np.random.default_rng(0)
    a = types.SimpleNamespace()
    a.theta = helpers.make_theta(rng, DIMS, dtype)
    a.theta_d = helpers.make_theta(rng, DENSE, dtype)
    a.x = np.array([[0, 1, 5], [2, 0, 3]])
    a.xd = helpers.make_dense(rng, B, T, D, dtype)
    a.y = np.array([0, 1])
    a.grad, a.s1, a.s2 = (np.zeros_like(a.theta) for _ in range(3))
    a.grad_d = np.zeros_like(a.theta_d)
    a.W_xh, a.W_hh, a.b_h = helpers.rnn_params(rng, D, H, dtype)
    a.hs = np.zeros((T + 1, B, H), dtype)
    a.dh = np.ones((B, H), dtype)
    a.opt = optim.Adam()
    return a


def replace(a, **changes):
    a = types.SimpleNamespace(**vars(a))
    for k, v in changes.items():
        setattr(a, k, v)
    return a


def with_nan(a, value):
    xd = a.xd.copy()
    xd[1, 2, 0] = value
    return xd


# how each public function is called from a namespace of arguments
def loss_and_grad(M, a, **kw):
    return M.loss_and_grad(a.theta, DIMS, a.x, a.y, a.grad, **kw)


def loss_and_grad_dense(M, a, **kw):
    return M.loss_and_grad(a.theta_d, DENSE, a.xd, a.y, a.grad_d, **kw)


def forward(M, a):
    return M.forward(a.theta, DIMS, a.x)


def forward_dense(M, a):
    return M.forward(a.theta_d, DENSE, a.xd)


def train_step(M, a, **kw):
    kw.setdefault("kind", a.opt.kind)
    kw.setdefault("hyper", a.opt.hyper())
    return M.train_step(a.theta, a.grad, a.s1, a.s2, 1, DIMS, a.x, a.y, **kw)


def train_step_dense(M, a):
    return M.train_step(a.theta_d, a.grad_d, np.zeros_like(a.theta_d), np.zeros_like(a.theta_d), 1,
                        DENSE, a.xd, a.y, a.opt.kind, a.opt.hyper())


def rnn_forward(M, a, mask=None):
    return M.rnn_forward(a.xd, a.W_xh, a.W_hh, a.b_h, mask=mask)


def rnn_backward(M, a, **kw):
    return M.rnn_backward(a.dh, a.xd, a.hs, a.W_xh, a.W_hh, **kw)


def softmax_xent(M, a):
    return M.softmax_xent(a.logits, a.y)


def optimizer_update(M, a, kind=optim.ADAM_KIND, hyper=None):
    p = a.theta.copy()
    return M.optimizer_update(kind, a.opt.hyper() if hyper is None else hyper, 1, p, a.grad,
                              a.s1, a.s2)


RAGGED = np.empty(2, dtype=object)
RAGGED[0], RAGGED[1] = [1, 2, 3], [4]

# name: (call, changes to the valid arguments or a function of them, exception, message regex)
CASES = {
    # shapes that disagree
    "y_too_short": (loss_and_grad, dict(y=np.array([1])), ValueError, r"^y\b"),
    "y_2d": (train_step, dict(y=np.array([[0], [1]])), ValueError, r"^y\b"),
    "dense_x_wrong_D": (forward_dense, lambda a: dict(xd=np.zeros((B, T, D + 1))), ValueError,
                        r"^x\b"),
    "dense_x_2d": (loss_and_grad_dense, lambda a: dict(xd=a.xd[:, :, 0].copy()), ValueError,
                   r"^x\b"),
    "ids_3d": (forward, lambda a: dict(x=a.x[:, :, None]), ValueError, r"^x\b"),
    "grad_too_short": (loss_and_grad, lambda a: dict(grad=a.grad[:-1].copy()), ValueError,
                       r"^grad\b"),
    "s2_too_long": (train_step, lambda a: dict(s2=np.zeros(a.theta.size + 1)), ValueError,
                    r"^s2\b"),
    "theta_too_short": (forward, lambda a: dict(theta=a.theta[:-1].copy()), ValueError,
                        r"^theta\b"),
    "theta_too_long": (loss_and_grad, lambda a: dict(theta=np.zeros(a.theta.size + 1),
                                                     grad=np.zeros(a.theta.size + 1)),
                       ValueError, r"^theta\b"),
    "theta_2d": (forward, lambda a: dict(theta=a.theta[None]), ValueError, r"^theta\b"),
    "rnn_W_xh_rows": (rnn_forward, dict(W_xh=np.zeros((D + 1, H))), ValueError, r"^W_xh\b"),
    "rnn_W_hh_shape": (rnn_forward, dict(W_hh=np.zeros((H + 1, H + 1))), ValueError, r"^W_hh\b"),
    "rnn_b_h_shape": (rnn_forward, dict(b_h=np.zeros(H + 1)), ValueError, r"^b_h\b"),
    "rnn_mask_shape": (lambda M, a: rnn_forward(M, a, mask=np.ones((B, T + 1), bool)), {},
                       ValueError, r"^mask\b"),
    "rnn_mask_not_bool": (lambda M, a: rnn_forward(M, a, mask=np.ones((B, T))), {}, TypeError,
                          r"^mask\b"),
    "rnn_backward_dh_shape": (rnn_backward, dict(dh=np.ones((B, H + 1))), ValueError, r"^dh\b"),
    "rnn_backward_hs_shape": (rnn_backward, dict(hs=np.zeros((T, B, H))), ValueError, r"^hs\b"),
    # token ids
    "id_negative": (loss_and_grad, dict(x=np.array([[0, 1, 5], [2, -1, 3]])), ValueError,
                    r"^x has token id -1 outside \[0, 6\)"),
    "id_too_large": (forward, dict(x=np.array([[0, 1, 6], [2, 0, 3]])), ValueError,
                     r"^x has token id 6 outside \[0, 6\)"),
    "id_too_large_train_step": (train_step, dict(x=np.array([[0, 1, 99], [2, 0, 3]])), ValueError,
                                r"^x has token id 99"),
    "ids_float": (loss_and_grad, lambda a: dict(x=a.x.astype(np.float64)), TypeError, r"^x\b"),
    "ids_float_forward": (forward, lambda a: dict(x=a.x.astype(np.float32)), TypeError, r"^x\b"),
    "ids_ragged_object": (loss_and_grad, dict(x=RAGGED, y=np.array([0, 1])), ValueError, r"^x\b"),
    "ids_ragged_object_forward": (forward, dict(x=RAGGED), ValueError, r"^x\b"),
    "ids_for_dense_model": (forward_dense, lambda a: dict(xd=np.ones((B, T, D), np.int64)),
                            TypeError, r"^x\b"),
    # NaN / inf in dense inputs
    "dense_nan": (loss_and_grad_dense, lambda a: dict(xd=with_nan(a, np.nan)), ValueError,
                  r"^x contains NaN or inf"),
    "dense_inf": (forward_dense, lambda a: dict(xd=with_nan(a, np.inf)), ValueError,
                  r"^x contains NaN or inf"),
    "dense_neg_inf_train_step": (train_step_dense, lambda a: dict(xd=with_nan(a, -np.inf)),
                                 ValueError, r"^x contains NaN or inf"),
    # dtypes
    "theta_float16": (forward, lambda a: dict(theta=a.theta.astype(np.float16)), TypeError,
                      r"^theta\b"),
    "theta_int": (loss_and_grad, lambda a: dict(theta=np.zeros(a.theta.size, np.int64),
                                                grad=np.zeros(a.theta.size, np.int64)),
                  TypeError, r"^theta\b"),
    "grad_float64_theta_float32": (loss_and_grad, lambda a: dict(theta=a.theta.astype(np.float32)),
                                   TypeError, r"^grad\b"),
    "s1_float32_theta_float64": (train_step, lambda a: dict(s1=a.s1.astype(np.float32)), TypeError,
                                 r"^s1\b"),
    "dense_x_float32_theta_float64": (loss_and_grad_dense, lambda a: dict(xd=a.xd.astype(np.float32)),
                                      TypeError, r"^x\b"),
    "rnn_x_float16": (rnn_forward, lambda a: dict(xd=a.xd.astype(np.float16)), TypeError, r"^x\b"),
    "rnn_W_xh_float32": (rnn_forward, lambda a: dict(W_xh=a.W_xh.astype(np.float32)), TypeError,
                         r"^W_xh\b"),
    "rnn_int_W_hh": (rnn_backward, lambda a: dict(W_hh=np.ones((H, H), np.int64)), TypeError,
                     r"^W_hh\b"),
    "logits_int": (softmax_xent, dict(logits=np.ones((B, C), np.int64)), TypeError, r"^logits\b"),
    # empty batches
    "B0": (loss_and_grad, dict(x=np.zeros((0, T), np.int64), y=np.zeros(0, np.int64)), ValueError,
           r"^x is an empty batch"),
    "T0": (forward, dict(x=np.zeros((B, 0), np.int64)), ValueError, r"^x has no time steps"),
    "B0_dense": (forward_dense, dict(xd=np.zeros((0, T, D))), ValueError, r"^x is an empty batch"),
    "T0_dense_train_step": (train_step_dense, dict(xd=np.zeros((B, 0, D))), ValueError,
                            r"^x has no time steps"),
    "rnn_T0": (rnn_forward, dict(xd=np.zeros((B, 0, D))), ValueError, r"^x has no time steps"),
    # bptt_truncate
    "k_zero": (lambda M, a: loss_and_grad(M, a, bptt_truncate=0), {}, ValueError,
               r"^bptt_truncate\b"),
    "k_negative": (lambda M, a: train_step(M, a, bptt_truncate=-1), {}, ValueError,
                   r"^bptt_truncate\b"),
    "k_float": (lambda M, a: loss_and_grad(M, a, bptt_truncate=1.5), {}, TypeError,
                r"^bptt_truncate\b"),
    "k_float_integral": (lambda M, a: loss_and_grad(M, a, bptt_truncate=2.0), {}, TypeError,
                         r"^bptt_truncate\b"),
    "k_bool": (lambda M, a: loss_and_grad_dense(M, a, bptt_truncate=True), {}, TypeError,
               r"^bptt_truncate\b"),
    "k_zero_rnn_backward": (lambda M, a: rnn_backward(M, a, bptt_truncate=0), {}, ValueError,
                            r"^bptt_truncate\b"),
    # labels
    "label_too_large": (loss_and_grad, dict(y=np.array([0, 2])), ValueError,
                        r"^y has label 2 outside \[0, 2\)"),
    "label_negative": (train_step, dict(y=np.array([-1, 0])), ValueError, r"^y has label -1"),
    "label_float": (loss_and_grad, dict(y=np.array([0.5, 1.0])), TypeError, r"^y\b"),
    "label_too_large_xent": (softmax_xent, dict(logits=np.zeros((B, C)), y=np.array([0, C])),
                             ValueError, r"^y has label"),
    # model dimensions
    "dims_one_class": (lambda M, a: M.forward(a.theta[:-H - 1], (V, D, H, 1), a.x), {}, ValueError,
                       r"^dims\b"),
    # optimizer arguments
    "unknown_kind": (lambda M, a: optimizer_update(M, a, kind=7), {}, ValueError, r"\bkind\b"),
    "unknown_kind_train_step": (lambda M, a: train_step(M, a, kind=7), {}, ValueError,
                                r"\bkind\b"),
    "hyper_too_short": (lambda M, a: optimizer_update(M, a, hyper=np.ones(3)), {}, ValueError,
                        r"^hyper\b"),
    "hyper_too_short_train_step": (lambda M, a: train_step(M, a, hyper=np.ones(3)), {}, ValueError,
                                   r"^hyper\b"),
}


def cases():
    for case in CASES:
        for name in helpers.BACKENDS:
            yield pytest.param(name, case, id=f"{name}-{case}")


@pytest.fixture
def tripwire(monkeypatch):
    """For the numba backend: replace every compiled entry point reachable from ``fastrnn.kernels``
    by an object that fails the test when called (indexing and attribute access still work)."""

    class Tripwire:
        def __init__(self, name):
            self._name = name

        def __getattr__(self, attr):
            return Tripwire(f"{self._name}.{attr}")

        def __getitem__(self, key):
            return Tripwire(f"{self._name}[{key}]")

        def __call__(self, *args, **kwargs):
            raise AssertionError(f"compiled code ran before the argument check: {self._name}")

    def arm(K):
        for name, obj in vars(K).items():
            is_kernel_module = (isinstance(obj, types.ModuleType)
                                and obj.__name__.startswith("fastrnn.kernels."))
            is_compiled = hasattr(obj, "py_func") or type(obj).__name__ == "Kernel"
            if is_kernel_module or is_compiled:
                monkeypatch.setattr(K, name, Tripwire(name))
        return K

    return arm


@pytest.mark.parametrize("backend_name, case", list(cases()))
def test_bad_input_raises_naming_the_argument(backend_name, case, tripwire):
    call, changes, exc, match = CASES[case]
    a = valid()
    a = replace(a, **(changes(a) if callable(changes) else changes))
    backend = helpers.backend(backend_name)
    M = tripwire(backend) if backend_name == "numba" else backend
    with pytest.raises(exc, match=match):
        call(M, a)


@pytest.mark.parametrize("name", ["loss_and_grad", "loss_and_grad_dense", "forward", "forward_dense",
                                  "train_step", "train_step_dense", "rnn_forward", "rnn_backward"])
def test_valid_arguments_pass(backend, name):
    """The baseline every case above breaks in one place is accepted as it is."""
    call = globals()[name]
    call(backend, valid())


def test_tripwire_catches_the_compiled_call(tripwire):
    """The tripwire is not vacuous: with valid arguments the kernels do reach it."""
    K = tripwire(helpers.kernels())
    for name in ["loss_and_grad", "forward", "train_step", "rnn_forward", "rnn_backward"]:
        with pytest.raises(AssertionError, match="compiled code ran"):
            globals()[name](K, valid())
