"""The public API (DESIGN.md §3): shapes in and out, weights, fit/train_step, optimizers' state,
sliding_windows, input conversion, and errors that name the argument."""

import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import rnnkit

N, T, I, H, O = 4, 6, 3, 5, 2


def _model(backend, **kw):
    args = dict(input_size=I, hidden_size=H, output_size=O, seed=0, backend=backend)
    args.update(kw)
    return rnnkit.RNN(**args)


def _data(n=N, t=T, i=I, o=O, return_sequences=False, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, t, i))
    Y = rng.normal(size=(n, t, o) if return_sequences else (n, o))
    return X, Y


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
def test_predict_and_forward_shapes(backend, return_sequences):
    model = _model(backend, return_sequences=return_sequences)
    X, _ = _data()
    pred = model.predict(X)
    assert pred.shape == ((N, T, O) if return_sequences else (N, O))
    assert pred.dtype == np.float64
    out = model.forward(X)
    assert isinstance(out, tuple) and len(out) == 2
    outputs, h_T = out
    assert h_T.shape == (N, H)
    np.testing.assert_array_equal(outputs, pred)


def test_forward_state_carries_over(backend):
    """forward(X[:, :3]) then forward(X[:, 3:], h0=h_3) continues the same sequence."""
    model = _model(backend, return_sequences=True)
    X, _ = _data()
    full, h_full = model.forward(X)
    first, h_mid = model.forward(X[:, :3])
    second, h_end = model.forward(X[:, 3:], h0=h_mid)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), full,
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(h_end, h_full, rtol=1e-13, atol=1e-14)
    # a non-zero h0 changes the result
    assert not np.allclose(model.predict(X[:, 3:]), second)


def test_loss_is_mse(backend):
    model = _model(backend)
    X, Y = _data()
    assert isinstance(model.loss(X, Y), float)
    assert model.loss(X, Y) == pytest.approx(np.mean((model.predict(X) - Y) ** 2), rel=1e-14)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
def test_gradients_shaped_like_weights(backend, bias, return_sequences):
    model = _model(backend, bias=bias, return_sequences=return_sequences)
    X, Y = _data(return_sequences=return_sequences)
    grads = model.gradients(X, Y, bptt_truncate=2)
    w = model.weights
    assert list(w) == (["U", "W", "b", "V", "c"] if bias else ["U", "W", "V"])
    assert list(grads) == list(w)
    for name in w:
        assert grads[name].shape == w[name].shape
        assert grads[name].dtype == w[name].dtype
    assert w["U"].shape == (H, I) and w["W"].shape == (H, H) and w["V"].shape == (O, H)
    if bias:
        assert w["b"].shape == (H,) and w["c"].shape == (O,)
    assert model.num_parameters == sum(a.size for a in w.values())


def test_2d_x_when_input_size_is_1(backend):
    model = _model(backend, input_size=1)
    X, Y = _data(i=1)
    X2 = X[:, :, 0]
    np.testing.assert_array_equal(model.predict(X2), model.predict(X))
    assert model.loss(X2, Y) == model.loss(X, Y)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
def test_y_without_its_output_axis_when_output_size_is_1(backend, return_sequences):
    """With one output, Y may leave out its last axis: (N,) many-to-one, (N, T) many-to-many
    (as the README says); the loss, the gradients and a fit epoch are the same as with it.
    Another shape is refused."""
    model = _model(backend, output_size=1, return_sequences=return_sequences)
    X, Y = _data(o=1, return_sequences=return_sequences)
    y1 = Y[..., 0]
    assert model.loss(X, y1) == model.loss(X, Y)
    g1, g2 = model.gradients(X, y1), model.gradients(X, Y)
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])
    fitted = [_model(backend, output_size=1, return_sequences=return_sequences)
              for _ in range(2)]
    h1 = fitted[0].fit(X, y1, epochs=1, batch_size=2)
    h2 = fitted[1].fit(X, Y, epochs=1, batch_size=2)
    assert h1["loss"] == h2["loss"]
    with pytest.raises(ValueError, match="Y must have shape"):
        model.loss(X, Y[:-1, ..., 0])


# ----------------------------------------------------------------------------- weights
def test_weights_are_copies(backend):
    model = _model(backend)
    X, _ = _data()
    before = model.predict(X)
    w = model.weights
    saved = {k: v.copy() for k, v in w.items()}
    for arr in w.values():
        arr[...] = 0.0
    for name, arr in model.weights.items():
        np.testing.assert_array_equal(arr, saved[name])
    np.testing.assert_array_equal(model.predict(X), before)


def test_set_weights_roundtrip(backend):
    a = _model(backend, seed=1)
    b = _model(backend, seed=2)
    X, _ = _data()
    assert not np.array_equal(a.predict(X), b.predict(X))
    w = a.weights
    b.set_weights(w)
    for name in w:
        np.testing.assert_array_equal(b.weights[name], w[name])
    np.testing.assert_array_equal(b.predict(X), a.predict(X))
    # set_weights copies: changing the dict afterwards does not reach the model
    w["W"][...] = 7.0
    assert not np.any(b.weights["W"] == 7.0)
    # a hand-built dict (lists, ints) works
    new = {k: np.ones_like(v).tolist() for k, v in a.weights.items()}
    new["U"] = np.ones((H, I), dtype=np.int64)
    b.set_weights(new)
    assert all(np.all(v == 1.0) for v in b.weights.values())


def test_set_weights_errors(backend):
    model = _model(backend)
    w = model.weights
    before = model.weights
    missing = {k: v for k, v in w.items() if k != "c"}
    with pytest.raises(ValueError, match="weights"):
        model.set_weights(missing)
    with pytest.raises(ValueError, match="weights"):
        model.set_weights({**w, "extra": np.zeros(3)})
    with pytest.raises(ValueError, match=r"exactly the keys.*got \['a', 1\]"):
        model.set_weights({1: 2, "a": 3})              # keys that do not even sort together
    bad = dict(w, W=np.zeros((H, H + 1)))
    with pytest.raises(ValueError, match=r"weights\['W'\].*\(5, 5\).*\(5, 6\)"):
        model.set_weights(bad)
    with pytest.raises(TypeError, match="weights"):
        model.set_weights([w["U"], w["W"]])
    with pytest.raises(ValueError, match=r"weights\['V'\].*NaN"):
        model.set_weights(dict(w, V=np.full((O, H), np.nan)))
    # a failed set_weights leaves the model unchanged
    for name in before:
        np.testing.assert_array_equal(model.weights[name], before[name])


# ----------------------------------------------------------------------------- training
def test_fit_history(backend):
    model = _model(backend)
    X, Y = _data(n=10)
    Xv, Yv = _data(n=3, seed=1)
    hist = model.fit(X, Y, epochs=3, batch_size=4, optimizer=rnnkit.SGD(lr=0.05),
                     validation_data=(Xv, Yv))
    assert sorted(hist) == ["loss", "val_loss"]
    assert len(hist["loss"]) == 3 and len(hist["val_loss"]) == 3
    assert all(isinstance(v, float) and np.isfinite(v) for v in hist["loss"] + hist["val_loss"])
    assert hist["val_loss"][-1] == model.loss(Xv, Yv)
    hist2 = model.fit(X, Y, epochs=2, batch_size=4)
    assert len(hist2["loss"]) == 2 and hist2["val_loss"] == []
    assert model.fit(X, Y, epochs=0) == {"loss": [], "val_loss": []}


def test_fit_loss_is_batch_weighted_mean_before_updates(backend):
    """history["loss"] = the minibatch losses (before each update) weighted by batch size;
    one unshuffled epoch equals train_step over the same minibatches."""
    X, Y = _data(n=10)
    a, b = _model(backend), _model(backend)
    hist = a.fit(X, Y, epochs=1, batch_size=4, optimizer=rnnkit.SGD(lr=0.1), shuffle=False,
                 bptt_truncate=1)
    losses = [b.train_step(X[s:s + 4], Y[s:s + 4], optimizer=rnnkit.SGD(lr=0.1)
                           if s == 0 else None, bptt_truncate=1)[0] for s in (0, 4, 8)]
    assert hist["loss"][0] == pytest.approx((4 * losses[0] + 4 * losses[1] + 2 * losses[2]) / 10,
                                            rel=1e-12)
    assert hist["loss"][0] != pytest.approx(np.mean(losses), rel=1e-6)
    for name, arr in a.weights.items():
        np.testing.assert_allclose(arr, b.weights[name], rtol=1e-12, atol=1e-14)


def test_train_step(backend):
    model = _model(backend)
    X, Y = _data()
    before = model.weights
    loss0 = model.loss(X, Y)
    out = model.train_step(X, Y, optimizer=rnnkit.SGD(lr=0.05), bptt_truncate=2,
                           clip_norm=5.0)
    assert isinstance(out, tuple) and len(out) == 2
    loss, h_T = out
    assert isinstance(loss, float)
    assert loss == pytest.approx(loss0, rel=1e-12)          # the loss before the update
    assert h_T.shape == (N, H)
    np.testing.assert_allclose(h_T, _forward_state(before, X, backend), rtol=1e-13)
    assert any(not np.array_equal(before[k], v) for k, v in model.weights.items())
    assert model.loss(X, Y) < loss0
    # carrying the state on
    loss2, h2 = model.train_step(X, Y, h0=h_T)
    assert isinstance(loss2, float) and h2.shape == (N, H)


def _forward_state(weights, X, backend):
    m = _model(backend)
    m.set_weights(weights)
    return m.forward(X)[1]


def test_optimizer_state_persists_across_fit_calls(backend):
    model = _model(backend)
    X, Y = _data(n=10)
    opt = rnnkit.Adam(lr=0.01)
    model.fit(X, Y, epochs=1, batch_size=4, optimizer=opt)        # 3 minibatches
    assert model.optimizer is opt
    assert opt.step_count == 3
    m1 = opt.state["exp_avg"].copy()
    assert np.any(m1 != 0)
    model.fit(X, Y, epochs=2, batch_size=4)                      # keeps the same Adam
    assert model.optimizer is opt
    assert opt.step_count == 9
    assert not np.array_equal(opt.state["exp_avg"], m1)
    model.train_step(X, Y)
    assert opt.step_count == 10


def test_model_without_optimizer_gets_adam(backend):
    model = _model(backend)
    assert model.optimizer is None
    X, Y = _data(n=10)
    model.fit(X, Y, epochs=1, batch_size=5)
    assert isinstance(model.optimizer, rnnkit.Adam)
    assert model.optimizer.step_count == 2
    other = _model(backend)
    other.train_step(X, Y)
    assert isinstance(other.optimizer, rnnkit.Adam) and other.optimizer.step_count == 1


# ----------------------------------------------------------------------------- sliding_windows
def test_sliding_windows_1d():
    s = np.sin(np.arange(200.0))
    X, Y = rnnkit.data.sliding_windows(s, seq_len=50)
    assert X.shape == (150, 50, 1) and Y.shape == (150, 1)
    for i in (0, 1, 77, 149):
        np.testing.assert_array_equal(X[i, :, 0], s[i:i + 50])
        assert Y[i, 0] == s[i + 50]


def test_sliding_windows_2d_and_horizon():
    L, F, seq_len, horizon = 30, 3, 7, 4
    s = np.arange(L * F, dtype=np.float64).reshape(L, F)
    X, Y = rnnkit.data.sliding_windows(s, seq_len=seq_len, horizon=horizon)
    M = L - seq_len - horizon + 1
    assert X.shape == (M, seq_len, F) and Y.shape == (M, F)
    for i in range(M):
        np.testing.assert_array_equal(X[i], s[i:i + seq_len])
        np.testing.assert_array_equal(Y[i], s[i + seq_len + horizon - 1])


def test_sliding_windows_minimum_length_and_ints():
    X, Y = rnnkit.data.sliding_windows([1, 2, 3], seq_len=2)
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, [[[1.0], [2.0]]])
    np.testing.assert_array_equal(Y, [[3.0]])


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(series=np.arange(5.0), seq_len=5), ValueError, "series"),
    (dict(series=np.arange(5.0), seq_len=0), ValueError, "seq_len"),
    (dict(series=np.arange(5.0), seq_len=2, horizon=0), ValueError, "horizon"),
    (dict(series=np.arange(5.0), seq_len=2.5), TypeError, "seq_len"),
    (dict(series=np.zeros((4, 2, 2)), seq_len=1), ValueError, "series"),
    (dict(series=np.zeros((6, 0)), seq_len=2), ValueError, r"series .*F >= 1, got \(6, 0\)"),
    (dict(series=np.array([True, False, True]), seq_len=1), TypeError, "series"),
    (dict(series=np.array([1.0, np.nan, 2.0]), seq_len=1), ValueError, "series"),
    (dict(series=[[1.0, 2.0], [3.0]], seq_len=1), ValueError,
     r"series must be a rectangular array"),
])
def test_sliding_windows_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rnnkit.data.sliding_windows(**kwargs)


@pytest.mark.parametrize("args,exc,match", [
    ((3, 5, 2, True, "rnn", 0), ValueError, r"num_layers must be an integer >= 1, got 0"),
    ((3, -1, 2, True), ValueError, r"hidden_size must be an integer >= 1, got -1"),
    ((0, 5, 2, True), ValueError, r"input_size must be an integer >= 1, got 0"),
    ((3, 5, 0, True), ValueError, r"output_size must be an integer >= 1, got 0"),
    ((3, 2.5, 2, True), TypeError, r"hidden_size must be an integer"),
    ((3, 5, 2, "no"), TypeError, r"bias must be True or False, got 'no'"),
    ((3, 5, 2, True, "elman"), ValueError, r"cell"),
])
def test_layout_functions_check_their_arguments(args, exc, match):
    """param_count, param_layout and param_views refuse the sizes the model classes refuse (a
    layer count of 0 gave a count of 2 and a layout of 12 values)."""
    for function in (rnnkit.param_count, rnnkit.param_layout):
        with pytest.raises(exc, match=match):
            function(*args)
    with pytest.raises(exc, match=match):
        rnnkit.param_views(np.zeros(57), *args)


def test_param_views_needs_the_whole_buffer():
    P = rnnkit.param_count(3, 5, 2, True)
    assert set(rnnkit.param_views(np.zeros(P), 3, 5, 2, True)) == {"U", "W", "b", "V", "c"}
    for flat in (np.zeros(P + 1), np.zeros(P - 1), np.zeros((P, 1)), list(range(P))):
        with pytest.raises(ValueError, match=rf"flat must be a 1-D array of the {P} parameters"):
            rnnkit.param_views(flat, 3, 5, 2, True)


# ----------------------------------------------------------------------------- conversions
def test_float32_model_returns_float32(backend):
    model = _model(backend, dtype="float32", return_sequences=True)
    X, Y = _data(return_sequences=True)
    outputs, h_T = model.forward(X)
    assert outputs.dtype == np.float32 and h_T.dtype == np.float32
    assert model.predict(X).dtype == np.float32
    assert all(v.dtype == np.float32 for v in model.weights.values())
    assert all(v.dtype == np.float32 for v in model.gradients(X, Y).values())
    loss, h = model.train_step(X, Y)
    assert isinstance(loss, float) and h.dtype == np.float32
    assert all(v.dtype == np.float32 for v in model.weights.values())
    assert isinstance(model.loss(X, Y), float)


def test_integer_and_list_inputs(backend):
    model = _model(backend)
    Xi = np.arange(N * T * I, dtype=np.int32).reshape(N, T, I) % 5 - 2
    want = model.predict(Xi.astype(np.float64))
    np.testing.assert_array_equal(model.predict(Xi), want)
    np.testing.assert_array_equal(model.predict(Xi.tolist()), want)
    Y = [[1, 2]] * N
    assert model.loss(Xi.tolist(), Y) == model.loss(Xi.astype(float), np.array(Y, float))


def test_non_contiguous_input(backend):
    model = _model(backend, return_sequences=True)
    base = np.random.default_rng(3).normal(size=(N, 2 * T, I))
    X = base[:, ::2]
    assert not X.flags.c_contiguous
    np.testing.assert_array_equal(model.predict(X), model.predict(np.ascontiguousarray(X)))
    Xf = np.asfortranarray(base[:, :T])
    np.testing.assert_array_equal(model.predict(Xf), model.predict(np.ascontiguousarray(Xf)))
    Y = np.random.default_rng(4).normal(size=(N, 2 * T, O))[:, ::2]
    g1 = model.gradients(X, Y)
    g2 = model.gradients(np.ascontiguousarray(X), np.ascontiguousarray(Y))
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])


def test_float32_input_to_float64_model(backend):
    model = _model(backend)
    X, _ = _data()
    np.testing.assert_array_equal(model.predict(X.astype(np.float32)),
                                  model.predict(X.astype(np.float32).astype(np.float64)))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("shape", [(N * T * I,), (N, T, I, 1), (N, T)],
                         ids=["1d", "4d", "2d-with-I3"])
def test_wrong_x_rank(backend, shape):
    model = _model(backend)
    X = np.zeros(shape)
    with pytest.raises(ValueError, match=r"X must have shape \(N, T, 3\), got " +
                       str(shape).replace("(", r"\(").replace(")", r"\)")):
        model.predict(X)


def test_wrong_input_size(backend):
    model = _model(backend)
    with pytest.raises(ValueError, match=r"X must have shape \(N, T, 3\), got \(4, 6, 2\)"):
        model.predict(np.zeros((N, T, 2)))
    with pytest.raises(ValueError, match=r"X .*\(4, 6, 2\)"):
        model.fit(np.zeros((N, T, 2)), np.zeros((N, O)))


@pytest.mark.parametrize("return_sequences", [False, True], ids=["m2one", "m2many"])
def test_n_mismatch(backend, return_sequences):
    model = _model(backend, return_sequences=return_sequences)
    X, Y = _data(return_sequences=return_sequences)
    with pytest.raises(ValueError, match=r"Y must have shape \(4, "):
        model.fit(X, Y[:-1])
    with pytest.raises(ValueError, match="Y"):
        model.loss(X[:-1], Y)
    with pytest.raises(ValueError, match="Y"):
        model.gradients(X, Y[:-1])
    with pytest.raises(ValueError, match="Y"):
        model.train_step(X, Y[:-1])


def test_wrong_output_size(backend):
    model = _model(backend)
    X, _ = _data()
    with pytest.raises(ValueError, match=r"Y must have shape \(4, 2\), got \(4, 3\)"):
        model.loss(X, np.zeros((N, 3)))
    with pytest.raises(ValueError, match="Y"):
        model.loss(X, np.zeros(N))                  # (N,) only when output_size == 1


@pytest.mark.parametrize("shape", [(N, 0, I), (0, T, I)], ids=["T0", "N0"])
def test_empty_x(backend, shape):
    model = _model(backend)
    with pytest.raises(ValueError, match="X"):
        model.predict(np.zeros(shape))
    with pytest.raises(ValueError, match="X"):
        model.fit(np.zeros(shape), np.zeros((shape[0], O)))


def test_wrong_h0_shape(backend):
    model = _model(backend)
    X, Y = _data()
    for h0 in (np.zeros((N, H + 1)), np.zeros((N + 1, H)), np.zeros(H)):
        with pytest.raises(ValueError, match=r"h0 must have shape \(4, 5\)"):
            model.forward(X, h0=h0)
        with pytest.raises(ValueError, match="h0"):
            model.gradients(X, Y, h0=h0)
        with pytest.raises(ValueError, match="h0"):
            model.train_step(X, Y, h0=h0)


BAD_DTYPE_ARRAYS = {
    "bool": np.zeros((N, T, I), dtype=bool),
    "complex": np.zeros((N, T, I), dtype=complex),
    "string": np.full((N, T, I), "a"),
    "object": np.full((N, T, I), None, dtype=object),
}


@pytest.mark.parametrize("kind", list(BAD_DTYPE_ARRAYS))
def test_non_real_arrays_are_type_errors(backend, kind):
    model = _model(backend)
    bad = BAD_DTYPE_ARRAYS[kind]
    X, Y = _data()
    with pytest.raises(TypeError, match="X"):
        model.predict(bad)
    with pytest.raises(TypeError, match="Y"):
        model.loss(X, bad[:, 0, :O])
    with pytest.raises(TypeError, match="h0"):
        model.forward(X, h0=np.resize(bad, (N, H)))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_inf_are_value_errors(backend, value):
    model = _model(backend)
    X, Y = _data()
    Xb, Yb = X.copy(), Y.copy()
    Xb[1, 2, 0] = value
    Yb[3, 1] = value
    with pytest.raises(ValueError, match="X"):
        model.predict(Xb)
    with pytest.raises(ValueError, match="X"):
        model.fit(Xb, Y)
    with pytest.raises(ValueError, match="Y"):
        model.fit(X, Yb)
    with pytest.raises(ValueError, match="Y"):
        model.gradients(X, Yb)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(X, Y, validation_data=(Xb, Y))


@pytest.mark.parametrize("name", ["input_size", "hidden_size", "output_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_sizes_must_be_positive(backend, name, value):
    with pytest.raises(ValueError, match=name):
        _model(backend, **{name: value})


@pytest.mark.parametrize("name", ["input_size", "hidden_size", "output_size"])
@pytest.mark.parametrize("value", [2.5, 2.0, "3", True, None])
def test_sizes_must_be_integers(backend, name, value):
    with pytest.raises(TypeError, match=name):
        _model(backend, **{name: value})


def test_numpy_integer_sizes_are_accepted(backend):
    model = _model(backend, hidden_size=np.int64(H))
    assert model.hidden_size == H and type(model.hidden_size) is int


def test_bptt_truncate_negative(backend):
    model = _model(backend)
    X, Y = _data()
    with pytest.raises(ValueError, match="bptt_truncate"):
        model.fit(X, Y, bptt_truncate=-1)
    with pytest.raises(ValueError, match="bptt_truncate"):
        model.gradients(X, Y, bptt_truncate=-1)
    with pytest.raises(ValueError, match="bptt_truncate"):
        model.train_step(X, Y, bptt_truncate=-1)
    with pytest.raises(TypeError, match="bptt_truncate"):
        model.fit(X, Y, bptt_truncate=1.5)


def test_fit_argument_errors(backend):
    model = _model(backend)
    X, Y = _data()
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(X, Y, batch_size=0)
    with pytest.raises(ValueError, match="epochs"):
        model.fit(X, Y, epochs=-1)
    with pytest.raises(ValueError, match="clip_norm"):
        model.fit(X, Y, clip_norm=0.0)
    with pytest.raises(ValueError, match="clip_value"):
        model.fit(X, Y, clip_value=-1.0)
    with pytest.raises(TypeError, match="optimizer"):
        model.fit(X, Y, optimizer="adam")
    with pytest.raises(TypeError, match="validation_data"):
        model.fit(X, Y, validation_data=X)


@pytest.mark.parametrize("make", [
    lambda lr: rnnkit.SGD(lr=lr),
    lambda lr: rnnkit.Adam(lr=lr),
], ids=["SGD", "Adam"])
@pytest.mark.parametrize("lr", [0.0, -0.1, np.nan, np.inf])
def test_lr_must_be_positive_finite(make, lr):
    with pytest.raises(ValueError, match="lr"):
        make(lr)


def test_set_num_threads_arguments():
    before = rnnkit.get_num_threads()
    try:
        with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
            rnnkit.set_num_threads(0)
        with pytest.raises(TypeError, match="n must be an integer"):
            rnnkit.set_num_threads(2.0)
        rnnkit.set_num_threads(10**30)     # past an int64: the core's most, 1024
        assert rnnkit.get_num_threads() == 1024
    finally:
        rnnkit.set_num_threads(before)


@pytest.mark.parametrize("value,expected", [("3", 3), (" 2 ", 2), ("5000", 1024), ("0", None),
                                            ("3x", None), ("99999999999999999999", None)])
def test_the_thread_count_environment_variable(value, expected):
    """RNNKIT_NUM_THREADS sets the default count (at most 1024); anything but a whole number
    >= 1 (surrounding blanks allowed) is ignored for every core, not read as its first digits or
    wrapped around."""
    cmd = [sys.executable] + (["-S"] if sys.flags.no_site else [])   # the sanitizer run's -S
    code = ("import os, rnnkit; print(rnnkit.get_num_threads(), len(os.sched_getaffinity(0)) "
            "if hasattr(os, 'sched_getaffinity') else os.cpu_count())")
    out = subprocess.run(cmd + ["-c", code], env=dict(os.environ, RNNKIT_NUM_THREADS=value),
                         capture_output=True, text=True, check=True).stdout.split()
    threads, cpus = int(out[-2]), int(out[-1])
    assert threads == (cpus if expected is None else expected)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_the_default_thread_count_is_the_cpus_the_process_may_use():
    """Every CPU of the process's affinity mask (taskset, a container's cpuset), not every CPU
    of the machine: under `taskset -c 0` the default is one thread, not threads taking turns."""
    cmd = [sys.executable] + (["-S"] if sys.flags.no_site else [])
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "import rnnkit; print(rnnkit.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "RNNKIT_NUM_THREADS"}
    out = subprocess.run(cmd + ["-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[-1]) == 1


def test_an_infinite_bound_is_shown_open():
    """inf is refused (the number must be finite), so the interval says ")"."""
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\), got inf"):
        rnnkit.SGD(lr=float("inf"))


def test_optimizer_argument_errors():
    with pytest.raises(ValueError, match="momentum"):
        rnnkit.SGD(lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="weight_decay"):
        rnnkit.Adam(weight_decay=-1.0)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        rnnkit.Adam(betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="betas"):
        rnnkit.Adam(betas=0.9)
    with pytest.raises(TypeError, match="lr"):
        rnnkit.SGD(lr="0.1")


@pytest.mark.parametrize("kind, attr, bad, error", [
    ("SGD", "lr", -1.0, ValueError),
    ("SGD", "lr", "0.1", TypeError),
    ("SGD", "momentum", float("nan"), ValueError),
    ("SGD", "weight_decay", True, TypeError),
    ("Adam", "eps", -1e-8, ValueError),
    ("Adam", "betas", (0.9, 1.0), ValueError),
    ("Adam", "betas", 0.9, TypeError),
])
def test_optimizer_hyperparameters_are_checked_when_set_after_construction(kind, attr, bad,
                                                                          error):
    """As a schedule sets opt.lr: a bad value is refused where it is set, naming it, and the
    optimizer keeps its value (before, the C++ backend refused it at the next fit, with
    pybind11's dump of every argument for a string, and the reference trained with it)."""
    opt = getattr(rnnkit, kind)(lr=0.1)
    before = getattr(opt, attr)
    with pytest.raises(error, match=attr):
        setattr(opt, attr, bad)
    assert getattr(opt, attr) == before
    setattr(opt, attr, before)   # a good value is taken
    opt.lr = 0.5
    assert opt.lr == 0.5 and opt.config()["lr"] == 0.5


def _assert_weights_bitwise_equal(a, b):
    for name, w in a.weights.items():
        assert w.tobytes() == b.weights[name].tobytes(), name


def test_sgd_momentum_set_after_training_starts_its_buffer(backend, tmp_path):
    """Momentum set on an SGD that trained without: the next fit starts the momentum buffer
    at zero, the updates of a new SGD(momentum=...); set back to 0 the buffer is kept, unused,
    and saved (before, the next fit refused the optimizer, and a saved file was refused by
    load)."""
    X, Y = _data()
    a, b = _model(backend), _model(backend)
    opt = rnnkit.SGD(lr=0.05)
    a.fit(X, Y, epochs=1, batch_size=4, optimizer=opt, shuffle=False)
    b.fit(X, Y, epochs=1, batch_size=4, optimizer=rnnkit.SGD(lr=0.05), shuffle=False)
    opt.momentum = 0.9
    a.fit(X, Y, epochs=2, batch_size=4, shuffle=False)
    b.fit(X, Y, epochs=2, batch_size=4, optimizer=rnnkit.SGD(lr=0.05, momentum=0.9),
          shuffle=False)
    _assert_weights_bitwise_equal(a, b)
    assert opt.state["momentum_buffer"].tobytes() == \
        b.optimizer.state["momentum_buffer"].tobytes()
    opt.momentum = 0.0
    buffer = opt.state["momentum_buffer"].copy()
    a.fit(X, Y, epochs=1, batch_size=4, shuffle=False)
    assert np.array_equal(opt.state["momentum_buffer"], buffer)   # unused with momentum 0
    a.save(tmp_path / "a.npz")
    loaded = rnnkit.load(tmp_path / "a.npz")
    assert loaded.optimizer.momentum == 0.0
    assert np.array_equal(loaded.optimizer.state["momentum_buffer"], buffer)


def test_sgd_momentum_set_by_a_callback_or_before_save(backend, tmp_path):
    """Momentum set by a callback between epochs (a schedule) is used from the next epoch, its
    buffer starting at zero; set after the last update, save writes that zero buffer and load
    takes the file (a review found both refused: the next epoch, and load)."""
    X, Y = _data()

    def start_momentum(epoch, logs):
        if epoch == 0:
            opt.momentum = 0.9
    a, b = _model(backend), _model(backend)
    opt = rnnkit.SGD(lr=0.05)
    a.fit(X, Y, epochs=3, batch_size=4, optimizer=opt, shuffle=False,
          callbacks=[start_momentum])
    b.fit(X, Y, epochs=1, batch_size=4, optimizer=rnnkit.SGD(lr=0.05), shuffle=False)
    b.fit(X, Y, epochs=2, batch_size=4, optimizer=rnnkit.SGD(lr=0.05, momentum=0.9),
          shuffle=False)
    _assert_weights_bitwise_equal(a, b)

    c = _model(backend)
    c.fit(X, Y, epochs=1, batch_size=4, optimizer=rnnkit.SGD(lr=0.05), shuffle=False)
    c.optimizer.momentum = 0.5
    c.save(tmp_path / "c.npz")
    loaded = rnnkit.load(tmp_path / "c.npz")
    assert not loaded.optimizer.state["momentum_buffer"].any()
    for model in (c, loaded):
        model.fit(X, Y, epochs=1, batch_size=4, shuffle=False)
    _assert_weights_bitwise_equal(c, loaded)


def test_an_sgd_pickled_by_the_previous_release_unpickles_and_trains():
    """rnnkit 0.1.0 before this change pickled an SGD with its state names as an attribute
    (the dict below is such a pickle's); the method that replaced it must not be shadowed."""
    old = rnnkit.SGD.__new__(rnnkit.SGD)
    old.__setstate__({"state": {}, "step_count": 0, "_owner": None, "lr": 0.1,
                      "momentum": 0.9, "weight_decay": 0.0,
                      "_state_names": ("momentum_buffer",)})
    X, Y = _data()
    model = _model("cpp")
    model.fit(X, Y, epochs=1, batch_size=2, optimizer=old)
    assert old.step_count == 2 and "momentum_buffer" in old.state
    with pytest.raises(AttributeError, match="lr"):
        rnnkit.SGD.__new__(rnnkit.SGD).lr


def test_optimizer_bound_to_another_model_size(backend):
    X, Y = _data()
    opt = rnnkit.Adam()
    _model(backend).fit(X, Y, epochs=1, optimizer=opt)
    other = _model(backend, hidden_size=H + 1)
    with pytest.raises(ValueError, match="optimizer"):
        other.fit(X, Y, epochs=1, optimizer=opt)


def test_a_refused_optimizer_leaves_the_model_as_it_was(backend):
    X, Y = _data()
    opt = rnnkit.Adam(lr=0.01)
    _model(backend, hidden_size=H + 1).fit(X, Y, epochs=1, optimizer=opt)
    model = _model(backend)
    model.fit(X, Y, epochs=1)
    own, steps = model.optimizer, model.optimizer.step_count
    state = {k: v.copy() for k, v in own.state.items()}
    twin32 = rnnkit.Adam()
    _model(backend, dtype="float32").fit(X, Y, epochs=1, optimizer=twin32)
    # another model's; a copy (no model's) of another size; a copy of another dtype
    for refused, why in ((opt, "belongs to another model"),
                         (copy.deepcopy(opt), f"{H + 1}|{O}|parameters"),
                         (copy.deepcopy(twin32), "float32")):
        with pytest.raises(ValueError, match=why):
            model.fit(X, Y, epochs=1, optimizer=refused)
        assert model.optimizer is own and own.step_count == steps
        assert all(np.array_equal(own.state[k], v) for k, v in state.items())
    model.fit(X, Y, epochs=1)                       # still trains, and saves a loadable file
    assert model.optimizer is own and own.step_count == steps + 1


def test_an_optimizer_belongs_to_one_model(backend, tmp_path):
    """Its step count and moments are one model's training: a second model (even of the same
    size, even after the first is gone) is refused, so two seeds' runs cannot leak into each
    other. Copies of a model (pickle, deepcopy) come with their own optimizer."""
    X, Y = _data()
    opt = rnnkit.Adam(lr=0.01)
    first = _model(backend)
    first.fit(X, Y, epochs=2, optimizer=opt)
    first.fit(X, Y, epochs=1, optimizer=opt)          # the same model again: fine
    del first
    second = _model(backend)
    with pytest.raises(ValueError, match="already belongs to another model.*Adam"):
        second.fit(X, Y, epochs=1, optimizer=opt)
    with pytest.raises(ValueError, match="already belongs to another model"):
        second.train_step(X, Y, optimizer=opt)
    assert second.optimizer is None and opt.step_count == 3
    second.optimizer = opt                             # assigned by hand: refused at use
    with pytest.raises(ValueError, match="already belongs to another model"):
        second.fit(X, Y, epochs=1)

    a = _model(backend)
    a.fit(X, Y, epochs=1, optimizer=rnnkit.Adam(lr=0.01))
    for b in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert b.optimizer is not a.optimizer
        b.fit(X, Y, epochs=1)                          # each trains with its own copy
        assert b.optimizer.step_count == a.optimizer.step_count + 1
    # an optimizer's copy (copy.copy too) is no model's and has its own state
    moments = {k: v.copy() for k, v in a.optimizer.state.items()}
    for twin in (copy.copy(a.optimizer), copy.deepcopy(a.optimizer)):
        _model(backend).fit(X, Y, epochs=1, optimizer=twin)
        assert all(np.array_equal(a.optimizer.state[k], v) for k, v in moments.items())
    a.save(tmp_path / "a.npz")
    c = rnnkit.load(tmp_path / "a.npz")
    c.fit(X, Y, epochs=1)
    a.fit(X, Y, epochs=1)
    assert np.array_equal(a._params, c._params)        # the original is untouched by copies


def test_optional_submodules_are_attributes_of_the_package():
    """rnnkit.plot and rnnkit.sklearn, as the README uses them, after a plain import rnnkit."""
    code = ("import rnnkit; print(rnnkit.plot.history.__name__); "
            "print('plot' in dir(rnnkit), 'sklearn' in dir(rnnkit))")
    cmd = [sys.executable] + (["-S"] if sys.flags.no_site else [])   # the sanitizer run's -S
    out = subprocess.run(cmd + ["-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["history", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        rnnkit.nonsense


@pytest.mark.parametrize("name,value", [("activation", "softmax"), ("activation", "Tanh"),
                                        ("backend", "cuda"), ("dtype", "float16"),
                                        ("dtype", "int32"), ("dtype", "nonsense")])
def test_unknown_choices(name, value):
    with pytest.raises(ValueError, match=name):
        rnnkit.RNN(2, 3, 1, **{name: value})


# ----------------------------------------------------------------------------- files
def test_load_rejects_files_that_are_not_models(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    with pytest.raises(ValueError, match="notes.txt"):
        rnnkit.load(text)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz"):
        rnnkit.load(empty)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(ValueError, match="other.npz"):
        rnnkit.load(other)


def test_load_rejects_a_plain_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.arange(3.0))
    with pytest.raises(ValueError, match="array.npy"):
        rnnkit.load(path)


def test_load_rejects_bad_backend_override(tmp_path):
    path = tmp_path / "m.npz"
    rnnkit.RNN(2, 3, 1, seed=0, backend="reference").save(path)
    with pytest.raises(ValueError, match="^backend must be one of 'cpp', 'reference', got 'gpu'$"):
        rnnkit.load(path, backend="gpu")          # the argument is wrong, not the file


def test_load_rejects_a_step_count_past_int64(tmp_path):
    """The C++ core counts steps in an int64: a larger saved count is a damaged file."""
    import json
    path = tmp_path / "m.npz"
    model = rnnkit.RNN(2, 3, 1, seed=0)
    model.fit(*_data(i=2, o=1), epochs=1, optimizer=rnnkit.Adam())
    model.save(path)
    files = dict(np.load(path))
    for count, ok in ((2**63 - 1, True), (2**63, False), (2**70, False)):
        saved = json.loads(str(files["optimizer"]))
        saved["step_count"] = count
        files["optimizer"] = np.array(json.dumps(saved))
        np.savez(path, **files)
        if ok:
            assert rnnkit.load(path).optimizer.step_count == count
        else:
            with pytest.raises(ValueError, match=r"step count must be an integer in \[0, "):
                rnnkit.load(path)


def test_load_rejects_a_truncated_model_file(tmp_path):
    """A model file cut short (an interrupted copy or download) is not a model: ValueError."""
    path = tmp_path / "m.npz"
    rnnkit.RNN(2, 3, 1, seed=0, backend="reference").save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        rnnkit.load(cut)


def test_import_leaves_the_reference_and_file_modules_until_used():
    """`import rnnkit` does not import what most programs never use (the first example's
    whole process is timed, imports included): the NumPy reference until rnnkit.reference or
    backend="reference" asks for it, json and tempfile until a model is saved or loaded."""
    import subprocess
    import sys

    code = ("import sys, numpy\n"
            "before = set(sys.modules)\n"     # what the interpreter's start and NumPy import
            "import rnnkit\n"
            "late = ('rnnkit.reference', 'json', 'tempfile')\n"
            "print(*[m for m in late if m in set(sys.modules) - before])\n"
            "print('reference' in dir(rnnkit), hasattr(rnnkit, 'Any'))\n"
            "print(rnnkit.reference.forward.__module__)\n"
            "from rnnkit import reference\n"
            "print(reference is rnnkit.reference)\n"
            "try:\n"
            "    rnnkit.no_such_name\n"
            "except AttributeError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["", "True False", "rnnkit.reference", "True",
                   "module 'rnnkit' has no attribute 'no_such_name'"]
