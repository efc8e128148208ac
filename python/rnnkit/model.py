"""The user-facing models: :class:`Recurrent`, a stack of recurrent layers with a linear output
layer trained with truncated BPTT, and its cells :class:`RNN` (Elman), :class:`GRU` and
:class:`LSTM`."""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import warnings
from typing import (Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type,
                    Union)

import numpy as np

from .callbacks import CallbackLike, History, TrainingRun
from ._checks import (DTYPES, as_real_array, check_bool, check_choice, check_dtype, check_int,
                      check_optional_int, check_optional_positive, check_shape)
from ._faults import DivergenceError, InterruptGuard, ModelLock, reads_model, writes_model
from .cells import ACTIVATIONS, cell_spec
from .layout import layer_suffix, param_count, param_layout, param_views
from .optimizers import Adam, Optimizer, optimizer_from_config

__all__ = ["Recurrent", "RNN", "GRU", "LSTM", "load", "set_num_threads", "get_num_threads"]

BACKENDS = ("cpp", "reference")
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


def _backend_module(name: str) -> Any:
    check_choice(name, "backend", BACKENDS)
    if name == "reference":      # imported when first used: most programs never do
        from . import reference

        return reference
    try:
        from . import _core
    except ImportError as exc:  # pragma: no cover - only without a built extension
        raise ImportError(
            "rnnkit's C++ core (rnnkit._core) is not built. Install the package with "
            "`pip install .` from the source tree (it needs a C++17 compiler), or use "
            "backend='reference'.") from exc
    return _core


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the C++ core (the default is the environment variable
    RNNKIT_NUM_THREADS, else every CPU this process may run on: its affinity mask, as set by
    taskset or a container's cpuset). Results are bitwise identical whatever the count:
    work is split so that every number is computed on one thread in a fixed order."""
    # the core uses at most 1024 threads; a larger n (an int64 may not hold it) asks for that
    _backend_module("cpp").set_num_threads(min(check_int(n, "n", 1), 1024))


def get_num_threads() -> int:
    """The number of threads the C++ core uses."""
    return int(_backend_module("cpp").get_num_threads())


def set_scratch_cache_limit(nbytes: int) -> int:
    """Keep at most ``nbytes`` of the C++ core's scratch memory from one call for the next
    (default 256 MiB), and return the former limit. A call's large scratch blocks (1 MiB and
    more: a minibatch's hidden states, the backward pass's work space) are kept rather than
    returned to the system, since the system would clear every page of them again at the next
    call (``fit`` calls the core once an epoch; ~3% of a large epoch). They stay after ``fit``
    returns, at most 4 of them, together at most the limit; ``set_scratch_cache_limit(0)`` frees
    them and keeps none from then on."""
    return int(_backend_module("cpp").set_scratch_cache_limit(
        check_int(nbytes, "nbytes", 0, maximum=2**64 - 1)))


def _allocate_params(config: Dict[str, Any]) -> np.ndarray:
    """The flat parameter buffer for a configuration; MemoryError naming the sizes when it
    cannot be allocated."""
    size = param_count(config["input_size"], config["hidden_size"], config["output_size"],
                       config["bias"], config["cell"], config["num_layers"])
    try:
        return np.empty(size, dtype=config["dtype"])
    except (MemoryError, ValueError):
        raise MemoryError(
            f"input_size={config['input_size']}, hidden_size={config['hidden_size']}, "
            f"output_size={config['output_size']}, cell={config['cell']!r}, "
            f"num_layers={config['num_layers']} need {size} {config['dtype']} parameters, "
            "more than can be allocated") from None


def _truncation(bptt_truncate: Any, T: int) -> Optional[int]:
    """bptt_truncate checked, and capped at T (any k >= T - 1 is full BPTT), so a huge k
    reaches neither backend's integer conversion."""
    k = check_optional_int(bptt_truncate, "bptt_truncate", 0)
    return None if k is None else min(k, T)


def _stop_training(status: str, error: Optional[BaseException], guard: InterruptGuard,
                   on_nonfinite: str, epoch: int, batches_done: int, n_batches: int,
                   history: Mapping[str, List[float]], nonfinite: Optional[str] = None) -> None:
    """Why a backend epoch (1-based ``epoch``) ended early, as the exception fit raises, with
    ``history`` (the completed epochs) attached. Returns only for on_nonfinite="stop".
    ``status`` "overflow": the epoch completed, but ``nonfinite`` (the weights, or a buffer of
    the optimizer's state) holds NaN or Inf."""
    where = (f"after epoch {epoch}" if batches_done == n_batches else
             f"at epoch {epoch}, batch {batches_done + 1} of {n_batches}")
    if status in ("nonfinite", "overflow"):
        if not nonfinite:
            message = (f"training diverged {where}: the loss or the gradient became NaN or "
                       "Inf. That minibatch's update was not applied: the weights and the "
                       "optimizer state are those after the last good update, and the history "
                       "of the completed epochs is model.history. Try clip_norm / clip_value "
                       "or a smaller learning rate.")
        else:
            # an update from a finite loss and gradient overflowed: it was applied (the epoch
            # loops check the loss and the gradient before an update, the weights after it)
            message = (f"training diverged in epoch {epoch}: an update made {nonfinite} NaN "
                       "or Inf (its loss and gradient were finite: the step itself overflowed, "
                       "e.g. a learning rate too large for the dtype, or Adam's eps=0 on a "
                       "zero gradient). That update was applied, so the model is not usable: "
                       "load a checkpoint (ModelCheckpoint) or make a new model. The history "
                       "of the completed epochs is model.history.")
        batch = batches_done + 1 if status == "nonfinite" else None
        if on_nonfinite == "stop":
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return
        raise DivergenceError(message, epoch, batch, history)
    if error is None or (guard.requested and isinstance(error, KeyboardInterrupt)):
        where = (f"after epoch {epoch}" if batches_done == n_batches else
                 f"at epoch {epoch} after batch {batches_done} of {n_batches}")
        error = KeyboardInterrupt(
            f"training interrupted {where}: the weights and the optimizer state are those "
            "after the last completed update; the history of the completed epochs is "
            "model.history")
    raise error                         # fit attaches the history


#: The model class of each cell name, filled by :class:`Recurrent` subclasses that set ``cell``
#: (the first class to claim a cell is the one :func:`load` returns).
CELL_CLASSES: Dict[str, Type["Recurrent"]] = {}

#: Parameters of the torch modules' ``state_dict`` (``rnn.`` + ``weight_ih_l0``, ...) by
#: rnnkit's name stem: U -> weight_ih, W -> weight_hh, b_ih -> bias_ih, b_hh -> bias_hh.
_TORCH_NAMES = (("U", "weight_ih"), ("W", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh"))
#: Arguments of from_torch's ``**kwargs`` that the torch modules decide.
_FROM_TORCH_FIXED = ("input_size", "hidden_size", "output_size", "num_layers", "bias",
                     "activation")


def _import_torch() -> Any:
    """torch, imported on demand (it is optional); ImportError saying how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError("this needs PyTorch, which rnnkit does not require: "
                          "pip install torch==2.13.0") from exc


def _describe(value: Any) -> str:
    """A short description of an argument for an error message: shape for arrays."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return repr(value)[:80]


class Recurrent:
    """A stack of ``num_layers`` recurrent layers with a linear output layer
    (DESIGN.md §1, docs/architecture.md): the base of :class:`RNN`, :class:`GRU` and
    :class:`LSTM`, which differ only in their ``cell``. It holds everything else (checks,
    training, state, persistence, PyTorch interop) and knows nothing about what a cell computes.

    Layer 0 reads X, layer l > 0 reads layer l-1's ``h``; ``y_t = V h_t + c`` reads the top
    layer's. The output is y_T (many-to-one) or every y_t (``return_sequences=True``). Data is
    batch-first: X (N, T, input_size), Y (N, output_size) or (N, T, output_size).

    Parameters
    ----------
    input_size, hidden_size, output_size : sizes I, H, O (>= 1).
    activation : "tanh" (default), "sigmoid" or "relu": the Elman ``f``; for GRU and LSTM the
        candidate's (and LSTM's cell output's) activation, the gates being sigmoids as in
        PyTorch, which is the "tanh" case.
    bias : whether the layers' biases and the output bias c exist.
    return_sequences : many-to-many when True.
    dtype : "float32" or "float64"; every computation runs in it.
    seed : seeds ``numpy.random.default_rng``, used for the initial weights (every parameter
        ~ Uniform(-1/sqrt(H), 1/sqrt(H)), drawn in the order of :func:`rnnkit.param_layout`)
        and for shuffling.
    backend : "cpp" (the compiled core, default) or "reference" (pure NumPy).
    num_layers : stacked recurrent layers L (>= 1).

    State
    -----
    As PyTorch's, batch-first: ``h`` (N, H) for one layer, (L, N, H) for several (a one-layer
    model also accepts (1, N, H) as ``h0``); for an LSTM the pair ``(h, c)`` of two such arrays.
    """

    #: The cell's name in :data:`rnnkit.cells.CELLS`; a subclass sets it, and that is all a
    #: new cell needs here.
    cell: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cell = cls.__dict__.get("cell")
        if cell is not None:
            cell_spec(cell)                 # a registered cell, else ValueError
            CELL_CLASSES.setdefault(cell, cls)

    def __init__(self, input_size: int, hidden_size: int, output_size: int = 1,
                 activation: str = "tanh", bias: bool = True, return_sequences: bool = False,
                 dtype: str = "float64", seed: Optional[int] = None, backend: str = "cpp",
                 num_layers: int = 1):
        if not self.cell:
            raise TypeError(f"{type(self).__name__} has no cell: use rnnkit.RNN, rnnkit.GRU or "
                            "rnnkit.LSTM, or a subclass that sets cell")
        self.input_size = check_int(input_size, "input_size", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        self.output_size = check_int(output_size, "output_size", 1)
        self.num_layers = check_int(num_layers, "num_layers", 1)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.bias = check_bool(bias, "bias")
        self.return_sequences = check_bool(return_sequences, "return_sequences")
        self.dtype = check_dtype(dtype)
        self.seed = check_optional_int(seed, "seed", 0)
        self.backend = check_choice(backend, "backend", BACKENDS)
        self._backend = _backend_module(backend)
        self._rng = np.random.default_rng(self.seed)
        self.optimizer: Optional[Optimizer] = None
        self.history = History()        # empty until the first fit
        self._lock = ModelLock()
        self._token = object()          # this model's identity: its optimizer's owner
        self.stop_training = False      # a callback sets it to end fit after the current epoch

        self._params = _allocate_params(self.get_config())
        bound = 1.0 / np.sqrt(self.hidden_size)
        for view in self._views().values():               # the layout order
            view[...] = self._rng.uniform(-bound, bound, size=view.shape)

    # ------------------------------------------------------------------ configuration
    def _views(self, flat: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        return param_views(self._params if flat is None else flat, self.input_size,
                           self.hidden_size, self.output_size, self.bias, self.cell,
                           self.num_layers)

    def _spec(self) -> Dict[str, Any]:
        return dict(hidden_size=self.hidden_size, output_size=self.output_size, bias=self.bias,
                    activation=self.activation)

    def _cell_args(self, lengths: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """The trailing keyword arguments of the backend functions (architecture.md §6).
        Only those that differ from their defaults are passed, so an Elman call is exactly
        DESIGN.md §2's."""
        args: Dict[str, Any] = {}
        if self.cell != "rnn":
            args["cell"] = self.cell
        if self.num_layers != 1:
            args["num_layers"] = self.num_layers
        if lengths is not None:
            args["lengths"] = lengths
        return args

    @reads_model
    def __getstate__(self) -> Dict[str, Any]:
        """Pickle and copy support (joblib ships models to worker processes this way): a copy,
        taken under the model's lock, of everything but the backend module, which is looked up
        again by name when unpickled. Weights, optimizer state and the generator's state
        round-trip exactly."""
        state = copy.deepcopy({k: v for k, v in self.__dict__.items()
                               if k not in ("_backend", "_lock", "_token")})
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._backend = _backend_module(self.backend)
        self._lock = ModelLock()        # a fresh, free lock comes with the copy
        self._token = object()          # and the copy's own identity, its optimizer's owner
        if self.optimizer is not None:
            self.optimizer._bind(self._params.size, self._params.dtype, self._token)

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, as a JSON-friendly dict, and ``"cell"`` (the class's cell,
        not a constructor argument: :func:`load` picks the class by it)."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "output_size": self.output_size, "activation": self.activation,
                "bias": self.bias, "return_sequences": self.return_sequences,
                "dtype": self.dtype.name, "seed": self.seed, "backend": self.backend,
                "num_layers": self.num_layers, "cell": self.cell}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "cell")
        return f"{type(self).__name__}({args})"

    @property
    def num_parameters(self) -> int:
        """The number of scalars in the flat parameter buffer."""
        return int(self._params.size)

    # ------------------------------------------------------------------ weights
    @property
    def weights(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters, keyed as :func:`rnnkit.param_layout` names them: per
        layer l, "U" (G*H, I_l), "W" (G*H, H) and with bias "b" (H,) (RNN) or "b_ih", "b_hh"
        (G*H,) (GRU, LSTM), layers l >= 1 with the suffix "_l{l}"; then "V" (O, H) and with
        bias "c" (O,). G is the number of gates: RNN 1, GRU 3, LSTM 4."""
        return self._weights()

    @reads_model
    def _weights(self) -> Dict[str, np.ndarray]:
        return {name: view.copy() for name, view in self._views().items()}

    @writes_model
    def set_weights(self, weights: Dict[str, Any]) -> None:
        """Replace every parameter from a dict with exactly the keys of :attr:`weights`."""
        if not isinstance(weights, dict):
            raise TypeError(f"weights must be a dict, got {type(weights).__name__}")
        expected = [name for name, _, _ in param_layout(
            self.input_size, self.hidden_size, self.output_size, self.bias, self.cell,
            self.num_layers)]
        if set(weights) != set(expected):
            raise ValueError(f"weights must have exactly the keys {expected}, "
                             f"got [{', '.join(sorted(map(repr, weights)))}]")
        new = np.empty_like(self._params)
        for name, view in self._views(new).items():
            arr = as_real_array(weights[name], f"weights[{name!r}]", self.dtype)
            check_shape(arr, f"weights[{name!r}]", view.shape)
            view[...] = arr
        self._params[...] = new

    # ------------------------------------------------------------------ input checks
    def _check_x(self, X: Any, name: str = "X") -> np.ndarray:
        arr = as_real_array(X, name, self.dtype)
        if arr.ndim == 2 and self.input_size == 1:
            arr = arr[:, :, None]
        check_shape(arr, name, ("N", "T", self.input_size))
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"{name} must have at least one sequence and one step, "
                             f"got shape {arr.shape}")
        return arr

    def _check_y(self, Y: Any, X: np.ndarray, name: str = "Y") -> np.ndarray:
        arr = as_real_array(Y, name, self.dtype)
        N, T = X.shape[:2]
        O = self.output_size
        if self.return_sequences:
            if arr.ndim == 2 and O == 1 and arr.shape == (N, T):
                arr = arr[:, :, None]
            check_shape(arr, name, (N, T, O))
        else:
            if arr.ndim == 1 and O == 1:
                arr = arr[:, None]
            check_shape(arr, name, (N, O))
        return arr

    def _check_lengths(self, lengths: Any, X: np.ndarray,
                       name: str = "lengths") -> Optional[np.ndarray]:
        """lengths (N,) of integers in [1, T], as the int64 array the backends take."""
        if lengths is None:
            return None
        N, T = X.shape[:2]
        try:
            arr = np.asarray(lengths)
        except ValueError as exc:          # ragged nested lists
            raise ValueError(f"{name} must be an integer array of shape ({N},): {exc}") from None
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an array of integers of shape ({N},) (one length "
                            f"per record), got dtype {arr.dtype}")
        if arr.shape != (N,):
            raise ValueError(f"{name} must have shape ({N},) (one length per record of X), "
                             f"got {arr.shape}")
        bad = np.flatnonzero((arr < 1) | (arr > T))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{name} must hold integers in [1, {T}] (X has T = {T} steps), got "
                             f"{name}[{i}] = {arr[i]}")
        return np.ascontiguousarray(arr, dtype=np.int64)

    def _state_shape(self, N: Any) -> Tuple[Any, ...]:
        return (N, self.hidden_size) if self.num_layers == 1 else (
            self.num_layers, N, self.hidden_size)

    def _check_state_part(self, value: Any, name: str, N: int) -> np.ndarray:
        """One state array as (L, N, H)."""
        arr = as_real_array(value, name, self.dtype)
        L, H = self.num_layers, self.hidden_size
        if L == 1 and arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]                    # PyTorch's (1, N, H) for one layer
        check_shape(arr, name, self._state_shape(N))
        return arr.reshape(L, N, H)

    def _check_h0(self, h0: Any, N: int, name: str = "h0") -> Optional[np.ndarray]:
        """The initial state in the model's form (see the class docstring), as the backends'
        (N, L*S) array; None stays None (zeros)."""
        if h0 is None:
            return None
        shape = "(" + ", ".join(map(str, self._state_shape(N))) + ")"
        if cell_spec(self.cell).state == 2:         # (h, c)
            if not isinstance(h0, (tuple, list)) or len(h0) != 2:
                raise TypeError(f"{name} must be the pair (h0, c0) of an {type(self).__name__}, "
                                f"each of shape {shape}, got {_describe(h0)}")
            parts = [self._check_state_part(h0[0], f"{name}[0]", N),
                     self._check_state_part(h0[1], f"{name}[1]", N)]
        else:
            if isinstance(h0, tuple):
                raise TypeError(f"{name} must be one array of shape {shape} (the pair (h, c) is "
                                f"an LSTM's state), got {_describe(h0)}")
            parts = [self._check_state_part(h0, name, N)]
        stacked = np.concatenate(parts, axis=2)             # (L, N, S): h, then c
        return np.ascontiguousarray(stacked.transpose(1, 0, 2).reshape(N, -1))

    def _state_out(self, flat: np.ndarray) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """The backends' (N, L*S) state in the model's form."""
        N = flat.shape[0]
        L, H = self.num_layers, self.hidden_size
        layers = flat.reshape(N, L, -1).transpose(1, 0, 2)  # (L, N, S)

        def form(part: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(part[0] if L == 1 else part)

        if cell_spec(self.cell).state == 2:
            return form(layers[:, :, :H]), form(layers[:, :, H:])
        return form(layers)

    # ------------------------------------------------------------------ inference
    @reads_model
    def forward(self, X: Any, h0: Any = None, lengths: Any = None
                ) -> Tuple[np.ndarray, Any]:
        """Outputs and final state: ``(outputs, state)``, outputs (N, O) or (N, T, O).

        ``state`` and ``h0`` (the initial state, zeros when None) are batch-first as in
        PyTorch: h (N, H) for one layer, (L, N, H) for several; an LSTM's are pairs (h, c).
        ``lengths`` (N,) integers in [1, T]: record n's steps from lengths[n] on are padding
        (its state stays, its many-to-one output is read at its last valid step, its
        many-to-many outputs there are 0), as if each record ran alone on its own steps.
        """
        X = self._check_x(X)
        h0 = self._check_h0(h0, X.shape[0])
        lengths = self._check_lengths(lengths, X)
        outputs, final_state = self._backend.predict(
            X, h0, self._params, **self._spec(), return_sequences=self.return_sequences,
            **self._cell_args(lengths))
        return outputs, self._state_out(final_state)

    @reads_model
    def predict(self, X: Any, h0: Any = None, lengths: Any = None) -> np.ndarray:
        """The outputs for X: (N, O), or (N, T, O) with ``return_sequences``
        (``h0`` and ``lengths`` as in :meth:`forward`)."""
        outputs: np.ndarray = self.forward(X, h0, lengths)[0]
        return outputs

    @reads_model
    def forecast(self, context: Any, steps: int, h0: Any = None) -> np.ndarray:
        """Autoregressive rollout: predict ``steps`` values past the end of ``context``,
        feeding each prediction back as the next input (so ``input_size == output_size``).

        ``context`` is (N, T, I) (or (N, T) when I == 1), run from ``h0`` (zeros when None, in
        the form of :meth:`forward`). Returns (N, steps, O): ``[:, 0]`` is the output after the
        context's last step (what :meth:`predict` gives for a many-to-one model), ``[:, s]`` the
        output after feeding ``[:, s - 1]`` back in. The whole rollout runs in one backend call,
        and equals, bit for bit, a loop of :meth:`forward` calls carrying the state.
        """
        if self.input_size != self.output_size:
            raise ValueError(
                "forecast feeds each prediction back as the next input, so it needs "
                f"input_size == output_size, got input_size={self.input_size} and "
                f"output_size={self.output_size}")
        steps = check_int(steps, "steps", 1)
        X = self._check_x(context, "context")
        h0 = self._check_h0(h0, X.shape[0])
        # an output no machine could hold is refused here, alike for both backends, rather
        # than by each backend's own conversion or allocation, differently
        nbytes = X.shape[0] * steps * self.output_size * self._params.itemsize
        if nbytes > 2**48:
            raise MemoryError(f"forecast: steps={steps} asks for an output of {X.shape[0]} x "
                              f"{steps} x {self.output_size} values ({nbytes} bytes), more than "
                              "any machine's memory")
        forecasts: np.ndarray = self._backend.forecast(X, h0, self._params, **self._spec(),
                                                       steps=steps, **self._cell_args())
        return forecasts

    @reads_model
    def loss(self, X: Any, Y: Any, h0: Any = None, lengths: Any = None) -> float:
        """Mean squared error over every target element; with ``lengths``, over the valid
        ones (N*O many-to-one, O*sum(lengths) many-to-many: padded steps' targets are
        ignored)."""
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        lengths = self._check_lengths(lengths, X)
        outputs = self.forward(X, h0, lengths)[0]
        if lengths is None or not self.return_sequences:
            return float(np.mean((outputs - Y) ** 2))
        valid = np.arange(X.shape[1])[None, :] < lengths[:, None]       # (N, T)
        return float(np.mean((outputs[valid] - Y[valid]) ** 2))

    def _loss_and_grad(self, X: np.ndarray, Y: np.ndarray, h0: Optional[np.ndarray],
                       bptt_truncate: Optional[int], lengths: Optional[np.ndarray]
                       ) -> Tuple[float, np.ndarray, np.ndarray]:
        cell_args = self._cell_args(lengths)
        outputs, hidden_states, final_state = self._backend.forward(
            X, h0, self._params, **self._spec(), return_sequences=self.return_sequences,
            **cell_args)
        loss, grad = self._backend.backward(X, Y, h0, self._params, hidden_states, outputs,
                                            **self._spec(), bptt_truncate=bptt_truncate,
                                            **cell_args)
        return loss, grad, final_state

    @reads_model
    def gradients(self, X: Any, Y: Any, bptt_truncate: Optional[int] = None,
                  h0: Any = None, lengths: Any = None) -> Dict[str, np.ndarray]:
        """The truncated gradient of the loss, as a dict shaped like :attr:`weights`
        (``h0`` and ``lengths`` as in :meth:`forward`)."""
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        h0 = self._check_h0(h0, X.shape[0])
        lengths = self._check_lengths(lengths, X)
        k = _truncation(bptt_truncate, X.shape[1])
        grad = self._loss_and_grad(X, Y, h0, k, lengths)[1]
        return {name: view.copy() for name, view in self._views(grad).items()}

    # ------------------------------------------------------------------ training
    def _nonfinite(self) -> Optional[str]:
        """What holds NaN or Inf: "the weights", an optimizer state buffer ("the optimizer's
        exp_avg_sq"), or None when everything is finite. Their min and max: no temporary the
        size of the model (NaN propagates through both)."""
        parts = [("the weights", self._params)]
        if self.optimizer is not None:
            parts += [(f"the optimizer's {name}", buf)
                      for name, buf in sorted(self.optimizer.state.items())]
        for name, values in parts:
            if values.size and not (np.isfinite(values.min()) and np.isfinite(values.max())):
                return name
        return None

    def _use_optimizer(self, optimizer: Optional[Optimizer]) -> Optimizer:
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an rnnkit optimizer such as rnnkit.SGD(lr=0.01) "
                            f"or rnnkit.Adam(), got {optimizer!r}")
        opt = optimizer if optimizer is not None else self.optimizer or Adam()
        opt._bind(self._params.size, self._params.dtype, self._token)   # a refusal changes nothing
        self.optimizer = opt
        return opt

    @writes_model
    def train_step(self, X: Any, Y: Any, h0: Any = None, optimizer: Optional[Optimizer] = None,
                   bptt_truncate: Optional[int] = None, clip_norm: Optional[float] = None,
                   clip_value: Optional[float] = None, lengths: Any = None
                   ) -> Tuple[float, Any]:
        """One clipped update on one minibatch, starting from state ``h0`` (zeros when None).

        Returns ``(loss, state)``: the loss before the update and the final state of that
        forward pass (in the form of :meth:`forward`), to carry into the next call (plain
        arrays: no gradient flows back through them, like ``hidden.detach()`` in PyTorch).
        ``lengths`` as in :meth:`forward`.
        """
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        h0 = self._check_h0(h0, X.shape[0])
        lengths = self._check_lengths(lengths, X)
        k = _truncation(bptt_truncate, X.shape[1])
        clip_norm = check_optional_positive(clip_norm, "clip_norm")
        clip_value = check_optional_positive(clip_value, "clip_value")
        opt = self._use_optimizer(optimizer)
        with np.errstate(over="ignore", invalid="ignore"):    # a diverging step is reported
            loss, grad, final_state = self._loss_and_grad(X, Y, h0, k, lengths)
            norm = self._backend.clip(grad, clip_norm, clip_value)
        if not (np.isfinite(loss) and np.isfinite(norm)):
            raise DivergenceError(
                "train_step: the loss or the gradient is NaN or Inf, so the update was not "
                "applied; try clip_norm / clip_value or a smaller learning rate.")
        # Ctrl-C (a second one too) waits for the update and its step count; an overflow of
        # the update itself is reported below
        with InterruptGuard() as guard, guard.critical(), \
                np.errstate(over="ignore", invalid="ignore"):
            opt.apply(self._backend, self._params, grad)
        nonfinite = self._nonfinite()
        if nonfinite:
            raise DivergenceError(
                f"train_step: the update made {nonfinite} NaN or Inf (the step itself "
                "overflowed from a finite gradient, e.g. a learning rate too large for the "
                "dtype). It was applied, so the model is not usable: load a checkpoint or make "
                "a new model.")
        return loss, self._state_out(final_state)

    @writes_model
    def fit(self, X: Any, Y: Any, epochs: int = 1, batch_size: int = 32,
            optimizer: Optional[Optimizer] = None, bptt_truncate: Optional[int] = None,
            clip_norm: Optional[float] = None, clip_value: Optional[float] = None,
            validation_data: Optional[Tuple[Any, ...]] = None, shuffle: bool = True,
            verbose: int = 0, callbacks: Optional[Sequence[CallbackLike]] = None,
            on_nonfinite: str = "raise", lengths: Any = None) -> History:
        """Train for ``epochs`` epochs of minibatch updates; returns the history.

        Each epoch shuffles the records (``shuffle=True``, with the model's generator), then for
        each minibatch of ``batch_size`` records, starting from h0 = 0: forward, loss, truncated
        gradient (``bptt_truncate`` k, None for full BPTT), clip (``clip_norm`` then
        ``clip_value``), update with ``optimizer`` (kept on the model with its state; Adam() the
        first time none is given). The whole epoch runs in one backend call.

        ``lengths`` (N,) integers in [1, T], one per record of X, makes a padded batch (see
        :meth:`forward`); each record keeps its length through the shuffling.
        ``validation_data`` is ``(X_val, Y_val)`` or ``(X_val, Y_val, lengths_val)``.

        ``verbose``: 0 silent; 1 a progress bar over each epoch's minibatches with the running
        loss, then the epoch's loss, val_loss and time (tqdm when installed, else one line per
        epoch); 2 one line per epoch. ``callbacks``: a list of :mod:`rnnkit.callbacks` objects
        (``EarlyStopping``, ``ModelCheckpoint``, ...) or callables ``f(epoch, logs)`` run after
        each epoch (0-based epoch; logs {"loss", "val_loss"}); setting ``model.stop_training``
        (or a callable returning False) ends training after that epoch.

        Returns a :class:`~rnnkit.callbacks.History` whose ``history`` is
        ``{"loss": [...], "val_loss": [...]}``: per epoch, the mean of the minibatch losses
        weighted by batch size, and the loss on ``validation_data`` after the epoch (an empty
        list without validation data). It reads as that dict too (``hist["loss"]``).
        The same History is ``model.history``, kept up to date while training, so it survives
        an error.

        When a minibatch's loss or gradient is NaN or Inf its update is not applied and
        training stops: ``on_nonfinite="raise"`` (default) raises :class:`DivergenceError`
        naming the epoch and batch (with ``.history``); ``"stop"`` warns and returns the
        history. Ctrl-C stops training after the update in progress and raises
        KeyboardInterrupt (with ``.history``). Either way the weights and the optimizer state
        are those after the last completed update. A second Ctrl-C acts at once, except inside a
        minibatch (a hung callback can be interrupted); a custom SIGINT handler is called between
        updates (see docs/reliability.md).
        """
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        lengths = self._check_lengths(lengths, X)
        epochs = check_int(epochs, "epochs", 0)
        batch_size = min(check_int(batch_size, "batch_size", 1), X.shape[0])  # one batch at most
        k = _truncation(bptt_truncate, X.shape[1])
        clip_norm = check_optional_positive(clip_norm, "clip_norm")
        clip_value = check_optional_positive(clip_value, "clip_value")
        if validation_data is not None:
            if (not isinstance(validation_data, (tuple, list)) or
                    len(validation_data) not in (2, 3)):
                raise TypeError("validation_data must be a pair (X_val, Y_val) or a triple "
                                f"(X_val, Y_val, lengths_val), got {_describe(validation_data)}")
            X_val = self._check_x(validation_data[0], "validation_data[0]")
            Y_val = self._check_y(validation_data[1], X_val, "validation_data[1]")
            lengths_val = (self._check_lengths(validation_data[2], X_val, "validation_data[2]")
                           if len(validation_data) == 3 else None)
        check_bool(shuffle, "shuffle")
        check_choice(on_nonfinite, "on_nonfinite", ("raise", "stop"))
        N = X.shape[0]
        batch_sizes = np.diff(np.append(np.arange(0, N, batch_size), N))
        run = TrainingRun(self, callbacks, verbose, epochs, batch_sizes,
                          validation_data is not None)
        opt = self._use_optimizer(optimizer)
        run.train_begin()
        history = run.history
        self.history = history
        try:
            with InterruptGuard() as guard:     # Ctrl-C is honoured between updates (see below)
                for epoch in range(epochs):
                    order = self._rng.permutation(N) if shuffle else np.arange(N)
                    losses_out = np.empty(len(batch_sizes))
                    run.epoch_begin(epoch, losses_out)
                    progress = run.batch_progress()

                    def keep_going(done: int, progress: Any = progress) -> bool:
                        return guard.keep_going(done) and (progress is None or
                                                           progress(done) is not False)

                    # state a callback's change of a hyperparameter needs (SGD's momentum)
                    opt._start_state(self._params.size, self._params.dtype)
                    # a second Ctrl-C, too, waits for the minibatch and the step count
                    with guard.critical():
                        losses, opt.step_count, status, error = self._backend.train_epoch(
                            X, Y, self._params, order, batch_size, **self._spec(),
                            bptt_truncate=k, clip_norm=clip_norm, clip_value=clip_value,
                            **opt.epoch_args(), callback=keep_going, losses_out=losses_out,
                            **self._cell_args(lengths))
                    # once an epoch: an update that overflowed the weights or the state
                    nonfinite = self._nonfinite()
                    if status != "completed" or nonfinite:
                        _stop_training(status if status != "completed" else "overflow", error,
                                       guard, on_nonfinite, epoch + 1, len(losses),
                                       len(batch_sizes), history, nonfinite)
                        break                   # on_nonfinite="stop"
                    logs = {"loss": float(np.dot(losses, batch_sizes) / N)}
                    if validation_data is not None:
                        logs["val_loss"] = self.loss(X_val, Y_val, lengths=lengths_val)
                    stop = run.epoch_end(logs)
                    # Ctrl-C during the validation loss or a callback
                    if guard.stop_requested():
                        _stop_training("stopped", None, guard, on_nonfinite, epoch + 1,
                                       len(batch_sizes), len(batch_sizes), history)
                    if stop:
                        break
        except BaseException as exc:    # whatever stopped fit: a Ctrl-C, a divergence, a
            # callback's or a custom SIGINT handler's error (one with __slots__ takes none)
            with contextlib.suppress(AttributeError):
                exc.history = history   # type: ignore[attr-defined]
            raise
        return run.train_end()

    # ------------------------------------------------------------------ persistence
    @reads_model
    def save(self, path: PathLike) -> None:
        """Write the configuration (cell and num_layers included), weights, optimizer (with
        its state) and the random generator's state to an ``.npz`` file, so that training
        resumes exactly after :func:`rnnkit.load`, which returns the same class. The file is
        written to a temporary name and renamed into place; it gets the permissions a new file
        gets (0666 less the umask), as ``np.savez`` would give it."""
        import json       # here and in _saved_json: only saving and loading need them

        nonfinite = self._nonfinite()
        if nonfinite:
            raise ValueError(f"save: NaN or Inf in {nonfinite} (training diverged), and "
                             f"rnnkit.load refuses such a file: {os.fspath(path)!r} was not "
                             "written")

        arrays: Dict[str, Any] = {
            "format_version": np.array(FORMAT_VERSION),
            "config": np.array(json.dumps(self.get_config())),
            "params": self._params,
            "rng_state": np.array(json.dumps(self._rng.bit_generator.state)),
        }
        if self.optimizer is not None:
            # (SGD's momentum set since the last update: its buffer, zero, as the next fit's)
            self.optimizer._start_state(self._params.size, self._params.dtype)
            arrays["optimizer"] = np.array(json.dumps(
                {"config": self.optimizer.config(), "step_count": self.optimizer.step_count}))
            for name, buf in self.optimizer.state.items():
                arrays[f"optimizer_state.{name}"] = buf
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = _create_temporary(directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_directory(directory)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # ------------------------------------------------------------------ PyTorch interop
    @classmethod
    def _torch_name(cls) -> str:
        """The torch.nn module of this cell: RNN, GRU, LSTM (the cell's name upper-cased)."""
        return cls.cell.upper()

    @reads_model
    def to_torch_state_dict(self) -> Dict[str, Any]:
        """The weights as the ``state_dict`` of a PyTorch module with two children, ``rnn`` a
        ``torch.nn.RNN/GRU/LSTM(input_size, hidden_size, num_layers, bias=bias,
        batch_first=True)`` and ``linear`` a ``torch.nn.Linear(hidden_size, output_size,
        bias=bias)``: keys ``"rnn.weight_ih_l0"``, ``"rnn.weight_hh_l0"``,
        [``"rnn.bias_ih_l0"``, ``"rnn.bias_hh_l0"``,] ... per layer, then ``"linear.weight"``,
        [``"linear.bias"``]; values are new torch tensors (CPU, the model's dtype).

        To load it into two separate modules, strip the prefixes:
        ``rnn.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")})``
        (``k[7:]`` for ``"linear."``). An Elman layer's one bias ``b`` goes to ``bias_ih`` and
        ``bias_hh`` is zero (torch adds the two). The tensors hold the weights whatever the
        activation; torch's modules compute the same function only for activations they have
        (nn.RNN tanh or relu, nn.GRU/nn.LSTM tanh). Needs torch (``pip install
        torch==2.13.0``); :meth:`to_torch` builds the modules too.
        """
        torch = _import_torch()
        w = {name: view.copy() for name, view in self._views().items()}
        two_biases = cell_spec(self.cell).two_biases
        out: Dict[str, Any] = {}
        for layer in range(self.num_layers):
            s = layer_suffix(layer)
            for ours, theirs in _TORCH_NAMES:
                if ours.startswith("b") and not self.bias:
                    continue
                if two_biases or not ours.startswith("b"):
                    value = w[ours + s]
                else:               # Elman: b_ih = b, b_hh = 0
                    value = w["b" + s] if ours == "b_ih" else np.zeros_like(w["b" + s])
                out[f"rnn.{theirs}_l{layer}"] = torch.from_numpy(value)
        out["linear.weight"] = torch.from_numpy(w["V"])
        if self.bias:
            out["linear.bias"] = torch.from_numpy(w["c"])
        return out

    def to_torch(self) -> Tuple[Any, Any]:
        """``(module, linear)``: a new ``torch.nn.RNN/GRU/LSTM(..., batch_first=True)`` and
        ``torch.nn.Linear`` in the model's dtype holding its weights (see
        :meth:`to_torch_state_dict`), computing what this model computes. ValueError for an
        activation torch's module does not have. Needs torch (``pip install torch==2.13.0``).

        An Elman layer's one bias ``b`` is ``bias_ih``; its ``bias_hh`` is zero and frozen
        (``requires_grad=False``), so that training the modules with ``torch.optim`` updates
        the parameters this model has, as this model's training does (a trainable
        ``bias_hh`` would move the sum of the two biases twice as far a step)."""
        torch = _import_torch()
        name = type(self)._torch_name()
        kwargs: Dict[str, Any] = {}
        if name == "RNN" and self.activation in ("tanh", "relu"):
            kwargs["nonlinearity"] = self.activation
        elif self.activation != "tanh":
            raise ValueError(f"torch.nn.{name} has no activation={self.activation!r}; "
                             "to_torch_state_dict() still gives the weights")
        dtype = getattr(torch, self.dtype.name)
        module = getattr(torch.nn, name)(self.input_size, self.hidden_size,
                                         num_layers=self.num_layers, bias=self.bias,
                                         batch_first=True, dtype=dtype, **kwargs)
        linear = torch.nn.Linear(self.hidden_size, self.output_size, bias=self.bias,
                                 dtype=dtype)
        state = self.to_torch_state_dict()
        module.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("rnn.")})
        linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        if self.bias and not cell_spec(self.cell).two_biases:
            for layer in range(self.num_layers):
                getattr(module, f"bias_hh_l{layer}").requires_grad_(False)
        return module, linear

    @classmethod
    def from_torch(cls, module: Any, linear: Any, **kwargs: Any) -> "Recurrent":
        """A model holding the weights of a PyTorch ``module`` (``torch.nn.RNN``, ``GRU`` or
        ``LSTM``, matching the class; ``Recurrent.from_torch`` picks the class from the
        module) followed by ``linear`` (``torch.nn.Linear(hidden_size, output_size)``).

        The sizes, ``num_layers``, ``bias`` and the activation (nn.RNN's ``nonlinearity``,
        tanh for GRU/LSTM) come from the modules; ``kwargs`` gives the other constructor
        arguments (``return_sequences``, ``dtype``, ``seed``, ``backend``); ``dtype``
        defaults to the module's (float32 or float64). An nn.RNN layer's two biases are summed
        into ``b``. ``batch_first`` does not change the weights and is not checked: the model
        is batch-first. Refused, with ValueError: bidirectional modules, LSTM ``proj_size``,
        a module and a linear layer that do not both have biases or both lack them (rnnkit's
        one ``bias`` flag). ``dropout`` > 0 between layers does not exist in rnnkit: it is
        ignored with a warning (the model equals the module in ``eval()`` mode).
        Needs torch (``pip install torch==2.13.0``).
        """
        torch = _import_torch()
        if not cls.cell:                    # Recurrent.from_torch: the class of the module
            target = next((klass for cell, klass in CELL_CLASSES.items()
                           if isinstance(module, getattr(torch.nn, klass._torch_name(), ()))),
                          None)
            if target is None:
                raise TypeError("module must be a torch.nn." +
                                ", torch.nn.".join(k._torch_name() for k in CELL_CLASSES.values())
                                + f", got {type(module).__name__}")
            return target.from_torch(module, linear, **kwargs)
        name = cls._torch_name()
        expected = getattr(torch.nn, name, None)
        if expected is None or not isinstance(module, expected):
            raise TypeError(f"{cls.__name__}.from_torch: module must be a torch.nn.{name}, got "
                            f"{type(module).__name__}")
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"{cls.__name__}.from_torch: linear must be a torch.nn.Linear, got "
                            f"{type(linear).__name__}")
        fixed = sorted(set(kwargs) & set(_FROM_TORCH_FIXED))
        if fixed:
            raise TypeError(f"from_torch takes {', '.join(fixed)} from the torch modules; "
                            "pass only return_sequences, dtype, seed, backend")
        if module.bidirectional:
            raise ValueError(f"module is bidirectional (bidirectional=True): rnnkit's layers "
                             f"run forward in time only")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"module has proj_size={module.proj_size}: rnnkit's LSTM has no "
                             "projection (proj_size=0)")
        if module.dropout:
            warnings.warn(f"module has dropout={module.dropout} between layers, which rnnkit "
                          "does not have: it is ignored (the model equals the module in eval "
                          "mode)", UserWarning, stacklevel=2)
        if linear.in_features != module.hidden_size:
            raise ValueError(f"linear must read the module's hidden_size={module.hidden_size} "
                             f"features, got in_features={linear.in_features}")
        bias = bool(module.bias)
        if bias != (linear.bias is not None):
            raise ValueError(f"rnnkit has one bias flag for the recurrent and the output layer: "
                             f"module has bias={bias} but linear has bias="
                             f"{linear.bias is not None}")
        if "dtype" not in kwargs:
            kwargs["dtype"] = str(module.weight_ih_l0.dtype).replace("torch.", "")
            if kwargs["dtype"] not in DTYPES:
                raise ValueError(f"module's weights are {kwargs['dtype']}; pass dtype='float32' "
                                 "or dtype='float64' to convert them")
        model = cls(input_size=module.input_size, hidden_size=module.hidden_size,
                    output_size=linear.out_features, num_layers=module.num_layers, bias=bias,
                    activation=getattr(module, "nonlinearity", "tanh"), **kwargs)

        def get(tensor: Any) -> np.ndarray:
            arr: np.ndarray = tensor.detach().cpu().numpy().astype(np.float64)
            return arr

        two_biases = cell_spec(cls.cell).two_biases
        weights: Dict[str, np.ndarray] = {}
        for layer in range(module.num_layers):
            s = layer_suffix(layer)
            for ours, theirs in _TORCH_NAMES:
                if ours.startswith("b") and not bias:
                    continue
                value = get(getattr(module, f"{theirs}_l{layer}"))
                if two_biases or not ours.startswith("b"):
                    weights[ours + s] = value
                elif ours == "b_ih":        # Elman: b = b_ih + b_hh
                    weights["b" + s] = value
                else:
                    weights["b" + s] = weights["b" + s] + value
        weights["V"] = get(linear.weight)
        if bias:
            weights["c"] = get(linear.bias)
        model.set_weights(weights)
        return model


class RNN(Recurrent):
    """An Elman recurrent network (DESIGN.md §1): ``h_t = f(U x_t + b + W h_{t-1})``, one bias
    ``b`` per layer; ``torch.nn.RNN``'s equations (whose two biases sum to ``b``). See
    :class:`Recurrent` for the arguments and methods."""

    cell = "rnn"


class GRU(Recurrent):
    """A GRU network, ``torch.nn.GRU``'s equations and gate order (reset, update, new) and its
    two biases ``b_ih``, ``b_hh`` (docs/architecture.md §2). See :class:`Recurrent`."""

    cell = "gru"


class LSTM(Recurrent):
    """An LSTM network, ``torch.nn.LSTM``'s equations and gate order (input, forget, cell,
    output) and its two biases ``b_ih``, ``b_hh``; its state is the pair ``(h, c)``
    (docs/architecture.md §2). See :class:`Recurrent`."""

    cell = "lstm"


def _create_temporary(directory: str) -> Tuple[int, str]:
    """A new file of a random name in ``directory``, opened for writing: (descriptor, path).
    Created with mode 0666, which the umask reduces as for any new file (tempfile.mkstemp's
    0600 would survive the rename: a saved model readable by its owner alone)."""
    import secrets
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = os.path.join(directory, f".rnnkit-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_SAVED_KEYS = {"format_version", "config", "params", "rng_state"}


def _saved_int(files: Dict[str, np.ndarray], key: str) -> int:
    arr = files[key]
    if arr.shape != () or arr.dtype.kind not in "iu":
        raise ValueError(f"{key} must be an integer scalar, got shape {arr.shape} "
                         f"dtype {arr.dtype}")
    return int(arr)


def _saved_json(files: Dict[str, np.ndarray], key: str, kind: type) -> Any:
    import json

    arr = files[key]
    if arr.shape != () or arr.dtype.kind != "U":
        raise ValueError(f"{key} must be a JSON string, got shape {arr.shape} dtype {arr.dtype}")
    value = json.loads(str(arr))
    if not isinstance(value, kind):
        raise ValueError(f"{key} must hold a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _saved_array(files: Dict[str, np.ndarray], key: str, size: int, dtype: np.dtype) -> np.ndarray:
    arr = files[key]
    if arr.shape != (size,) or arr.dtype != dtype:
        raise ValueError(f"{key} must have shape ({size},) and dtype {dtype} to fit the saved "
                         f"configuration, got shape {arr.shape} dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{key} contains NaN or Inf")
    return arr


def _read_npz(path: str) -> Dict[str, np.ndarray]:
    """Every member of an .npz archive, read without unpickling; ValueError for anything that
    is not a readable .npz (a missing file is FileNotFoundError, as for open())."""
    with open(path, "rb") as fh:
        try:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an .npz archive")
            with loaded as f:
                return {name: f[name] for name in f.files}
        except Exception as exc:    # noqa: BLE001 - any failure to parse means a damaged file
            raise ValueError(f"{path!r} is not a readable rnnkit model file "
                             f"({type(exc).__name__}: {exc})") from None


def load(path: PathLike, backend: Optional[str] = None) -> Recurrent:
    """Read a model written by :meth:`Recurrent.save`, as the class that saved it (RNN, GRU,
    LSTM; files written before cells existed hold an RNN). No pickle: only arrays and JSON are
    read, so no code runs from a file. ``backend`` overrides the saved one. A file that is
    truncated, corrupted, of another format version or not an rnnkit model raises
    ValueError."""
    path = os.fspath(path)
    if backend is not None:
        check_choice(backend, "backend", BACKENDS)
    files = _read_npz(path)
    try:
        missing = _SAVED_KEYS - set(files)
        if missing:
            raise ValueError(f"it lacks {sorted(missing)}: not a model written by rnnkit.save")
        version = _saved_int(files, "format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}, this rnnkit reads {FORMAT_VERSION}")
        prefix = "optimizer_state."
        unknown = {k for k in files if k not in _SAVED_KEYS and k != "optimizer" and
                   not k.startswith(prefix)}
        if unknown:
            raise ValueError(f"unexpected members {sorted(unknown)}")
        config = _saved_json(files, "config", dict)
        if backend is not None:
            config["backend"] = backend
        # Check the parameter count against the saved array before allocating anything, so a
        # damaged config cannot ask for a huge buffer.
        sizes = {k: check_int(config.get(k), f"config[{k!r}]", 1)
                 for k in ("input_size", "hidden_size", "output_size")}
        bias = config.get("bias")
        if not isinstance(bias, bool):
            raise ValueError(f"config['bias'] must be true or false, got {bias!r}")
        cell = config.pop("cell", "rnn")            # files from before cells: Elman
        if not isinstance(cell, str) or cell not in CELL_CLASSES:
            raise ValueError(f"config['cell'] must be one of {tuple(CELL_CLASSES)}, "
                             f"got {cell!r}")
        num_layers = check_int(config.get("num_layers", 1), "config['num_layers']", 1)
        size = param_count(sizes["input_size"], sizes["hidden_size"], sizes["output_size"], bias,
                           cell, num_layers)
        params = _saved_array(files, "params", size, check_dtype(config.get("dtype")))
        model = CELL_CLASSES[cell](**config)
        model._params[...] = params
        try:
            model._rng.bit_generator.state = _saved_json(files, "rng_state", dict)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"rng_state: {exc}") from None
        if "optimizer" in files:
            saved = _saved_json(files, "optimizer", dict)
            state = {k[len(prefix):]: _saved_array(files, k, size, model.dtype).copy()
                     for k in files if k.startswith(prefix)}
            opt = optimizer_from_config(saved["config"], saved["step_count"], state)
            expected = set(opt._state_names())
            if not set(state) <= expected or (opt.step_count and set(state) != expected):
                raise ValueError(f"the {opt.name} optimizer after {opt.step_count} steps has "
                                 f"state {sorted(expected)}, the file holds {sorted(state)}")
            opt._bind(size, model.dtype, model._token)
            model.optimizer = opt
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{path!r} is not a valid rnnkit model file: "
                         f"{type(exc).__name__}: {exc}") from None
    return model
