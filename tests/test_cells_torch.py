"""rnnkit's RNN, GRU and LSTM against PyTorch, in float64 with full BPTT.

The twin of a model is ``torch.nn.RNN/GRU/LSTM(num_layers=L, batch_first=True)`` followed by
``torch.nn.Linear``, built by ``model.to_torch()`` (so the weights move through
``to_torch_state_dict``), and trained weights come back through ``Cls.from_torch``. An Elman
layer has one bias b where torch has two: ``to_torch`` gives ``bias_ih = b`` and ``bias_hh``
frozen at zero (``requires_grad=False``, outside the optimizer and the gradient norm), so that
the trained parameters are exactly rnnkit's. Padded batches go through torch as
``pack_padded_sequence``: many-to-one reads each record's output at its last valid step,
many-to-many uses the MSE over the valid steps.

Skipped without torch. Install it only as ``pip install torch==2.13.0`` (the CPU wheel).
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnkit  # noqa: E402  (after the importorskip on purpose)
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

CLASSES = {"rnn": rnnkit.RNN, "gru": rnnkit.GRU, "lstm": rnnkit.LSTM}
TORCH = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
CELLS = list(CLASSES)
RTOL = 1e-10
LENGTHS = [7, 3, 5, 1, 7, 2]


def assert_close(actual, expected, rtol=RTOL, what=""):
    """Relative agreement with an absolute floor scaled to the largest expected magnitude."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-2 * scale,
                               err_msg=what)


def data(N=6, T=7, I=3, O=2, seq=False, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, T, I)), rng.normal(size=(N, T, O) if seq else (N, O))


def make(cell, backend, L, seq=False, I=3, H=4, O=2, seed=0, **kw):
    return CLASSES[cell](I, H, O, num_layers=L, return_sequences=seq, seed=seed,
                         backend=backend, **kw)


class Twin:
    """The torch modules of a model, trainable with exactly rnnkit's parameters."""

    def __init__(self, model):
        self.model = model
        self.module, self.linear = model.to_torch()
        if model.cell == "rnn" and model.bias:
            for layer in range(model.num_layers):
                bias_hh = getattr(self.module, f"bias_hh_l{layer}")
                assert not bias_hh.detach().any() and not bias_hh.requires_grad
        self.params = [p for p in [*self.module.parameters(), *self.linear.parameters()]
                       if p.requires_grad]

    def state_in(self, h0):
        """rnnkit's state form -> torch's (L, N, H), or None."""
        if h0 is None:
            return None
        if isinstance(h0, tuple):
            return tuple(self.state_in(h) for h in h0)
        h = torch.from_numpy(h0)
        return h.unsqueeze(0) if self.model.num_layers == 1 else h

    def state_out(self, h_n):
        if isinstance(h_n, tuple):
            return tuple(self.state_out(h) for h in h_n)
        h = h_n.detach().numpy()
        return h[0] if self.model.num_layers == 1 else h

    def forward(self, X, h0=None, lengths=None):
        """(predictions (N, O) or (N, T, O) as torch sees them, final state)."""
        N, T = X.shape[:2]
        x = torch.from_numpy(X)
        if lengths is None:
            out, h_n = self.module(x, self.state_in(h0))
            last = out[:, -1]
        else:
            packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                                          enforce_sorted=False)
            out_p, h_n = self.module(packed, self.state_in(h0))
            out, _ = pad_packed_sequence(out_p, batch_first=True, total_length=T)
            last = out[torch.arange(N), torch.tensor(lengths) - 1]
        return self.linear(out if self.model.return_sequences else last), h_n

    def loss(self, X, Y, h0=None, lengths=None):
        pred, _ = self.forward(X, h0, lengths)
        y = torch.from_numpy(Y)
        if lengths is None or not self.model.return_sequences:
            return torch.nn.functional.mse_loss(pred, y)
        T = X.shape[1]
        mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).to(pred.dtype)
        return (((pred - y) ** 2) * mask[:, :, None]).sum() / (Y.shape[2] * sum(lengths))

    def gradients(self):
        """The .grad of every trained parameter, under rnnkit's names."""
        model = self.model
        grads = {}
        for layer in range(model.num_layers):
            s = f"_l{layer}" if layer else ""
            get = lambda name: getattr(self.module, f"{name}_l{layer}").grad.numpy()  # noqa
            grads["U" + s], grads["W" + s] = get("weight_ih"), get("weight_hh")
            if model.bias:
                if model.cell == "rnn":
                    grads["b" + s] = get("bias_ih")
                else:
                    grads["b_ih" + s], grads["b_hh" + s] = get("bias_ih"), get("bias_hh")
        grads["V"] = self.linear.weight.grad.numpy()
        if model.bias:
            grads["c"] = self.linear.bias.grad.numpy()
        return grads

    def weights(self):
        return type(self.model).from_torch(self.module, self.linear, backend="reference").weights


def assert_states_close(ours, theirs, what):
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == 2
        for a, b, name in zip(ours, theirs, ("h", "c")):
            assert_close(a, b, what=f"{what} {name}")
    else:
        assert_close(ours, theirs, what=what)


# ---------------------------------------------------------------------------- forward, grads
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("seq", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "packed"])
def test_forward_loss_gradients_match_torch(backend, cell, L, seq, padded):
    """Outputs (on valid steps), final state, loss and full-BPTT gradient, from a non-zero
    initial state; padded batches against pack_padded_sequence."""
    X, Y = data(seq=seq)
    lengths = LENGTHS if padded else None
    model = make(cell, backend, L, seq=seq)
    twin = Twin(model)
    h0 = model.forward(np.random.default_rng(9).normal(size=(6, 2, 3)))[1]
    out, state = model.forward(X, h0, lengths=lengths)
    pred, h_n = twin.forward(X, h0, lengths)
    pred = pred.detach().numpy()
    if seq and padded:
        for n, length in enumerate(LENGTHS):
            assert_close(out[n, :length], pred[n, :length], what=f"outputs of record {n}")
            assert np.all(out[n, length:] == 0)
    else:
        assert_close(out, pred, what="outputs")
    assert_states_close(state, twin.state_out(h_n), "final state")
    loss = twin.loss(X, Y, h0, lengths)
    loss.backward()
    assert model.loss(X, Y, h0, lengths=lengths) == pytest.approx(loss.item(), rel=RTOL)
    expected = twin.gradients()
    grads = model.gradients(X, Y, h0=h0, lengths=lengths)
    assert sorted(grads) == sorted(expected)
    for name, g in grads.items():
        assert_close(g, expected[name], what=f"gradient {name}")


# ---------------------------------------------------------------------------- training
def torch_optimizer(name, params):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01)
    return torch.optim.Adam(params, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)


def rnnkit_optimizer(name):
    if name == "sgd":
        return rnnkit.SGD(lr=0.05, momentum=0.9, weight_decay=0.01)
    return rnnkit.Adam(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("seq", [False, True], ids=["m2one", "m2many"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "packed"])
def test_training_matches_torch_optim(backend, cell, L, opt, seq, padded):
    """fit (shuffle=False, minibatches of 4, clip_norm, full BPTT) for 3 epochs against the
    same loop in torch with torch.optim and clip_grad_norm_: per-epoch losses and the trained
    weights agree to 1e-10."""
    N, B, clip = 10, 4, 0.3
    X, Y = data(N=N, seq=seq, seed=2)
    lengths = (LENGTHS + [4, 6, 1, 7])[:N] if padded else None
    model = make(cell, backend, L, seq=seq, seed=3)
    twin = Twin(model)
    optim = torch_optimizer(opt, twin.params)
    hist = model.fit(X, Y, epochs=3, batch_size=B, optimizer=rnnkit_optimizer(opt),
                     clip_norm=clip, shuffle=False, lengths=lengths)["loss"]
    for epoch in range(3):
        losses = []
        for start in range(0, N, B):
            rows = slice(start, start + B)
            optim.zero_grad()
            loss = twin.loss(X[rows], Y[rows], None,
                             None if lengths is None else lengths[rows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(twin.params, clip)
            optim.step()
            losses.append(loss.item() * len(X[rows]))
        assert hist[epoch] == pytest.approx(sum(losses) / N, rel=RTOL), f"epoch {epoch}"
    expected = twin.weights()
    for name, w in model.weights.items():
        assert_close(w, expected[name], what=f"trained {name}")


@pytest.mark.parametrize("cell", CELLS)
def test_train_step_carrying_state_matches_torch(backend, cell):
    """train_step carrying the detached state between calls, as a PyTorch loop does."""
    X, Y = data(N=4, T=9, seq=True, seed=5)
    model = make(cell, backend, 2, seq=True, seed=1)
    twin = Twin(model)
    optim = torch_optimizer("adam", twin.params)
    state, h = None, None
    for chunk in range(3):
        xs, ys = X[:, 3 * chunk:3 * chunk + 3], Y[:, 3 * chunk:3 * chunk + 3]
        loss, state = model.train_step(xs, ys, h0=state, optimizer=rnnkit_optimizer("adam")
                                       if chunk == 0 else None)
        optim.zero_grad()
        pred, h_n = twin.module(torch.from_numpy(xs), h)
        t_loss = torch.nn.functional.mse_loss(twin.linear(pred), torch.from_numpy(ys))
        t_loss.backward()
        optim.step()
        h = tuple(x.detach() for x in h_n) if isinstance(h_n, tuple) else h_n.detach()
        assert loss == pytest.approx(t_loss.item(), rel=RTOL)
        assert_states_close(state, twin.state_out(h), f"state after chunk {chunk}")
    expected = twin.weights()
    for name, w in model.weights.items():
        assert_close(w, expected[name], what=f"trained {name}")


# ---------------------------------------------------------------------------- weights both ways
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_through_torch_is_exact(cell, L, bias):
    torch.manual_seed(0)
    module = TORCH[cell](3, 5, num_layers=L, bias=bias, batch_first=True, dtype=torch.float64)
    linear = torch.nn.Linear(5, 2, bias=bias, dtype=torch.float64)
    model = CLASSES[cell].from_torch(module, linear, backend="reference")
    assert (model.input_size, model.hidden_size, model.output_size, model.num_layers,
            model.bias, model.dtype) == (3, 5, 2, L, bias, np.dtype("float64"))
    state = model.to_torch_state_dict()
    expected_keys = [f"rnn.{k}" for k in module.state_dict()] + [
        f"linear.{k}" for k in linear.state_dict()]
    assert list(state) == expected_keys
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for v in state.values())
    if cell != "rnn":                       # the same tensors, bit for bit
        for k, v in module.state_dict().items():
            assert torch.equal(state[f"rnn.{k}"], v)
    elif bias:                              # b = b_ih + b_hh goes to bias_ih, bias_hh is 0
        for layer in range(L):
            assert not state[f"rnn.bias_hh_l{layer}"].any()
    fresh = TORCH[cell](3, 5, num_layers=L, bias=bias, batch_first=True, dtype=torch.float64)
    fresh_linear = torch.nn.Linear(5, 2, bias=bias, dtype=torch.float64)
    fresh.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("rnn.")})
    fresh_linear.load_state_dict({k[7:]: v for k, v in state.items()
                                  if k.startswith("linear.")})
    again = rnnkit.Recurrent.from_torch(fresh, fresh_linear, backend="reference")
    assert type(again) is CLASSES[cell]
    for k, v in model.weights.items():
        np.testing.assert_array_equal(again.weights[k], v)
    # and the state dict loads into one module holding both as children
    both = torch.nn.Module()
    both.rnn, both.linear = fresh, fresh_linear
    both.load_state_dict(state)


def test_from_torch_keeps_float32_and_sums_elman_biases():
    torch.manual_seed(1)
    module = torch.nn.RNN(2, 3, nonlinearity="relu")
    linear = torch.nn.Linear(3, 1)
    model = rnnkit.RNN.from_torch(module, linear, backend="reference", return_sequences=True,
                                  seed=4)
    assert model.dtype == np.float32 and model.activation == "relu" and model.return_sequences
    np.testing.assert_array_equal(model.weights["b"],
                                  (module.bias_ih_l0 + module.bias_hh_l0).detach().numpy())
    assert rnnkit.RNN.from_torch(module, linear, dtype="float64",
                                 backend="reference").dtype == np.float64


def test_to_torch_refuses_activations_torch_lacks():
    for model in (rnnkit.RNN(1, 2, activation="sigmoid", backend="reference"),
                  rnnkit.GRU(1, 2, activation="relu", backend="reference")):
        with pytest.raises(ValueError, match=r"torch\.nn\.(RNN|GRU) has no activation="):
            model.to_torch()
        model.to_torch_state_dict()         # the weights are still available


def test_from_torch_errors():
    f64 = dict(dtype=torch.float64)
    gru, lin = torch.nn.GRU(2, 3, **f64), torch.nn.Linear(3, 1, **f64)
    with pytest.raises(TypeError, match=r"LSTM.from_torch: module must be a torch.nn.LSTM, "
                                        r"got GRU"):
        rnnkit.LSTM.from_torch(gru, lin)
    with pytest.raises(TypeError, match=r"module must be a torch.nn.RNN, torch.nn.GRU, "
                                        r"torch.nn.LSTM, got Linear"):
        rnnkit.Recurrent.from_torch(lin, lin)
    with pytest.raises(TypeError, match=r"linear must be a torch.nn.Linear, got GRU"):
        rnnkit.GRU.from_torch(gru, gru)
    with pytest.raises(TypeError, match=r"from_torch takes hidden_size, num_layers from the "
                                        r"torch modules"):
        rnnkit.GRU.from_torch(gru, lin, num_layers=2, hidden_size=3)
    with pytest.raises(ValueError, match=r"module is bidirectional"):
        rnnkit.GRU.from_torch(torch.nn.GRU(2, 3, bidirectional=True, **f64), lin)
    with pytest.raises(ValueError, match=r"module has proj_size=2"):
        rnnkit.LSTM.from_torch(torch.nn.LSTM(2, 3, proj_size=2, **f64), lin)
    with pytest.raises(ValueError, match=r"linear must read the module's hidden_size=3 "
                                         r"features, got in_features=4"):
        rnnkit.GRU.from_torch(gru, torch.nn.Linear(4, 1, **f64))
    with pytest.raises(ValueError, match=r"one bias flag .*module has bias=True but linear "
                                         r"has bias=False"):
        rnnkit.GRU.from_torch(gru, torch.nn.Linear(3, 1, bias=False, **f64))
    with pytest.raises(ValueError, match=r"module's weights are float16; pass dtype="):
        rnnkit.GRU.from_torch(torch.nn.GRU(2, 3, dtype=torch.float16), lin)
    deep = torch.nn.GRU(2, 3, num_layers=2, dropout=0.5, batch_first=True, **f64)
    with pytest.warns(UserWarning, match=r"dropout=0.5 between layers.* ignored"):
        model = rnnkit.GRU.from_torch(deep, lin, backend="reference")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deep.eval()
        X = np.random.default_rng(0).normal(size=(2, 4, 2))
        out, _ = deep(torch.from_numpy(X))
        assert_close(model.predict(X), lin(out[:, -1]).detach().numpy())
