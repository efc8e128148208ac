"""Type stubs for rnnkit._core, the compiled twin of rnnkit.reference (private API).

Arrays of the same call share one dtype, float32 or float64: that of ``params`` (or ``grad``).
Arrays named as updated in place must be C-contiguous and writeable, and may not share memory
with any other array of the call. Other arrays may have any layout (a C-contiguous copy is
made). Wrong types and 0-d arrays raise TypeError, wrong shapes or values ValueError, sizes
whose buffers cannot be allocated ValueError (int64 overflow) or MemoryError, each naming the
argument.

``cell`` ("rnn", "gru", "lstm"), ``num_layers`` and ``lengths`` come last, with defaults that
make every call DESIGN.md's Elman one (docs/architecture.md §6). States are (N, L*S): layer l's
in columns [l*S, (l+1)*S), S = H, or 2H for an LSTM (h then c). ``lengths`` (N,) int64 in
[1, T], or None for all T. ``hidden_states`` are the layers' caches, (N, T, C) for one layer,
(L, N, T, C) for several (C = H, 5H, 7H for rnn, gru, lstm).
"""

from typing import Callable, Optional, Tuple

import numpy as np
from numpy.typing import NDArray

def forward(X: NDArray[np.floating], h0: Optional[NDArray[np.floating]],
            params: NDArray[np.floating], hidden_size: int, output_size: int, bias: bool,
            activation: str, return_sequences: bool, cell: str = "rnn", num_layers: int = 1,
            lengths: Optional[NDArray[np.int64]] = None
            ) -> Tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating]]:
    """(outputs (N, O) or (N, T, O), hidden_states (N, T, C) or (L, N, T, C),
    final_state (N, L*S))."""

def predict(X: NDArray[np.floating], h0: Optional[NDArray[np.floating]],
            params: NDArray[np.floating], hidden_size: int, output_size: int, bias: bool,
            activation: str, return_sequences: bool, cell: str = "rnn", num_layers: int = 1,
            lengths: Optional[NDArray[np.int64]] = None
            ) -> Tuple[NDArray[np.floating], NDArray[np.floating]]:
    """(outputs (N, O) or (N, T, O), final_state (N, L*S)): forward without the hidden
    states."""

def backward(X: NDArray[np.floating], Y: NDArray[np.floating],
             h0: Optional[NDArray[np.floating]], params: NDArray[np.floating],
             hidden_states: NDArray[np.floating], outputs: NDArray[np.floating],
             hidden_size: int, output_size: int, bias: bool, activation: str,
             bptt_truncate: Optional[int], cell: str = "rnn", num_layers: int = 1,
             lengths: Optional[NDArray[np.int64]] = None) -> Tuple[float, NDArray[np.floating]]:
    """(loss, grad (P,)): the truncated gradient of the MSE loss (the mean over the valid
    elements), in the layout of params."""

def forecast(X: NDArray[np.floating], h0: Optional[NDArray[np.floating]],
             params: NDArray[np.floating], hidden_size: int, output_size: int, bias: bool,
             activation: str, steps: int, cell: str = "rnn",
             num_layers: int = 1) -> NDArray[np.floating]:
    """Autoregressive rollout from the context X (N, T, I), I == O: forecasts (N, steps, O)."""

def clip(grad: NDArray[np.floating], clip_norm: Optional[float],
         clip_value: Optional[float]) -> float:
    """Clips grad in place (global norm, then value); returns the norm before clipping."""

def sgd_step(params: NDArray[np.floating], grad: NDArray[np.floating],
             momentum_buffer: Optional[NDArray[np.floating]], lr: float, momentum: float,
             weight_decay: float) -> None:
    """One torch.optim.SGD update; params and momentum_buffer in place."""

def adam_step(params: NDArray[np.floating], grad: NDArray[np.floating],
              exp_avg: NDArray[np.floating], exp_avg_sq: NDArray[np.floating], step: int,
              lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """One torch.optim.Adam update; params, exp_avg, exp_avg_sq in place."""

def train_epoch(X: NDArray[np.floating], Y: NDArray[np.floating], params: NDArray[np.floating],
                order: NDArray[np.int64], batch_size: int, hidden_size: int, output_size: int,
                bias: bool, activation: str, bptt_truncate: Optional[int],
                clip_norm: Optional[float], clip_value: Optional[float], optimizer: str,
                lr: float, momentum: float, weight_decay: float, beta1: float, beta2: float,
                eps: float, momentum_buffer: Optional[NDArray[np.floating]],
                exp_avg: Optional[NDArray[np.floating]],
                exp_avg_sq: Optional[NDArray[np.floating]],
                step: int, callback: Optional[Callable[[int], Optional[bool]]] = None,
                losses_out: Optional[NDArray[np.float64]] = None, cell: str = "rnn",
                num_layers: int = 1, lengths: Optional[NDArray[np.int64]] = None
                ) -> Tuple[NDArray[np.float64], int, str, Optional[BaseException]]:
    """One epoch in one call; returns (losses of the applied minibatches, step count after
    them, "completed" | "nonfinite" | "stopped", the exception that stopped it or None).
    ``losses_out`` (ceil(len(order) / batch_size),) float64, if given, receives each loss as
    soon as it is known (readable inside the callback); the losses returned are a view of it.
    ``lengths`` (N,) is indexed like X: each minibatch takes ``lengths[order[...]]``."""

def set_num_threads(n: int) -> None:
    """Use n threads (>= 1) in the C++ core; results do not depend on it."""

def get_num_threads() -> int:
    """The number of threads the C++ core uses."""

def _set_isa(isa: str) -> None:
    """Testing aid: run at 'baseline', 'avx2', 'avx512' or the 'best' level the CPU has."""

def _isa() -> str:
    """The instruction-set level the core runs at."""

def _set_plain_loops(plain: bool) -> None:
    """Testing aid: run the plain loops instead of the register-tiled ones."""

def _plain_loops() -> bool:
    """Whether the plain loops are in use."""

def _kept_scratch_bytes() -> int:
    """Test aid: the bytes of scratch kept for the next call (buffer.h)."""

def set_scratch_cache_limit(limit: int) -> int:
    """Sets the limit on the scratch bytes kept for the next call (256 MiB), freeing kept blocks
    to meet it; returns the former limit."""

def _fma_peak_gflops(dtype: str, seconds: float, threads: int = 1) -> float:
    """Benchmark aid: the measured FMA peak (GFLOP/s) of `threads` threads, "float32"/"float64"."""

def _fma_peak_isa() -> str:
    """Benchmark aid: the unit the FMA peak loop runs on: "avx512f", "avx2+fma" or "scalar"."""
