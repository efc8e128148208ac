"""The pure-NumPy reference of rnnkit's math, written to be read.

Every function here has a twin of the same name, arguments and shapes in the C++ core
(``rnnkit._core``); the tests run both on the same data and require the same numbers.
Explicit loops over time, one NumPy operation per equation, no cleverness.

Notation (DESIGN.md §1), batch first:

    X  (N, T, I)   inputs            U (H, I)  input -> hidden
    Y  (N, O)      many-to-one       W (H, H)  hidden -> hidden
       (N, T, O)   many-to-many      b (H,)    hidden bias   (bias=True)
    h0 (N, H)      initial state     V (O, H)  hidden -> output
                                     c (O,)    output bias   (bias=True)

    for t = 1..T:   a_t = U x_t + W h_{t-1} + b
                    h_t = f(a_t)
                    y_t = V h_t + c

The parameters travel as one flat buffer ``params`` (see :mod:`rnnkit.layout`), and the
gradient comes back in the same layout, so clipping and the optimizers are single loops.
Indices in code are 0-based: step t of the docstrings is ``[:, t - 1]``.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import numpy as np

from ._faults import InterruptGuard
from .layout import param_count, param_views

__all__ = ["forward", "backward", "forecast", "clip", "sgd_step", "adam_step", "train_epoch",
           "activate", "activation_derivative"]

ACTIVATIONS = ("tanh", "sigmoid", "relu")


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


def forward(X: np.ndarray, h0: Optional[np.ndarray], params: np.ndarray, hidden_size: int,
            output_size: int, bias: bool, activation: str,
            return_sequences: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the recurrence over a batch.

    ``X`` is (N, T, I); ``h0`` is (N, H) or None for zeros; ``params`` is the flat buffer.
    Returns ``(outputs, hidden_states, final_state)``: outputs (N, T, O) when
    ``return_sequences`` else y_T as (N, O); hidden_states (N, T, H) with h_t at ``[:, t-1]``;
    final_state h_T (N, H), a copy, for a caller to carry into the next call.
    """
    N, T, I = X.shape
    H, O = hidden_size, output_size
    p = param_views(params, I, H, O, bias)
    h = np.zeros((N, H), dtype=params.dtype) if h0 is None else h0
    hidden_states = np.empty((N, T, H), dtype=params.dtype)
    for t in range(T):
        a = X[:, t] @ p["U"].T + h @ p["W"].T            # a_t = U x_t + W h_{t-1}
        if bias:
            a = a + p["b"]                                #      + b
        h = activate(a, activation)                       # h_t = f(a_t)
        hidden_states[:, t] = h
    read = hidden_states if return_sequences else hidden_states[:, -1]
    outputs = read @ p["V"].T                             # y_t = V h_t
    if bias:
        outputs = outputs + p["c"]                        #     + c
    return outputs, hidden_states, hidden_states[:, -1].copy()


def forecast(X: np.ndarray, h0: Optional[np.ndarray], params: np.ndarray, hidden_size: int,
             output_size: int, bias: bool, activation: str, steps: int) -> np.ndarray:
    """Autoregressive rollout from a context window, for a model with I == O.

    Run the context ``X`` (N, T, I) from ``h0``; y_T is the first forecast; then, ``steps - 1``
    times, feed the latest forecast back as the next input (x_{t+1} = y_t) and step the
    recurrence once from the state it left. Returns forecasts (N, steps, O): ``[:, s]`` is the
    prediction s + 1 steps after the context's end.
    """
    if steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    N, T, I = X.shape
    if I != output_size:
        raise ValueError("forecast feeds each prediction back as the next input, so X must "
                         f"have output_size = {output_size} features per step, got X of "
                         f"shape {X.shape}")
    forecasts = np.empty((N, steps, output_size), dtype=params.dtype)
    y, _, h = forward(X, h0, params, hidden_size, output_size, bias, activation, False)
    forecasts[:, 0] = y
    for s in range(1, steps):
        y, _, h = forward(y[:, None, :], h, params, hidden_size, output_size, bias, activation,
                          False)                          # x_{t+1} = y_t, from h_t
        forecasts[:, s] = y
    return forecasts


def backward(X: np.ndarray, Y: np.ndarray, h0: Optional[np.ndarray], params: np.ndarray,
             hidden_states: np.ndarray, outputs: np.ndarray, hidden_size: int, output_size: int,
             bias: bool, activation: str,
             bptt_truncate: Optional[int]) -> Tuple[float, np.ndarray]:
    """Loss and truncated gradient of L = mean((y - Y)²), from a forward pass's results.

    ``Y`` (N, O) means many-to-one (the loss reads y_T), (N, T, O) many-to-many (every y_t).
    ``hidden_states`` and ``outputs`` are what :func:`forward` returned for X, h0, params.

    Truncation (DESIGN.md §1): the loss term at step t sends gradient through steps
    t-k .. t; h_{t-k-1} is a constant for that term. With g_t = dL/dy_t:

        dV += g_t h_t^T,  dc += g_t,  dh = V^T g_t
        for s = t, t-1, .., max(1, t-k):
            delta = dh * f'(a_s)
            dU += delta x_s^T,  dW += delta h_{s-1}^T,  db += delta
            dh = W^T delta

    ``bptt_truncate=None``, or k >= T-1, is full BPTT; then the terms of every step share one
    backward sweep (dh carries the sum), which is the same sum in O(T) instead of O(T²).
    Returns ``(loss, grad)`` with ``grad`` in the layout of ``params``.
    """
    N, T, I = X.shape
    H, O = hidden_size, output_size
    p = param_views(params, I, H, O, bias)
    grad = np.zeros(param_count(I, H, O, bias), dtype=params.dtype)
    g = param_views(grad, I, H, O, bias)

    many_to_many = Y.ndim == 3
    diff = outputs - Y
    loss = float(np.mean(diff * diff))
    dy = (2 / Y.size) * diff                                      # dL/dy, same shape as Y
    # target steps (0-based) and dL/dy_t at each
    targets = [(t, dy[:, t]) for t in range(T)] if many_to_many else [(T - 1, dy)]

    h_init = np.zeros((N, H), dtype=params.dtype) if h0 is None else h0
    dfa = activation_derivative(hidden_states, activation)       # f'(a_t), (N, T, H)

    def h_prev(s: int) -> np.ndarray:                             # h_{s-1}
        return h_init if s == 0 else hidden_states[:, s - 1]

    def accumulate_step(s: int, delta: np.ndarray) -> None:
        g["U"][...] += delta.T @ X[:, s]
        g["W"][...] += delta.T @ h_prev(s)
        if bias:
            g["b"][...] += delta.sum(axis=0)

    for t, dy_t in targets:
        g["V"][...] += dy_t.T @ hidden_states[:, t]
        if bias:
            g["c"][...] += dy_t.sum(axis=0)

    if bptt_truncate is None or bptt_truncate >= T - 1:
        # full BPTT: one sweep from T down to 1, dh carrying every later term's gradient
        dh = np.zeros((N, H), dtype=params.dtype)
        for s in range(T - 1, -1, -1):
            if many_to_many:
                dh = dh + dy[:, s] @ p["V"]
            elif s == T - 1:
                dh = dh + dy @ p["V"]
            delta = dh * dfa[:, s]
            accumulate_step(s, delta)
            dh = delta @ p["W"]
    else:
        # truncated: each loss term walks back k steps on its own
        k = bptt_truncate
        for t, dy_t in targets:
            dh = dy_t @ p["V"]
            for s in range(t, max(t - k, 0) - 1, -1):
                delta = dh * dfa[:, s]
                accumulate_step(s, delta)
                dh = delta @ p["W"]
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
                losses_out: Optional[np.ndarray] = None
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
    """
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
            with np.errstate(over="ignore", invalid="ignore"):   # a diverging batch is reported
                outputs, hidden_states, _ = forward(xb, None, params, hidden_size, output_size,
                                                    bias, activation, Y.ndim == 3)
                loss, grad = backward(xb, yb, None, params, hidden_states, outputs, hidden_size,
                                      output_size, bias, activation, bptt_truncate)
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
            if guard.requested:
                return buffer[:len(losses)], step, "stopped", KeyboardInterrupt()
            if callback is not None:
                try:
                    if callback(len(losses)) is False:
                        return buffer[:len(losses)], step, "stopped", None
                except Exception as exc:  # noqa: BLE001 - handed back to the caller, as in C++
                    return buffer[:len(losses)], step, "stopped", exc
    return buffer[:len(losses)], step, "completed", None
