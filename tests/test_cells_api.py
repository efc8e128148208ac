"""The model API of every cell (rnnkit.RNN, GRU, LSTM) and depth (num_layers): methods, state
forms, argument errors, save/load, padded batches (``lengths``) through the model API.

docs/architecture.md is the contract: the state is PyTorch's, batch-first (h (N, H) for one
layer, (L, N, H) for several, LSTM the pair (h, c)); padded steps freeze the state, output 0
(many-to-many) and hold no loss term, so a padded batch equals each record run alone.
Numerics run on both backends (the ``backend`` fixture).
"""

import json
import pickle
import sys

import numpy as np
import pytest

import rnnkit

CLASSES = {"rnn": rnnkit.RNN, "gru": rnnkit.GRU, "lstm": rnnkit.LSTM}
CELLS = list(CLASSES)
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
LAYERS = [1, 2, 3]


def make(cell, backend, num_layers=2, I=2, H=4, O=3, seq=False, seed=0, **kw):
    return CLASSES[cell](I, H, O, return_sequences=seq, seed=seed, backend=backend,
                         num_layers=num_layers, **kw)


def data(N=5, T=6, I=2, O=3, seq=False, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, I))
    Y = rng.normal(size=(N, T, O) if seq else (N, O))
    return X, Y


def state_shapes(state):
    return [s.shape for s in state] if isinstance(state, tuple) else [state.shape]


def expected_state_shapes(cell, L, N, H):
    one = (N, H) if L == 1 else (L, N, H)
    return [one, one] if cell == "lstm" else [one]


def assert_same(a, b):
    """Bitwise equality of arrays or (h, c) pairs."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    else:
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- classes, layout
def test_classes_share_one_base_and_register_their_cell():
    for cell, cls in CLASSES.items():
        assert issubclass(cls, rnnkit.Recurrent) and cls.cell == cell
        assert rnnkit.model.CELL_CLASSES[cell] is cls
    with pytest.raises(TypeError, match="Recurrent has no cell"):
        rnnkit.Recurrent(1, 2)

    class MyGRU(rnnkit.GRU):            # a subclass inherits its cell; load still gives GRU
        pass
    assert MyGRU(1, 2, backend="reference").cell == "gru"
    assert rnnkit.model.CELL_CLASSES["gru"] is rnnkit.GRU


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", LAYERS)
@pytest.mark.parametrize("bias", [True, False])
def test_weights_follow_the_layout_and_init(cell, L, bias):
    """Names and shapes are param_layout's; every parameter ~ U(-1/sqrt(H), 1/sqrt(H)) drawn
    from default_rng(seed) in layout order."""
    I, H, O, G = 3, 5, 2, GATES[cell]
    model = CLASSES[cell](I, H, O, bias=bias, seed=7, num_layers=L, backend="reference")
    layout = rnnkit.param_layout(I, H, O, bias, cell, L)
    w = model.weights
    assert list(w) == [name for name, _, _ in layout]
    assert model.num_parameters == rnnkit.param_count(I, H, O, bias, cell, L)
    assert w["U"].shape == (G * H, I) and w["W"].shape == (G * H, H)
    if L > 1:
        assert w[f"U_l{L - 1}"].shape == (G * H, H)
    if bias:
        assert (("b_ih" in w and "b_hh" in w and "b" not in w) if cell != "rnn"
                else ("b" in w and "b_ih" not in w))
    rng = np.random.default_rng(7)
    bound = 1 / np.sqrt(H)
    for name, _, shape in layout:
        np.testing.assert_array_equal(w[name], rng.uniform(-bound, bound, size=shape))


def test_elman_one_layer_weights_are_the_old_ones():
    """RNN with num_layers=1 draws U, W, b, V, c as before cells existed."""
    model = rnnkit.RNN(2, 3, 1, seed=0, backend="reference")
    rng = np.random.default_rng(0)
    b = 1 / np.sqrt(3)
    for name, shape in [("U", (3, 2)), ("W", (3, 3)), ("b", (3,)), ("V", (1, 3)), ("c", (1,))]:
        np.testing.assert_array_equal(model.weights[name], rng.uniform(-b, b, size=shape))


@pytest.mark.parametrize("cell", CELLS)
def test_set_weights_round_trip_and_key_errors(cell):
    a, b = make(cell, "reference", seed=1), make(cell, "reference", seed=2)
    b.set_weights(a.weights)
    for k, v in a.weights.items():
        np.testing.assert_array_equal(b.weights[k], v)
    bad = a.weights
    bad.pop("W_l1")
    with pytest.raises(ValueError, match="weights must have exactly the keys"):
        b.set_weights(bad)
    bad = a.weights
    bad["U_l1"] = bad["U_l1"][:, :2]
    with pytest.raises(ValueError, match=r"weights\['U_l1'\] must have shape"):
        b.set_weights(bad)


def test_repr_and_config():
    model = rnnkit.LSTM(2, 4, 3, num_layers=2, backend="reference", seed=0)
    assert repr(model).startswith("LSTM(input_size=2, hidden_size=4, output_size=3")
    assert "num_layers=2" in repr(model) and "cell" not in repr(model)
    config = model.get_config()
    assert config["cell"] == "lstm" and config["num_layers"] == 2
    json.dumps(config)


# ---------------------------------------------------------------------------- every method
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", LAYERS)
@pytest.mark.parametrize("seq", [False, True], ids=["m2one", "m2many"])
def test_every_method_runs_with_the_state_in_torch_form(backend, cell, L, seq):
    N, T, I, H, O = 5, 6, 2, 4, 3
    X, Y = data(N, T, I, O, seq)
    model = make(cell, backend, L, I, H, O, seq)
    out, state = model.forward(X)
    assert out.shape == ((N, T, O) if seq else (N, O))
    assert state_shapes(state) == expected_state_shapes(cell, L, N, H)
    assert isinstance(state, tuple) == (cell == "lstm")
    np.testing.assert_array_equal(model.predict(X), out)
    # the state carries: two halves from the first's final state equal the whole
    first, mid = model.forward(X[:, :2])
    second, end = model.forward(X[:, 2:], mid)
    assert_same(end, state)
    np.testing.assert_array_equal(second[:, -1] if seq else second, out[:, -1] if seq else out)
    assert np.isfinite(model.loss(X, Y))
    grads = model.gradients(X, Y, bptt_truncate=2, h0=state)
    assert {k: v.shape for k, v in grads.items()} == {k: v.shape for k, v in
                                                      model.weights.items()}
    loss, st = model.train_step(X, Y, h0=state, optimizer=rnnkit.SGD(lr=0.01), clip_norm=1.0)
    assert np.isfinite(loss) and state_shapes(st) == expected_state_shapes(cell, L, N, H)
    hist = model.fit(X, Y, epochs=2, batch_size=2, validation_data=(X, Y), bptt_truncate=3,
                     clip_value=1.0)
    assert len(hist["loss"]) == len(hist["val_loss"]) == 2


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", [1, 2])
def test_forecast_equals_a_loop_of_forward(backend, cell, L):
    X, _ = data(4, 5, 2, 2)
    model = make(cell, backend, L, I=2, O=2)
    h0 = model.forward(X[:, :1])[1]
    fc = model.forecast(X, steps=4, h0=h0)
    assert fc.shape == (4, 4, 2)
    y, state = model.forward(X, h0)
    expected = [y]
    for _ in range(3):
        y, state = model.forward(y[:, None, :], state)
        expected.append(y)
    np.testing.assert_array_equal(fc, np.stack(expected, axis=1))


def test_one_layer_accepts_torch_shaped_h0():
    X, _ = data(3, 4)
    for cell in CELLS:
        model = make(cell, "reference", 1)
        state = model.forward(X[:, :2])[1]
        torch_form = (tuple(s[None] for s in state) if cell == "lstm" else state[None])
        assert_same(model.forward(X, torch_form)[1], model.forward(X, state)[1])


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad, error, message", [
    (0, ValueError, r"num_layers must be an integer >= 1, got 0"),
    (-1, ValueError, r"num_layers must be an integer >= 1, got -1"),
    (1.5, TypeError, r"num_layers must be an integer >= 1, got 1.5 \(float\)"),
    (True, TypeError, r"num_layers must be an integer >= 1, got True \(bool\)"),
    ("2", TypeError, r"num_layers must be an integer >= 1, got '2' \(str\)"),
])
@pytest.mark.parametrize("cell", CELLS)
def test_bad_num_layers(cell, bad, error, message):
    with pytest.raises(error, match=message):
        CLASSES[cell](1, 2, num_layers=bad, backend="reference")


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_bad_h0_for_one_state(cell):
    X, _ = data(5, 4)
    one, two = make(cell, "reference", 1), make(cell, "reference", 2)
    with pytest.raises(ValueError, match=r"h0 must have shape \(5, 4\), got \(4, 4\)"):
        one.forward(X, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 5, 4\), got \(5, 4\)"):
        two.forward(X, np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 5, 4\), got \(3, 5, 4\)"):
        two.forward(X, np.zeros((3, 5, 4)))
    with pytest.raises(TypeError, match=r"h0 must be one array of shape \(2, 5, 4\) .*LSTM"):
        two.forward(X, (np.zeros((2, 5, 4)), np.zeros((2, 5, 4))))
    with pytest.raises(ValueError, match="h0 contains NaN"):
        one.forward(X, np.full((5, 4), np.nan))


def test_bad_h0_for_lstm():
    X, Y = data(5, 4)
    model = make("lstm", "reference", 2)
    good = np.zeros((2, 5, 4))
    with pytest.raises(TypeError, match=r"h0 must be the pair \(h0, c0\) of an LSTM, each of "
                                        r"shape \(2, 5, 4\), got ndarray of shape \(2, 5, 4\)"):
        model.forward(X, good)
    with pytest.raises(TypeError, match=r"h0 must be the pair .*got a tuple of 3"):
        model.forward(X, (good, good, good))
    with pytest.raises(ValueError, match=r"h0\[1\] must have shape \(2, 5, 4\), got \(2, 5, 3\)"):
        model.forward(X, (good, np.zeros((2, 5, 3))))
    with pytest.raises(ValueError, match=r"h0\[0\] must have shape \(2, 5, 4\), got \(5, 4\)"):
        model.train_step(X, Y, h0=(np.zeros((5, 4)), good))
    with pytest.raises(ValueError, match=r"h0\[0\] must have shape"):
        model.gradients(X, Y, h0=[np.zeros(3), good])


@pytest.mark.parametrize("bad, error, message", [
    ([3, 4, 4, 4, 4.0], TypeError, r"lengths must be an array of integers of shape \(5,\).* "
                                   r"got dtype float64"),
    ([True] * 5, TypeError, r"lengths must be an array of integers .*got dtype bool"),
    ([4, 4, 4, 4], ValueError, r"lengths must have shape \(5,\) \(one length per record of "
                               r"X\), got \(4,\)"),
    ([[4] * 5], ValueError, r"lengths must have shape \(5,\) .*got \(1, 5\)"),
    ([4, 4, 0, 4, 4], ValueError, r"lengths must hold integers in \[1, 4\] \(X has T = 4 "
                                  r"steps\), got lengths\[2\] = 0"),
    ([4, 4, 4, 4, 5], ValueError, r"lengths must hold integers in \[1, 4\] .*lengths\[4\] = 5"),
    (np.array([4, 4, 4, 4, 2**63], dtype=np.uint64), ValueError, r"lengths\[4\] = 9223"),
    ("abcde", TypeError, r"lengths must be an array of integers"),
])
def test_bad_lengths_name_the_argument(bad, error, message):
    X, Y = data(5, 4)
    model = make("gru", "reference")
    for call in (lambda: model.forward(X, lengths=bad), lambda: model.predict(X, lengths=bad),
                 lambda: model.loss(X, Y, lengths=bad),
                 lambda: model.gradients(X, Y, lengths=bad),
                 lambda: model.train_step(X, Y, lengths=bad),
                 lambda: model.fit(X, Y, lengths=bad)):
        with pytest.raises(error, match=message):
            call()
    with pytest.raises(error, match=message.replace("lengths", r"validation_data\[2\]")):
        model.fit(X, Y, validation_data=(X, Y, bad))


def test_validation_data_must_be_a_pair_or_triple():
    X, Y = data(5, 4)
    model = make("lstm", "reference")
    with pytest.raises(TypeError, match=r"validation_data must be a pair \(X_val, Y_val\) or a "
                                        r"triple \(X_val, Y_val, lengths_val\), got a tuple of 4"):
        model.fit(X, Y, validation_data=(X, Y, None, None))


def test_lengths_accept_any_integer_array():
    X, Y = data(4, 5)
    model = make("lstm", "reference")
    ref = model.predict(X, lengths=np.array([5, 2, 3, 1], dtype=np.int64))
    for form in ([5, 2, 3, 1], (5, 2, 3, 1), np.array([5, 2, 3, 1], dtype=np.uint8),
                 np.array([5, 2, 3, 1], dtype=np.int32)):
        np.testing.assert_array_equal(model.predict(X, lengths=form), ref)
    np.testing.assert_array_equal(model.predict(X, lengths=[5] * 4), model.predict(X))


# ---------------------------------------------------------------------------- padded batches
LENGTHS = [6, 2, 5, 1, 3]


def alone(model, X, n, length, h0=None):
    return model.forward(X[n:n + 1, :length], h0)


def take(state, n):
    """Record n's state, keeping the batch axis."""
    if isinstance(state, tuple):
        return tuple(take(s, n) for s in state)
    return state[..., n:n + 1, :]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("seq", [False, True], ids=["m2one", "m2many"])
def test_padded_batch_equals_records_alone(backend, cell, L, seq):
    """forward, loss, gradients (full and truncated) of a padded batch equal those of the
    records run alone on their own steps, combined as the mean over valid elements."""
    N, T, O = 5, 6, 3
    X, Y = data(N, T, 2, O, seq)
    model = make(cell, backend, L, seq=seq)
    rng = np.random.default_rng(3)
    h0_all = model.forward(rng.normal(size=(N, 2, 2)))[1]      # a non-zero initial state
    out, state = model.forward(X, h0_all, lengths=LENGTHS)
    total_valid = O * (sum(LENGTHS) if seq else N)
    loss = 0.0
    grads = {k: np.zeros_like(v) for k, v in model.weights.items()}
    grads_k = {k: np.zeros_like(v) for k, v in model.weights.items()}
    for n, length in enumerate(LENGTHS):
        h0 = take(h0_all, n)
        out_n, state_n = alone(model, X, n, length, h0)
        if seq:
            np.testing.assert_allclose(out[n:n + 1, :length], out_n, rtol=1e-12, atol=1e-14)
            assert np.all(out[n, length:] == 0)
            Y_n = Y[n:n + 1, :length]
        else:
            np.testing.assert_allclose(out[n:n + 1], out_n, rtol=1e-12, atol=1e-14)
            Y_n = Y[n:n + 1]
        for a, b in zip(state_shapes(state), state_shapes(state_n)):
            assert a[:-2] == b[:-2]
        for a, b in zip(state if isinstance(state, tuple) else (state,),
                        state_n if isinstance(state_n, tuple) else (state_n,)):
            np.testing.assert_allclose(a[..., n:n + 1, :], b, rtol=1e-12, atol=1e-14)
        weight = Y_n.size / total_valid           # record n's share of the mean
        loss += weight * model.loss(X[n:n + 1, :length], Y_n, h0=h0)
        for k, v in model.gradients(X[n:n + 1, :length], Y_n, h0=h0).items():
            grads[k] += weight * v
        for k, v in model.gradients(X[n:n + 1, :length], Y_n, bptt_truncate=1, h0=h0).items():
            grads_k[k] += weight * v
    assert model.loss(X, Y, h0_all, lengths=LENGTHS) == pytest.approx(loss, rel=1e-12)
    for k, v in model.gradients(X, Y, h0=h0_all, lengths=LENGTHS).items():
        np.testing.assert_allclose(v, grads[k], rtol=1e-10, atol=1e-13, err_msg=k)
    for k, v in model.gradients(X, Y, bptt_truncate=1, h0=h0_all, lengths=LENGTHS).items():
        np.testing.assert_allclose(v, grads_k[k], rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("seq", [False, True], ids=["m2one", "m2many"])
def test_loss_is_the_backends_loss_over_valid_elements(backend, cell, seq):
    """model.loss (masked in Python) equals the backend's loss (train_step's, before the
    update); the targets at padded steps do not count."""
    X, Y = data(5, 6, 2, 3, seq)
    model = make(cell, backend, 2, seq=seq)
    loss = model.loss(X, Y, lengths=LENGTHS)
    if seq:
        Y2 = Y.copy()
        for n, length in enumerate(LENGTHS):
            Y2[n, length:] = 1e3            # padding targets are ignored
        assert model.loss(X, Y2, lengths=LENGTHS) == loss
    step_loss, _ = model.train_step(X, Y, optimizer=rnnkit.SGD(lr=0.0001), lengths=LENGTHS)
    assert step_loss == pytest.approx(loss, rel=1e-13)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("seq", [False, True], ids=["m2one", "m2many"])
def test_fit_lengths_travel_with_their_records(backend, cell, seq):
    """fit(batch_size=1, shuffle=True, lengths=...) equals train_step on each record alone,
    cut to its length, in the order the model's generator shuffles them."""
    X, Y = data(5, 6, 2, 3, seq)
    model = make(cell, backend, 2, seq=seq, seed=4)
    twin = make(cell, backend, 2, seq=seq, seed=4)
    hist = model.fit(X, Y, epochs=2, batch_size=1, optimizer=rnnkit.Adam(lr=0.01),
                     lengths=LENGTHS, bptt_truncate=2, clip_norm=0.5)
    opt = rnnkit.Adam(lr=0.01)
    for epoch in range(2):
        order = twin._rng.permutation(5)
        losses = []
        for n in order:
            Y_n = Y[n:n + 1, :LENGTHS[n]] if seq else Y[n:n + 1]
            losses.append(twin.train_step(X[n:n + 1, :LENGTHS[n]], Y_n, optimizer=opt,
                                          bptt_truncate=2, clip_norm=0.5)[0])
        assert hist["loss"][epoch] == pytest.approx(np.mean(losses), rel=1e-10)
    for k, v in twin.weights.items():
        np.testing.assert_allclose(model.weights[k], v, rtol=1e-10, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
def test_validation_triple_uses_its_lengths(cell):
    X, Y = data(5, 6, 2, 3, True)
    model = make(cell, "reference", 2, seq=True)
    twin = make(cell, "reference", 2, seq=True)
    hist = model.fit(X, Y, epochs=1, lengths=LENGTHS, validation_data=(X, Y, LENGTHS))
    twin.fit(X, Y, epochs=1, lengths=LENGTHS)
    assert hist["val_loss"] == [twin.loss(X, Y, lengths=LENGTHS)]


# ---------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_save_load_continue_is_bitwise(backend, cell, tmp_path):
    """2 layers: train, save, load (the same class), train on: bitwise the uninterrupted run
    (weights, Adam state, shuffling generator, history)."""
    X, Y = data(8, 6, 2, 3, True)
    kw = dict(epochs=2, batch_size=3, bptt_truncate=2, clip_norm=1.0, lengths=[6, 2, 5, 1, 3,
                                                                              6, 4, 2])
    straight = make(cell, backend, 2, seq=True, seed=5)
    h1 = straight.fit(X, Y, optimizer=rnnkit.Adam(lr=0.01), **kw)["loss"]
    h2 = straight.fit(X, Y, **kw)["loss"]
    first = make(cell, backend, 2, seq=True, seed=5)
    assert first.fit(X, Y, optimizer=rnnkit.Adam(lr=0.01), **kw)["loss"] == h1
    first.save(tmp_path / "m.npz")
    loaded = rnnkit.load(tmp_path / "m.npz")
    assert type(loaded) is CLASSES[cell] and loaded.get_config() == first.get_config()
    assert loaded.fit(X, Y, **kw)["loss"] == h2
    for k, v in straight.weights.items():
        np.testing.assert_array_equal(loaded.weights[k], v)
    for name, buf in straight.optimizer.state.items():
        np.testing.assert_array_equal(loaded.optimizer.state[name], buf)
    copy = pickle.loads(pickle.dumps(loaded))
    assert type(copy) is CLASSES[cell]
    np.testing.assert_array_equal(copy.predict(X), loaded.predict(X))


def test_version_1_files_without_a_cell_load_as_rnn(tmp_path):
    model = rnnkit.RNN(2, 3, 1, seed=0, backend="reference")
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        files = {k: f[k] for k in f.files}
    config = json.loads(str(files["config"]))
    del config["cell"], config["num_layers"]
    files["config"] = np.array(json.dumps(config))
    assert int(files["format_version"]) == 1
    np.savez(tmp_path / "old.npz", **files)
    loaded = rnnkit.load(tmp_path / "old.npz")
    assert type(loaded) is rnnkit.RNN and loaded.num_layers == 1
    np.testing.assert_array_equal(loaded.weights["W"], model.weights["W"])


@pytest.mark.parametrize("change, message", [
    (lambda c: c.__setitem__("cell", "transformer"), r"config\['cell'\] must be one of "
                                                     r"\('rnn', 'gru', 'lstm'\)"),
    (lambda c: c.__setitem__("num_layers", 0), r"config\['num_layers'\] must be an integer"),
    (lambda c: c.__setitem__("num_layers", 3), r"params must have shape"),
    (lambda c: c.__setitem__("cell", "gru"), r"params must have shape"),
])
def test_load_rejects_inconsistent_cell_or_layers(tmp_path, change, message):
    make("lstm", "reference", 2).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        files = {k: f[k] for k in f.files}
    config = json.loads(str(files["config"]))
    change(config)
    files["config"] = np.array(json.dumps(config))
    np.savez(tmp_path / "bad.npz", **files)
    with pytest.raises(ValueError, match="bad.npz") as info:
        rnnkit.load(tmp_path / "bad.npz")
    assert info.match(message)


# ---------------------------------------------------------------------------- torch optional
def test_torch_methods_say_how_to_install_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)     # import torch raises ImportError
    model = make("gru", "reference")
    for call in (model.to_torch_state_dict, model.to_torch,
                 lambda: rnnkit.GRU.from_torch(None, None)):
        with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
            call()
