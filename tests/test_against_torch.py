"""rnnkit against PyTorch: the same network, loss, gradients and training, in float64.

The twin is ``torch.nn.RNN(batch_first=True)`` followed by ``torch.nn.Linear``, with rnnkit's
weights copied in. rnnkit has one hidden bias b where torch has two (``bias_ih`` and
``bias_hh``): the twin takes ``bias_ih = b`` and keeps ``bias_hh`` frozen at zero
(``requires_grad=False``), outside the optimizer and outside the gradient norm, so that the
trained parameters are exactly rnnkit's U, W, b, V, c. Training runs full BPTT
(``bptt_truncate=None``), except in one test that builds rnnkit's per-loss-term truncation out
of ``detach()`` and checks the truncated gradient too.

Skipped without torch. Install it only as ``pip install torch==2.13.0`` (the CPU wheel).
"""

from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rnnkit  # noqa: E402  (after the importorskip on purpose)

NAMES = ("U", "W", "b", "V", "c")
RTOL = 1e-10


def assert_close(actual, expected, rtol: float = RTOL, what: str = "") -> None:
    """Relative agreement, with an absolute floor scaled to the largest expected magnitude
    (so that elements that are zero up to rounding do not demand a relative match)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * 1e-2 * scale,
                               err_msg=what)


# ---------------------------------------------------------------------------- the torch twin
class TorchTwin:
    """torch.nn.RNN + torch.nn.Linear holding an rnnkit model's weights, in float64."""

    def __init__(self, model: "rnnkit.RNN"):
        assert model.activation in ("tanh", "relu"), "torch.nn.RNN has tanh and relu only"
        self.return_sequences = model.return_sequences
        self.bias = model.bias
        self.rnn = torch.nn.RNN(model.input_size, model.hidden_size, num_layers=1,
                                nonlinearity=model.activation, bias=model.bias,
                                batch_first=True, dtype=torch.float64)
        self.linear = torch.nn.Linear(model.hidden_size, model.output_size, bias=model.bias,
                                      dtype=torch.float64)
        w = model.weights
        with torch.no_grad():
            self.rnn.weight_ih_l0.copy_(torch.from_numpy(w["U"]))
            self.rnn.weight_hh_l0.copy_(torch.from_numpy(w["W"]))
            self.linear.weight.copy_(torch.from_numpy(w["V"]))
            if model.bias:
                self.rnn.bias_ih_l0.copy_(torch.from_numpy(w["b"]))
                self.rnn.bias_hh_l0.zero_()
                self.linear.bias.copy_(torch.from_numpy(w["c"]))
        if model.bias:
            # rnnkit has a single hidden bias: torch's second one stays a constant zero
            self.rnn.bias_hh_l0.requires_grad_(False)
        self.named: Dict[str, "torch.nn.Parameter"] = {
            "U": self.rnn.weight_ih_l0, "W": self.rnn.weight_hh_l0, "V": self.linear.weight}
        if model.bias:
            self.named["b"] = self.rnn.bias_ih_l0
            self.named["c"] = self.linear.bias
        # the trained set, in rnnkit's layout order: the optimizer and the norm see exactly these
        self.params: List["torch.nn.Parameter"] = [self.named[n] for n in NAMES
                                                   if n in self.named]

    def forward(self, X: np.ndarray, h0: Optional[np.ndarray] = None):
        """(outputs, h_T, all hidden states) as torch tensors."""
        x = torch.from_numpy(X)
        h = None if h0 is None else torch.from_numpy(h0).unsqueeze(0)   # (1, N, H)
        states, h_n = self.rnn(x, h)                                     # (N, T, H), (1, N, H)
        read = states if self.return_sequences else states[:, -1]
        return self.linear(read), h_n[0], states

    def loss(self, X: np.ndarray, Y: np.ndarray, h0: Optional[np.ndarray] = None):
        out = self.forward(X, h0)[0]
        return torch.nn.functional.mse_loss(out, torch.from_numpy(Y))

    def gradients(self, X: np.ndarray, Y: np.ndarray,
                  h0: Optional[np.ndarray] = None) -> Tuple[float, Dict[str, np.ndarray]]:
        """Loss and full-BPTT gradient of MSELoss, keyed like rnnkit's weights."""
        for p in self.params:
            p.grad = None
        loss = self.loss(X, Y, h0)
        loss.backward()
        return loss.item(), {n: p.grad.numpy().copy() for n, p in self.named.items()}

    def truncated_gradients(self, X: np.ndarray, Y: np.ndarray, k: int,
                            h0: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """DESIGN.md §1's truncated gradient built from detach(): the loss term at step t is
        recomputed from the constant state h_{t-k-1}, so its gradient flows through steps
        t-k .. t only. Term t contributes sum((y_t - Y_t)²) / Y.size, so the terms add up to
        the MSE."""
        for p in self.params:
            p.grad = None
        N, T, _ = X.shape
        with torch.no_grad():
            states = self.forward(X, h0)[2]
        targets = range(T) if Y.ndim == 3 else [T - 1]
        for t in targets:
            start = max(t - k, 0)
            if start == 0:
                h = None if h0 is None else torch.from_numpy(h0).unsqueeze(0)
            else:
                h = states[:, start - 1].detach().unsqueeze(0)
            seg, _ = self.rnn(torch.from_numpy(X[:, start:t + 1]), h)
            y_t = self.linear(seg[:, -1])
            Y_t = torch.from_numpy(Y[:, t] if Y.ndim == 3 else Y)
            (((y_t - Y_t) ** 2).sum() / Y.size).backward()
        return {n: p.grad.numpy().copy() for n, p in self.named.items()}

    def weights(self) -> Dict[str, np.ndarray]:
        return {n: p.detach().numpy().copy() for n, p in self.named.items()}

    def step(self, opt, X: np.ndarray, Y: np.ndarray, h0: Optional[np.ndarray],
             clip_norm: Optional[float], clip_value: Optional[float]):
        """One update as a PyTorch user writes it; returns (loss, h_T detached, norm, max|g|)."""
        opt.zero_grad()
        out, h_T, _ = self.forward(X, h0)
        loss = torch.nn.functional.mse_loss(out, torch.from_numpy(Y))
        loss.backward()
        norm = float(torch.sqrt(sum((p.grad ** 2).sum() for p in self.params)))
        if clip_norm is not None:                     # rnnkit's order: norm first, then value
            torch.nn.utils.clip_grad_norm_(self.params, clip_norm)
        largest = max(float(p.grad.abs().max()) for p in self.params)
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.params, clip_value)
        opt.step()
        return loss.item(), h_T.detach().numpy().copy(), norm, largest


# ---------------------------------------------------------------------------- data
def make_model(backend: str, *, I: int = 2, H: int = 5, O: int = 3, activation: str = "tanh",
               bias: bool = True, return_sequences: bool = False, seed: int = 7) -> "rnnkit.RNN":
    return rnnkit.RNN(input_size=I, hidden_size=H, output_size=O, activation=activation,
                      bias=bias, return_sequences=return_sequences, dtype="float64", seed=seed,
                      backend=backend)


def make_data(rng: np.random.Generator, model: "rnnkit.RNN", N: int = 4, T: int = 7,
              with_h0: bool = False):
    X = rng.normal(size=(N, T, model.input_size))
    yshape = (N, T, model.output_size) if model.return_sequences else (N, model.output_size)
    Y = rng.normal(size=yshape)
    h0 = rng.normal(scale=0.5, size=(N, model.hidden_size)) if with_h0 else None
    return X, Y, h0


SHAPES = [
    pytest.param(dict(return_sequences=False, bias=True), id="many_to_one"),
    pytest.param(dict(return_sequences=True, bias=True), id="many_to_many"),
    pytest.param(dict(return_sequences=False, bias=False), id="many_to_one-nobias"),
    pytest.param(dict(return_sequences=True, bias=False), id="many_to_many-nobias"),
]


# ---------------------------------------------------------------------------- forward, loss, grad
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0_zero", "h0_given"])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_loss_gradients_match_torch(backend, rng, shape, with_h0, activation):
    model = make_model(backend, activation=activation, **shape)
    X, Y, h0 = make_data(rng, model, with_h0=with_h0)
    twin = TorchTwin(model)

    out_t, hT_t, _ = twin.forward(X, h0)
    out, hT = model.forward(X, h0)
    expected_shape = (4, 7, 3) if model.return_sequences else (4, 3)
    assert out.shape == expected_shape
    assert_close(out, out_t.detach().numpy(), what="outputs")
    assert_close(hT, hT_t.detach().numpy(), what="final state")
    assert_close(model.predict(X, h0), out_t.detach().numpy(), what="predict")

    loss_t, grads_t = twin.gradients(X, Y, h0)
    assert_close(model.loss(X, Y, h0), loss_t, what="loss")
    grads = model.gradients(X, Y, bptt_truncate=None, h0=h0)
    assert sorted(grads) == sorted(grads_t)
    for name in grads_t:
        assert_close(grads[name], grads_t[name], what=f"d{name}")
    if model.bias:
        assert twin.rnn.bias_hh_l0.grad is None            # frozen: never part of the gradient


@pytest.mark.parametrize("k", [0, 1, 3, 6, 20])
@pytest.mark.parametrize("shape", SHAPES[:2])
def test_truncated_gradient_matches_torch_detach(backend, rng, shape, k):
    """bptt_truncate=k is the gradient of the loss terms, each cut k steps back with detach()."""
    model = make_model(backend, **shape)
    X, Y, h0 = make_data(rng, model, with_h0=True)
    twin = TorchTwin(model)
    expected = twin.truncated_gradients(X, Y, k, h0)
    grads = model.gradients(X, Y, bptt_truncate=k, h0=h0)
    for name in expected:
        assert_close(grads[name], expected[name], what=f"d{name} (k={k})")
    if k >= X.shape[1] - 1:                                # k >= T-1 is full BPTT
        full = twin.gradients(X, Y, h0)[1]
        for name in full:
            assert_close(grads[name], full[name], what=f"d{name} (full)")


# ---------------------------------------------------------------------------- training
OPTIMIZERS = {
    "sgd": (lambda: rnnkit.SGD(lr=0.1),
            lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "sgd-momentum-wd": (lambda: rnnkit.SGD(lr=0.05, momentum=0.9, weight_decay=0.01),
                        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9,
                                                   weight_decay=0.01)),
    "adam": (lambda: rnnkit.Adam(lr=0.01),
             lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adam-custom-wd": (lambda: rnnkit.Adam(lr=0.02, betas=(0.8, 0.99), eps=1e-6,
                                           weight_decay=0.05),
                       lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6,
                                                   weight_decay=0.05)),
}

# thresholds below the gradients of this data, so that each clip really acts
CLIPS = {
    "noclip": (None, None),
    "clip_norm": (0.3, None),
    "clip_value": (None, 0.05),
    "clip_norm+value": (0.3, 0.05),
}


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("shape", SHAPES[:2])
def test_train_step_run_matches_torch(backend, rng, shape, opt_name, clip):
    """Several train_step calls, the final state carried into the next as h0 (detached)."""
    model = make_model(backend, **shape)
    X, Y, h0 = make_data(rng, model, with_h0=True)
    twin = TorchTwin(model)
    make_opt, make_torch_opt = OPTIMIZERS[opt_name]
    opt, opt_t = make_opt(), make_torch_opt(twin.params)
    clip_norm, clip_value = CLIPS[clip]

    h, h_t = h0, h0
    norm_active = value_active = False
    for step in range(5):
        loss_t, h_t, norm, largest = twin.step(opt_t, X, Y, h_t, clip_norm, clip_value)
        loss, h = model.train_step(X, Y, h0=h, optimizer=opt, bptt_truncate=None,
                                   clip_norm=clip_norm, clip_value=clip_value)
        assert_close(loss, loss_t, what=f"loss at step {step}")
        assert_close(h, h_t, what=f"final state at step {step}")
        norm_active |= clip_norm is not None and norm > clip_norm
        value_active |= clip_value is not None and largest > clip_value
    assert norm_active == (clip_norm is not None), "clip_norm never acted: test too weak"
    assert value_active == (clip_value is not None), "clip_value never acted: test too weak"

    weights, weights_t = model.weights, twin.weights()
    for name in weights_t:
        assert_close(weights[name], weights_t[name], what=f"{name} after 5 steps")
    assert opt.step_count == 5


@pytest.mark.parametrize("clip", ["noclip", "clip_norm+value"])
@pytest.mark.parametrize("opt_name", ["sgd-momentum-wd", "adam-custom-wd"])
@pytest.mark.parametrize("shape", SHAPES)
def test_fit_matches_torch(backend, rng, shape, opt_name, clip):
    """fit(shuffle=False): minibatches in order (the last one short), each from h0 = 0;
    optimizer state carried across epochs and across two fit calls."""
    model = make_model(backend, **shape)
    X, Y, _ = make_data(rng, model, N=10, T=6)
    X_val, Y_val, _ = make_data(rng, model, N=3, T=6)
    twin = TorchTwin(model)
    make_opt, make_torch_opt = OPTIMIZERS[opt_name]
    opt, opt_t = make_opt(), make_torch_opt(twin.params)
    clip_norm, clip_value = CLIPS[clip]
    batch_size, N = 4, X.shape[0]

    history: Dict[str, List[float]] = {"loss": [], "val_loss": []}
    for epochs in (2, 1):                                  # two calls: state must persist
        h = model.fit(X, Y, epochs=epochs, batch_size=batch_size, optimizer=opt,
                      bptt_truncate=None, clip_norm=clip_norm, clip_value=clip_value,
                      validation_data=(X_val, Y_val), shuffle=False)
        history["loss"] += h["loss"]
        history["val_loss"] += h["val_loss"]

    expected: Dict[str, List[float]] = {"loss": [], "val_loss": []}
    for _ in range(3):
        total = 0.0
        for start in range(0, N, batch_size):
            rows = slice(start, start + batch_size)
            loss_t = twin.step(opt_t, X[rows], Y[rows], None, clip_norm, clip_value)[0]
            total += loss_t * len(X[rows])
        expected["loss"].append(total / N)
        with torch.no_grad():
            expected["val_loss"].append(twin.loss(X_val, Y_val).item())

    assert len(history["loss"]) == 3
    assert_close(history["loss"], expected["loss"], what="epoch losses")
    assert_close(history["val_loss"], expected["val_loss"], what="validation losses")
    weights, weights_t = model.weights, twin.weights()
    for name in weights_t:
        assert_close(weights[name], weights_t[name], what=f"{name} after 3 epochs")
    if model.bias:                                         # the frozen bias never moved
        assert not torch.any(twin.rnn.bias_hh_l0 != 0)
    if isinstance(opt, rnnkit.Adam):                       # the step that bias correction uses
        assert opt.step_count == int(opt_t.state[twin.params[0]]["step"]) == 9


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_step_count_counts_updates_in_fit_as_in_train_step(backend, rng, opt_name):
    """An optimizer's step_count is the number of updates it made, whichever call made them
    (torch.optim.Adam's state["step"]; train_step counts SGD updates too, so fit must)."""
    model = make_model(backend)
    X, Y, _ = make_data(rng, model, N=6)
    opt = OPTIMIZERS[opt_name][0]()
    model.train_step(X[:2], Y[:2], optimizer=opt)
    assert opt.step_count == 1
    model.fit(X, Y, epochs=2, batch_size=3, optimizer=opt, shuffle=False)
    assert opt.step_count == 1 + 2 * 2

