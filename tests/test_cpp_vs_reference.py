"""The C++ core against the NumPy reference: same functions, same data, same numbers.

Tolerances (DESIGN.md §2): float64 single gradients to 1e-12 relative and a whole training
run's per-epoch losses to 1e-10 relative; float32 to float32 precision. "Relative" is taken
against the largest magnitude in the array, so elements that cancel to ~0 are judged on the
array's scale rather than their own.
"""

import zlib

import numpy as np
import pytest

import rnnkit
from rnnkit import _core
from rnnkit import reference as ref

TOL = {np.float64: 1e-12, np.float32: 2e-5}


def assert_same_bits(a, b, err_msg=""):
    """a and b hold the same bytes: equal values, and also the same sign of zero and NaN payload
    (np.array_equal takes -0.0 for +0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, err_msg
    assert a.tobytes() == b.tobytes(), err_msg or "not bitwise equal"


def sgd_half_step(X, Y, params, sp, lengths, k):
    """train_epoch's parameters after one SGD step over all the records at once (lr 0.5, no
    clipping): params - 0.5 grad, with grad written by network_backward (set_grad)."""
    p = params.copy()
    z = np.zeros_like(p)
    _core.train_epoch(X, Y, p, np.arange(len(X)), len(X), **sp, bptt_truncate=k,
                      clip_norm=None, clip_value=None, optimizer="sgd", lr=0.5, momentum=0.0,
                      weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8, momentum_buffer=None,
                      exp_avg=z, exp_avg_sq=z.copy(), step=0, lengths=lengths)
    return p


def assert_close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    scale = max(np.max(np.abs(expected)), 1e-300) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def make_problem(rng, N, T, I, H, O, bias, return_sequences, dtype, with_h0):
    P = rnnkit.param_count(I, H, O, bias)
    params = rng.uniform(-0.6, 0.6, size=P).astype(dtype)
    X = rng.normal(size=(N, T, I)).astype(dtype)
    Y = rng.normal(size=(N, T, O) if return_sequences else (N, O)).astype(dtype)
    h0 = rng.normal(scale=0.5, size=(N, H)).astype(dtype) if with_h0 else None
    return params, X, Y, h0


SHAPES = [  # N, T, I, H, O
    (1, 1, 1, 1, 1),
    (1, 7, 1, 5, 1),
    (4, 9, 3, 6, 2),
    (3, 1, 2, 4, 3),
    (2, 12, 1, 17, 1),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}I{}H{}O{}".format(*s))
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["many2one", "many2many"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("bptt_truncate", [None, 0, 1, 3, 50])
def test_forward_backward_match(dtype, shape, activation, return_sequences, bias, bptt_truncate):
    N, T, I, H, O = shape
    rng = np.random.default_rng(zlib.crc32(repr((shape, activation, return_sequences, bias)).encode()))
    params, X, Y, h0 = make_problem(rng, N, T, I, H, O, bias, return_sequences, dtype,
                                    with_h0=(N % 2 == 0))
    spec = dict(hidden_size=H, output_size=O, bias=bias, activation=activation)
    tol = TOL[dtype]

    out_r, hs_r, last_r = ref.forward(X, h0, params, **spec, return_sequences=return_sequences)
    out_c, hs_c, last_c = _core.forward(X, h0, params, **spec, return_sequences=return_sequences)
    assert_close(out_c, out_r, tol)
    assert_close(hs_c, hs_r, tol)
    assert_close(last_c, last_r, tol)
    assert np.array_equal(last_c, hs_c[:, -1])

    # the same forward results feed both backward passes, so only the backward is compared
    loss_r, grad_r = ref.backward(X, Y, h0, params, hs_r, out_r, **spec,
                                  bptt_truncate=bptt_truncate)
    loss_c, grad_c = _core.backward(X, Y, h0, params, hs_r, out_r, **spec,
                                    bptt_truncate=bptt_truncate)
    assert loss_c == pytest.approx(loss_r, rel=tol)
    assert_close(grad_c, grad_r, tol)


def test_truncation_changes_the_gradient():
    """A guard against both backends ignoring k: on a long sequence, k=1 and full BPTT differ."""
    rng = np.random.default_rng(3)
    params, X, Y, _ = make_problem(rng, 2, 10, 1, 4, 1, True, False, np.float64, False)
    spec = dict(hidden_size=4, output_size=1, bias=True, activation="tanh")
    out, hs, _ = _core.forward(X, None, params, **spec, return_sequences=False)
    full = _core.backward(X, Y, None, params, hs, out, **spec, bptt_truncate=None)[1]
    short = _core.backward(X, Y, None, params, hs, out, **spec, bptt_truncate=1)[1]
    assert not np.allclose(full, short)
    # k >= T-1 is full BPTT
    same = _core.backward(X, Y, None, params, hs, out, **spec, bptt_truncate=9)[1]
    assert_same_bits(full, same)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("clip_norm,clip_value", [(None, None), (0.5, None), (None, 0.1),
                                                  (0.5, 0.1), (1e6, None)])
def test_clip_matches(dtype, clip_norm, clip_value):
    rng = np.random.default_rng(7)
    g = rng.normal(size=257).astype(dtype)
    g_ref, g_cpp = g.copy(), g.copy()
    norm_r = ref.clip(g_ref, clip_norm, clip_value)
    norm_c = _core.clip(g_cpp, clip_norm, clip_value)
    assert norm_c == pytest.approx(norm_r, rel=TOL[dtype])
    assert norm_c == pytest.approx(np.linalg.norm(g.astype(np.float64)), rel=TOL[dtype])
    assert_close(g_cpp, g_ref, TOL[dtype])
    if clip_norm is None and clip_value is None:
        assert np.array_equal(g_cpp, g)
    if clip_value is not None:
        assert np.max(np.abs(g_cpp)) <= dtype(clip_value)   # (NumPy 1.x would compare a
        # float32 scalar with a Python float in float64, where float32(0.1) > 0.1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01),
                                                   (0.5, 0.1)])
def test_sgd_step_matches(dtype, momentum, weight_decay):
    rng = np.random.default_rng(11)
    p_r = rng.normal(size=64).astype(dtype)
    p_c = p_r.copy()
    buf_r, buf_c = np.zeros_like(p_r), np.zeros_like(p_r)
    for _ in range(5):
        g = rng.normal(size=64).astype(dtype)
        ref.sgd_step(p_r, g, buf_r, 0.05, momentum, weight_decay)
        _core.sgd_step(p_c, g, buf_c, 0.05, momentum, weight_decay)
    assert_close(p_c, p_r, TOL[dtype])
    assert_close(buf_c, buf_r, TOL[dtype])
    if dtype == np.float64:  # elementwise with the same rounding: bitwise equal
        assert np.array_equal(p_c, p_r)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_step_matches(dtype, weight_decay):
    rng = np.random.default_rng(13)
    p_r = rng.normal(size=64).astype(dtype)
    p_c = p_r.copy()
    m_r, v_r = np.zeros_like(p_r), np.zeros_like(p_r)
    m_c, v_c = np.zeros_like(p_r), np.zeros_like(p_r)
    for step in range(1, 8):
        g = rng.normal(size=64).astype(dtype)
        ref.adam_step(p_r, g, m_r, v_r, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay)
        _core.adam_step(p_c, g, m_c, v_c, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay)
    for a, b in [(p_c, p_r), (m_c, m_r), (v_c, v_r)]:
        assert_close(a, b, TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer", [rnnkit.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
                                       rnnkit.Adam(lr=0.01, weight_decay=1e-3)],
                         ids=["sgd", "adam"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["many2one", "many2many"])
# (N, T, H, batch size); the second: batches of 8 then 5 records, and G·H = 100 not a whole
# number of vectors, so the last batch (fewer records than a tile's rows) takes the forward's
# padded rows where the first takes the in-place products (its scratch must still fit)
@pytest.mark.parametrize("sizes", [(11, 8, 6, 4), (13, 4, 100, 8)], ids=["N11H6", "N13H100"])
def test_train_epoch_matches(dtype, optimizer, return_sequences, sizes):
    """train_epoch with an uneven last batch, a shuffled order, truncation and both clippings."""
    rng = np.random.default_rng(17)
    (N, T, H, batch), I, O = sizes, 2, 2
    params, X, Y, _ = make_problem(rng, N, T, I, H, O, True, return_sequences, dtype, False)
    order = rng.permutation(N)
    args = {}
    for backend in (ref, _core):
        opt = type(optimizer)(**{k: v for k, v in optimizer.config().items() if k != "name"})
        opt._bind(params.size, params.dtype)
        p = params.copy()
        losses = []
        for _ in range(3):
            epoch_losses, opt.step_count, status, error = backend.train_epoch(
                X, Y, p, order, batch, hidden_size=H, output_size=O, bias=True, activation="tanh",
                bptt_truncate=2, clip_norm=0.5, clip_value=0.05, **opt.epoch_args())
            assert (status, error) == ("completed", None)
            losses.append(epoch_losses)
        args[backend] = (np.concatenate(losses), p, opt)
    (l_r, p_r, o_r), (l_c, p_c, o_c) = args[ref], args[_core]
    assert l_c.shape == (3 * -(-N // batch),)
    assert_close(l_c, l_r, TOL[dtype] * 10)
    assert_close(p_c, p_r, TOL[dtype] * 10)
    assert o_c.step_count == o_r.step_count
    for name in o_r.state:
        assert_close(o_c.state[name], o_r.state[name], TOL[dtype] * 10)


def sine_example_history(backend):
    """The first example's settings (examples/sine_wave.py): sin(0..199), windows of 50,
    100 training and 50 validation windows, hidden 100, tanh, SGD lr 0.01, batch 1, k=5,
    clip_value 10, 25 epochs."""
    X, Y = rnnkit.data.sliding_windows(np.sin(np.arange(200.0)), seq_len=50)
    model = rnnkit.RNN(1, 100, 1, seed=0, backend=backend)
    hist = model.fit(X[:100], Y[:100], epochs=25, batch_size=1, optimizer=rnnkit.SGD(lr=0.01),
                     bptt_truncate=5, clip_value=10.0, validation_data=(X[100:], Y[100:]))
    return hist, model


def test_whole_training_run_matches():
    hist_c, model_c = sine_example_history("cpp")
    hist_r, model_r = sine_example_history("reference")
    for key in ("loss", "val_loss"):
        assert len(hist_c[key]) == 25
        np.testing.assert_allclose(hist_c[key], hist_r[key], rtol=1e-10, atol=0)
    # the run really trained: the validation RMSE of the example's target
    assert np.sqrt(hist_c["val_loss"][-1]) <= 0.005
    for name, w in model_r.weights.items():
        assert_close(model_c.weights[name], w, 1e-9)


ISA_LEVELS = ["baseline", "avx2", "avx512"]


def available(isa):
    """Whether this CPU runs the given level (the best level is the highest it accepts)."""
    try:
        _core._set_isa(isa)
        return True
    except ValueError:
        return False
    finally:
        _core._set_isa("best")


@pytest.fixture
def core_settings():
    """Restore the C++ core's loops, instruction-set level and thread count after a test."""
    threads = _core.get_num_threads()
    yield
    _core._set_plain_loops(False)
    _core._set_isa("best")
    _core.set_num_threads(threads)


def core_results(X, Y, h0, params, spec, order, bptt_truncate):
    """Everything the C++ core computes for one problem: forward, backward, an Adam epoch."""
    out, hs, last = _core.forward(X, h0, params, **spec, return_sequences=Y.ndim == 3)
    loss, grad = _core.backward(X, Y, h0, params, hs, out, **spec, bptt_truncate=bptt_truncate)
    p = params.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    losses = _core.train_epoch(X, Y, p, order, 4, **spec, bptt_truncate=bptt_truncate,
                               clip_norm=1.0, clip_value=None, optimizer="adam", lr=0.01,
                               momentum=0.0, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8,
                               momentum_buffer=None, exp_avg=m, exp_avg_sq=v, step=0)[0]
    return out, hs, last, np.array(loss), grad, losses, p, m, v


def problem_for(H, dtype, return_sequences=True, I=2):
    rng = np.random.default_rng(H)
    N, T, O = 9, 6, 3
    params, X, Y, h0 = make_problem(rng, N, T, I, H, O, True, return_sequences, dtype, True)
    spec = dict(hidden_size=H, output_size=O, bias=True, activation="tanh")
    return X, Y, h0, params, spec, rng.permutation(N)


@pytest.mark.parametrize("isa", ISA_LEVELS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("H", [1, 3, 7, 8, 33, 70, 100])   # whole tiles, half vectors, tails
@pytest.mark.parametrize("bptt_truncate", [None, 2])
@pytest.mark.parametrize("I", [1, 2])   # one input: dU is summed as a row (network.cpp)
def test_tiled_loops_equal_plain_loops_bitwise(core_settings, isa, dtype, H, bptt_truncate, I):
    """At each instruction-set level the register-tiled products round exactly like the
    plain loops, and both agree with the reference."""
    if not available(isa):
        pytest.skip(f"this CPU has no {isa}")
    X, Y, h0, params, spec, order = problem_for(H, dtype, I=I)
    _core._set_isa(isa)
    results = {}
    for plain in (True, False):
        _core._set_plain_loops(plain)
        results[plain] = core_results(X, Y, h0, params, spec, order, bptt_truncate)
    for a, b in zip(results[True], results[False]):
        assert_same_bits(a, b)
    out_r, hs_r, _ = ref.forward(X, h0, params, **spec, return_sequences=True)
    grad_r = ref.backward(X, Y, h0, params, hs_r, out_r, **spec, bptt_truncate=bptt_truncate)[1]
    assert_close(results[False][0], out_r, TOL[dtype])
    assert_close(results[False][4], grad_r, TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_results_do_not_depend_on_the_thread_count(core_settings, dtype, return_sequences):
    X, Y, h0, params, spec, order = problem_for(40, dtype, return_sequences)
    X, Y, h0 = (np.concatenate([a] * 8) for a in (X, Y, h0))     # 72 records: several chunks
    order = np.random.default_rng(0).permutation(len(X))
    results = {}
    for threads in (1, 2, 3, 5):
        _core.set_num_threads(threads)
        assert _core.get_num_threads() == threads
        results[threads] = core_results(X, Y, h0, params, spec, order, None)
    for threads in (2, 3, 5):
        for a, b in zip(results[1], results[threads]):
            assert_same_bits(a, b)


@pytest.mark.parametrize("backend", [ref, _core], ids=["reference", "cpp"])
def test_train_epoch_stops_before_a_nonfinite_update(backend):
    """A minibatch whose loss is not finite is not applied: the epoch ends after the last good
    update, and says so."""
    rng = np.random.default_rng(5)
    params, X, Y, _ = make_problem(rng, 6, 4, 1, 3, 1, True, False, np.float64, False)
    Y[3, 0] = np.inf                                   # the fourth record, batch 2 of 3
    p = params.copy()
    losses, step, status, error = backend.train_epoch(
        X, Y, p, np.arange(6), 2, 3, 1, True, "tanh", None, None, None, "sgd", 0.1, 0.0, 0.0,
        0.0, 0.0, 0.0, None, None, None, 0)
    assert (status, error, step) == ("nonfinite", None, 1)
    assert losses.shape == (1,) and np.isfinite(losses[0])
    expected = params.copy()                           # exactly one update applied
    out, hs, _ = ref.forward(X[:2], None, expected, 3, 1, True, "tanh", False)
    ref.sgd_step(expected, ref.backward(X[:2], Y[:2], None, expected, hs, out, 3, 1, True,
                                        "tanh", None)[1], None, 0.1, 0.0, 0.0)
    assert_close(p, expected, 1e-12)


@pytest.mark.parametrize("backend", [ref, _core], ids=["reference", "cpp"])
def test_train_epoch_callback_can_stop_and_its_exception_is_returned(backend):
    rng = np.random.default_rng(6)
    params, X, Y, _ = make_problem(rng, 64, 30, 1, 16, 1, True, False, np.float64, False)
    args = (X, Y, params.copy(), np.arange(64), 1, 16, 1, True, "tanh", None, None, None,
            "sgd", 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, None, None, None, 0)
    calls = []

    def fail(done):
        calls.append(done)
        raise RuntimeError("stop here")

    first = backend.train_epoch(*args, callback=lambda done: None)
    assert first[2:] == ("completed", None) and first[0].shape == (64,) and first[1] == 64
    # both backends call back after the first minibatch
    losses, step, status, error = backend.train_epoch(*args, callback=fail)
    assert status == "stopped" and isinstance(error, RuntimeError)
    assert calls == [1] and losses.shape == (1,) and step == 1
    losses, step, status, error = backend.train_epoch(*args, callback=lambda done: False)
    assert (status, error, step, losses.shape) == ("stopped", None, 1, (1,))


def activated_row(values, activation):
    """f(values) computed as one row of H = len(values) hidden units: U = values, W = 0, no
    bias, V = 1 and x = 1, so that h = f(U) exactly."""
    H, dtype = len(values), values.dtype.type
    params = np.concatenate([values, np.zeros(H * H, dtype), np.ones(H, dtype)])
    return _core.predict(np.ones((1, 1, 1), dtype), None, params, H, 1, False, activation,
                         False)[1][0]


def activated_each(values, activation):
    """f(values) computed for each value alone: one record per value, H = 1, U = 1, W = 0,
    V = 1, so that h = f(x) exactly."""
    dtype = values.dtype.type
    return _core.predict(values.reshape(-1, 1, 1), None, np.array([1, 0, 1], dtype), 1, 1,
                         False, activation, False)[1][:, 0]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activations_accurate_at_every_level_equal_where_fused(core_settings, activation, dtype):
    """The vectorized tanh and sigmoid: within 3 units in the last place of the correctly
    rounded value in float64 and 2 in float32 (computed in single precision, 16 lanes) at every
    instruction-set level, no overflow for |a| up to 1e4 and beyond, and the same bits at the
    two levels that fuse multiply-adds (AVX2 and AVX-512)."""
    rng = np.random.default_rng(21)
    a = np.concatenate([rng.normal(size=4000) * s for s in (1e-9, 1e-3, 0.3, 0.6, 1, 4, 30, 500)]
                       + [np.array([0.0, -0.0, 0.625, -0.625, 1e4, -1e4, 709.0, -709.0, 744.0,
                                    -744.0, np.inf, -np.inf, np.finfo(dtype).max,
                                    -np.finfo(dtype).max])]).astype(dtype)
    outs = {}
    for isa in ISA_LEVELS:
        if available(isa):
            _core._set_isa(isa)
            outs[isa] = activated_each(a, activation)
    if "avx2" in outs and "avx512" in outs:
        assert_same_bits(outs["avx2"], outs["avx512"])
    x = a.astype(np.float64)
    if activation == "tanh":
        want = np.tanh(x)
    else:
        e = np.exp(-np.abs(x))
        want = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    want = want.astype(dtype)
    for got in outs.values():
        ulps = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want)).astype(np.float64)
        assert np.all(np.isfinite(got))
        assert np.max(ulps) <= (3 if dtype == np.float64 else 2)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activations_of_any_row_length_equal_one_at_a_time(core_settings, activation, dtype):
    """A row of H values (whole vectors, then a part of one: a padded vector when H is less
    than a vector, else the last whole vector computed over the one before) gives the bits
    each value gives alone, at every level."""
    rng = np.random.default_rng(8)
    for isa in ISA_LEVELS:
        if not available(isa):
            continue
        _core._set_isa(isa)
        for H in (1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100):
            a = rng.normal(scale=3.0, size=H).astype(dtype)
            assert_same_bits(activated_row(a, activation), activated_each(a, activation),
                             err_msg=f"{isa} H={H}")


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_in_the_shorter_steps_domain_equal_the_general_steps(core_settings, activation,
                                                                   dtype):
    """A row whose every |a| is below 0.625 takes tanh's small branch alone, one whose every
    |a| is at most 700 (float64) or 80 (float32) sigmoid's steps without subnormal e, any other
    row the general steps: the same bits for the same value either way. Each row is computed
    again with one value outside the domain appended (at the end, in a whole vector, or alone
    in a part of one), which sends the whole row through the general steps."""
    rng = np.random.default_rng(31)
    if activation == "tanh":
        bound = dtype(0.625)
        top = np.nextafter(bound, dtype(0))            # the domain is |a| < 0.625
        outside = (bound, -bound, dtype(3.0), np.inf, np.nan)
    else:
        bound = dtype(700.0 if dtype == np.float64 else 80.0)
        top = bound                                    # |a| <= the bound
        outside = (np.nextafter(bound, dtype(np.inf)), -np.nextafter(bound, dtype(np.inf)),
                   np.inf, np.nan)
    a = np.concatenate([rng.normal(size=200) * s for s in (1e-6, 0.05, 0.3, 3, 30)]
                       + [rng.uniform(-top, top, 200),
                          np.array([top, -top, np.nextafter(top, dtype(0)), 0.0, -0.0])]
                       ).astype(dtype)
    a = a[np.abs(a) <= top]

    for isa in ISA_LEVELS:
        if not available(isa):
            continue
        _core._set_isa(isa)
        for H in (7, 16, 100):
            for start in range(0, len(a) - H, 97):
                row = a[start:start + H]
                short = activated_row(row, activation)
                for extra in outside:
                    general = activated_row(np.append(row, dtype(extra)), activation)
                    assert_same_bits(general[:H], short, err_msg=f"{isa} H={H} {extra}")


def test_baseline_sigmoid_is_the_unfused_cephes_steps_ties_included(core_settings):
    """At the baseline level (no FMA) the sigmoid of a < 0 is exactly the documented steps,
    each rounded on its own, as NumPy rounds them: n = round(z log2(e)) with the product
    rounded first, so that it can be exactly halfway between two integers (1,096 such z in
    [-746, 0]) and rounds to even; e^r by Cephes' Pade quotient; 2^n in the exponent bits, in
    two factors below 2^-1000. Random a are checked too, in both of sigmoid's row paths."""
    log2e = 1.4426950408889634073599
    halves = -(np.arange(1077) + 0.5)
    z = halves / log2e
    near = np.concatenate([z] + [z + k * np.spacing(z) for k in range(-6, 7) if k])
    ties = np.unique(near[(near * log2e == np.round(near * log2e * 2) / 2)
                          & (near * log2e % 1 != 0) & (near >= -746) & (near <= 0)])
    assert len(ties) == 1096
    rng = np.random.default_rng(12)
    a = np.concatenate([ties, -np.abs(rng.normal(size=3000)) * 200, [-699.9, -700.0, -744.0]])

    magic = 6755399441055744.0                         # 1.5 * 2^52
    zz = np.maximum(a, -746.0)
    n = (zz * log2e + magic) - magic                   # rounds half to even, as the C++ sum
    r = (zz - n * 6.93145751953125E-1) - n * 1.42860682030941723212E-6
    rr = r * r
    p = (1.26177193074810590878E-4 * rr + 3.02994407707441961300E-2) * rr \
        + 9.99999999999999999910E-1
    q = ((3.00198505138664455042E-6 * rr + 2.52448340349684104192E-3) * rr
         + 2.27265548208155028766E-1) * rr + 2.00000000000000000009E0
    num, den = q + r * p, q - r * p
    ni = n.astype(np.int64)
    deep = ni < -1000
    scale = np.ldexp(1.0, np.where(deep, ni + 54, ni))
    extra = np.where(deep, 2.0 ** -54, 1.0)
    se = num * scale * extra
    want = (num / (den + se)) * scale * extra

    _core._set_isa("baseline")
    assert_same_bits(activated_each(a, "sigmoid"), want)


def test_set_num_threads_public_api(core_settings):
    rnnkit.set_num_threads(1)
    assert rnnkit.get_num_threads() == 1
    rnnkit.set_num_threads(2)
    assert rnnkit.get_num_threads() == 2
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        rnnkit.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        rnnkit.set_num_threads(1.5)


@pytest.mark.parametrize("isa", ISA_LEVELS)
# T = 7 pairs per record (dU's K; dW's is one fewer). 945 pairs: at AVX-512 9 blocks of 96 + 81
# on its own (a last block of fewer than half a block, 48, joins the one before), at AVX2
# 384 + 561 (177 joined); 973: AVX-512 9 x 96 + 109 (13 joined), AVX2 2 x 384 + 205 on its own;
# 868: AVX-512 8 x 96 + 100 (4 joined), AVX2 384 + 484 (100 joined); 623: AVX-512 5 x 96 + 143
# (47 joined: the largest block); baseline joins the rest to its first block of 768
@pytest.mark.parametrize("N", [135, 139, 124, 89])
def test_tiled_loops_equal_plain_loops_with_long_products(core_settings, isa, N):
    """Products longer than a cache block (the weight gradients sum over N * T pairs, here
    more than any level's block of k, with a short remainder on its own or joined to the last
    block) still round exactly like the plain loops: added into a gradient (backward), and
    written into one (train_epoch: the first block sets, the next ones add)."""
    if not available(isa):
        pytest.skip(f"this CPU has no {isa}")
    rng = np.random.default_rng(99)
    T, I, H, O = 7, 3, 37, 2
    params, X, Y, h0 = make_problem(rng, N, T, I, H, O, True, True, np.float32, True)
    spec = dict(hidden_size=H, output_size=O, bias=True, activation="sigmoid")
    _core._set_isa(isa)
    grads, stepped = [], []
    for plain in (True, False):
        _core._set_plain_loops(plain)
        out, hs, _ = _core.forward(X, h0, params, **spec, return_sequences=True)
        grads.append(_core.backward(X, Y, h0, params, hs, out, **spec, bptt_truncate=None)[1])
        stepped.append(sgd_half_step(X, Y, params, spec, None, None))
    assert_same_bits(grads[0], grads[1])
    assert_same_bits(stepped[0], stepped[1])
    assert not np.array_equal(stepped[0], params)


@pytest.mark.parametrize("backend", [ref, _core], ids=["reference", "cpp"])
def test_clip_norm_of_a_nan_gradient_stays_nan(backend):
    """As torch.nn.utils.clip_grad_norm_ (clamp keeps NaN): a NaN norm does not leave the
    finite elements looking trustworthy."""
    g = np.array([1.0, np.nan, 3.0])
    norm = backend.clip(g, 1.0, None)
    assert np.isnan(norm) and np.all(np.isnan(g))


@pytest.mark.parametrize("backend", [ref, _core], ids=["reference", "cpp"])
def test_relu_gradient_passes_a_nan_state_on(backend):
    """f'(a) for relu is 1 unless h <= 0 (as torch), so a NaN hidden state is not zeroed."""
    X = np.ones((1, 2, 1))
    params = np.array([1.0, 1.0, 1.0])                    # U, W, V with H = 1, no bias
    hs = np.array([[[np.nan], [np.nan]]])
    out = np.array([[np.nan]])
    grad = backend.backward(X, np.zeros((1, 1)), None, params, hs, out, 1, 1, False, "relu",
                            None)[1]
    assert np.all(np.isnan(grad))


def test_adam_first_moment_follows_torch_lerp_for_small_beta1():
    """torch.lerp switches to end - (end - start) (1 - weight) when weight >= 0.5, i.e. for
    beta1 <= 0.5; both backends do the same, bit for bit in float64."""
    rng = np.random.default_rng(8)
    p0, g, m0, v0 = (rng.normal(size=32) for _ in range(4))
    v0 = np.abs(v0)
    results = []
    for backend in (ref, _core):
        p, m, v = p0.copy(), m0.copy(), v0.copy()
        backend.adam_step(p, g, m, v, 3, 0.01, 0.3, 0.999, 1e-8, 0.0)
        np.testing.assert_array_equal(m, g - (g - m0) * (1 - (1 - 0.3)))
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("backend", [ref, _core], ids=["reference", "cpp"])
def test_an_epoch_whose_updates_all_ran_is_complete(backend):
    """The stop check runs between minibatches only: once the last update is applied the epoch
    is complete (so fit records it), whatever the callback would say."""
    rng = np.random.default_rng(4)
    params, X, Y, _ = make_problem(rng, 3, 4, 1, 3, 1, True, False, np.float64, False)
    calls = []

    def stop(done):
        calls.append(done)
        return False

    losses, step, status, error = backend.train_epoch(
        X, Y, params.copy(), np.arange(3), 3, 3, 1, True, "tanh", None, None, None, "sgd",
        0.1, 0.0, 0.0, 0.0, 0.0, 0.0, None, None, None, 0, callback=stop)
    assert (status, error, step, losses.shape, calls) == ("completed", None, 1, (1,), [])
