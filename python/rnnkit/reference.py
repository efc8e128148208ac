"""The pure-NumPy reference of rnnkit's math, written to be read.

Every function here has a twin of the same name, arguments and shapes in the C++ core
(``rnnkit._core``); the tests run both on the same data and require the same numbers.
Explicit loops over time, one NumPy operation per equation, no cleverness.

The network (DESIGN.md §1, docs/architecture.md), batch first: ``num_layers = L`` recurrent
layers of one ``cell`` ("rnn", "gru" or "lstm"), then a linear output layer.

    X  (N, T, I)   inputs              layer l:  U_l (G·H, I_l)   W_l (G·H, H)
    Y  (N, O)      many-to-one                   b_l (H,)  or  b_ih_l, b_hh_l (G·H,)
       (N, T, O)   many-to-many        output:   V (O, H)   c (O,)
    h0 (N, L·S)    initial state, layer l's in columns [l·S, (l+1)·S)

    for l = 0 .. L-1:                  (layer 0 reads x_t = X[:, t], layer l reads h_t^(l-1))
        A_x = x U_l^T + b_ih_l                      all steps at once
        for t:  A_h = h_{t-1} W_l^T + b_hh_l        (RNN: b_l is in A_x and A_h has no bias)
                state_t = cell step(A_x[t], A_h, state_{t-1})
    y_t = V h_t^(L-1) + c

G (gates), S (state width) and C (cache width) come from the cell (:mod:`rnnkit.cells`); each
cell's step, forward and backward, is a small class below, registered in ``CELL_STEPS``. The
rest of this module (layers, output layer, loss, ``lengths``, truncation) knows no cell.
The Elman network of DESIGN.md is ``cell="rnn", num_layers=1, lengths=None``:

    a_t = U x_t + W h_{t-1} + b,   h_t = f(a_t),   y_t = V h_t + c

``lengths`` (N,) marks record n's steps t >= lengths[n] as padding: its state is frozen there
(the cache is copied), its outputs are 0, and they hold no loss term (architecture.md §4).

The parameters travel as one flat buffer ``params`` (see :mod:`rnnkit.layout`), and the
gradient comes back in the same layout, so clipping and the optimizers are single loops.
Indices in code are 0-based: step t of the docstrings is ``[:, t]``.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np

from ._faults import InterruptGuard
from .cells import ACTIVATIONS, CellSpec, cell_spec
from .layout import layer_suffix, param_count, param_views

__all__ = ["forward", "predict", "backward", "forecast", "clip", "sgd_step", "adam_step",
           "train_epoch", "activate", "activation_derivative", "CELL_STEPS"]


def activate(a: np.ndarray, activation: str) -> np.ndarray:
    """h = f(a) for f in tanh, sigmoid, relu. The sigmoid is written so it never overflows."""
    h: np.ndarray
    if activation == "tanh":
        h = np.tanh(a)
    elif activation == "sigmoid":
        e = np.exp(-np.abs(a))                      # in (0, 1]: no overflow for any a
        h = np.where(a >= 0, 1 / (1 + e), e / (1 + e))
    elif activation == "relu":
        h = np.maximum(a, 0)
    else:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return h


def activation_derivative(h: np.ndarray, activation: str) -> np.ndarray:
    """f'(a_t) written in terms of h_t = f(a_t): tanh 1 - h², sigmoid h (1 - h), relu [h > 0]
    (as torch: 1 unless h <= 0, so a NaN state passes its NaN on)."""
    d: np.ndarray
    if activation == "tanh":
        d = 1 - h * h
        return d
    if activation == "sigmoid":
        d = h * (1 - h)
        return d
    if activation == "relu":
        return (~(h <= 0)).astype(h.dtype)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


# ----------------------------------------------------------------------------- cells
# One class per cell (docs/architecture.md §2): its step forward, and its step backward from
# the gradient reaching the new state. Shapes, for the R records that take the step:
#   A_x, A_h (R, G·H) the step's two projections;  state_prev (R, S);  cache (R, C),
#   whose first S columns are the new state (its first H are h).

class CellStep(Protocol):
    """The two functions a cell provides (architecture.md §1)."""

    @staticmethod
    def forward_step(A_x: np.ndarray, A_h: np.ndarray, state_prev: np.ndarray,
                     activation: str) -> np.ndarray:
        """One step: the projections and the previous state -> the step's cache (R, C)."""

    @staticmethod
    def backward_step(dstate: np.ndarray, cache: np.ndarray, state_prev: np.ndarray,
                      activation: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """dL/d(new state) (R, S) -> (Δx, Δh, dstate_prev_direct): the gradients of A_x and
        A_h (R, G·H), and the part of dL/d(state_prev) (R, S) that does not pass through W."""


class RNNStep:
    """Elman (G = 1, S = H, cache [h]):

        a = A_x + A_h        (A_x = U x + b, A_h = W h_prev)
        h = f(a)
        backward: Δx = Δh = dh ⊙ f'(a);  no direct path to h_prev
    """

    @staticmethod
    def forward_step(A_x: np.ndarray, A_h: np.ndarray, state_prev: np.ndarray,
                     activation: str) -> np.ndarray:
        return activate(A_x + A_h, activation)

    @staticmethod
    def backward_step(dstate: np.ndarray, cache: np.ndarray, state_prev: np.ndarray,
                      activation: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        delta = dstate * activation_derivative(cache, activation)     # dh ⊙ f'(a)
        return delta, delta, np.zeros_like(dstate)


class GRUStep:
    """GRU, PyTorch's equations (G = 3 in the order r, z, n; S = H; cache [h, r, z, n, hn]):

        [xr, xz, xn] = A_x = U x + b_ih,   [hr, hz, hn] = A_h = W h_prev + b_hh
        r = σ(xr + hr)
        z = σ(xz + hz)
        n = f(xn + r ⊙ hn)
        h = (1 - z) ⊙ n + z ⊙ h_prev
    """

    @staticmethod
    def forward_step(A_x: np.ndarray, A_h: np.ndarray, state_prev: np.ndarray,
                     activation: str) -> np.ndarray:
        xr, xz, xn = np.split(A_x, 3, axis=1)
        hr, hz, hn = np.split(A_h, 3, axis=1)
        r = activate(xr + hr, "sigmoid")
        z = activate(xz + hz, "sigmoid")
        n = activate(xn + r * hn, activation)
        h = (1 - z) * n + z * state_prev
        return np.concatenate([h, r, z, n, hn], axis=1)

    @staticmethod
    def backward_step(dstate: np.ndarray, cache: np.ndarray, state_prev: np.ndarray,
                      activation: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """From dh: the pre-activation gradients of n, z, r; r also scales hn's share of A_h.

            dn = dh ⊙ (1 - z) ⊙ f'(n),  dz = dh ⊙ (h_prev - n) ⊙ z (1 - z),  dr = dn ⊙ hn ⊙ r (1 - r)
            Δx = [dr, dz, dn],  Δh = [dr, dz, dn ⊙ r],  dstate_prev_direct = dh ⊙ z
        """
        _, r, z, n, hn = np.split(cache, 5, axis=1)
        dh = dstate
        dn = dh * (1 - z) * activation_derivative(n, activation)
        dz = dh * (state_prev - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        return (np.concatenate([dr, dz, dn], axis=1), np.concatenate([dr, dz, dn * r], axis=1),
                dh * z)


class LSTMStep:
    """LSTM, PyTorch's equations (G = 4 in the order i, f, g, o; S = 2H, the state [h, c];
    cache [h, c, i, f, g, o, f(c)]):

        [ai, af, ag, ao] = A_x + A_h       (A_x = U x + b_ih, A_h = W h_prev + b_hh)
        i = σ(ai),  fg = σ(af),  g = f(ag),  o = σ(ao)
        c = fg ⊙ c_prev + i ⊙ g
        h = o ⊙ f(c)
    """

    @staticmethod
    def forward_step(A_x: np.ndarray, A_h: np.ndarray, state_prev: np.ndarray,
                     activation: str) -> np.ndarray:
        _, c_prev = np.split(state_prev, 2, axis=1)
        ai, af, ag, ao = np.split(A_x + A_h, 4, axis=1)
        i = activate(ai, "sigmoid")
        fg = activate(af, "sigmoid")
        g = activate(ag, activation)
        o = activate(ao, "sigmoid")
        c = fg * c_prev + i * g
        fc = activate(c, activation)
        h = o * fc
        return np.concatenate([h, c, i, fg, g, o, fc], axis=1)

    @staticmethod
    def backward_step(dstate: np.ndarray, cache: np.ndarray, state_prev: np.ndarray,
                      activation: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """From (dh, dc), dc being the gradient reaching c from the next step:

            dc_total = dc + dh ⊙ o ⊙ f'(c)
            Δx = Δh = [dc_total ⊙ g ⊙ i (1 - i),  dc_total ⊙ c_prev ⊙ fg (1 - fg),
                       dc_total ⊙ i ⊙ f'(g),      dh ⊙ f(c) ⊙ o (1 - o)]
            dstate_prev_direct = [0,  dc_total ⊙ fg]
        """
        dh, dc = np.split(dstate, 2, axis=1)
        _, c_prev = np.split(state_prev, 2, axis=1)
        _, _, i, fg, g, o, fc = np.split(cache, 7, axis=1)
        dc_total = dc + dh * o * activation_derivative(fc, activation)
        delta = np.concatenate([dc_total * g * i * (1 - i),
                                dc_total * c_prev * fg * (1 - fg),
                                dc_total * i * activation_derivative(g, activation),
                                dh * fc * o * (1 - o)], axis=1)
        return delta, delta, np.concatenate([np.zeros_like(dh), dc_total * fg], axis=1)


CELL_STEPS: Dict[str, CellStep] = {"rnn": RNNStep, "gru": GRUStep, "lstm": LSTMStep}


# ----------------------------------------------------------------------------- the network
# Everything below is cell-agnostic: it reaches a cell only through CELL_STEPS[cell].

Weights = Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]


def _check_network(cell: str, num_layers: int) -> CellSpec:
    """The cell's registry entry, after checking ``cell`` and ``num_layers``."""
    spec = cell_spec(cell)                                    # ValueError naming cell
    if (isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer))
            or num_layers < 1):
        raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
    return spec


def _check_lengths(lengths: Optional[np.ndarray], N: int, T: int) -> np.ndarray:
    """``lengths``, an (N,) int64 array, checked as the C++ core checks it (None: every record
    has all T steps)."""
    if lengths is None:
        return np.full(N, T, dtype=np.int64)
    if not isinstance(lengths, np.ndarray) or lengths.dtype != np.int64:
        got = (f"array of dtype {lengths.dtype}" if isinstance(lengths, np.ndarray)
               else type(lengths).__name__)
        raise TypeError(f"lengths must be None or a numpy array of int64, got {got}")
    if lengths.shape != (N,):
        raise ValueError(f"lengths must have shape ({N},), one length per record of X, got "
                         f"shape {lengths.shape}")
    if N and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths must lie in [1, T] = [1, {T}], got values from "
                         f"{lengths.min()} to {lengths.max()}")
    return lengths.copy()       # the values checked are the ones used, as in the C++ core


def _initial_state(h0: Optional[np.ndarray], N: int, width: int, dtype: np.dtype) -> np.ndarray:
    """h0 (N, L·S), zeros when None."""
    if h0 is None:
        return np.zeros((N, width), dtype=dtype)
    if h0.shape != (N, width):
        raise ValueError(f"h0 must have shape ({N}, {width}) (records, num_layers * state "
                         f"width), got shape {h0.shape}")
    return h0


def _layer_weights(p: Dict[str, np.ndarray], layer: int, spec: CellSpec, bias: bool) -> Weights:
    """``(U, W, b_ih, b_hh)`` of one layer from views of the flat buffer (or of its gradient).
    The RNN's single ``b`` is its b_ih (added to A_x, DESIGN.md's a = U x + W h + b); an absent
    bias is None."""
    s = layer_suffix(layer)
    if not bias:
        return p["U" + s], p["W" + s], None, None
    if spec.two_biases:
        return p["U" + s], p["W" + s], p["b_ih" + s], p["b_hh" + s]
    return p["U" + s], p["W" + s], p["b" + s], None


def _layer_forward(step: CellStep, x: np.ndarray, state0: np.ndarray, weights: Weights,
                   valid: np.ndarray, activation: str, cache: np.ndarray) -> None:
    """One layer over all steps, filling ``cache`` (N, T, C) in place.

    ``x`` (N, T, I_l) is the layer's input, ``state0`` (N, S) its initial state, ``valid``
    (N, T) False at padded steps.

        A_x = x U^T + b_ih                                   all steps at once, (N, T, G·H)
        for t:  A_h = h_{t-1} W^T + b_hh                     (R, G·H), the R records at step t
                cache_t = forward_step(A_x_t, A_h, state_{t-1})
                a padded step is not computed: its cache is the previous step's
    """
    U, W, b_ih, b_hh = weights
    H = W.shape[1]
    S = state0.shape[1]
    A_x = x @ U.T
    if b_ih is not None:
        A_x = A_x + b_ih
    state = state0
    for t in range(x.shape[1]):
        rows = valid[:, t]
        A_h = state[rows, :H] @ W.T
        if b_hh is not None:
            A_h = A_h + b_hh
        cache[rows, t] = step.forward_step(A_x[rows, t], A_h, state[rows], activation)
        if t > 0:
            cache[~rows, t] = cache[~rows, t - 1]            # padding: the state stays
        state = cache[:, t, :S]


def _output_layer(h: np.ndarray, p: Dict[str, np.ndarray], bias: bool) -> np.ndarray:
    """y = V h + c for h (..., H) -> (..., O)."""
    y: np.ndarray = h @ p["V"].T
    if bias:
        y = y + p["c"]
    return y


def forward(X: np.ndarray, h0: Optional[np.ndarray], params: np.ndarray, hidden_size: int,
            output_size: int, bias: bool, activation: str, return_sequences: bool,
            cell: str = "rnn", num_layers: int = 1, lengths: Optional[np.ndarray] = None
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the network over a batch (module docstring).

    ``X`` is (N, T, I); ``h0`` is (N, L·S) or None for zeros; ``params`` is the flat buffer;
    ``lengths`` (N,) integers in [1, T] or None (all T).

    Returns ``(outputs, hidden_states, final_state)``:

    - outputs: many-to-many (``return_sequences``) y_t for every step, (N, T, O), 0 at padded
      steps; else y at each record's last step lengths[n] - 1, (N, O);
    - hidden_states: every layer's cache, (N, T, C) when L = 1 and (L, N, T, C) otherwise;
      ``[..., t, :S]`` is the state after step t (``[..., t, :H]`` is h_t); a padded step holds
      a copy of the record's previous step;
    - final_state: (N, L·S), each layer's state after the record's last step, a copy for a
      caller to carry into the next call.
    """
    spec = _check_network(cell, num_layers)
    N, T, I = X.shape
    H, L, S = hidden_size, num_layers, spec.state * hidden_size
    lengths = _check_lengths(lengths, N, T)
    valid = np.arange(T) < lengths[:, None]                   # (N, T): not padding
    p = param_views(params, I, H, output_size, bias, cell, L)
    state0 = _initial_state(h0, N, L * S, params.dtype)

    caches = np.empty((L, N, T, spec.cache * H), dtype=params.dtype)
    x = X
    for layer in range(L):
        _layer_forward(CELL_STEPS[cell], x, state0[:, layer * S:(layer + 1) * S],
                       _layer_weights(p, layer, spec, bias), valid, activation, caches[layer])
        x = caches[layer, :, :, :H]                           # h^(l), the next layer's input

    records, last = np.arange(N), lengths - 1
    if return_sequences:
        outputs = np.where(valid[:, :, None], _output_layer(x, p, bias), 0)
    else:
        outputs = _output_layer(x[records, last], p, bias)
    final_state = np.concatenate([caches[layer, records, last, :S] for layer in range(L)],
                                 axis=1)
    return outputs, (caches[0] if L == 1 else caches), final_state


def predict(X: np.ndarray, h0: Optional[np.ndarray], params: np.ndarray, hidden_size: int,
            output_size: int, bias: bool, activation: str, return_sequences: bool,
            cell: str = "rnn", num_layers: int = 1, lengths: Optional[np.ndarray] = None
            ) -> Tuple[np.ndarray, np.ndarray]:
    """``forward``'s ``(outputs, final_state)``, for a caller that needs no hidden states
    (prediction, evaluation). The C++ backend then keeps only two steps of them (one layer,
    many-to-one); here they are simply dropped."""
    outputs, _, final_state = forward(X, h0, params, hidden_size, output_size, bias,
                                      activation, return_sequences, cell, num_layers, lengths)
    return outputs, final_state


def forecast(X: np.ndarray, h0: Optional[np.ndarray], params: np.ndarray, hidden_size: int,
             output_size: int, bias: bool, activation: str, steps: int, cell: str = "rnn",
             num_layers: int = 1) -> np.ndarray:
    """Autoregressive rollout from a context window, for a model with I == O.

    Run the context ``X`` (N, T, I) from ``h0`` (N, L·S); y_T is the first forecast; then,
    ``steps - 1`` times, feed the latest forecast back as the next input (x_{t+1} = y_t) and
    step the network once from the state it left. Returns forecasts (N, steps, O): ``[:, s]``
    is the prediction s + 1 steps after the context's end.
    """
    if steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    N, T, I = X.shape
    if I != output_size:
        raise ValueError("forecast feeds each prediction back as the next input, so X must "
                         f"have output_size = {output_size} features per step, got X of "
                         f"shape {X.shape}")
    network = (hidden_size, output_size, bias, activation, False, cell, num_layers)
    forecasts = np.empty((N, steps, output_size), dtype=params.dtype)
    y, state = predict(X, h0, params, *network)
    forecasts[:, 0] = y
    for s in range(1, steps):
        y, state = predict(y[:, None, :], state, params, *network)   # x_{t+1} = y_t
        forecasts[:, s] = y
    return forecasts


def _layer_backward(step: CellStep, cache: np.ndarray, state0: np.ndarray, weights: Weights,
                    dh_above: np.ndarray, lo: np.ndarray, hi: np.ndarray, Dx: np.ndarray,
                    Dh: np.ndarray, activation: str) -> np.ndarray:
    """One layer's backward sweep over each record's window of steps [lo[n], hi[n]].

    ``cache`` (N, T, C) and ``state0`` (N, S) are the layer's forward pass; ``dh_above``
    (N, T, H) is the gradient reaching its h_s from above (the output layer, or the layer
    above's input gradient). Adds the projections' gradients Δx, Δh into ``Dx``, ``Dh``
    (N, T, G·H) and returns dx (N, T, I_l), the gradient of the layer's input:

        dstate = 0
        for s = max(hi) .. min(lo), over the records whose window holds s:
            dstate[:, :H] += dh_above_s
            Δx_s, Δh_s, dstate_prev_direct = backward_step(dstate, cache_s, state_{s-1})
            dstate = dstate_prev_direct;  dstate[:, :H] += Δh_s W      (A_h = h_{s-1} W^T)
            dx_s = Δx_s U                                              (A_x = x_s U^T)
    The state before a record's window gets no gradient: it is a constant for this sweep.
    """
    U, W, _, _ = weights
    N, T, _ = cache.shape
    H = W.shape[1]
    S = state0.shape[1]
    dx = np.zeros((N, T, U.shape[1]), dtype=cache.dtype)
    dstate = np.zeros((N, S), dtype=cache.dtype)
    for s in range(hi.max(), lo.min() - 1, -1):
        rows = (lo <= s) & (s <= hi)
        state_prev = state0 if s == 0 else cache[:, s - 1, :S]
        d = dstate[rows]
        d[:, :H] += dh_above[rows, s]
        dx_s, dh_s, d_prev = step.backward_step(d, cache[rows, s], state_prev[rows], activation)
        Dx[rows, s] += dx_s
        Dh[rows, s] += dh_s
        dx[rows, s] = dx_s @ U
        # the gradient reaching state_{s-1}; a record's window is contiguous, so the row of
        # a record whose window starts at s is never read again
        dstate[rows] = d_prev
        dstate[rows, :H] += dh_s @ W
    return dx


def backward(X: np.ndarray, Y: np.ndarray, h0: Optional[np.ndarray], params: np.ndarray,
             hidden_states: np.ndarray, outputs: np.ndarray, hidden_size: int, output_size: int,
             bias: bool, activation: str, bptt_truncate: Optional[int], cell: str = "rnn",
             num_layers: int = 1, lengths: Optional[np.ndarray] = None
             ) -> Tuple[float, np.ndarray]:
    """Loss and truncated gradient of the MSE, from a forward pass's results.

    ``Y`` (N, O) means many-to-one (record n's one loss term is at its last step
    t_n = lengths[n] - 1), (N, T, O) many-to-many (a term at every valid step; Y at padded steps
    is never read). ``hidden_states`` and ``outputs`` are what :func:`forward` returned for X,
    h0, params and the same cell, num_layers, lengths. The loss is the mean of (y - Y)² over
    the valid elements: N·O many-to-one, O·Σ lengths many-to-many.

    Truncation (architecture.md §5): the term at step t sends gradient through steps t-k .. t
    of every layer; the states before t-k are constants for it. With g_t = dL/dy_t:

        dV += g_t h_t^T,  dc += g_t;  V^T g_t reaches the top layer's h_t
        per layer from the top down, one sweep back over the window (:func:`_layer_backward`)
            gives the Δx, Δh of its steps and dx, which reaches the layer below's h
        then, over every valid (record, step) pair s, with x the layer's input:
            dU += Δx_s^T x_s,  db_ih += Δx_s,  dW += Δh_s^T h_{s-1},  db_hh += Δh_s
        (RNN: db += Δx_s.)

    ``bptt_truncate=None``, or k >= T-1, is full BPTT: one sweep per layer over [0, t_n]
    carries every term's gradient at once. Many-to-one also needs one sweep per layer, over
    each record's window [t_n - k, t_n]. Many-to-many truncated runs one sweep through every
    layer per term t, over [t - k, t]. The weight gradients are linear in Δ, so summing the
    sweeps' Δ first is exact. Returns ``(loss, grad)`` with ``grad`` in the layout of
    ``params``.
    """
    spec = _check_network(cell, num_layers)
    N, T, I = X.shape
    H, O, L, S = hidden_size, output_size, num_layers, spec.state * hidden_size
    lengths = _check_lengths(lengths, N, T)
    cache_shape = (N, T, spec.cache * H) if L == 1 else (L, N, T, spec.cache * H)
    if hidden_states.shape != cache_shape:
        raise ValueError(f"hidden_states must have shape {cache_shape} (forward's cache for "
                         f"cell={cell!r}, num_layers={L}), got shape {hidden_states.shape}")
    caches = hidden_states[None] if L == 1 else hidden_states
    valid = np.arange(T) < lengths[:, None]                   # (N, T): not padding
    records, last = np.arange(N), lengths - 1
    p = param_views(params, I, H, O, bias, cell, L)
    grad = np.zeros(param_count(I, H, O, bias, cell, L), dtype=params.dtype)
    g = param_views(grad, I, H, O, bias, cell, L)
    state0 = _initial_state(h0, N, L * S, params.dtype)
    h_top = caches[L - 1, :, :, :H]

    # loss, dL/dy, the output layer's gradients and the gradient reaching the top layer's h
    many_to_many = Y.ndim == 3
    dh_top = np.zeros((N, T, H), dtype=params.dtype)
    if many_to_many:
        diff = np.where(valid[:, :, None], outputs - Y, 0)    # padded steps hold no term
        count = O * int(lengths.sum())
    else:
        diff = outputs - Y
        count = N * O
    loss = float(np.sum(diff * diff) / count)
    dy = (2 / count) * diff
    if many_to_many:
        g["V"][...] = dy[valid].T @ h_top[valid]
        if bias:
            g["c"][...] = dy[valid].sum(axis=0)
        dh_top[valid] = dy[valid] @ p["V"]
    else:
        g["V"][...] = dy.T @ h_top[records, last]
        if bias:
            g["c"][...] = dy.sum(axis=0)
        dh_top[records, last] = dy @ p["V"]

    # Δx, Δh of every layer, summed over the sweeps
    step = CELL_STEPS[cell]
    weights = [_layer_weights(p, layer, spec, bias) for layer in range(L)]
    Dx = np.zeros((L, N, T, spec.gates * H), dtype=params.dtype)
    Dh = np.zeros_like(Dx)

    def sweep(dh: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """From the gradient dh (N, T, H) reaching the top layer's h, down through every layer
        over each record's window [lo[n], hi[n]]."""
        for layer in range(L - 1, -1, -1):
            dh = _layer_backward(step, caches[layer], state0[:, layer * S:(layer + 1) * S],
                                 weights[layer], dh, lo, hi, Dx[layer], Dh[layer], activation)

    k = bptt_truncate
    if k is None or k >= T - 1:
        sweep(dh_top, np.zeros(N, dtype=np.int64), last)
    elif not many_to_many:
        sweep(dh_top, np.maximum(last - k, 0), last)
    else:
        for t in range(T):                                    # the term at step t alone
            dh_t = np.zeros_like(dh_top)
            dh_t[:, t] = dh_top[:, t]
            hi = np.where(t <= last, t, -1)                   # -1: no term t (padding)
            sweep(dh_t, np.full(N, max(t - k, 0)), hi)

    # the weight gradients, one product per layer over the valid (record, step) pairs
    for layer in range(L):
        x = X if layer == 0 else caches[layer - 1, :, :, :H]
        h0_layer = state0[:, layer * S:layer * S + H]
        h_prev = np.concatenate([h0_layer[:, None], caches[layer, :, :-1, :H]], axis=1)
        gU, gW, gb_ih, gb_hh = _layer_weights(g, layer, spec, bias)
        gU[...] = Dx[layer][valid].T @ x[valid]
        gW[...] = Dh[layer][valid].T @ h_prev[valid]
        if gb_ih is not None:
            gb_ih[...] = Dx[layer][valid].sum(axis=0)
        if gb_hh is not None:
            gb_hh[...] = Dh[layer][valid].sum(axis=0)
    return loss, grad


def clip(grad: np.ndarray, clip_norm: Optional[float], clip_value: Optional[float]) -> float:
    """Clip ``grad`` in place and return its global L2 norm before clipping.

    1. clip_norm=c: grad *= min(1, c / (‖grad‖₂ + 1e-6))   (torch.nn.utils.clip_grad_norm_)
    2. clip_value=c: grad = clamp(grad, -c, c)             (torch.nn.utils.clip_grad_value_)
    Either may be None to skip it.
    """
    norm = float(np.sqrt(np.sum(np.square(grad, dtype=np.float64))))    # summed in float64
    if clip_norm is not None:
        coef = clip_norm / (norm + 1e-6)
        grad *= coef if (coef < 1.0 or math.isnan(coef)) else 1.0   # torch.clamp: NaN stays
    if clip_value is not None:
        np.clip(grad, -clip_value, clip_value, out=grad)
    return norm


def sgd_step(params: np.ndarray, grad: np.ndarray, momentum_buffer: Optional[np.ndarray],
             lr: float, momentum: float, weight_decay: float) -> None:
    """One torch.optim.SGD step, in place (dampening 0, no Nesterov).

        d = grad + weight_decay * params
        buf = momentum * buf + d;  d = buf          (when momentum != 0; buf starts at 0)
        params -= lr * d
    """
    d = grad + weight_decay * params if weight_decay != 0 else grad
    if momentum != 0:
        if momentum_buffer is None:
            raise ValueError(f"momentum_buffer must be an array of shape ({params.size},) "
                             "when momentum != 0, got None")
        momentum_buffer *= momentum
        momentum_buffer += d
        d = momentum_buffer
    params -= lr * d


def adam_step(params: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
              exp_avg_sq: np.ndarray, step: int, lr: float, beta1: float, beta2: float,
              eps: float, weight_decay: float) -> None:
    """One torch.optim.Adam step, in place; ``step`` counts updates including this one (>= 1).

        g = grad + weight_decay * params
        m = m + (1 - beta1) (g - m)                 v = beta2 v + (1 - beta2) g²
        (m as torch.lerp computes it: g - (g - m) beta1 when 1 - beta1 >= 0.5)
        params -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
    """
    g = grad + weight_decay * params if weight_decay != 0 else grad
    weight = 1 - beta1                  # torch's lerp, in its two forms
    if weight < 0.5:
        exp_avg += weight * (g - exp_avg)
    else:
        exp_avg[...] = g - (g - exp_avg) * (1 - weight)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * (g * g)
    step_size = lr / (1 - beta1 ** step)
    denom = np.sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** step) + eps
    params -= step_size * (exp_avg / denom)


def train_epoch(X: np.ndarray, Y: np.ndarray, params: np.ndarray, order: np.ndarray,
                batch_size: int, hidden_size: int, output_size: int, bias: bool,
                activation: str, bptt_truncate: Optional[int], clip_norm: Optional[float],
                clip_value: Optional[float], optimizer: str, lr: float, momentum: float,
                weight_decay: float, beta1: float, beta2: float, eps: float,
                momentum_buffer: Optional[np.ndarray], exp_avg: Optional[np.ndarray],
                exp_avg_sq: Optional[np.ndarray], step: int,
                callback: Optional[Callable[[int], Optional[bool]]] = None,
                losses_out: Optional[np.ndarray] = None, cell: str = "rnn",
                num_layers: int = 1, lengths: Optional[np.ndarray] = None
                ) -> Tuple[np.ndarray, int, str, Optional[BaseException]]:
    """One epoch: minibatches of ``batch_size`` records taken in ``order``, each from h0 = 0:
    forward, loss, truncated gradient, clip, update (``optimizer`` "sgd" or "adam").

    ``params`` and the optimizer state are updated in place. ``step`` counts the updates made
    so far (Adam's bias correction reads it). Between minibatches ``callback(batches_done)``, if
    given, may return False to stop the epoch (the C++ core calls it after the first minibatch,
    then at most every 50 ms); after the last one the epoch is complete.

    Returns ``(losses, step, status, error)``: the loss of each minibatch whose update was
    applied (computed before it), the step count after them, and how the epoch ended:
    "completed"; "nonfinite" when the next minibatch's loss or gradient was NaN or Inf (its
    update is not applied); "stopped" when the callback returned False or raised, the exception
    then being ``error`` (else None).

    ``losses_out``, if given, is a float64 buffer of ``ceil(len(order) / batch_size)`` that
    receives each minibatch's loss as soon as it is known (a progress display reads the running
    loss from it inside the callback); the returned losses are then a view of it.

    ``cell``, ``num_layers`` choose the network (module docstring); ``lengths`` (N,) holds the
    length of every record of X (None: all T), and each minibatch takes its records' lengths.
    """
    _check_network(cell, num_layers)
    if lengths is not None:
        lengths = _check_lengths(lengths, X.shape[0], X.shape[1])
    n_batches = -(-len(order) // batch_size)
    if losses_out is not None and (not isinstance(losses_out, np.ndarray) or
                                   losses_out.dtype != np.float64 or
                                   losses_out.shape != (n_batches,)):
        raise ValueError(f"losses_out must be None or a float64 array of shape ({n_batches},), "
                         f"got {losses_out!r:.80}")
    buffer = np.empty(n_batches) if losses_out is None else losses_out
    losses: List[float] = []
    # Ctrl-C is recorded and honoured between minibatches, as the C++ loop does: an update
    # (params, optimizer state, step) is never half applied.
    with InterruptGuard() as guard:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            xb, yb = X[rows], Y[rows]
            lb = None if lengths is None else lengths[rows]
            # a minibatch, its update and its count are not split by a second Ctrl-C either;
            # a diverging batch is reported, an overflowing update by fit (the weights)
            with guard.critical(), np.errstate(over="ignore", invalid="ignore"):
                outputs, hidden_states, _ = forward(xb, None, params, hidden_size, output_size,
                                                    bias, activation, Y.ndim == 3, cell,
                                                    num_layers, lb)
                loss, grad = backward(xb, yb, None, params, hidden_states, outputs, hidden_size,
                                      output_size, bias, activation, bptt_truncate, cell,
                                      num_layers, lb)
                norm = clip(grad, clip_norm, clip_value)
                if not (np.isfinite(loss) and np.isfinite(norm)):
                    return buffer[:len(losses)], step, "nonfinite", None
                step += 1
                if optimizer == "sgd":
                    sgd_step(params, grad, momentum_buffer, lr, momentum, weight_decay)
                else:
                    if exp_avg is None or exp_avg_sq is None:
                        raise ValueError("exp_avg and exp_avg_sq must be arrays of shape "
                                         f"({params.size},) for optimizer='adam', got None")
                    adam_step(params, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                              weight_decay)
                losses.append(loss)
                buffer[len(losses) - 1] = loss
            if start + batch_size >= len(order):   # the last minibatch: the epoch is complete
                break
            # what a custom SIGINT handler (called here) or the callback raises is handed
            # back to the caller, as in C++
            try:
                if guard.stop_requested():
                    guard.acknowledge()
                    return buffer[:len(losses)], step, "stopped", KeyboardInterrupt()
                if callback is not None and callback(len(losses)) is False:
                    return buffer[:len(losses)], step, "stopped", None
            except BaseException as exc:  # noqa: BLE001
                return buffer[:len(losses)], step, "stopped", exc
    return buffer[:len(losses)], step, "completed", None
