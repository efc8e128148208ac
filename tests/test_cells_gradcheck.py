"""GRU/LSTM cells, stacked layers and padded batches (docs/architecture.md) in rnnkit.reference:
gradients against central finite differences (float64), padded batches against records run
alone, and argument checks. Reference backend only.

As in test_gradcheck.py, the truncated gradient (``bptt_truncate=k``) is checked against the
finite differences of an independent "truncated loss" written here with plain NumPy loops
(PyTorch's equations, architecture.md §2-5; it never calls rnnkit.reference's forward or
backward). Record by record, on the record's own first lengths[n] steps only:

    forward every layer over the record with the UNPERTURBED parameters (constants)
    for each loss term at step t (many-to-one: t = lengths[n] - 1, else every t < lengths[n]):
        start = max(0, t - k)  (0 when k is None)
        for every layer l from the bottom:
            state = layer l's state before step `start`, from the unperturbed pass (or h0)
            run steps start .. t with the PERTURBED parameters, on the PERTURBED outputs of
            layer l - 1 over the same steps (layer 0: X)
        y_t = V h_t + c;  term = sum over outputs of (y_t - Y_t)²
    truncated loss = (sum of the terms) / (N·O many-to-one, O·Σ lengths many-to-many)

Its derivative w.r.t. the flat parameter buffer is the truncated gradient of architecture.md §5,
and at the unperturbed parameters its value is the plain (masked) MSE.

ReLU: the cases redraw their data until every argument of the candidate activation (and, for
LSTM, every c) in the unperturbed pass is at least RELU_MARGIN from 0, so that no finite
difference straddles a kink (see test_gradcheck.py).
"""

import zlib

import numpy as np
import pytest

import rnnkit
from rnnkit import reference
from rnnkit.cells import CELLS
# the finite-difference settings and the plain activations of the Elman check (f(a) written
# out with NumPy, independent of rnnkit.reference)
from test_gradcheck import EPS, RELU_MARGIN, RTOL, _f

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
N, T, I, H, O = 3, 5, 2, 3, 2
LENGTHS = np.array([3, 5, 1], dtype=np.int64)     # a short, a full and a length-1 record


# ----------------------------------------------------------------------------- independent math
def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _sfx(layer):
    return f"_l{layer}" if layer else ""


def _param_shapes(cell, L, I, H, O, bias):
    """The documented order of the flat buffer (architecture.md §3)."""
    GH = GATES[cell] * H
    shapes = []
    for layer in range(L):
        s = _sfx(layer)
        shapes += [("U" + s, (GH, I if layer == 0 else H)), ("W" + s, (GH, H))]
        if bias:
            shapes += [("b" + s, (H,))] if cell == "rnn" else [("b_ih" + s, (GH,)),
                                                                ("b_hh" + s, (GH,))]
    shapes.append(("V", (O, H)))
    if bias:
        shapes.append(("c", (O,)))
    return shapes


def _unpack(P, shapes):
    """P (B, n): B flat parameter vectors -> dict of (B, *shape) arrays."""
    out, off = {}, 0
    for name, shape in shapes:
        size = int(np.prod(shape))
        out[name] = P[:, off:off + size].reshape((P.shape[0],) + shape)
        off += size
    assert off == P.shape[1]
    return out


def _cell(cell, x, h, c, p, layer, bias, activation):
    """One step of layer `layer` for B parameter sets: x (B, I_l), h, c (B, H) ->
    (h, c, kinks), kinks being the arguments of the activation f (for the ReLU margin)."""
    s = _sfx(layer)
    gx = np.einsum("bgi,bi->bg", p["U" + s], x)
    gh = np.einsum("bgk,bk->bg", p["W" + s], h)
    if cell == "rnn":
        a = gx + gh + (p["b" + s] if bias else 0.0)
        return _f(a, activation), c, [a]
    if bias:
        gx = gx + p["b_ih" + s]
        gh = gh + p["b_hh" + s]
    if cell == "gru":
        xr, xz, xn = np.split(gx, 3, axis=1)
        hr, hz, hn = np.split(gh, 3, axis=1)
        r = _sigmoid(xr + hr)
        z = _sigmoid(xz + hz)
        a_n = xn + r * hn
        n = _f(a_n, activation)
        return (1 - z) * n + z * h, c, [a_n]
    ai, af, ag, ao = np.split(gx + gh, 4, axis=1)
    c_new = _sigmoid(af) * c + _sigmoid(ai) * _f(ag, activation)
    return _sigmoid(ao) * _f(c_new, activation), c_new, [ag, c_new]


def _layer_h0(h0_row, cell, layer):
    """Layer `layer`'s (h, c) from one record's row of h0 (L·S,): columns [l·S, (l+1)·S)."""
    if h0_row is None:
        return np.zeros(H), np.zeros(H)
    if cell == "lstm":
        return h0_row[2 * H * layer:2 * H * layer + H], h0_row[2 * H * layer + H:2 * H * (layer + 1)]
    return h0_row[H * layer:H * (layer + 1)], np.zeros(H)


def _record_forward(x, h0_row, p, cell, L, bias, activation):
    """One record x (T_n, I) with one parameter set p (B = 1): states[l][s] = (h, c) of layer l
    after s steps (s = 0: initial), and every activation argument (for the ReLU margin)."""
    states, kinks = [], []
    inputs = [xt[None] for xt in x]
    for layer in range(L):
        h, c = (v[None] for v in _layer_h0(h0_row, cell, layer))
        states.append([(h, c)])
        outs = []
        for xt in inputs:
            h, c, k = _cell(cell, xt, h, c, p, layer, bias, activation)
            states[layer].append((h, c))
            kinks += k
            outs.append(h)
        inputs = outs
    return states, kinks


def truncated_loss(P, X, Y, h0, base, cell, L, bias, activation, return_sequences, k, lengths):
    """The truncated loss (module docstring) for each row of P (B, n); returns (B,)."""
    n_rec, T_full, _ = X.shape
    lengths = np.full(n_rec, T_full) if lengths is None else lengths
    shapes = _param_shapes(cell, L, X.shape[2], H, O, bias)
    p0 = _unpack(base[None, :], shapes)
    p = _unpack(P, shapes)
    B = P.shape[0]
    total = np.zeros(B)
    for n in range(n_rec):
        Tn = int(lengths[n])
        x = X[n, :Tn]
        states, _ = _record_forward(x, None if h0 is None else h0[n], p0, cell, L, bias,
                                    activation)
        for t in (range(Tn) if return_sequences else [Tn - 1]):
            start = 0 if k is None else max(0, t - k)
            inputs = [np.broadcast_to(x[s], (B, x.shape[1])) for s in range(start, t + 1)]
            for layer in range(L):
                h, c = (np.broadcast_to(v, (B, H)) for v in states[layer][start])
                outs = []
                for xs in inputs:
                    h, c, _ = _cell(cell, xs, h, c, p, layer, bias, activation)
                    outs.append(h)
                inputs = outs
            y = np.einsum("boh,bh->bo", p["V"], inputs[-1])
            if bias:
                y = y + p["c"]
            target = Y[n, t] if return_sequences else Y[n]
            total += ((y - target) ** 2).sum(axis=1)
    count = O * lengths.sum() if return_sequences else n_rec * O
    return total / count


def finite_difference_gradient(X, Y, h0, params, *network):
    n = params.size
    plus = params + EPS * np.eye(n)
    minus = params - EPS * np.eye(n)
    step = np.diag(plus) - np.diag(minus)          # the step actually taken, after rounding
    L_ = truncated_loss(np.concatenate([plus, minus]), X, Y, h0, params, *network)
    return (L_[:n] - L_[n:]) / step


# ----------------------------------------------------------------------------- cases
def _seed(*key):
    return zlib.crc32(repr(key).encode())


def _state_width(cell):
    return (2 if cell == "lstm" else 1) * H


def make_case(cell, L, bias, activation, return_sequences, lengths, nonzero_h0, key):
    """Deterministic random X, Y, h0, params (X and Y are NaN at padded steps: never read).
    ReLU cases are redrawn until no activation argument is within RELU_MARGIN of 0."""
    n = sum(int(np.prod(s)) for _, s in _param_shapes(cell, L, I, H, O, bias))
    for attempt in range(500):
        rng = np.random.default_rng(_seed(key, attempt))
        params = rng.uniform(-0.9, 0.9, size=n)
        X = rng.normal(size=(N, T, I))
        Y = rng.normal(size=(N, T, O) if return_sequences else (N, O))
        h0 = rng.normal(scale=0.7, size=(N, L * _state_width(cell))) if nonzero_h0 else None
        if activation == "relu" and h0 is not None:
            h0 = np.abs(h0)
        if lengths is not None:
            pad = np.arange(T) >= lengths[:, None]
            X[pad] = np.nan
            if return_sequences:
                Y[pad] = np.nan
        if activation != "relu":
            return X, Y, h0, params
        p = _unpack(params[None], _param_shapes(cell, L, I, H, O, bias))
        Ls = np.full(N, T) if lengths is None else lengths
        kinks = []
        for r in range(N):
            kinks += _record_forward(X[r, :Ls[r]], None if h0 is None else h0[r], p, cell, L,
                                     bias, activation)[1]
        kinks = np.concatenate([k_.ravel() for k_ in kinks])
        if np.abs(kinks).min() > RELU_MARGIN and (kinks > 0).mean() >= 0.3:
            return X, Y, h0, params
    raise AssertionError("could not draw a ReLU case away from the kink")  # pragma: no cover


def _run(X, Y, h0, params, cell, L, bias, activation, return_sequences, k, lengths):
    """reference.forward then reference.backward."""
    outputs, hidden_states, final_state = reference.forward(
        X, h0, params, H, O, bias, activation, return_sequences, cell, L, lengths)
    loss, grad = reference.backward(X, Y, h0, params, hidden_states, outputs, H, O, bias,
                                    activation, k, cell, L, lengths)
    return outputs, hidden_states, final_state, loss, grad


def _assert_close(got, want, rel=1e-13):
    """|got - want| <= rel * max |want|, elementwise (near-zero elements after cancellation
    carry the rounding of their larger neighbours)."""
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * np.abs(want).max())


def _masked_mse(outputs, Y, lengths):
    """The loss of architecture.md §4 from forward's outputs, written directly."""
    if Y.ndim == 2:
        return np.mean((outputs - Y) ** 2)
    Ls = np.full(Y.shape[0], Y.shape[1]) if lengths is None else lengths
    terms = [((outputs[n, :Ls[n]] - Y[n, :Ls[n]]) ** 2).ravel() for n in range(len(Ls))]
    return np.concatenate(terms).mean()


def check_against_fd(cell, L, bias, activation, return_sequences, k, lengths, nonzero_h0=False):
    X, Y, h0, params = make_case(cell, L, bias, activation, return_sequences, lengths, nonzero_h0,
                                 (cell, L, bias, activation, return_sequences, k,
                                  lengths is None, nonzero_h0))
    outputs, _, _, loss, grad = _run(X, Y, h0, params, cell, L, bias, activation,
                                     return_sequences, k, lengths)
    assert grad.shape == params.shape and grad.dtype == np.float64
    assert np.isfinite(outputs).all() and np.isfinite(grad).all()

    # backward's loss is the MSE of forward's outputs, and the truncated loss's value
    assert loss == pytest.approx(_masked_mse(outputs, Y, lengths), rel=1e-13, abs=0)
    network = (cell, L, bias, activation, return_sequences, k, lengths)
    value = truncated_loss(params[None, :], X, Y, h0, params, *network)[0]
    assert value == pytest.approx(loss, rel=1e-12, abs=0)

    fd = finite_difference_gradient(X, Y, h0, params, *network)
    scale = np.abs(grad).max()
    assert scale > 1e-3, "degenerate case: the gradient is (almost) zero"
    err = np.abs(fd - grad)
    worst = int(np.argmax(err))
    assert err.max() <= RTOL * scale, (
        f"element {worst}: analytic {grad[worst]!r}, finite difference {fd[worst]!r}, "
        f"max |grad| {scale!r}")


# ----------------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("k", [None, 0, 1, 3], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("L", [1, 2], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_gradient_matches_finite_differences(cell, L, return_sequences, k, lengths):
    check_against_fd(cell, L, True, "tanh", return_sequences, k, lengths)


@pytest.mark.parametrize("k", [None, 1], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_gradient_without_bias(cell, return_sequences, k):
    check_against_fd(cell, 2, False, "tanh", return_sequences, k, LENGTHS)


@pytest.mark.parametrize("k", [None, 1], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_gradient_nonzero_h0(cell, return_sequences, k):
    """Every layer's part of h0 (LSTM: h and c) reaches the loss."""
    check_against_fd(cell, 2, True, "tanh", return_sequences, k, LENGTHS, nonzero_h0=True)


@pytest.mark.parametrize("k", [None, 1, 3], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gradient_three_layers(cell, return_sequences, k):
    check_against_fd(cell, 3, True, "tanh", return_sequences, k, LENGTHS)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
@pytest.mark.parametrize("k", [None, 1], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gradient_other_activations(cell, k, activation):
    """`activation` is the candidate's (and LSTM's f(c)); the gates stay sigmoid."""
    check_against_fd(cell, 2, True, activation, True, k, LENGTHS, nonzero_h0=True)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_truncation_is_not_the_plain_gradient(cell, return_sequences):
    """With several layers, k < T-1 differs clearly from full BPTT in every layer's
    recurrent weights (so the checks above tell them apart), and k >= T-1 is full BPTT."""
    L = 2
    X, Y, h0, params = make_case(cell, L, True, "tanh", return_sequences, None, False,
                                 ("power", cell, return_sequences))
    network = (cell, L, True, "tanh", return_sequences)
    g_full = _run(X, Y, h0, params, *network[:-1], return_sequences, None, None)[4]
    g_trunc = _run(X, Y, h0, params, *network[:-1], return_sequences, 1, None)[4]
    views = rnnkit.param_views
    full = views(g_full, I, H, O, True, cell, L)
    trunc = views(g_trunc, I, H, O, True, cell, L)
    scale = np.abs(g_full).max()
    for name in ("W", "W_l1", "U"):
        assert np.abs(full[name] - trunc[name]).max() > 1e3 * RTOL * scale, name
    for name in ("V", "c"):                       # the output layer never depends on truncation
        np.testing.assert_array_equal(full[name], trunc[name])
    for big in (T - 1, T, 100):
        g_big = _run(X, Y, h0, params, *network[:-1], return_sequences, big, None)[4]
        np.testing.assert_allclose(g_big, g_full, rtol=0, atol=1e-14 * scale)


# ----------------------------------------------------------------------------- padded batches
@pytest.mark.parametrize("k", [None, 1], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("L", [1, 2], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_lengths_equal_records_run_alone(cell, L, return_sequences, k):
    """A padded batch equals each record run alone on its first lengths[n] steps (§4): the
    outputs (0 at padded steps), the final state, the cache (a padded step copies the previous
    one), the loss (a mean over valid elements, so record n weighs count_n / Σ count) and the
    gradient (the same weights). X and Y are NaN at padded steps: they are never read."""
    X, Y, h0, params = make_case(cell, L, True, "tanh", return_sequences, LENGTHS, True,
                                 ("alone", cell, L, return_sequences, k))
    network = (cell, L, True, "tanh", return_sequences, k)
    outputs, hidden_states, final_state, loss, grad = _run(X, Y, h0, params, *network, LENGTHS)
    caches = hidden_states[None] if L == 1 else hidden_states
    S = _state_width(cell)

    counts = O * LENGTHS if return_sequences else np.full(N, O)
    want_loss, want_grad = 0.0, np.zeros_like(grad)
    for n, Tn in enumerate(LENGTHS):
        y_n = Y[n:n + 1, :Tn] if return_sequences else Y[n:n + 1]
        out_n, hs_n, fs_n, loss_n, grad_n = _run(X[n:n + 1, :Tn], y_n, h0[n:n + 1], params,
                                                 *network, None)
        want_loss += loss_n * counts[n] / counts.sum()
        want_grad += grad_n * (counts[n] / counts.sum())
        _assert_close(final_state[n], fs_n[0])
        if return_sequences:
            _assert_close(outputs[n, :Tn], out_n[0])
            np.testing.assert_array_equal(outputs[n, Tn:], 0.0)       # padded outputs are 0
        else:
            _assert_close(outputs[n], out_n[0])
        hs_n = hs_n[None] if L == 1 else hs_n
        for layer in range(L):
            _assert_close(caches[layer, n, :Tn], hs_n[layer, 0])
            for t in range(Tn, T):                                   # padding copies step Tn-1
                np.testing.assert_array_equal(caches[layer, n, t], caches[layer, n, Tn - 1])
            np.testing.assert_array_equal(final_state[n, layer * S:(layer + 1) * S],
                                          caches[layer, n, Tn - 1, :S])
    assert loss == pytest.approx(want_loss, rel=1e-13, abs=0)
    _assert_close(grad, want_grad)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_full_lengths_equal_no_lengths(cell, return_sequences):
    """lengths = T for every record is the same computation as lengths=None, bit for bit."""
    X, Y, h0, params = make_case(cell, 2, True, "tanh", return_sequences, None, True,
                                 ("fullT", cell, return_sequences))
    network = (cell, 2, True, "tanh", return_sequences, 1)
    a = _run(X, Y, h0, params, *network, None)
    b = _run(X, Y, h0, params, *network, np.full(N, T, dtype=np.int64))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("L", [1, 3], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_shapes_and_cache_layout(cell, L):
    """hidden_states (N, T, C) for one layer and (L, N, T, C) for several, the state first in
    each cache; final_state (N, L·S), layer by layer; layer l > 0 reads layer l-1's h."""
    X, Y, h0, params = make_case(cell, L, True, "tanh", True, None, True, ("shapes", cell, L))
    outputs, hidden_states, final_state = reference.forward(X, h0, params, H, O, True, "tanh",
                                                            True, cell, L)
    C, S = CELLS[cell].cache * H, _state_width(cell)
    assert outputs.shape == (N, T, O)
    assert hidden_states.shape == ((N, T, C) if L == 1 else (L, N, T, C))
    assert final_state.shape == (N, L * S)
    p = _unpack(params[None], _param_shapes(cell, L, I, H, O, True))
    caches = hidden_states[None] if L == 1 else hidden_states
    for n in range(N):
        states, _ = _record_forward(X[n], h0[n], p, cell, L, True, "tanh")
        for layer in range(L):
            for t in range(T):
                h, c = states[layer][t + 1]
                want = np.concatenate([h[0], c[0]]) if cell == "lstm" else h[0]
                _assert_close(caches[layer, n, t, :S], want)
            np.testing.assert_array_equal(final_state[n, layer * S:(layer + 1) * S],
                                          caches[layer, n, T - 1, :S])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_forecast_carries_every_layer_state(cell):
    """forecast(steps) = forward on the context, then forward on each forecast from the full
    (N, L·S) state it left."""
    L = 2
    rng = np.random.default_rng(_seed("forecast", cell))
    params = rng.uniform(-0.9, 0.9, size=rnnkit.param_count(O, H, O, True, cell, L))
    X = rng.normal(size=(N, T, O))
    got = reference.forecast(X, None, params, H, O, True, "tanh", 3, cell, L)
    y, _, state = reference.forward(X, None, params, H, O, True, "tanh", False, cell, L)
    for s in range(3):
        np.testing.assert_array_equal(got[:, s], y)
        y, _, state = reference.forward(y[:, None], state, params, H, O, True, "tanh", False,
                                        cell, L)


def test_train_epoch_takes_each_minibatch_lengths_in_order():
    """train_epoch's lengths are per record of X, gathered by `order` per minibatch: the epoch
    equals forward/backward/clip/sgd_step by hand on X[rows], Y[rows], lengths[rows]."""
    cell, L = "gru", 2
    rng = np.random.default_rng(_seed("epoch"))
    n_rec = 5
    X = rng.normal(size=(n_rec, T, I))
    Y = rng.normal(size=(n_rec, T, O))
    lengths = np.array([5, 1, 3, 4, 2], dtype=np.int64)
    order = np.array([3, 0, 4, 1, 2])
    params0 = rng.uniform(-0.5, 0.5, size=rnnkit.param_count(I, H, O, True, cell, L))
    spec = (H, O, True, "tanh")

    params = params0.copy()
    losses, step, status, error = reference.train_epoch(
        X, Y, params, order, 2, *spec, 1, None, 1.0, "sgd", 0.1, 0.0, 0.0, 0.9, 0.999, 1e-8,
        None, None, None, 0, cell=cell, num_layers=L, lengths=lengths)
    assert (status, error, step) == ("completed", None, 3)

    want, want_losses = params0.copy(), []
    for start in range(0, n_rec, 2):
        rows = order[start:start + 2]
        out, hs, _ = reference.forward(X[rows], None, want, *spec, True, cell, L, lengths[rows])
        loss, grad = reference.backward(X[rows], Y[rows], None, want, hs, out, *spec, 1, cell, L,
                                        lengths[rows])
        reference.clip(grad, None, 1.0)
        reference.sgd_step(want, grad, None, 0.1, 0.0, 0.0)
        want_losses.append(loss)
    np.testing.assert_array_equal(losses, want_losses)
    np.testing.assert_array_equal(params, want)
    # and the lengths matter: the same epoch without them ends elsewhere
    other = params0.copy()
    reference.train_epoch(X, Y, other, order, 2, *spec, 1, None, 1.0, "sgd", 0.1, 0.0, 0.0, 0.9,
                          0.999, 1e-8, None, None, None, 0, cell=cell, num_layers=L)
    assert np.abs(other - params).max() > 1e-3


# ----------------------------------------------------------------------------- registry, layout
def test_every_registered_cell_has_a_reference_step():
    assert set(reference.CELL_STEPS) == set(CELLS)


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_layout_matches_documented_order(cell, bias, L):
    layout = rnnkit.param_layout(I, H, O, bias, cell, L)
    assert [(name, shape) for name, _, shape in layout] == _param_shapes(cell, L, I, H, O, bias)
    sizes = [int(np.prod(shape)) for _, _, shape in layout]
    assert [off for _, off, _ in layout] == list(np.cumsum([0] + sizes[:-1]))
    assert rnnkit.param_count(I, H, O, bias, cell, L) == sum(sizes)


# ----------------------------------------------------------------------------- bad arguments
def _bad_calls(cell="gru", num_layers=2, lengths=None, hidden_states=None):
    """The four functions called with the given network arguments on a valid case."""
    X, Y, h0, params = make_case("gru", 2, True, "tanh", True, None, False, ("bad",))
    spec = (H, O, True, "tanh")
    if hidden_states is None:
        _, hidden_states, _ = reference.forward(X, None, params, *spec, True, "gru", 2)
    outputs = np.zeros((N, T, O))
    return {
        "forward": lambda: reference.forward(X, None, params, *spec, True, cell, num_layers,
                                             lengths),
        "backward": lambda: reference.backward(X, Y, None, params, hidden_states, outputs, *spec,
                                               None, cell, num_layers, lengths),
        "train_epoch": lambda: reference.train_epoch(
            X, Y, params.copy(), np.arange(N), 2, *spec, None, None, None, "sgd", 0.1, 0.0, 0.0,
            0.9, 0.999, 1e-8, None, None, None, 0, cell=cell, num_layers=num_layers,
            lengths=lengths),
    }


@pytest.mark.parametrize("function", ["forward", "backward", "train_epoch"])
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(cell="elman"), ValueError, "cell must be one of"),
    (dict(cell=None), ValueError, "cell must be one of"),
    (dict(num_layers=0), ValueError, "num_layers must be an integer >= 1"),
    (dict(num_layers=1.5), ValueError, "num_layers must be an integer >= 1"),
    (dict(num_layers=True), ValueError, "num_layers must be an integer >= 1"),
    (dict(lengths=np.array([5, 5])), ValueError, r"lengths must have shape \(3,\)"),
    (dict(lengths=np.array([[5, 5, 5]])), ValueError, r"lengths must have shape \(3,\)"),
    (dict(lengths=np.array([5.0, 5.0, 5.0])), TypeError,
     "lengths must be None or a numpy array of int64, got array of dtype float64"),
    (dict(lengths=np.array([5, 0, 5])), ValueError, r"lengths must lie in \[1, T\] = \[1, 5\]"),
    (dict(lengths=np.array([5, 6, 5])), ValueError, r"lengths must lie in \[1, T\] = \[1, 5\]"),
], ids=["cell", "cell-None", "layers0", "layers-float", "layers-bool", "lengths-short",
        "lengths-2d", "lengths-float", "lengths-0", "lengths-over-T"])
def test_bad_arguments_raise_value_error(function, kwargs, exc, match):
    """Bad network arguments: ValueError; lengths of another dtype than int64: TypeError, as
    the C++ core raises."""
    with pytest.raises(exc, match=match):
        _bad_calls(**kwargs)[function]()


def test_forecast_checks_cell_and_layers():
    params = np.zeros(rnnkit.param_count(O, H, O, True, "lstm", 2))
    X = np.zeros((N, T, O))
    with pytest.raises(ValueError, match="cell must be one of"):
        reference.forecast(X, None, params, H, O, True, "tanh", 2, "elman", 2)
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        reference.forecast(X, None, params, H, O, True, "tanh", 2, "lstm", 0)


def test_mismatched_state_and_cache_raise_value_error():
    """h0 must be (N, L·S); hidden_states must be the cache of the same cell and depth."""
    X, Y, h0, params = make_case("lstm", 2, True, "tanh", True, None, True, ("shapes-bad",))
    spec = (H, O, True, "tanh", True)
    with pytest.raises(ValueError, match=r"h0 must have shape \(3, 12\)"):
        reference.forward(X, h0[:, :2 * H], params, *spec, "lstm", 2)
    outputs, hidden_states, _ = reference.forward(X, h0, params, *spec, "lstm", 2)
    with pytest.raises(ValueError, match=r"hidden_states must have shape \(2, 3, 5, 21\)"):
        reference.backward(X, Y, h0, params, hidden_states[0], outputs, *spec[:-1], None,
                           "lstm", 2)


# ----------------------------------------------------------------------------- against PyTorch
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_equals_torch_packed_sequence(cell):
    """The contract is PyTorch's (architecture.md §2-4): nn.RNN/GRU/LSTM with two layers on a
    pack_padded_sequence batch from a nonzero initial state give the same outputs (0 at
    padding), final state, masked MSE and full-BPTT gradient."""
    torch = pytest.importorskip("torch")
    L = 2
    X, Y, h0, params = make_case(cell, L, True, "tanh", True, LENGTHS, True, ("torch", cell))
    outputs, _, final_state, loss, grad = _run(X, Y, h0, params, cell, L, True, "tanh", True,
                                               None, LENGTHS)

    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](
        I, H, num_layers=L, batch_first=True, dtype=torch.float64)
    p = rnnkit.param_views(params, I, H, O, True, cell, L)
    with torch.no_grad():
        for layer in range(L):
            s = _sfx(layer)
            getattr(module, f"weight_ih_l{layer}").copy_(torch.from_numpy(p["U" + s]))
            getattr(module, f"weight_hh_l{layer}").copy_(torch.from_numpy(p["W" + s]))
            b_ih, b_hh = ((p["b" + s], np.zeros(H)) if cell == "rnn"
                          else (p["b_ih" + s], p["b_hh" + s]))
            getattr(module, f"bias_ih_l{layer}").copy_(torch.from_numpy(b_ih))
            getattr(module, f"bias_hh_l{layer}").copy_(torch.from_numpy(b_hh))
    V = torch.tensor(p["V"], requires_grad=True)
    c = torch.tensor(p["c"], requires_grad=True)
    S = _state_width(cell)
    states = torch.from_numpy(h0.reshape(N, L, S).transpose(1, 0, 2).copy())   # (L, N, S)
    hx = (states[..., :H].contiguous(), states[..., H:].contiguous()) if cell == "lstm" \
        else states.contiguous()

    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(np.nan_to_num(X)), torch.from_numpy(LENGTHS), batch_first=True,
        enforce_sorted=False)
    out, h_n = module(packed, hx)
    h_seq, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    valid = torch.from_numpy(np.arange(T) < LENGTHS[:, None])
    y = torch.where(valid[..., None], h_seq @ V.T + c, 0.0)
    loss_t = ((y - torch.from_numpy(np.nan_to_num(Y)))[valid] ** 2).mean()
    loss_t.backward()

    _assert_close(outputs, y.detach().numpy())
    state_t = torch.cat(h_n, dim=2) if cell == "lstm" else h_n                # (L, N, S)
    _assert_close(final_state, state_t.detach().numpy().transpose(1, 0, 2).reshape(N, L * S))
    assert loss == pytest.approx(loss_t.item(), rel=1e-13, abs=0)
    want = {"V": V.grad.numpy(), "c": c.grad.numpy()}
    for layer in range(L):
        s = _sfx(layer)
        want["U" + s] = getattr(module, f"weight_ih_l{layer}").grad.numpy()
        want["W" + s] = getattr(module, f"weight_hh_l{layer}").grad.numpy()
        if cell == "rnn":
            want["b" + s] = getattr(module, f"bias_ih_l{layer}").grad.numpy()
        else:
            want["b_ih" + s] = getattr(module, f"bias_ih_l{layer}").grad.numpy()
            want["b_hh" + s] = getattr(module, f"bias_hh_l{layer}").grad.numpy()
    got = rnnkit.param_views(grad, I, H, O, True, cell, L)
    assert set(got) == set(want)
    scale = np.abs(grad).max()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-13 * scale,
                                   err_msg=name)
