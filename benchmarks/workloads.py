"""The benchmark workloads of issue 3 (W1, W2, W3) and of issue 5 (W2's training with GRU and
LSTM layers): sizes, training settings, data, initial weights and FLOP counts. Every
implementation (benchmarks/impls.py) builds its run from one :class:`Workload`, so all of them
train the same network on the same data from the same weights.

W1  the first seed's workload: sin(x), x = 0..199, windows of 50 predicting the 51st; 100
    training and 50 validation windows; I=1, H=100, O=1, sigmoid, no biases, many-to-one,
    float64; SGD lr 1e-4, batch 1, clip_value 10, truncation k=5. One epoch = training over the
    100 windows, then the loss over the 100 training and the 50 validation windows.
W2  float32; I=1, H=128, O=1, tanh, biases; T=50; 4096 noisy sine windows of random frequency
    and phase, the target the next value; batch 64 (64 batches an epoch); many-to-one MSE; full
    BPTT; Adam lr 1e-3; clip_norm 1.0. One epoch = the 64 updates.
W3  W2 with H=512, batch 256 (16 batches an epoch).

Issue 5 (the GRU and LSTM cells, docs/architecture.md §2: PyTorch's equations, gate order and
two biases b_ih, b_hh per layer; tanh candidate):
W2-GRU    W2 (same data, batch, Adam, clip_norm, full BPTT) with one GRU layer.
W2-LSTM   W2 with one LSTM layer.
W2-LSTM2  W2 with two stacked LSTM layers (num_layers=2; the output reads the top layer).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

ISSUE3_WORKLOADS = ("W1", "W2", "W3")
CELL_WORKLOADS = ("W2-GRU", "W2-LSTM", "W2-LSTM2")
WORKLOADS = ISSUE3_WORKLOADS + CELL_WORKLOADS
# the cell and depth of each issue-5 workload
_CELLS = {"W2-GRU": ("gru", 1), "W2-LSTM": ("lstm", 1), "W2-LSTM2": ("lstm", 2)}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}   # rows of a layer's projections, in multiples of H
INIT_SEED = 0          # rnnkit.RNN/GRU/LSTM(seed=0) draws the weights every implementation uses
DATA_SEED = 2024       # the noisy sine windows of W2, W3 and the W2 cell workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    dtype: str
    I: int
    H: int
    O: int
    activation: str
    bias: bool
    T: int
    n_train: int            # training windows
    n_val: int              # validation windows evaluated after each epoch (0: none)
    batch_size: int
    optimizer: str          # "sgd" or "adam"
    lr: float
    k: Optional[int]        # bptt_truncate; None is full BPTT
    clip_norm: Optional[float]
    clip_value: Optional[float]
    evaluate: bool          # after training: the loss over the training and validation windows
    cell: str = "rnn"       # "rnn" (Elman, one bias b), "gru" or "lstm" (two biases b_ih, b_hh)
    num_layers: int = 1
    tiny: bool = False      # shrunken for the tests (get_workload(tiny=True))

    @property
    def gates(self) -> int:
        """G: a layer's projections have G·H rows (RNN 1, GRU 3, LSTM 4)."""
        return GATES[self.cell]

    @property
    def n_batches(self) -> int:
        return -(-self.n_train // self.batch_size)

    @property
    def tolerance(self) -> float:
        """Allowed relative difference of first-epoch losses between implementations: 1e-9 in
        float64; in float32 1e-3 (W3's 512-wide sums in another order reach 4e-4), and 1e-5 for
        the tiny workloads, which agree to about 1e-7: there a 1e-3 tolerance would let a model
        error through (a 2-layer LSTM with two gates of layer 0 swapped moves the tiny
        first-epoch loss by only 3e-4)."""
        if self.dtype == "float64":
            return 1e-9
        return 1e-5 if self.tiny else 1e-3

    def describe(self) -> str:
        trunc = "full BPTT" if self.k is None else f"k={self.k}"
        clip = (f"clip_norm {self.clip_norm}" if self.clip_norm else
                f"clip_value {self.clip_value}" if self.clip_value else "no clip")
        cell = "" if self.cell == "rnn" else f"{self.num_layers}x{self.cell.upper()} "
        return (f"{self.name}: {cell}{self.dtype}, I={self.I} H={self.H} O={self.O} "
                f"{self.activation}"
                f"{' +bias' if self.bias else ' no bias'}, T={self.T}, {self.n_train} windows "
                f"in batches of {self.batch_size}, {self.optimizer} lr {self.lr:g}, {trunc}, "
                f"{clip}" + (f", then loss over {self.n_train}+{self.n_val} windows"
                             if self.evaluate else ""))

    # ------------------------------------------------------------------ FLOPs
    def flops_per_epoch(self) -> float:
        """2 x the multiply-adds of the matrix work (issue 3): forward T(H² + HI) + OH per
        sequence; backward over s steps s(H² + HI) + (s-1)H² + 2OH, with s = min(k+1, T)
        (many-to-one: the one loss term reaches s steps back). Evaluation windows count a
        forward each.

        GRU/LSTM (G = 3 / 4 gates) and L layers, layer l reading I_l inputs (I_0 = I,
        I_l = H above): forward Σ_l T·G(H² + H·I_l) + OH; backward Σ_l [s·G(H² + H·I_l)
        (the weight gradients) + (s-1)·G·H² (the gradient through W_hh) + s·G·H·I_l for
        l ≥ 1 (the gradient into the layer below)] + 2OH: the forward's products about twice
        over. G = 1, L = 1 is issue 3's count exactly. Elementwise gate work is not counted."""
        T, H, O, G = self.T, self.H, self.O, self.gates
        s = T if self.k is None else min(self.k + 1, T)
        forward, backward = O * H, 2 * O * H
        for layer in range(self.num_layers):
            I = self.I if layer == 0 else H
            forward += T * G * (H * H + H * I)
            backward += s * G * (H * H + H * I) + (s - 1) * G * H * H
            if layer > 0:
                backward += s * G * H * I
        macs = self.n_train * (forward + backward)
        if self.evaluate:
            macs += (self.n_train + self.n_val) * forward
        return 2.0 * macs


def get_workload(name: str, tiny: bool = False) -> Workload:
    """W1, W2 or W3 as issue 3 defines them, or W2-GRU, W2-LSTM, W2-LSTM2 (issue 5: W2 with
    GRU/LSTM layers); ``tiny=True`` shrinks the sizes (same code paths) for the correctness
    test."""
    if name == "W1":
        w = Workload("W1", "float64", 1, 100, 1, "sigmoid", False, 50, 100, 50, 1, "sgd", 1e-4,
                     5, None, 10.0, True)
        if tiny:
            w = dataclasses.replace(w, H=12, n_train=8, n_val=4, tiny=True)
        return w
    if name in _CELLS:
        cell, layers = _CELLS[name]
        w = dataclasses.replace(get_workload("W2", tiny=tiny), name=name, cell=cell,
                                num_layers=layers)
        return w
    if name in ("W2", "W3"):
        w = Workload(name, "float32", 1, 128, 1, "tanh", True, 50, 4096, 0, 64, "adam", 1e-3,
                     None, 1.0, None, False)
        if name == "W3":
            w = dataclasses.replace(w, H=512, batch_size=256)
        if tiny:
            w = dataclasses.replace(w, H=16 if name == "W2" else 24, T=12, n_train=48,
                                    batch_size=16, tiny=True)
        return w
    raise ValueError(f"unknown workload {name!r}: expected one of {WORKLOADS}")


Arrays = Tuple[np.ndarray, np.ndarray]


def make_data(w: Workload) -> Tuple[Arrays, Optional[Arrays]]:
    """((X_train (N, T, I), Y_train (N, O)), (X_val, Y_val) or None), in the workload's dtype."""
    import rnnkit

    if w.name == "W1":
        X, Y = rnnkit.data.sliding_windows(np.sin(np.arange(200.0)), seq_len=50)
        X = X[:, :w.T].astype(w.dtype)
        Y = Y.astype(w.dtype)
        train = (np.ascontiguousarray(X[:w.n_train]), np.ascontiguousarray(Y[:w.n_train]))
        val = (np.ascontiguousarray(X[100:100 + w.n_val]),
               np.ascontiguousarray(Y[100:100 + w.n_val]))
        return train, val
    # W2/W3: sin(f t + phase) + noise at t = 0..T, f ~ U(0.05, 0.5) rad/step, phase ~ U(0, 2π),
    # noise ~ N(0, 0.05²); X the first T values, Y the value after them.
    rng = np.random.default_rng(DATA_SEED)
    freq = rng.uniform(0.05, 0.5, size=(w.n_train, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(w.n_train, 1))
    t = np.arange(w.T + 1)
    series = np.sin(freq * t + phase) + 0.05 * rng.standard_normal((w.n_train, w.T + 1))
    series = series.astype(w.dtype)
    X = np.ascontiguousarray(series[:, :w.T, None])
    Y = np.ascontiguousarray(series[:, w.T:])
    return (X, Y), None


def initial_weights(w: Workload) -> Dict[str, np.ndarray]:
    """rnnkit.RNN/GRU/LSTM(seed=INIT_SEED)'s weights; every implementation copies these.
    RNN: "U" (H, I), "W" (H, H), ["b" (H,)], "V" (O, H), ["c" (O,)]. GRU/LSTM, per layer l
    (suffix "" for l = 0, "_l1", ... above): "U" (G·H, I_l), "W" (G·H, H), ["b_ih" (G·H,),
    "b_hh" (G·H,)], which are torch's weight_ih_l{l}, weight_hh_l{l}, bias_ih_l{l},
    bias_hh_l{l}; then "V", ["c"]."""
    model = model_class(w)(w.I, w.H, w.O, activation=w.activation, bias=w.bias, dtype=w.dtype,
                           seed=INIT_SEED, backend="reference", num_layers=w.num_layers)
    return model.weights


def model_class(w: Workload):
    """rnnkit.RNN, rnnkit.GRU or rnnkit.LSTM, by the workload's cell."""
    import rnnkit

    return {"rnn": rnnkit.RNN, "gru": rnnkit.GRU, "lstm": rnnkit.LSTM}[w.cell]


# The targets of issue 3 (1 thread unless stated): (workload, peer, rnnkit at least this many
# times faster, threads). The FMA-peak targets are (workload, "peak", fraction, threads).
# Issue 5 sets none for its GRU/LSTM workloads: their rows only report the ratios.
TARGETS = [
    ("W1", "jax", 2.0, 1), ("W1", "numpy", 20.0, 1), ("W1", "torch", 20.0, 1),
    ("W2", "jax", 2.0, 1), ("W2", "torch", 4.0, 1), ("W2", "peak", 0.70, 1),
    ("W3", "torch", 1.25, 1), ("W3", "torch", 1.25, 2), ("W3", "peak", 0.70, 1),
]
