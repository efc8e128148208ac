"""One training epoch of a workload, four ways: rnnkit's C++ core, rnnkit's NumPy reference,
PyTorch and JAX. Each class takes the workload, the initial weights and the data, and its
``epoch()`` trains one epoch and returns that epoch's losses:

    "loss"        the mean of the minibatch losses, each computed before its update
    "train_loss"  (W1) the loss over the training windows after the epoch
    "val_loss"    (W1) the loss over the validation windows after the epoch

The PyTorch and JAX versions are written the way a competent user of each would write them
(nn.RNN/nn.GRU/nn.LSTM + nn.Linear + torch.optim; a whole epoch under jax.jit), with rnnkit's
exact rules: DESIGN.md §1's per-loss truncation, clipping and torch.optim's update formulas.
torch and jax are imported only by their class, so the others run without them.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from workloads import Workload

Arrays = Tuple[np.ndarray, np.ndarray]
IMPLS = ("rnnkit", "reference", "numpy", "torch", "jax")
LABELS = {"rnnkit": "rnnkit (C++)", "reference": "rnnkit reference (NumPy)",
          "numpy": "NumPy loop (hand-written)", "torch": "PyTorch", "jax": "JAX (jit)"}


def available(impl: str) -> Optional[str]:
    """None if the implementation can run here, else why not."""
    import importlib.util

    module = {"torch": "torch", "jax": "jax"}.get(impl)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    return None


def implements(impl: str, workload: str) -> bool:
    """Whether ``impl`` has ``workload``: every one has all of them but the hand-written NumPy
    loop, W1's only."""
    return impl != "numpy" or workload == "W1"


def make(impl: str, w: Workload, weights: Dict[str, np.ndarray], train: Arrays,
         val: Optional[Arrays]):
    cls = {"rnnkit": RnnkitEpoch, "reference": RnnkitEpoch, "numpy": NumpyLoopEpoch,
           "torch": TorchEpoch, "jax": JaxEpoch}[impl]
    if impl in ("rnnkit", "reference"):
        return cls(w, weights, train, val, backend="cpp" if impl == "rnnkit" else "reference")
    return cls(w, weights, train, val)


def update_fingerprint(before: Dict[str, np.ndarray], after: Dict[str, np.ndarray]) -> list:
    """What an epoch did to the parameters, in four numbers to compare across implementations:
    the norm of the whole update (after - before, every parameter in rnnkit's names) and its
    projections on three fixed random directions. Far more sensitive than the losses: at W1's
    lr 1e-4 a different truncation moves the first-epoch losses by about 3e-9 only."""
    import zlib

    names = sorted(before)
    update = [np.asarray(after[n], dtype=np.float64) - np.asarray(before[n], dtype=np.float64)
              for n in names]
    out = [float(np.sqrt(sum(float(np.sum(u * u)) for u in update)))]
    for seed in range(3):
        out.append(float(sum(
            np.dot(np.random.default_rng([seed, zlib.crc32(n.encode())]).standard_normal(u.size),
                   u.ravel()) for n, u in zip(names, update))))
    return out


# ---------------------------------------------------------------------------- rnnkit
class RnnkitEpoch:
    """rnnkit.RNN/GRU/LSTM.fit for one epoch (shuffle=False), as a user calls it; then, for W1,
    the loss over the training windows (model.loss) and over the validation windows (fit's
    validation_data)."""

    def __init__(self, w: Workload, weights, train: Arrays, val: Optional[Arrays],
                 backend: str = "cpp"):
        import rnnkit

        from workloads import model_class

        self.w, self.train, self.val = w, train, val
        self.model = model_class(w)(w.I, w.H, w.O, activation=w.activation, bias=w.bias,
                                    dtype=w.dtype, seed=0, backend=backend,
                                    num_layers=w.num_layers)
        self.model.set_weights(weights)
        self.optimizer = rnnkit.SGD(lr=w.lr) if w.optimizer == "sgd" else rnnkit.Adam(lr=w.lr)

    def epoch(self) -> Dict[str, float]:
        w, (X, Y) = self.w, self.train
        h = self.model.fit(X, Y, epochs=1, batch_size=w.batch_size, optimizer=self.optimizer,
                           bptt_truncate=w.k, clip_norm=w.clip_norm, clip_value=w.clip_value,
                           validation_data=self.val if w.evaluate else None, shuffle=False)
        out = {"loss": h["loss"][0]}
        if w.evaluate:
            out["train_loss"] = self.model.loss(X, Y)
            out["val_loss"] = h["val_loss"][0]
        return out

    def weights(self) -> Dict[str, np.ndarray]:
        return self.model.weights


# ---------------------------------------------------------------------------- NumPy loop
class NumpyLoopEpoch:
    """W1 as its users hand-write it in NumPy (issue 3's "NumPy loop"), written well: one
    window at a time, the forward keeping every state, the backward over the last k+1 steps
    only (DESIGN.md §1's truncation), value clipping and SGD in place; then the losses over
    the training and validation windows with all windows at once, a matrix product a step (as
    the PyTorch twin evaluates them). Not rnnkit's reference backend, which is general (every
    cell, layer count and option) and written to be read, not to be fast."""

    def __init__(self, w: Workload, weights, train: Arrays, val: Optional[Arrays]):
        assert w.cell == "rnn" and w.num_layers == 1 and w.I == 1 and w.O == 1, "W1 only"
        assert w.activation == "sigmoid" and not w.bias and w.optimizer == "sgd", "W1 only"
        assert w.batch_size == 1 and w.k is not None and w.clip_value is not None, "W1 only"
        assert w.clip_norm is None and val is not None, "W1 only"
        self.w = w
        self.U = np.array(weights["U"][:, 0], dtype=np.float64)     # (H,)
        self.W = np.array(weights["W"], dtype=np.float64)           # (H, H)
        self.V = np.array(weights["V"][0], dtype=np.float64)        # (H,)
        self.X, self.Y = train[0][:, :, 0], train[1][:, 0]         # (N, T), (N,)
        self.Xv, self.Yv = val[0][:, :, 0], val[1][:, 0]
        self.hs = np.zeros((w.T + 1, w.H))                          # h_0 .. h_T of a window
        self.dU, self.dW = np.zeros(w.H), np.zeros((w.H, w.H))

    @staticmethod
    def _sigmoid(a):
        return 1.0 / (1.0 + np.exp(-a))

    def _loss(self, X, Y) -> float:
        h = np.zeros((X.shape[0], self.w.H))
        for t in range(X.shape[1]):
            h = self._sigmoid(np.outer(X[:, t], self.U) + h @ self.W.T)
        return float(np.mean((h @ self.V - Y) ** 2))

    def epoch(self) -> Dict[str, float]:
        w, U, W, V, hs, dU, dW = self.w, self.U, self.W, self.V, self.hs, self.dU, self.dW
        T, k, lr, clip = w.T, w.k, w.lr, w.clip_value
        total = 0.0
        for x, target in zip(self.X, self.Y):
            for t in range(T):                                       # hs[t + 1] = h_t
                hs[t + 1] = self._sigmoid(U * x[t] + W @ hs[t])
            diff = V @ hs[T] - target
            total += diff * diff
            dy = 2.0 * diff                                          # d(mean sq)/dy, N·O = 1
            dV = dy * hs[T]
            dh = dy * V
            dU.fill(0.0)
            dW.fill(0.0)
            for t in range(T - 1, max(T - k - 2, -1), -1):           # the last k+1 steps
                da = dh * hs[t + 1] * (1.0 - hs[t + 1])
                dU += da * x[t]
                dW += np.outer(da, hs[t])
                dh = da @ W
            for p, g in ((U, dU), (W, dW), (V, dV)):
                p -= lr * np.clip(g, -clip, clip)
        return {"loss": float(total) / w.n_train, "train_loss": self._loss(self.X, self.Y),
                "val_loss": self._loss(self.Xv, self.Yv)}

    def weights(self) -> Dict[str, np.ndarray]:
        return {"U": self.U[:, None].copy(), "W": self.W.copy(), "V": self.V[None, :].copy()}


# ---------------------------------------------------------------------------- PyTorch
class TorchEpoch:
    """nn.RNN + nn.Linear + torch.optim, rnnkit's weights copied in. rnnkit's single hidden
    bias b is torch's bias_ih; bias_hh stays a frozen zero, outside the optimizer and the norm.

    nn.RNN has no sigmoid, so W1 (sigmoid) runs a hand-written recurrence with the same
    parameters. W1's truncation k (one loss term, at step T): the first T-k-1 steps run under
    no_grad, then the last k+1 steps from the detached state, as DESIGN.md §1 defines it.

    GRU/LSTM workloads: nn.GRU/nn.LSTM(num_layers, batch_first=True) with rnnkit's weights
    copied in per layer (U_l, W_l, b_ih_l, b_hh_l are weight_ih_l{l}, weight_hh_l{l},
    bias_ih_l{l}, bias_hh_l{l}); every parameter, both biases included, is trained."""

    def __init__(self, w: Workload, weights, train: Arrays, val: Optional[Arrays]):
        import torch

        self.torch, self.w = torch, w
        dtype = getattr(torch, w.dtype)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        self.X, self.Y = t(train[0]), t(train[1])
        self.Xv, self.Yv = (t(val[0]), t(val[1])) if val is not None else (None, None)
        self.manual = w.cell == "rnn" and w.activation not in ("tanh", "relu")
        if w.cell != "rnn":
            assert w.activation == "tanh", "nn.GRU/nn.LSTM: tanh only"
            module = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[w.cell]
            self.rnn = module(w.I, w.H, num_layers=w.num_layers, bias=w.bias, batch_first=True,
                              dtype=dtype)
            self.linear = torch.nn.Linear(w.H, w.O, bias=w.bias, dtype=dtype)
            names = [("U", "weight_ih"), ("W", "weight_hh")]
            if w.bias:
                names += [("b_ih", "bias_ih"), ("b_hh", "bias_hh")]
            with torch.no_grad():
                for layer in range(w.num_layers):
                    suffix = "" if layer == 0 else f"_l{layer}"
                    for ours, theirs in names:
                        getattr(self.rnn, f"{theirs}_l{layer}").copy_(t(weights[ours + suffix]))
                self.linear.weight.copy_(t(weights["V"]))
                if w.bias:
                    self.linear.bias.copy_(t(weights["c"]))
            self.params = list(self.rnn.parameters()) + list(self.linear.parameters())
        elif self.manual:
            self.U = torch.nn.Parameter(t(weights["U"]).clone())
            self.W = torch.nn.Parameter(t(weights["W"]).clone())
            self.V = torch.nn.Parameter(t(weights["V"]).clone())
            self.params = [self.U, self.W, self.V]
            if w.bias:
                self.b = torch.nn.Parameter(t(weights["b"]).clone())
                self.c = torch.nn.Parameter(t(weights["c"]).clone())
                self.params[2:2] = [self.b]
                self.params.append(self.c)
            self.act = torch.sigmoid
        else:
            self.rnn = torch.nn.RNN(w.I, w.H, num_layers=1, nonlinearity=w.activation,
                                    bias=w.bias, batch_first=True, dtype=dtype)
            self.linear = torch.nn.Linear(w.H, w.O, bias=w.bias, dtype=dtype)
            with torch.no_grad():
                self.rnn.weight_ih_l0.copy_(t(weights["U"]))
                self.rnn.weight_hh_l0.copy_(t(weights["W"]))
                self.linear.weight.copy_(t(weights["V"]))
                if w.bias:
                    self.rnn.bias_ih_l0.copy_(t(weights["b"]))
                    self.rnn.bias_hh_l0.zero_()
                    self.linear.bias.copy_(t(weights["c"]))
            self.params = [self.rnn.weight_ih_l0, self.rnn.weight_hh_l0]
            if w.bias:
                self.rnn.bias_hh_l0.requires_grad_(False)
                self.params.append(self.rnn.bias_ih_l0)
            self.params.append(self.linear.weight)
            if w.bias:
                self.params.append(self.linear.bias)
        self.opt = (torch.optim.SGD(self.params, lr=w.lr) if w.optimizer == "sgd"
                    else torch.optim.Adam(self.params, lr=w.lr))

    # the hand-written recurrence (W1): h_t = f(U x_t + W h_{t-1} [+ b]), y = V h_T [+ c]
    def _run(self, x, h):
        for t in range(x.shape[1]):
            a = x[:, t] @ self.U.T + h @ self.W.T
            if self.w.bias:
                a = a + self.b
            h = self.act(a)
        return h

    def _read(self, h):
        y = h @ self.V.T
        return y + self.c if self.w.bias else y

    def _output(self, x):
        """y_T for a batch x (B, T, I), gradient through the last k+1 steps only."""
        torch, w = self.torch, self.w
        B, T = x.shape[0], x.shape[1]
        if self.manual:
            start = 0 if w.k is None else max(T - w.k - 1, 0)
            h = torch.zeros(B, w.H, dtype=x.dtype)
            if start:
                with torch.no_grad():
                    h = self._run(x[:, :start], h)
            return self._read(self._run(x[:, start:], h))
        assert w.k is None, "nn.RNN/GRU/LSTM path: full BPTT only (no workload truncates it)"
        states, _ = self.rnn(x)
        return self.linear(states[:, -1])

    def _loss(self, X, Y) -> float:
        with self.torch.no_grad():
            if self.manual:
                h = self._run(X, self.torch.zeros(X.shape[0], self.w.H, dtype=X.dtype))
                y = self._read(h)
            else:
                y = self.linear(self.rnn(X)[0][:, -1])
            return float(self.torch.nn.functional.mse_loss(y, Y))

    def epoch(self) -> Dict[str, float]:
        torch, w = self.torch, self.w
        mse = torch.nn.functional.mse_loss
        total = 0.0
        for start in range(0, w.n_train, w.batch_size):
            x, y = self.X[start:start + w.batch_size], self.Y[start:start + w.batch_size]
            self.opt.zero_grad()
            loss = mse(self._output(x), y)
            loss.backward()
            if w.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, w.clip_norm)
            if w.clip_value is not None:
                torch.nn.utils.clip_grad_value_(self.params, w.clip_value)
            self.opt.step()
            total += loss.item() * x.shape[0]
        out = {"loss": total / w.n_train}
        if w.evaluate:
            out["train_loss"] = self._loss(self.X, self.Y)
            out["val_loss"] = self._loss(self.Xv, self.Yv)
        return out

    def weights(self) -> Dict[str, np.ndarray]:
        """The parameters in rnnkit's names (the inverse of __init__'s copies)."""
        w = self.w
        n = lambda p: p.detach().numpy().copy()  # noqa: E731
        if self.manual:
            out = {"U": n(self.U), "W": n(self.W), "V": n(self.V)}
            if w.bias:
                out.update(b=n(self.b), c=n(self.c))
            return out
        out = {"V": n(self.linear.weight)}
        if w.bias:
            out["c"] = n(self.linear.bias)
        if w.cell == "rnn":
            out.update(U=n(self.rnn.weight_ih_l0), W=n(self.rnn.weight_hh_l0))
            if w.bias:
                out["b"] = n(self.rnn.bias_ih_l0)
            return out
        names = [("U", "weight_ih"), ("W", "weight_hh")]
        if w.bias:
            names += [("b_ih", "bias_ih"), ("b_hh", "bias_hh")]
        for layer in range(w.num_layers):
            suffix = "" if layer == 0 else f"_l{layer}"
            for ours, theirs in names:
                out[ours + suffix] = n(getattr(self.rnn, f"{theirs}_l{layer}"))
        return out


# ---------------------------------------------------------------------------- JAX
class JaxEpoch:
    """The whole epoch as one jitted function: lax.scan over the minibatches (carrying the
    parameters and the optimizer state), inside it lax.scan over time, jax.value_and_grad for
    the gradient, stop_gradient for W1's truncation, then clipping and torch.optim's SGD/Adam
    formulas, then (W1) the batched losses over the training and validation windows. Compiled
    ahead of time in __init__, so that no epoch pays for tracing or compiling.

    GRU/LSTM workloads: layer by layer, the input projection of all T steps as one product
    (x U^T + b_ih), then lax.scan over time with PyTorch's cell equations
    (docs/architecture.md §2): GRU r, z, n with n = tanh(xn + r ⊙ (W_hn h + b_hn)) and
    h = (1 - z) ⊙ n + z ⊙ h; LSTM i, f, g, o with c = σ(f) ⊙ c + σ(i) ⊙ tanh(g),
    h = σ(o) ⊙ tanh(c). Full BPTT only."""

    def __init__(self, w: Workload, weights, train: Arrays, val: Optional[Arrays]):
        import jax

        if w.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from jax import lax

        self.jax, self.w = jax, w
        act = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}[w.activation]
        B, nb, T = w.batch_size, w.n_batches, w.T
        assert w.n_train == nb * B, "JAX path: equal minibatches only"
        start = 0 if w.k is None else max(T - w.k - 1, 0)
        assert w.cell == "rnn" or start == 0, "JAX GRU/LSTM path: full BPTT only"

        def run(p, x, h):                               # x (T', B, I), h (B, H) -> h_T'
            def cell(h, xt):
                a = xt @ p["U"].T + h @ p["W"].T
                if w.bias:
                    a = a + p["b"]
                return act(a), None
            return lax.scan(cell, h, x)[0]

        def output(p, x):                               # x (T, B, I) -> y_T (B, O)
            h = jnp.zeros((x.shape[1], w.H), dtype=x.dtype)
            if w.cell != "rnn":
                h = cells_top(p, x)
            else:
                if start:
                    h = lax.stop_gradient(run(p, x[:start], h))   # h_{T-k-1} is a constant
                h = run(p, x[start:], h)
            y = h @ p["V"].T
            return y + p["c"] if w.bias else y

        sig = jax.nn.sigmoid

        def gru_step(Wh, bh, carry, axt):               # axt: x_t U^T + b_ih, (B, 3H)
            h = carry
            ah = h @ Wh.T
            if bh is not None:
                ah = ah + bh
            xr, xz, xn = jnp.split(axt, 3, axis=-1)
            hr, hz, hn = jnp.split(ah, 3, axis=-1)
            r, z = sig(xr + hr), sig(xz + hz)
            n = act(xn + r * hn)
            h = (1 - z) * n + z * h
            return h, h

        def lstm_step(Wh, bh, carry, axt):              # axt: x_t U^T + b_ih, (B, 4H)
            h, c = carry
            a = axt + h @ Wh.T
            if bh is not None:
                a = a + bh
            ai, af, ag, ao = jnp.split(a, 4, axis=-1)
            c = sig(af) * c + sig(ai) * act(ag)
            h = sig(ao) * act(c)
            return (h, c), h

        def cells_top(p, x):                            # x (T, B, I) -> top layer's h_T
            B = x.shape[1]
            step = gru_step if w.cell == "gru" else lstm_step
            for layer in range(w.num_layers):
                sfx = "" if layer == 0 else f"_l{layer}"
                ax = x @ p["U" + sfx].T                 # every step's input projection at once
                if w.bias:
                    ax = ax + p["b_ih" + sfx]
                bh = p["b_hh" + sfx] if w.bias else None
                h0 = jnp.zeros((B, w.H), dtype=x.dtype)
                carry = h0 if w.cell == "gru" else (h0, h0)
                keep = layer < w.num_layers - 1             # the top layer's sequence is unused

                def body(c, a, Wh=p["W" + sfx], bh=bh, keep=keep):
                    c, h = step(Wh, bh, c, a)
                    return c, (h if keep else None)
                carry, hs = lax.scan(body, carry, ax)
                x = hs                                  # (T, B, H): the next layer's input
            return carry if w.cell == "gru" else carry[0]

        def loss_fn(p, x, y):
            return jnp.mean((output(p, x) - y) ** 2)

        grad_fn = jax.value_and_grad(loss_fn)

        def update(carry, batch):
            p, m, v, step = carry
            x, y = batch
            loss, g = grad_fn(p, x, y)
            if w.clip_norm is not None:
                norm = jnp.sqrt(sum(jnp.sum(gi * gi) for gi in jax.tree_util.tree_leaves(g)))
                coef = jnp.minimum(1.0, w.clip_norm / (norm + 1e-6)).astype(x.dtype)
                g = jax.tree_util.tree_map(lambda gi: gi * coef, g)
            if w.clip_value is not None:
                g = jax.tree_util.tree_map(lambda gi: jnp.clip(gi, -w.clip_value, w.clip_value), g)
            step = step + 1
            if w.optimizer == "sgd":
                p = jax.tree_util.tree_map(lambda pi, gi: pi - w.lr * gi, p, g)
            else:                                       # torch.optim.Adam, betas (0.9, 0.999)
                b1, b2, eps = 0.9, 0.999, 1e-8
                m = jax.tree_util.tree_map(lambda mi, gi: mi + (1 - b1) * (gi - mi), m, g)
                v = jax.tree_util.tree_map(lambda vi, gi: b2 * vi + (1 - b2) * gi * gi, v, g)
                s = step.astype(x.dtype)
                step_size = w.lr / (1 - b1 ** s)
                bc2 = jnp.sqrt(1 - b2 ** s)
                p = jax.tree_util.tree_map(
                    lambda pi, mi, vi: pi - step_size * (mi / (jnp.sqrt(vi) / bc2 + eps)), p, m, v)
            return (p, m, v, step), loss

        def full_loss(p, x, y):
            if w.cell != "rnn":
                return jnp.mean((output(p, x) - y) ** 2)
            h = run(p, x, jnp.zeros((x.shape[1], w.H), dtype=x.dtype))
            out = h @ p["V"].T
            out = out + p["c"] if w.bias else out
            return jnp.mean((out - y) ** 2)

        def epoch(state, xb, yb, xt, yt, xv, yv):
            (p, m, v, step), losses = lax.scan(update, state, (xb, yb))
            evals = (full_loss(p, xt, yt), full_loss(p, xv, yv)) if w.evaluate else ()
            return (p, m, v, step), losses, evals

        X, Y = train
        tm = lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))   # noqa: E731 (N,T,I)->(T,N,I)
        # minibatch b, time-major: xb[b] is (T, B, I)
        xb = jnp.asarray(np.ascontiguousarray(
            X.reshape(nb, B, T, w.I).transpose(0, 2, 1, 3)))
        yb = jnp.asarray(Y.reshape(nb, B, w.O))
        if w.evaluate:
            ev = (jnp.asarray(tm(X)), jnp.asarray(Y), jnp.asarray(tm(val[0])), jnp.asarray(val[1]))
        else:
            z = jnp.zeros((1,), dtype=w.dtype)
            ev = (z, z, z, z)
        p = {k: jnp.asarray(a) for k, a in weights.items()}
        zeros = {k: jnp.zeros_like(a) for k, a in p.items()}
        self.state = (p, zeros, dict(zeros), jnp.asarray(0, dtype=jnp.int32))
        self.args = (xb, yb) + ev
        import time
        t0 = time.perf_counter()
        self.compiled = jax.jit(epoch).lower(self.state, *self.args).compile()
        self.compile_seconds = time.perf_counter() - t0

    def epoch(self) -> Dict[str, float]:
        self.state, losses, evals = self.compiled(self.state, *self.args)
        self.jax.block_until_ready((self.state, losses, evals))
        out = {"loss": float(np.mean(np.asarray(losses, dtype=np.float64)))}
        if self.w.evaluate:
            out["train_loss"], out["val_loss"] = float(evals[0]), float(evals[1])
        return out

    def weights(self) -> Dict[str, np.ndarray]:
        return {k: np.asarray(v).copy() for k, v in self.state[0].items()}
