"""model.forecast: the autoregressive rollout in C++ against the NumPy reference, against a
loop of forward calls, and its errors."""

import numpy as np
import pytest

import rnnkit
from rnnkit import _core
from rnnkit import reference as ref

from test_cpp_vs_reference import TOL, assert_close, make_problem


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("N, T, F, H, bias, with_h0", [
    (1, 1, 1, 1, True, False), (3, 7, 1, 9, True, True), (2, 5, 3, 6, False, False),
    (4, 2, 2, 40, True, True)])
@pytest.mark.parametrize("steps", [1, 13])
def test_forecast_cpp_matches_reference(dtype, activation, N, T, F, H, bias, with_h0, steps):
    rng = np.random.default_rng(N * 100 + T * 10 + H + steps)
    params, X, _, h0 = make_problem(rng, N, T, F, H, F, bias, False, dtype, with_h0)
    got = _core.forecast(X, h0, params, H, F, bias, activation, steps)
    expected = ref.forecast(X, h0, params, H, F, bias, activation, steps)
    assert got.shape == (N, steps, F) and got.dtype == dtype
    assert_close(got, expected, TOL[dtype])


def test_forecast_equals_forward_loop(backend):
    """forecast = predict on the context, then forward one step at a time from the carried
    state with the last prediction as input, for a many-to-one and a many-to-many model: bit
    for bit in C++ (the same kernel computes both); in the reference to rounding, since NumPy's
    matrix products may round differently for the (N, T, H) and (N, H) shapes."""
    rng = np.random.default_rng(3)
    for return_sequences in (False, True):
        model = rnnkit.RNN(2, 8, 2, return_sequences=return_sequences, seed=1, backend=backend)
        context = rng.normal(size=(3, 6, 2))
        h0 = rng.normal(size=(3, 8))
        got = model.forecast(context, 10, h0=h0)
        assert got.shape == (3, 10, 2)
        y, h = model.forward(context, h0)
        expected = [y[:, -1] if return_sequences else y]
        for _ in range(9):
            y, h = model.forward(expected[-1][:, None, :], h)
            expected.append(y[:, -1] if return_sequences else y)
        if backend == "cpp":
            np.testing.assert_array_equal(got, np.stack(expected, axis=1))
        else:
            np.testing.assert_allclose(got, np.stack(expected, axis=1), rtol=1e-13, atol=1e-15)


def test_forecast_first_step_is_predict_and_2d_context(backend):
    model = rnnkit.RNN(1, 5, 1, seed=2, backend=backend)
    context = np.sin(np.arange(30.0)).reshape(3, 10)          # (N, T) when I == 1
    got = model.forecast(context, 4)
    assert got.shape == (3, 4, 1)
    np.testing.assert_allclose(got[:, 0], model.predict(context), rtol=1e-13, atol=1e-15)
    if backend == "cpp":
        np.testing.assert_array_equal(got[:, 0], model.predict(context))


def test_forecast_follows_a_learned_sine(backend):
    """A model trained on next-value windows keeps following the wave for 40 steps."""
    series = np.sin(0.3 * np.arange(400.0))
    X, Y = rnnkit.data.sliding_windows(series[:300], seq_len=20)
    model = rnnkit.RNN(1, 16, 1, seed=0, backend=backend)
    model.fit(X, Y, epochs=30 if backend == "cpp" else 8, batch_size=8,
              optimizer=rnnkit.Adam(lr=0.01))
    got = model.forecast(series[280:300].reshape(1, 20), 40)[0, :, 0]
    rmse = np.sqrt(np.mean((got - series[300:340]) ** 2))
    assert rmse < 0.15, rmse
    flat = np.sqrt(np.mean((series[299] - series[300:340]) ** 2))   # repeating the last value
    assert rmse < flat / 3


def test_forecast_errors(backend):
    model = rnnkit.RNN(2, 4, 3, seed=0, backend=backend)
    with pytest.raises(ValueError, match=r"input_size == output_size.*input_size=2.*"
                                         r"output_size=3"):
        model.forecast(np.zeros((1, 3, 2)), 5)
    model = rnnkit.RNN(2, 4, 2, seed=0, backend=backend)
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1, got 0"):
        model.forecast(np.zeros((1, 3, 2)), 0)
    with pytest.raises(TypeError, match=r"steps must be an integer"):
        model.forecast(np.zeros((1, 3, 2)), 2.5)
    with pytest.raises(ValueError, match=r"context must have shape \(N, T, 2\), got \(1, 3, 1\)"):
        model.forecast(np.zeros((1, 3, 1)), 2)
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 4\), got \(2, 4\)"):
        model.forecast(np.zeros((1, 3, 2)), 2, h0=np.zeros((2, 4)))


@pytest.mark.parametrize("backend", [ref, _core], ids=["reference", "cpp"])
def test_backend_forecast_errors(backend):
    params = np.zeros(rnnkit.param_count(2, 3, 2, True))
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1, got 0"):
        backend.forecast(np.zeros((1, 2, 2)), None, params, 3, 2, True, "tanh", 0)
    with pytest.raises(ValueError, match=r"output_size = 3 features per step.*\(1, 2, 2\)"):
        backend.forecast(np.zeros((1, 2, 2)), None, np.zeros(rnnkit.param_count(2, 3, 3, True)),
                         3, 3, True, "tanh", 4)


@pytest.mark.parametrize("backend", [ref, _core], ids=["reference", "cpp"])
def test_train_epoch_fills_losses_out_as_it_goes(backend):
    """The progress bar's running loss: inside the callback, losses_out[:done] already holds
    the losses of the minibatches done; the losses returned are those same values."""
    rng = np.random.default_rng(6)
    params, X, Y, _ = make_problem(rng, 10, 8, 1, 6, 1, True, False, np.float64, False)

    def args():                           # each call updates its own copy of the parameters
        return (X, Y, params.copy(), np.arange(10), 3, 6, 1, True, "tanh", None, None, None,
                "sgd", 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, None, None, None, 0)
    out = np.full(4, np.nan)
    seen = []
    losses, _, status, _ = backend.train_epoch(
        *args(), callback=lambda done: seen.append(out[:done].copy()), losses_out=out)
    assert status == "completed"
    np.testing.assert_array_equal(losses, out)
    assert seen and all(np.array_equal(s, out[:len(s)]) for s in seen)
    plain = backend.train_epoch(*args())[0]
    np.testing.assert_array_equal(plain, out)
    with pytest.raises((ValueError, TypeError), match="losses_out"):
        backend.train_epoch(*args(), losses_out=np.zeros(3))
