"""GRU/LSTM cells, stacked layers and padded batches (docs/architecture.md): the C++ core
against the NumPy reference, on the same data, for every cell and depth.

tests/test_cells_gradcheck.py holds the reference to finite differences (and PyTorch); this
file holds the C++ core to the reference: forward (outputs, caches, final state), backward
(loss, truncated gradient), whole training runs (functional and through the model API),
forecast, determinism (reruns, thread counts, plain vs tiled loops at every ISA level),
argument errors and NaN handling.

Tolerances (DESIGN.md §2): float64 single results to 1e-13 (forward) and 1e-12 (loss and
gradient) of the array's scale, a training run's per-epoch losses to 1e-10 relative; float32
to float32 precision (1e-5 forward, 2e-5 loss, gradient and training run, as
test_cpp_vs_reference.py). "Of the scale" means
|cpp - ref| <= tol * max |ref| elementwise, so elements that cancel to ~0 are judged on the
array's scale rather than their own.
"""

import zlib

import numpy as np
import pytest

import rnnkit
from rnnkit import _core
from rnnkit import reference as ref
from test_cpp_vs_reference import ISA_LEVELS, assert_same_bits, available, sgd_half_step

CELLS = ["rnn", "gru", "lstm"]
STATE = {"rnn": 1, "gru": 1, "lstm": 2}          # S, in multiples of H
CACHE = {"rnn": 1, "gru": 5, "lstm": 7}          # C, in multiples of H
CLASSES = {"rnn": rnnkit.RNN, "gru": rnnkit.GRU, "lstm": rnnkit.LSTM}
ACTIVATIONS = ["tanh", "sigmoid", "relu"]
FWD_TOL = {np.float64: 1e-13, np.float32: 1e-5}
GRAD_TOL = {np.float64: 1e-12, np.float32: 2e-5}

N, T, I, H, O = 4, 6, 2, 3, 2
MIXED = np.array([3, 6, 1, 5], dtype=np.int64)   # a short, a full, a length-1 and a T-1 record
FULL = np.full(N, T, dtype=np.int64)
LENGTHS = {"none": None, "mixed": MIXED, "allT": FULL}


# ----------------------------------------------------------------------------- helpers
def _seed(*key):
    return zlib.crc32(repr(key).encode())


def assert_close(actual, expected, tol, what=""):
    """Same shape and dtype; |actual - expected| <= tol * max |expected| elementwise."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    assert actual.dtype == expected.dtype, what
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    assert np.isfinite(scale), what
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * max(scale, 1e-300),
                               err_msg=what)


def spec(cell, L, bias=True, activation="tanh", hidden=H, out=O):
    """The keyword arguments both backends' forward/backward/train_epoch take."""
    return dict(hidden_size=hidden, output_size=out, bias=bias, activation=activation,
                cell=cell, num_layers=L)


def make_problem(key, cell, L, bias, return_sequences, dtype, with_h0, n=N, t=T, i=I,
                 hidden=H, out=O, activation="tanh"):
    """Random params, X, Y, h0 (N, L*S*H) for one network. ReLU LSTMs get smaller weights so
    that the unbounded c stays moderate."""
    rng = np.random.default_rng(_seed(key))
    P = rnnkit.param_count(i, hidden, out, bias, cell, L)
    scale = 0.4 if activation == "relu" else 0.6
    params = rng.uniform(-scale, scale, size=P).astype(dtype)
    X = rng.normal(size=(n, t, i)).astype(dtype)
    Y = rng.normal(size=(n, t, out) if return_sequences else (n, out)).astype(dtype)
    width = L * STATE[cell] * hidden
    h0 = rng.normal(scale=0.5, size=(n, width)).astype(dtype) if with_h0 else None
    if h0 is not None and activation == "relu":
        h0 = np.abs(h0)
    return params, X, Y, h0


def caches_of(hs, L):
    """hidden_states as (L, N, T, C) whatever the depth."""
    return hs[None] if L == 1 else hs


def check_forward_contract(out, hs, last, cell, L, lengths, return_sequences, hidden=H):
    """What the C++ forward promises by construction (architecture.md §3-4), bit for bit:
    padded outputs are 0, a padded step's cache is the previous step's, final_state is each
    layer's state after the record's last step."""
    c = caches_of(hs, L)
    n_rec, t_all = c.shape[1], c.shape[2]
    lens = np.full(n_rec, t_all) if lengths is None else lengths
    S = STATE[cell] * hidden
    for n in range(n_rec):
        ln = int(lens[n])
        if return_sequences:
            assert np.all(out[n, ln:] == 0), "padded outputs must be exactly 0"
        for t in range(ln, t_all):
            np.testing.assert_array_equal(c[:, n, t], c[:, n, ln - 1])
        want = np.concatenate([c[layer, n, ln - 1, :S] for layer in range(L)])
        np.testing.assert_array_equal(last[n], want)


def run_forward(backend, X, h0, params, sp, return_sequences, lengths):
    return backend.forward(X, h0, params, **sp, return_sequences=return_sequences,
                           lengths=lengths)


def run_backward(backend, X, Y, h0, params, fwd, sp, k, lengths):
    out, hs, _ = fwd
    return backend.backward(X, Y, h0, params, hs, out, **sp, bptt_truncate=k, lengths=lengths)


def compare_case(cell, L, bias, activation, return_sequences, k, lengths, dtype, with_h0, key):
    params, X, Y, h0 = make_problem(key, cell, L, bias, return_sequences, dtype, with_h0,
                                    activation=activation)
    sp = spec(cell, L, bias, activation)
    ftol, gtol = FWD_TOL[dtype], GRAD_TOL[dtype]

    fwd_r = run_forward(ref, X, h0, params, sp, return_sequences, lengths)
    fwd_c = run_forward(_core, X, h0, params, sp, return_sequences, lengths)
    for name, a, b in zip(("outputs", "hidden_states", "final_state"), fwd_c, fwd_r):
        assert_close(a, b, ftol, name)
    expected_cache = (N, T, CACHE[cell] * H) if L == 1 else (L, N, T, CACHE[cell] * H)
    assert fwd_c[1].shape == expected_cache
    assert fwd_c[2].shape == (N, L * STATE[cell] * H)
    check_forward_contract(*fwd_c, cell, L, lengths, return_sequences)

    loss_r, grad_r = run_backward(ref, X, Y, h0, params, fwd_r, sp, k, lengths)
    assert np.isfinite(loss_r) and np.all(np.isfinite(grad_r))
    assert np.abs(grad_r).max() > 1e-4, "degenerate case: (almost) no gradient"
    # the same (reference) forward results feed both backward passes: the backward alone
    loss_c, grad_c = run_backward(_core, X, Y, h0, params, fwd_r, sp, k, lengths)
    assert loss_c == pytest.approx(loss_r, rel=gtol, abs=0)
    assert_close(grad_c, grad_r, gtol, "grad (backward on the reference's caches)")
    # and end to end: the C++ backward on the C++ forward
    loss_cc, grad_cc = run_backward(_core, X, Y, h0, params, fwd_c, sp, k, lengths)
    assert loss_cc == pytest.approx(loss_r, rel=gtol, abs=0)
    assert_close(grad_cc, grad_r, gtol, "grad (C++ end to end)")
    return grad_cc


# ----------------------------------------------------------------------------- forward/backward
@pytest.mark.parametrize("lengths", list(LENGTHS), ids=[f"len-{k}" for k in LENGTHS])
@pytest.mark.parametrize("k", [None, 0, 1, 3, T - 1, 50], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("L", [1, 2], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cell", CELLS)
def test_forward_backward_match(cell, L, return_sequences, k, lengths):
    """Every truncation (None, 0, 1, 3, k = T-1 and k > T) with no lengths, mixed lengths
    (one of them 1) and lengths all T; an h0 whenever lengths are given."""
    compare_case(cell, L, True, "tanh", return_sequences, k, LENGTHS[lengths], np.float64,
                 with_h0=lengths != "none",
                 key=("fb", cell, L, return_sequences, k, lengths))


@pytest.mark.parametrize("k", [None, 2], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("L", [1, 2], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cell", CELLS)
def test_options_match(cell, L, bias, activation, dtype, return_sequences, k):
    """Bias or not, every activation, both dtypes; mixed lengths and an h0."""
    compare_case(cell, L, bias, activation, return_sequences, k, MIXED, dtype, with_h0=True,
                 key=("opt", cell, L, bias, activation, return_sequences, k))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("k", [None, 1], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", CELLS)
def test_three_layers_match(cell, return_sequences, k, dtype):
    compare_case(cell, 3, True, "tanh", return_sequences, k, MIXED, dtype, with_h0=True,
                 key=("L3", cell, return_sequences, k))


@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_all_T_is_no_lengths_bitwise(cell, return_sequences):
    """lengths all equal to T is the unpadded batch: the same bits in C++."""
    L = 2
    params, X, Y, h0 = make_problem(("allT", cell, return_sequences), cell, L, True,
                                    return_sequences, np.float64, True)
    sp = spec(cell, L)
    for k in (None, 1):
        results = []
        for lengths in (None, FULL):
            fwd = run_forward(_core, X, h0, params, sp, return_sequences, lengths)
            results.append(fwd + run_backward(_core, X, Y, h0, params, fwd, sp, k, lengths))
        for a, b in zip(*results):
            assert_same_bits(a, b)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", CELLS)
def test_truncation_and_lengths_change_the_cpp_result(cell, return_sequences):
    """Guards: the comparisons above could not pass with k or lengths ignored. k < T-1 differs
    from full BPTT, k >= T-1 is full BPTT bit for bit, and lengths change the result."""
    L = 2
    params, X, Y, h0 = make_problem(("guard", cell, return_sequences), cell, L, True,
                                    return_sequences, np.float64, True)
    sp = spec(cell, L)

    def grad(k, lengths):
        fwd = run_forward(_core, X, h0, params, sp, return_sequences, lengths)
        return run_backward(_core, X, Y, h0, params, fwd, sp, k, lengths)[1]

    full = grad(None, MIXED)
    assert np.abs(full - grad(1, MIXED)).max() > 1e-6 * np.abs(full).max()
    np.testing.assert_array_equal(grad(T - 1, MIXED), full)
    np.testing.assert_array_equal(grad(100, MIXED), full)
    assert np.abs(full - grad(None, None)).max() > 1e-6 * np.abs(full).max()


def test_a_record_of_length_one_alone():
    """A batch of a single record of length 1 in a long padded X: the C++ core equals the
    reference and the record run alone on its one step."""
    for cell in CELLS:
        L = 2
        params, X, Y, h0 = make_problem(("len1", cell), cell, L, True, True, np.float64, True,
                                        n=1)
        sp = spec(cell, L)
        lengths = np.array([1], dtype=np.int64)
        fwd = run_forward(_core, X, h0, params, sp, True, lengths)
        alone = run_forward(_core, X[:, :1], h0, params, sp, True, None)
        np.testing.assert_array_equal(fwd[0][:, :1], alone[0])
        np.testing.assert_array_equal(fwd[2], alone[2])
        assert np.all(fwd[0][:, 1:] == 0)
        for k in (None, 0):
            g = run_backward(_core, X, Y, h0, params, fwd, sp, k, lengths)
            g_alone = run_backward(_core, X[:, :1], Y[:, :1], h0, params, alone, sp, k, None)
            assert g[0] == pytest.approx(g_alone[0], rel=1e-14, abs=0)
            assert_close(g[1], g_alone[1], 1e-14)
            g_ref = run_backward(ref, X, Y, h0, params,
                                 run_forward(ref, X, h0, params, sp, True, lengths), sp, k,
                                 lengths)
            assert_close(g[1], g_ref[1], 1e-12)


# ----------------------------------------------------------------------------- training runs
def run_epochs(backend, X, Y, params, optimizer, lengths, sp, k, epochs=3, batch_size=4,
               clip_norm=0.5, clip_value=0.05, seed=0):
    """`epochs` calls of train_epoch, a new shuffled order each epoch (lengths gathered by the
    order inside train_epoch). Returns per-minibatch losses, per-epoch losses (weighted by
    batch size, as fit), the final params and the optimizer."""
    opt = type(optimizer)(**{key: v for key, v in optimizer.config().items() if key != "name"})
    opt._bind(params.size, params.dtype)
    p = params.copy()
    rng = np.random.default_rng(seed)
    n = len(X)
    sizes = np.diff(np.append(np.arange(0, n, batch_size), n))
    batch_losses, epoch_losses = [], []
    for _ in range(epochs):
        order = rng.permutation(n)
        losses, opt.step_count, status, error = backend.train_epoch(
            X, Y, p, order, batch_size, **sp, bptt_truncate=k, clip_norm=clip_norm,
            clip_value=clip_value, **opt.epoch_args(), lengths=lengths)
        assert (status, error) == ("completed", None)
        assert losses.shape == sizes.shape
        batch_losses.append(np.array(losses))
        epoch_losses.append(float(np.dot(losses, sizes) / n))
    return np.concatenate(batch_losses), np.array(epoch_losses), p, opt


OPTIMIZERS = {"sgd-momentum": rnnkit.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
              "adam": rnnkit.Adam(lr=0.01, weight_decay=1e-3)}


def compare_training(cell, L, opt_name, return_sequences, k, dtype, key, hidden=H,
                     weight_scale=1.0):
    n = 11                                               # batches of 4, 4, 3
    params, X, Y, _ = make_problem(key, cell, L, True, return_sequences, dtype, False, n=n,
                                   hidden=hidden)
    params *= weight_scale
    lengths = np.array([6, 1, 3, 6, 5, 2, 4, 6, 1, 3, 5], dtype=np.int64)
    sp = spec(cell, L, hidden=hidden)
    results = {b: run_epochs(b, X, Y, params, OPTIMIZERS[opt_name], lengths, sp, k)
               for b in (ref, _core)}
    (bl_r, el_r, p_r, o_r), (bl_c, el_c, p_c, o_c) = results[ref], results[_core]
    if dtype == np.float64:
        np.testing.assert_allclose(el_c, el_r, rtol=1e-10, atol=0)
        np.testing.assert_allclose(bl_c, bl_r, rtol=1e-10, atol=0)
        ptol = 1e-10
    else:
        np.testing.assert_allclose(el_c, el_r, rtol=2e-5, atol=0)
        np.testing.assert_allclose(bl_c, bl_r, rtol=2e-5, atol=0)
        ptol = 2e-5
    assert_close(p_c, p_r, ptol, "params")
    assert o_c.step_count == o_r.step_count == 9
    for name in o_r.state:
        assert_close(o_c.state[name], o_r.state[name], ptol, name)
    assert not np.array_equal(p_c, params)               # the run moved the parameters
    # guard: with lengths ignored the run would differ
    el_nolen = run_epochs(_core, X, Y, params, OPTIMIZERS[opt_name], None, sp, k)[1]
    assert np.abs(el_nolen - el_c).max() > 1e-3 * np.abs(el_c).max()


@pytest.mark.parametrize("k", [None, 2], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("L", [1, 2], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cell", CELLS)
def test_train_epoch_run_matches(cell, L, opt_name, return_sequences, k):
    """Three epochs of shuffled minibatches (an uneven last one), lengths gathered by the
    order, clip_norm and clip_value, SGD with momentum or Adam: per-epoch (and per-minibatch)
    losses to 1e-10 relative, final parameters and optimizer state close."""
    compare_training(cell, L, opt_name, return_sequences, k, np.float64,
                     ("train", cell, L, opt_name, return_sequences, k))


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("cell", CELLS)
def test_train_epoch_run_matches_deep_and_float32(cell, opt_name):
    compare_training(cell, 3, opt_name, True, 2, np.float64, ("train3", cell, opt_name))
    compare_training(cell, 2, opt_name, True, 2, np.float32, ("train32", cell, opt_name))


@pytest.mark.parametrize("k", [None, 2], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", CELLS)
def test_train_epoch_run_matches_with_padded_cache_rows(cell, return_sequences, k):
    """H = 256 in float64 with T = 6: T·C·H·8 bytes from one record's cache to the next is a
    multiple of 4 KiB for every cell (C = 1, 5, 7), where train_epoch pads each step's cache row
    by a cache line (csrc/train_epoch.cpp); two layers, lengths, Adam's state. The weights are
    scaled to U(±0.6/16) (±1/√H, as the models draw them): at U(±0.6) the 256-wide sums saturate
    the cells and the training diverges, and the backends' roundings with it."""
    assert T == 6 and all(T * C * 256 * 8 % 4096 == 0 for C in (1, 5, 7))
    compare_training(cell, 2, "adam", return_sequences, k, np.float64,
                     ("train-padded", cell, return_sequences, k), hidden=256,
                     weight_scale=1 / 16)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("cell", CELLS)
def test_model_fit_matches_across_backends(cell, return_sequences):
    """rnnkit.RNN/GRU/LSTM(num_layers=2) with backend="cpp" and "reference": fit with lengths,
    shuffling, clipping, truncation and validation data (with its own lengths) gives the same
    history and weights; predict with lengths agrees."""
    rng = np.random.default_rng(_seed("model", cell, return_sequences))
    n, n_val = 13, 5
    X = rng.normal(size=(n, T, I))
    Y = rng.normal(size=(n, T, O) if return_sequences else (n, O))
    lengths = rng.integers(1, T + 1, size=n)
    lengths[:2] = [1, T]
    X_val = rng.normal(size=(n_val, T, I))
    Y_val = rng.normal(size=(n_val, T, O) if return_sequences else (n_val, O))
    lengths_val = np.array([2, T, 1, 4, 5])
    hist, models = {}, {}
    for backend in ("cpp", "reference"):
        model = CLASSES[cell](I, 5, O, num_layers=2, return_sequences=return_sequences,
                              seed=3, backend=backend)
        opt = (rnnkit.Adam(lr=0.02) if cell != "rnn"
               else rnnkit.SGD(lr=0.05, momentum=0.9))
        hist[backend] = model.fit(X, Y, epochs=4, batch_size=5, optimizer=opt,
                                  bptt_truncate=2, clip_norm=1.0, clip_value=0.5,
                                  validation_data=(X_val, Y_val, lengths_val),
                                  lengths=lengths)
        models[backend] = model
    for key in ("loss", "val_loss"):
        assert len(hist["cpp"][key]) == 4
        np.testing.assert_allclose(hist["cpp"][key], hist["reference"][key], rtol=1e-10, atol=0)
    assert hist["cpp"]["val_loss"][-1] != hist["cpp"]["val_loss"][0]
    for name, w in models["reference"].weights.items():
        assert_close(models["cpp"].weights[name], w, 1e-10, name)
    assert_close(models["cpp"].predict(X_val, lengths=lengths_val),
                 models["reference"].predict(X_val, lengths=lengths_val), 1e-12)


# ----------------------------------------------------------------------------- forecast
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("L", [1, 2, 3], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cell", CELLS)
def test_forecast_matches_reference_and_forward_loop(cell, L, dtype):
    """_core.forecast equals the reference's closely, and a loop of _core.forward calls that
    carries final_state (the last prediction as the next input) bit for bit."""
    F, steps = 2, 7
    params, X, _, h0 = make_problem(("forecast", cell, L), cell, L, True, False, dtype, True,
                                    i=F, out=F)
    sp = spec(cell, L, out=F)
    got = _core.forecast(X, h0, params, **sp, steps=steps)
    want = ref.forecast(X, h0, params, **sp, steps=steps)
    assert got.shape == (N, steps, F) and got.dtype == dtype
    assert_close(got, want, FWD_TOL[dtype])
    y, _, state = _core.forward(X, h0, params, **sp, return_sequences=False)
    loop = [y]
    for _ in range(steps - 1):
        y, _, state = _core.forward(y[:, None, :], state, params, **sp, return_sequences=False)
        loop.append(y)
    np.testing.assert_array_equal(got, np.stack(loop, axis=1))
    assert np.abs(got[:, -1] - got[:, 0]).max() > 1e-3        # the rollout moves


# ----------------------------------------------------------------------------- determinism
@pytest.fixture
def core_settings():
    """Restore the C++ core's loops, instruction-set level and thread count after a test."""
    threads = rnnkit.get_num_threads()
    try:
        yield
    finally:
        _core._set_plain_loops(False)
        _core._set_isa("best")
        rnnkit.set_num_threads(threads)


def core_results(X, Y, h0, params, sp, lengths, k, order):
    """Everything the C++ core computes for one problem: forward, backward, an Adam epoch."""
    rs = Y.ndim == 3
    out, hs, last = _core.forward(X, h0, params, **sp, return_sequences=rs, lengths=lengths)
    loss, grad = _core.backward(X, Y, h0, params, hs, out, **sp, bptt_truncate=k,
                                lengths=lengths)
    p = params.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    losses = _core.train_epoch(X, Y, p, order, 5, **sp, bptt_truncate=k, clip_norm=1.0,
                               clip_value=None, optimizer="adam", lr=0.01, momentum=0.0,
                               weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8,
                               momentum_buffer=None, exp_avg=m, exp_avg_sq=v, step=0,
                               lengths=lengths)[0]
    return out, hs, last, np.array(loss), grad, losses, p, m, v


@pytest.mark.parametrize("cell", CELLS)
def test_reruns_are_bitwise_equal(cell):
    params, X, Y, h0 = make_problem(("rerun", cell), cell, 2, True, True, np.float64, True)
    order = np.random.default_rng(0).permutation(N)
    sp = spec(cell, 2)
    first = core_results(X, Y, h0, params, sp, MIXED, 2, order)
    second = core_results(X, Y, h0, params, sp, MIXED, 2, order)
    for a, b in zip(first, second):
        assert_same_bits(a, b)


# Big enough that the core splits every region of the work: it starts a thread per 2^18
# multiply-adds (kMinWorkPerThread in csrc/network.cpp). Forward: T·G·H·(H + In) per record,
# with T = 16, H = 48, I = 4 at least 16·48·52 = 39,936 (RNN, layer 0; GRU 3x, LSTM 4x): at
# most 6 records per chunk, so 3 threads get 3 chunks of 48 records and 5 threads 5; the
# backward's per-record work is more, and the weight-gradient products split the G·H >= 48
# rows in chunks of 8 (each row 48·16·52 multiply-adds).
BIG = dict(n=48, t=16, i=4, hidden=48, out=3)


def over_every_case(test):
    """Parametrizes a test over every cell, both dtypes, many-to-one and many-to-many, and full
    and truncated BPTT."""
    for mark in (pytest.mark.parametrize("cell", CELLS),
                 pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"]),
                 pytest.mark.parametrize("return_sequences", [False, True],
                                         ids=["m2one", "m2many"]),
                 pytest.mark.parametrize("k", [None, 2], ids=lambda k: f"k{k}")):
        test = mark(test)
    return test


@over_every_case
def test_results_do_not_depend_on_the_thread_count(core_settings, cell, dtype,
                                                   return_sequences, k):
    L = 2
    params, X, Y, h0 = make_problem(("threads", cell, return_sequences), cell, L, True,
                                    return_sequences, dtype, True, **BIG)
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, BIG["t"] + 1, size=BIG["n"]).astype(np.int64)
    lengths[:3] = [1, BIG["t"], BIG["t"] - 1]
    order = rng.permutation(BIG["n"])
    sp = spec(cell, L, hidden=BIG["hidden"], out=BIG["out"])
    results = {}
    # 5 threads: chunks of fewer rows than a tile, whose forward takes each record's input
    # projection over all its steps at once (network.cpp), where larger chunks take it step by
    # step for all their rows
    for threads in (1, 2, 3, 5):
        rnnkit.set_num_threads(threads)
        assert rnnkit.get_num_threads() == threads
        results[threads] = core_results(X, Y, h0, params, sp, lengths, k, order)
    for threads in (2, 3, 5):
        for a, b in zip(results[1], results[threads]):
            assert_same_bits(a, b)


@over_every_case
def test_train_epoch_writes_the_gradient_backward_adds(core_settings, cell, dtype,
                                                       return_sequences, k):
    """train_epoch's gradient is written in place (its first weight-gradient product sets dW's
    rows, the rest is cleared first); backward's is added into zeros. Bit for bit the same: one
    SGD step of lr 0.5 (exact halving, one rounding) gives params - 0.5 backward's gradient, for
    three layers, lengths, and any thread count."""
    L = 3
    params, X, Y, _ = make_problem(("set_grad", cell, return_sequences), cell, L, True,
                                   return_sequences, dtype, False, **BIG)
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, BIG["t"] + 1, size=BIG["n"]).astype(np.int64)
    sp = spec(cell, L, hidden=BIG["hidden"], out=BIG["out"])
    out, hs, _ = _core.forward(X, None, params, **sp, return_sequences=return_sequences,
                               lengths=lengths)
    grad = _core.backward(X, Y, None, params, hs, out, **sp, bptt_truncate=k,
                          lengths=lengths)[1]
    assert np.count_nonzero(grad) > 0.9 * grad.size
    want = params - params.dtype.type(0.5) * grad
    for threads in (1, 2, 3):
        rnnkit.set_num_threads(threads)
        assert_same_bits(sgd_half_step(X, Y, params, sp, lengths, k), want,
                         err_msg=f"{threads} threads")


# predict keeps two steps of each record's cache when one layer feeds a many-to-one output
# (step t in slot t % 2), and all T otherwise; records split across threads. SMALL: fewer records
# than a tile has rows and several inputs, where forward takes each record's input projection
# over all its steps at once and predict (two steps kept) goes step by step; H = 16, a whole
# number of vectors, so that the RNN cell accumulates in place in the cache.
SMALL = dict(n=4, t=6, i=3, hidden=16, out=2)


@pytest.mark.parametrize("size", ["big", "small"])
@pytest.mark.parametrize("plain", [False, True], ids=["tiled", "plain"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("lengths", ["none", "mixed"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("L", [1, 2], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_predict_equals_forward_bitwise(core_settings, cell, dtype, L, return_sequences,
                                        lengths, threads, plain, size):
    """predict gives forward's outputs and final state bit for bit, in both backends."""
    shape = BIG if size == "big" else SMALL
    params, X, _, h0 = make_problem(("predict", cell, L, return_sequences), cell, L, True,
                                    return_sequences, dtype, True, **shape)
    lens = None
    if lengths == "mixed":
        lens = np.random.default_rng(4).integers(1, shape["t"] + 1, size=shape["n"])
        lens[:3] = [1, shape["t"], 2]
    sp = spec(cell, L, hidden=shape["hidden"], out=shape["out"])
    rnnkit.set_num_threads(threads)
    _core._set_plain_loops(plain)
    for backend in (_core, ref):
        for h in (h0, None):
            out, _, last = backend.forward(X, h, params, **sp,
                                           return_sequences=return_sequences, lengths=lens)
            got = backend.predict(X, h, params, **sp, return_sequences=return_sequences,
                                  lengths=lens)
            assert len(got) == 2
            for a, b in zip(got, (out, last)):
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)


def seven_records(tag, cell, dtype, hidden, order_seed):
    """A two-layer problem of 7 records of lengths 1 to 6, with h0, biases and outputs at every
    step, and a shuffled order: (params, X, Y, h0, lengths, order, spec)."""
    params, X, Y, h0 = make_problem(tag, cell, 2, True, True, dtype, True, n=7, hidden=hidden)
    lengths = np.array([6, 1, 3, 6, 5, 2, 4], dtype=np.int64)
    order = np.random.default_rng(order_seed).permutation(7)
    return params, X, Y, h0, lengths, order, spec(cell, 2, hidden=hidden)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_avx2_and_avx512_give_the_same_bits(core_settings, cell, dtype):
    """The two levels that fuse multiply-adds (in the products and in tanh and the sigmoid)
    round every operation alike: forward, backward and a training epoch are bit-equal."""
    if not available("avx512"):
        pytest.skip("this CPU has no avx512")
    k = 2
    params, X, Y, h0, lengths, order, sp = seven_records(("levels", cell), cell, dtype, 19, 3)
    results = {}
    for isa in ("avx2", "avx512"):
        _core._set_isa(isa)
        results[isa] = core_results(X, Y, h0, params, sp, lengths, k, order)
    for a, b in zip(results["avx2"], results["avx512"]):
        assert_same_bits(a, b)


@pytest.mark.parametrize("hidden", [5, 16, 19], ids=lambda h: f"H{h}")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_tiled_equal_plain_bitwise_at_each_isa(core_settings, isa, cell, dtype, hidden):
    """At each instruction-set level the tiled products round exactly like the plain loops,
    and both agree with the reference."""
    if not available(isa):
        pytest.skip(f"this CPU has no {isa}")
    k = 2
    params, X, Y, h0, lengths, order, sp = seven_records(("isa", cell, hidden), cell, dtype,
                                                         hidden, 2)
    _core._set_isa(isa)
    results = {}
    for plain in (True, False):
        _core._set_plain_loops(plain)
        results[plain] = core_results(X, Y, h0, params, sp, lengths, k, order)
    for a, b in zip(results[True], results[False]):
        assert_same_bits(a, b)
    out_r, hs_r, last_r = ref.forward(X, h0, params, **sp, return_sequences=True,
                                      lengths=lengths)
    loss_r, grad_r = ref.backward(X, Y, h0, params, hs_r, out_r, **sp, bptt_truncate=k,
                                  lengths=lengths)
    out_c, hs_c, last_c, loss_c, grad_c = results[False][:5]
    assert_close(out_c, out_r, FWD_TOL[dtype])
    assert_close(hs_c, hs_r, FWD_TOL[dtype])
    assert_close(last_c, last_r, FWD_TOL[dtype])
    assert float(loss_c) == pytest.approx(loss_r, rel=GRAD_TOL[dtype], abs=0)
    assert_close(grad_c, grad_r, GRAD_TOL[dtype])


# ----------------------------------------------------------------------------- errors
BACKENDS = [pytest.param(ref, id="reference"), pytest.param(_core, id="cpp")]


def small(cell="gru", L=2, rs=False):
    params, X, Y, h0 = make_problem(("err", cell, L, rs), cell, L, True, rs, np.float64, True)
    return params, X, Y, h0, spec(cell, L)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_cell_and_num_layers(backend):
    params, X, Y, h0, sp = small()
    for bad in ("xyz", "GRU", ""):
        with pytest.raises(ValueError, match="cell must be one of.*'rnn'.*'gru'.*'lstm'"):
            backend.forward(X, h0, params, **{**sp, "cell": bad}, return_sequences=False)
        with pytest.raises(ValueError, match="cell must be one of"):
            backend.forecast(X, None, params, **{**sp, "cell": bad, "output_size": I},
                             steps=2)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"num_layers must .*>= 1, got {bad}"):
            backend.forward(X, None, params, **{**sp, "num_layers": bad},
                            return_sequences=False)
        with pytest.raises(ValueError, match="num_layers must"):
            backend.backward(X, Y, None, params, np.zeros((N, T, 5 * H)), np.zeros((N, O)),
                             **{**sp, "num_layers": bad}, bptt_truncate=None)
    if backend is _core:   # pybind11 refuses a float where an integer is declared
        with pytest.raises(TypeError, match="num_layers"):
            backend.forward(X, None, params, **{**sp, "num_layers": 1.5},
                            return_sequences=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_refuses_what_forward_refuses(backend):
    """The same checks, the same messages."""
    params, X, _, h0, sp = small()
    bad_calls = [
        dict(X=X[0]), dict(h0=h0[:, :-1]),
        dict(params=params[:-1]), dict(lengths=np.zeros(N, dtype=np.int64)),
        dict(sp={**sp, "cell": "xyz"}), dict(sp={**sp, "num_layers": 0}),
        dict(sp={**sp, "activation": "softsign"}),
    ]
    for bad in bad_calls:
        args = {**dict(X=X, h0=h0, params=params, sp=sp, lengths=None), **bad}
        messages = []
        for fn in (backend.forward, backend.predict):
            with pytest.raises((ValueError, TypeError)) as info:
                fn(args["X"], args["h0"], args["params"], **args["sp"], return_sequences=False,
                   lengths=args["lengths"])
            messages.append((info.type, str(info.value)))
        assert messages[0] == messages[1], bad


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_lengths_values_and_shapes(backend):
    params, X, Y, h0, sp = small()
    out, hs, _ = ref.forward(X, h0, params, **sp, return_sequences=False)

    def calls(lengths):
        yield lambda: backend.forward(X, h0, params, **sp, return_sequences=False,
                                      lengths=lengths)
        yield lambda: backend.backward(X, Y, h0, params, hs, out, **sp, bptt_truncate=1,
                                       lengths=lengths)
        yield lambda: backend.train_epoch(
            X, Y, params.copy(), np.arange(N), 2, **sp, bptt_truncate=None, clip_norm=None,
            clip_value=None, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
            beta1=0.0, beta2=0.0, eps=0.0, momentum_buffer=None, exp_avg=None,
            exp_avg_sq=None, step=0, lengths=lengths)

    for bad in ([0, 1, 2, 3], [1, 2, 7, 3], [-1, 2, 2, 2]):
        for call in calls(np.array(bad, dtype=np.int64)):
            with pytest.raises(ValueError, match=r"lengths must .*\[1, T\] = \[1, 6\]"):
                call()
    for bad in (np.full(N + 1, 2), np.full(N - 1, 2), np.full((N, 1), 2)):
        for call in calls(np.asarray(bad, dtype=np.int64)):
            with pytest.raises(ValueError, match="lengths must have shape"):
                call()
    # a 0-d array: the C++ core says TypeError (not an array of that shape), the reference
    # ValueError (the wrong shape); both name lengths
    for call in calls(np.array(3, dtype=np.int64)):
        with pytest.raises((TypeError, ValueError), match=r"lengths must .*shape \(4,\)"):
            call()


def test_bad_lengths_dtype():
    """The functional level takes int64 (architecture.md §6): both backends raise the same
    TypeError naming lengths for any other dtype or a list (the reference used to convert
    other integer dtypes and raise ValueError for the rest)."""
    params, X, Y, h0, sp = small()
    for backend in (_core, ref):
        for bad in (np.full(N, 2.0), np.full(N, 2, dtype=np.int32), [2, 2, 2, 2],
                    np.full(N, True)):
            with pytest.raises(TypeError, match="lengths must be None or a numpy array of int64"):
                backend.forward(X, h0, params, **sp, return_sequences=False, lengths=bad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_h0_of_the_wrong_width(backend, cell):
    """h0 is (N, L*S*H), LSTM S = 2: the per-layer (N, H) or one layer's width is refused."""
    L = 2
    params, X, Y, _, sp = small(cell, L)
    width = L * STATE[cell] * H
    out, hs, _ = ref.forward(X, None, params, **sp, return_sequences=False)
    for bad in ((N, H), (N, width - 1), (N, width + H), (N + 1, width), (L, N, H)):
        h0 = np.zeros(bad)
        msg = rf"h0 must have shape \({N}, {width}\)"
        with pytest.raises(ValueError, match=msg):
            backend.forward(X, h0, params, **sp, return_sequences=False)
        with pytest.raises(ValueError, match=msg):
            backend.backward(X, Y, h0, params, hs, out, **sp, bptt_truncate=None)
        with pytest.raises(ValueError, match=msg):
            backend.forecast(X, h0, np.zeros(rnnkit.param_count(I, H, I, True, cell, L)),
                             **{**sp, "output_size": I}, steps=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hidden_states_of_another_network(backend):
    """backward checks the cache against the cell and depth it is told."""
    params, X, Y, h0, sp = small("gru", 2)
    out, hs, _ = ref.forward(X, h0, params, **sp, return_sequences=False)
    lstm = rnnkit.param_count(I, H, O, True, "lstm", 2)
    with pytest.raises(ValueError, match="hidden_states must have shape"):
        backend.backward(X, Y, None, np.zeros(lstm), hs, out, **{**sp, "cell": "lstm"},
                         bptt_truncate=None)
    with pytest.raises(ValueError, match="hidden_states must have shape"):
        backend.backward(X, Y, None, params, hs[0], out, **sp, bptt_truncate=None)


# ----------------------------------------------------------------------------- NaN
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_nan_at_a_valid_step_gives_nan_loss(cell, activation, return_sequences):
    L = 2
    params, X, Y, h0 = make_problem(("nanvalid", cell, activation), cell, L, True,
                                    return_sequences, np.float64, True, activation=activation)
    sp = spec(cell, L, activation=activation)
    X[2, 0, 1] = np.nan            # record 2 has length 1: its only step
    X[0, 1, 0] = np.nan            # record 0 has length 3: a middle step
    for backend in (ref, _core):
        with np.errstate(invalid="ignore"):
            fwd = run_forward(backend, X, h0, params, sp, return_sequences, MIXED)
            loss, grad = run_backward(backend, X, Y, h0, params, fwd, sp, None, MIXED)
        assert np.isnan(loss), backend.__name__
        assert np.isnan(grad).any(), backend.__name__
        assert np.isnan(fwd[2][[0, 2]]).any(axis=1).all()       # the two records' states
        assert np.isfinite(fwd[2][[1, 3]]).all()                # the others are untouched


@pytest.mark.parametrize("fill", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("k", [None, 1], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("L", [1, 2], ids=lambda L: f"L{L}")
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_steps_are_never_read(backend, cell, L, return_sequences, k, fill):
    """X (and many-to-many Y) at padded steps t >= lengths[n] hold no information
    (architecture.md §4: the backward pass never visits a padded step): NaN or Inf there
    gives the same bits as zeros there, in forward, backward and a training epoch."""
    params, X, Y, h0 = make_problem(("nanpad", cell, L, return_sequences), cell, L, True,
                                    return_sequences, np.float64, True)
    sp = spec(cell, L)
    pad = np.arange(T) >= MIXED[:, None]                        # (N, T)
    X0, Y0 = X.copy(), Y.copy()
    X0[pad] = 0.0
    Xf, Yf = X.copy(), Y.copy()
    Xf[pad] = fill
    if return_sequences:
        Y0[pad] = 0.0
        Yf[pad] = fill
    results = []
    for Xb, Yb in ((X0, Y0), (Xf, Yf)):
        with np.errstate(invalid="ignore", over="ignore"):
            fwd = run_forward(backend, Xb, h0, params, sp, return_sequences, MIXED)
            loss, grad = run_backward(backend, Xb, Yb, h0, params, fwd, sp, k, MIXED)
            p = params.copy()
            epoch = backend.train_epoch(
                Xb, Yb, p, np.array([2, 0, 3, 1]), 3, **sp, bptt_truncate=k, clip_norm=None,
                clip_value=None, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
                beta1=0.0, beta2=0.0, eps=0.0, momentum_buffer=None, exp_avg=None,
                exp_avg_sq=None, step=0, lengths=MIXED)
        results.append(dict(outputs=fwd[0], hidden_states=fwd[1], final_state=fwd[2],
                            loss=np.array(loss), grad=grad, epoch=epoch, params=p))
    zeros, filled = results
    for name in ("outputs", "hidden_states", "final_state", "loss"):
        np.testing.assert_array_equal(filled[name], zeros[name], err_msg=name)
    bad = np.flatnonzero(filled["grad"] != zeros["grad"])
    names = [name for name, off, shape in rnnkit.param_layout(I, H, O, True, cell, L)
             for _ in range(int(np.prod(shape)))]
    assert bad.size == 0, (
        f"{fill} at padded steps changes the gradient of "
        f"{sorted(set(names[i] for i in bad))} ({bad.size} elements, e.g. "
        f"{filled['grad'][bad[0]]!r} instead of {zeros['grad'][bad[0]]!r})")
    assert zeros["epoch"][1:] == (2, "completed", None)
    assert filled["epoch"][1:] == (2, "completed", None), filled["epoch"]
    np.testing.assert_array_equal(filled["epoch"][0], zeros["epoch"][0])
    np.testing.assert_array_equal(filled["params"], zeros["params"])
