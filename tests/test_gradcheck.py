"""Gradients against central finite differences (float64), and the update rules against
hand-written formulas (DESIGN.md §1).

The truncated gradient (``bptt_truncate=k`` with k < T-1) is *not* the derivative of the plain
loss, so the finite differences here are taken of an independent "truncated loss" written with
plain NumPy loops in this file (it never calls rnnkit.reference's forward/backward):

    for each loss term at target step t (t = T for many-to-one, every t for many-to-many):
        h = h_{t-k-1} from a forward pass with the UNPERTURBED parameters (a constant),
            or h0 when t-k-1 < 1 (always h0 when k is None: an ordinary full forward)
        run steps max(1, t-k) .. t with the PERTURBED parameters
        y_t = V h_t + c;  term = sum over batch and outputs of (y_t - Y_t)²
    truncated loss = (sum of the terms) / Y.size

Its derivative w.r.t. each element of the flat parameter buffer is exactly the truncated
gradient of DESIGN.md §1, and at the unperturbed parameters its value is the plain MSE.

ReLU: the finite differences are only valid where no pre-activation sits on the kink. The ReLU
cases redraw their data/weights (from a deterministic sequence of seeds) until every
pre-activation of the unperturbed forward pass is at least RELU_MARGIN = 1e-3 away from 0;
a perturbation of EPS = 1e-6 in one parameter moves a pre-activation by far less than that, so
no finite difference straddles the kink. They also require a reasonable share of active units,
and an active unit at the last step, so that the check is not vacuous.
"""

import importlib
import zlib

import numpy as np
import pytest

import rnnkit
from rnnkit import reference

EPS = 1e-6          # finite-difference step
RTOL = 1e-6         # max |fd - analytic| <= RTOL * max |analytic|
RELU_MARGIN = 1e-3

ACTIVATIONS = ["tanh", "sigmoid", "relu"]
K_VALUES = [None, 0, 1, 3, 10]          # 10 is larger than every T below
# (N, T, I, H, O): N=1, T=1, H=1 each appear, and I>1 / O>1
SHAPES = [
    (1, 1, 1, 1, 1),
    (1, 5, 1, 1, 1),
    (3, 1, 2, 4, 3),
    (2, 6, 3, 1, 2),
    (4, 5, 2, 3, 2),
    (2, 4, 1, 3, 1),
]


# ----------------------------------------------------------------------------- independent math
def _f(a, activation):
    if activation == "tanh":
        return np.tanh(a)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    if activation == "relu":
        return np.where(a > 0, a, 0.0)
    raise AssertionError(activation)


def _param_shapes(I, H, O, bias):
    """The documented order of the flat buffer: U (H, I), W (H, H), [b (H,)], V (O, H), [c (O,)]."""
    shapes = [("U", (H, I)), ("W", (H, H))]
    if bias:
        shapes.append(("b", (H,)))
    shapes.append(("V", (O, H)))
    if bias:
        shapes.append(("c", (O,)))
    return shapes


def _unpack(P, I, H, O, bias):
    """P (B, n): B flat parameter vectors -> dict of (B, *shape) arrays."""
    out, off = {}, 0
    for name, shape in _param_shapes(I, H, O, bias):
        size = int(np.prod(shape))
        out[name] = P[:, off:off + size].reshape((P.shape[0],) + shape)
        off += size
    assert off == P.shape[1]
    return out


def _step(x_t, h, p, bias, activation):
    """One recurrence step for B parameter sets: x_t (N, I), h (B, N, H) -> (a, h) (B, N, H)."""
    a = np.einsum("bhi,ni->bnh", p["U"], x_t) + np.einsum("bhk,bnk->bnh", p["W"], h)
    if bias:
        a = a + p["b"][:, None, :]
    return a, _f(a, activation)


def _plain_forward(X, h0, flat, H, O, bias, activation):
    """Unperturbed forward with plain loops: hs (T+1, N, H) with hs[0] = h0, and the
    pre-activations (T, N, H)."""
    N, T, I = X.shape
    p = _unpack(flat[None, :], I, H, O, bias)
    hs = np.empty((T + 1, N, H))
    pre = np.empty((T, N, H))
    hs[0] = np.zeros((N, H)) if h0 is None else h0
    for t in range(1, T + 1):
        a, h = _step(X[:, t - 1], hs[t - 1][None], p, bias, activation)
        pre[t - 1], hs[t] = a[0], h[0]
    return hs, pre


def truncated_loss(P, X, Y, h0, base, H, O, bias, activation, return_sequences, k):
    """The truncated loss (module docstring) for each row of P (B, n); returns (B,)."""
    N, T, I = X.shape
    hs, _ = _plain_forward(X, h0, base, H, O, bias, activation)   # constants, unperturbed
    p = _unpack(P, I, H, O, bias)
    B = P.shape[0]
    total = np.zeros(B)
    targets = range(1, T + 1) if return_sequences else [T]
    for t in targets:
        start = 1 if k is None else max(1, t - k)
        h = np.broadcast_to(hs[start - 1], (B, N, H))               # h_{start-1}: a constant
        for s in range(start, t + 1):
            _, h = _step(X[:, s - 1], h, p, bias, activation)
        y = np.einsum("boh,bnh->bno", p["V"], h)
        if bias:
            y = y + p["c"][:, None, :]
        target = Y[:, t - 1] if return_sequences else Y
        total += ((y - target) ** 2).sum(axis=(1, 2))
    return total / Y.size


def finite_difference_gradient(X, Y, h0, params, H, O, bias, activation, return_sequences, k):
    n = params.size
    plus = params + EPS * np.eye(n)
    minus = params - EPS * np.eye(n)
    step = np.diag(plus) - np.diag(minus)          # the step actually taken, after rounding
    L = truncated_loss(np.concatenate([plus, minus]), X, Y, h0, params, H, O, bias, activation,
                       return_sequences, k)
    return (L[:n] - L[n:]) / step


# ----------------------------------------------------------------------------- cases
def _seed(*key):
    return zlib.crc32(repr(key).encode())


def make_case(N, T, I, H, O, bias, activation, return_sequences, nonzero_h0, key):
    """Deterministic random X, Y, h0, params. ReLU cases are redrawn until no pre-activation is
    within RELU_MARGIN of 0, at least 30% of them are positive and some unit is active at the
    last step (module docstring)."""
    n = sum(int(np.prod(s)) for _, s in _param_shapes(I, H, O, bias))
    for attempt in range(200):
        rng = np.random.default_rng(_seed(key, attempt))
        params = rng.uniform(-0.9, 0.9, size=n)
        X = rng.normal(size=(N, T, I))
        Y = rng.normal(size=(N, T, O) if return_sequences else (N, O))
        h0 = None
        if nonzero_h0:
            h0 = rng.normal(scale=0.7, size=(N, H))
            if activation == "relu":
                h0 = np.abs(h0)
            elif activation == "sigmoid":
                h0 = 1.0 / (1.0 + np.exp(-h0))
        if activation != "relu":
            return X, Y, h0, params
        _, pre = _plain_forward(X, h0, params, H, O, bias, activation)
        if (np.abs(pre).min() > RELU_MARGIN and (pre > 0).mean() >= 0.3
                and (pre[-1] > 0).any()):
            return X, Y, h0, params
    raise AssertionError("could not draw a ReLU case away from the kink")  # pragma: no cover


def check_against_fd(X, Y, h0, params, H, O, bias, activation, return_sequences, k):
    outputs, hidden_states, final_state = reference.forward(
        X, h0, params, H, O, bias, activation, return_sequences)
    loss, grad = reference.backward(X, Y, h0, params, hidden_states, outputs, H, O, bias,
                                    activation, k)
    assert grad.shape == params.shape and grad.dtype == np.float64

    # the truncated loss at the unperturbed parameters is the plain MSE
    value = truncated_loss(params[None, :], X, Y, h0, params, H, O, bias, activation,
                           return_sequences, k)[0]
    assert value == pytest.approx(loss, rel=1e-12, abs=1e-300)

    fd = finite_difference_gradient(X, Y, h0, params, H, O, bias, activation,
                                    return_sequences, k)
    scale = np.abs(grad).max()
    assert scale > 1e-3, "degenerate case: the gradient is (almost) zero"
    err = np.abs(fd - grad)
    worst = int(np.argmax(err))
    assert err.max() <= RTOL * scale, (
        f"element {worst}: analytic {grad[worst]!r}, finite difference {fd[worst]!r}, "
        f"max |grad| {scale!r}")


# ----------------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}I{}H{}O{}".format(*s))
@pytest.mark.parametrize("k", K_VALUES, ids=lambda k: f"k{k}")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_reference_gradient_matches_finite_differences(activation, return_sequences, bias, k,
                                                        shape):
    N, T, I, H, O = shape
    X, Y, h0, params = make_case(N, T, I, H, O, bias, activation, return_sequences, False,
                                 ("fd", activation, return_sequences, bias, k, shape))
    check_against_fd(X, Y, h0, params, H, O, bias, activation, return_sequences, k)


@pytest.mark.parametrize("k", K_VALUES, ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_reference_gradient_nonzero_h0(activation, return_sequences, k):
    N, T, I, H, O = 3, 5, 2, 3, 2
    X, Y, h0, params = make_case(N, T, I, H, O, True, activation, return_sequences, True,
                                 ("h0", activation, return_sequences, k))
    assert np.abs(h0).min() > 0
    check_against_fd(X, Y, h0, params, H, O, True, activation, return_sequences, k)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_truncation_is_not_the_plain_gradient(k, return_sequences):
    """With k < T-1 the truncated gradient differs clearly from the full one, so the checks
    above can tell truncation from full BPTT; k >= T-1 is full BPTT."""
    N, T, I, H, O = 2, 6, 2, 3, 2
    X, Y, h0, params = make_case(N, T, I, H, O, True, "tanh", return_sequences, False,
                                 ("power", k, return_sequences))
    outputs, hs, _ = reference.forward(X, h0, params, H, O, True, "tanh", return_sequences)
    _, g_trunc = reference.backward(X, Y, h0, params, hs, outputs, H, O, True, "tanh", k)
    _, g_full = reference.backward(X, Y, h0, params, hs, outputs, H, O, True, "tanh", None)
    scale = np.abs(g_full).max()
    assert np.abs(g_trunc - g_full).max() > 1e3 * RTOL * scale
    fd_full = finite_difference_gradient(X, Y, h0, params, H, O, True, "tanh",
                                         return_sequences, None)
    assert np.abs(fd_full - g_full).max() <= RTOL * scale
    assert np.abs(fd_full - g_trunc).max() > 1e3 * RTOL * scale
    # output-layer gradients (V, c) never depend on truncation
    n_out = O * H + O
    np.testing.assert_array_equal(g_trunc[-n_out:], g_full[-n_out:])
    for big in (T - 1, T, 100):
        _, g_big = reference.backward(X, Y, h0, params, hs, outputs, H, O, True, "tanh", big)
        np.testing.assert_allclose(g_big, g_full, rtol=0, atol=1e-14 * scale)


def test_layout_matches_documented_order():
    I, H, O = 2, 3, 4
    for bias in (True, False):
        layout = rnnkit.param_layout(I, H, O, bias)
        assert [(name, shape) for name, _, shape in layout] == _param_shapes(I, H, O, bias)
        offsets = [off for _, off, _ in layout]
        sizes = [int(np.prod(shape)) for _, _, shape in layout]
        assert offsets == list(np.cumsum([0] + sizes[:-1]))
        assert rnnkit.param_count(I, H, O, bias) == sum(sizes)


# ----------------------------------------------------------------------------- model vs reference
def _model_and_data(backend, activation, return_sequences, bias, dtype, nonzero_h0, key):
    N, T, I, H, O = 3, 5, 2, 4, 2
    model = rnnkit.RNN(I, H, O, activation=activation, bias=bias,
                       return_sequences=return_sequences, dtype=dtype, seed=11, backend=backend)
    rng = np.random.default_rng(_seed(key))
    X = rng.normal(size=(N, T, I)).astype(dtype)
    Y = rng.normal(size=(N, T, O) if return_sequences else (N, O)).astype(dtype)
    h0 = rng.uniform(0.05, 0.6, size=(N, H)).astype(dtype) if nonzero_h0 else None
    return model, X, Y, h0


def _reference_gradient(model, X, Y, h0, k):
    """rnnkit.reference.forward + backward on the model's weights, as a dict."""
    w = model.weights
    flat = np.concatenate([w[name].ravel() for name, _ in
                           _param_shapes(model.input_size, model.hidden_size,
                                         model.output_size, model.bias)])
    spec = (model.hidden_size, model.output_size, model.bias, model.activation)
    outputs, hs, _ = reference.forward(X, h0, flat, *spec, model.return_sequences)
    _, grad = reference.backward(X, Y, h0, flat, hs, outputs, *spec, k)
    return rnnkit.param_views(grad, model.input_size, model.hidden_size, model.output_size,
                              model.bias)


@pytest.mark.parametrize("nonzero_h0", [False, True], ids=["h0zero", "h0"])
@pytest.mark.parametrize("k", [None, 0, 2])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_model_gradients_equal_reference(backend, activation, return_sequences, bias, k,
                                         nonzero_h0):
    """RNN.gradients on either backend equals rnnkit.reference's gradient (float64: to 1e-12
    of the largest element, DESIGN.md §2)."""
    model, X, Y, h0 = _model_and_data(backend, activation, return_sequences, bias, "float64",
                                      nonzero_h0, ("model", activation, return_sequences))
    got = model.gradients(X, Y, bptt_truncate=k, h0=h0)
    want = _reference_gradient(model, X, Y, h0, k)
    assert list(got) == list(want)
    scale = max(np.abs(v).max() for v in want.values())
    assert scale > 1e-3
    for name in want:
        assert got[name].dtype == np.float64
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12 * scale,
                                   err_msg=name)


@pytest.mark.parametrize("k", [None, 1])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
def test_model_gradients_equal_reference_float32(backend, return_sequences, k):
    model, X, Y, h0 = _model_and_data(backend, "tanh", return_sequences, True, "float32", True,
                                      ("model32", return_sequences))
    got = model.gradients(X, Y, bptt_truncate=k, h0=h0)
    want = _reference_gradient(model, X.astype(np.float64), Y.astype(np.float64),
                               h0.astype(np.float64), k)
    scale = max(np.abs(v).max() for v in want.values())
    for name in want:
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5 * scale,
                                   err_msg=name)


# ----------------------------------------------------------------------------- clip / optimizers
def _module(backend):
    """The backend's functional interface: rnnkit.reference or rnnkit._core."""
    return reference if backend == "reference" else importlib.import_module("rnnkit._core")


def test_clip_global_norm(backend):
    mod = _module(backend)
    g = np.random.default_rng(1).normal(scale=3.0, size=23)
    norm = float(np.sqrt(np.sum(g * g)))
    for c in (norm / 4, norm + 1e-7):          # the second is below norm + 1e-6: still scaled
        got = g.copy()
        ret = mod.clip(got, c, None)
        assert ret == pytest.approx(norm, rel=1e-14)
        np.testing.assert_allclose(got, g * (c / (norm + 1e-6)), rtol=1e-14, atol=0)
    assert mod.clip(got, None, None) == pytest.approx(np.sqrt(np.sum(got * got)), rel=1e-14)


def test_clip_global_norm_epsilon_is_in_denominator(backend):
    """Tiny gradients show where the 1e-6 goes: scale = c / (norm + 1e-6)."""
    mod = _module(backend)
    g = np.array([0.6e-6, 0.8e-6])                 # norm 1e-6
    got = g.copy()
    mod.clip(got, 0.5e-6, None)
    np.testing.assert_allclose(got, g * 0.25, rtol=1e-12, atol=0)


def test_clip_norm_below_threshold_is_untouched(backend):
    mod = _module(backend)
    g = np.random.default_rng(2).normal(size=10)
    norm = float(np.sqrt(np.sum(g * g)))
    got = g.copy()
    assert mod.clip(got, 2 * norm, None) == pytest.approx(norm, rel=1e-14)
    np.testing.assert_array_equal(got, g)


def test_clip_value(backend):
    mod = _module(backend)
    g = np.array([-5.0, -0.3, 0.0, 0.29, 0.31, 2.0, -0.31])
    got = g.copy()
    ret = mod.clip(got, None, 0.3)
    assert ret == pytest.approx(np.sqrt(np.sum(g * g)), rel=1e-14)   # the norm before clipping
    np.testing.assert_array_equal(got, [-0.3, -0.3, 0.0, 0.29, 0.3, 0.3, -0.3])


def test_clip_norm_then_value(backend):
    """Norm first, then value: [3, 4] -> x0.5 -> [1.5, 2] -> [1.5, 1.8]. (The other order
    would give [1.8, 1.8] scaled by 2.5/2.5456.)"""
    mod = _module(backend)
    got = np.array([3.0, 4.0])
    ret = mod.clip(got, 2.5, 1.8)
    assert ret == pytest.approx(5.0, rel=1e-15)
    np.testing.assert_allclose(got, [3.0 * 2.5 / (5 + 1e-6), 1.8], rtol=1e-14, atol=0)


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.0, 0.05), (0.9, 0.0),
                                                   (0.9, 0.05)])
def test_sgd_step_matches_formula(backend, momentum, weight_decay):
    """torch.optim.SGD: d = g + wd p; buf = momentum buf + d (buf from 0); p -= lr buf."""
    mod = _module(backend)
    rng = np.random.default_rng(3)
    lr = 0.1
    p0 = rng.normal(size=13)
    grads = [rng.normal(size=13) for _ in range(5)]

    p_want, buf_want = p0.copy(), np.zeros(13)
    for g in grads:
        d = g + weight_decay * p_want
        if momentum != 0:
            buf_want = momentum * buf_want + d
            d = buf_want
        p_want = p_want - lr * d

    params = p0.copy()
    buf = np.zeros(13) if momentum != 0 else None
    for g in grads:
        g_in = g.copy()
        mod.sgd_step(params, g_in, buf, lr, momentum, weight_decay)
        np.testing.assert_array_equal(g_in, g)        # the gradient is an input only
    np.testing.assert_allclose(params, p_want, rtol=1e-13, atol=1e-15)
    if momentum != 0:
        np.testing.assert_allclose(buf, buf_want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("eps,weight_decay", [(1e-8, 0.0), (1e-3, 0.0), (1e-3, 0.1)])
def test_adam_step_matches_formula(backend, eps, weight_decay):
    """torch.optim.Adam with bias correction over several steps:
        g += wd p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g²
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    Gradients of size ~1e-3 with eps = 1e-3 make eps's place in the formula matter."""
    mod = _module(backend)
    rng = np.random.default_rng(4)
    lr, b1, b2 = 0.01, 0.8, 0.95
    p0 = rng.normal(size=11)
    grads = [rng.normal(scale=1e-3, size=11) for _ in range(6)]

    p_want, m, v = p0.copy(), np.zeros(11), np.zeros(11)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p_want
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p_want = p_want - lr * m_hat / (np.sqrt(v_hat) + eps)

    params, exp_avg, exp_avg_sq = p0.copy(), np.zeros(11), np.zeros(11)
    for t, g in enumerate(grads, start=1):
        mod.adam_step(params, g.copy(), exp_avg, exp_avg_sq, t, lr, b1, b2, eps, weight_decay)
    np.testing.assert_allclose(params, p_want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(exp_avg, m, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(exp_avg_sq, v, rtol=1e-12, atol=1e-21)
    assert np.abs(params - p0).max() > 1e-3            # the updates did something
