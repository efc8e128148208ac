"""The user-facing model: :class:`RNN`, an Elman network trained with truncated BPTT."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import reference
from .callbacks import CallbackLike, History, TrainingRun
from ._checks import (as_real_array, check_choice, check_dtype, check_int, check_optional_int,
                      check_optional_positive, check_shape)
from ._faults import DivergenceError, InterruptGuard, ModelLock, reads_model, writes_model
from .layout import param_count, param_layout, param_views
from .optimizers import Adam, Optimizer, optimizer_from_config

__all__ = ["RNN", "load", "set_num_threads", "get_num_threads"]

BACKENDS = ("cpp", "reference")
ACTIVATIONS = reference.ACTIVATIONS
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


def _backend_module(name: str) -> Any:
    check_choice(name, "backend", BACKENDS)
    if name == "reference":
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
    RNNKIT_NUM_THREADS, else every core). Results are bitwise identical whatever the count:
    work is split so that every number is computed on one thread in a fixed order."""
    _backend_module("cpp").set_num_threads(check_int(n, "n", 1))


def get_num_threads() -> int:
    """The number of threads the C++ core uses."""
    return int(_backend_module("cpp").get_num_threads())


def _allocate_params(config: Dict[str, Any]) -> np.ndarray:
    """The flat parameter buffer for a configuration; MemoryError naming the sizes when it
    cannot be allocated."""
    size = param_count(config["input_size"], config["hidden_size"], config["output_size"],
                       config["bias"])
    try:
        return np.empty(size, dtype=config["dtype"])
    except (MemoryError, ValueError):
        raise MemoryError(
            f"input_size={config['input_size']}, hidden_size={config['hidden_size']}, "
            f"output_size={config['output_size']} need {size} {config['dtype']} parameters, "
            "more than can be allocated") from None


def _truncation(bptt_truncate: Any, T: int) -> Optional[int]:
    """bptt_truncate checked, and capped at T (any k >= T - 1 is full BPTT), so a huge k
    reaches neither backend's integer conversion."""
    k = check_optional_int(bptt_truncate, "bptt_truncate", 0)
    return None if k is None else min(k, T)


def _stop_training(status: str, error: Optional[BaseException], guard: InterruptGuard,
                   on_nonfinite: str, epoch: int, batches_done: int, n_batches: int,
                   history: Mapping[str, List[float]]) -> None:
    """Why a backend epoch (1-based ``epoch``) ended early, as the exception fit raises, with
    ``history`` (the completed epochs) attached. Returns only for on_nonfinite="stop"."""
    where = (f"after epoch {epoch}" if batches_done == n_batches else
             f"at epoch {epoch}, batch {batches_done + 1} of {n_batches}")
    if status == "nonfinite":
        message = (f"training diverged {where}: the loss or the gradient became NaN or Inf. "
                   "That minibatch's update was not applied: the weights and the optimizer "
                   "state are those after the last good update, and the history of the "
                   "completed epochs is model.history. Try clip_norm / clip_value or a "
                   "smaller learning rate.")
        if on_nonfinite == "stop":
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return
        raise DivergenceError(message, epoch, batches_done + 1, history)
    if error is None or (guard.requested and isinstance(error, KeyboardInterrupt)):
        where = (f"after epoch {epoch}" if batches_done == n_batches else
                 f"at epoch {epoch} after batch {batches_done} of {n_batches}")
        error = KeyboardInterrupt(
            f"training interrupted {where}: the weights and the optimizer state are those "
            "after the last completed update; the history of the completed epochs is "
            "model.history")
    error.history = history             # type: ignore[attr-defined]
    raise error


class RNN:
    """An Elman recurrent network with a linear output layer (DESIGN.md §1).

    ``a_t = U x_t + W h_{t-1} + b``, ``h_t = f(a_t)``, ``y_t = V h_t + c``; the output is y_T
    (many-to-one) or every y_t (``return_sequences=True``). Data is batch-first:
    X (N, T, input_size), Y (N, output_size) or (N, T, output_size).

    Parameters
    ----------
    input_size, hidden_size, output_size : sizes I, H, O (>= 1).
    activation : "tanh" (default), "sigmoid" or "relu".
    bias : whether b and c exist.
    return_sequences : many-to-many when True.
    dtype : "float32" or "float64"; every computation runs in it.
    seed : seeds ``numpy.random.default_rng``, used for the initial weights (U, W, b, V, c
        ~ Uniform(-1/sqrt(H), 1/sqrt(H)), drawn in that order) and for shuffling.
    backend : "cpp" (the compiled core, default) or "reference" (pure NumPy).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int = 1,
                 activation: str = "tanh", bias: bool = True, return_sequences: bool = False,
                 dtype: str = "float64", seed: Optional[int] = None, backend: str = "cpp"):
        self.input_size = check_int(input_size, "input_size", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        self.output_size = check_int(output_size, "output_size", 1)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        if not isinstance(return_sequences, (bool, np.bool_)):
            raise TypeError(f"return_sequences must be True or False, got {return_sequences!r}")
        self.bias = bool(bias)
        self.return_sequences = bool(return_sequences)
        self.dtype = check_dtype(dtype)
        self.seed = check_optional_int(seed, "seed", 0)
        self.backend = check_choice(backend, "backend", BACKENDS)
        self._backend = _backend_module(backend)
        self._rng = np.random.default_rng(self.seed)
        self.optimizer: Optional[Optimizer] = None
        self.history: Union[History, Dict[str, List[float]]] = {"loss": [], "val_loss": []}
        self._lock = ModelLock()
        self.stop_training = False      # a callback sets it to end fit after the current epoch

        self._params = _allocate_params(self.get_config())
        bound = 1.0 / np.sqrt(self.hidden_size)
        for view in self._views().values():               # U, W, b, V, c: the layout order
            view[...] = self._rng.uniform(-bound, bound, size=view.shape)

    # ------------------------------------------------------------------ configuration
    def _views(self, flat: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        return param_views(self._params if flat is None else flat, self.input_size,
                           self.hidden_size, self.output_size, self.bias)

    def _spec(self) -> Dict[str, Any]:
        return dict(hidden_size=self.hidden_size, output_size=self.output_size, bias=self.bias,
                    activation=self.activation)

    def __getstate__(self) -> Dict[str, Any]:
        """Pickle support (joblib ships models to worker processes this way): everything but
        the backend module, which is looked up again by name when unpickled. Weights,
        optimizer state and the generator's state round-trip exactly."""
        state = self.__dict__.copy()
        del state["_backend"]
        del state["_lock"]              # a fresh, free lock comes with the copy
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._backend = _backend_module(self.backend)
        self._lock = ModelLock()

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, as a JSON-friendly dict."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "output_size": self.output_size, "activation": self.activation,
                "bias": self.bias, "return_sequences": self.return_sequences,
                "dtype": self.dtype.name, "seed": self.seed, "backend": self.backend}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"RNN({args})"

    @property
    def num_parameters(self) -> int:
        return int(self._params.size)

    # ------------------------------------------------------------------ weights
    @property
    def weights(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters: "U" (H, I), "W" (H, H), ["b" (H,),] "V" (O, H), ["c" (O,)]."""
        return self._weights()

    @reads_model
    def _weights(self) -> Dict[str, np.ndarray]:
        return {name: view.copy() for name, view in self._views().items()}

    @writes_model
    def set_weights(self, weights: Dict[str, Any]) -> None:
        """Replace every parameter from a dict with exactly the keys of :attr:`weights`."""
        if not isinstance(weights, dict):
            raise TypeError(f"weights must be a dict, got {type(weights).__name__}")
        expected = [name for name, _, _ in param_layout(self.input_size, self.hidden_size,
                                                        self.output_size, self.bias)]
        if sorted(weights) != sorted(expected):
            raise ValueError(f"weights must have exactly the keys {expected}, "
                             f"got {sorted(weights)}")
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

    def _check_h0(self, h0: Any, N: int) -> Optional[np.ndarray]:
        if h0 is None:
            return None
        arr = as_real_array(h0, "h0", self.dtype)
        check_shape(arr, "h0", (N, self.hidden_size))
        return arr

    # ------------------------------------------------------------------ inference
    @reads_model
    def forward(self, X: Any, h0: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Outputs and final state: ``(outputs, h_T)``, outputs (N, O) or (N, T, O), h_T (N, H).
        ``h0`` (N, H) is the initial state, zeros when None."""
        X = self._check_x(X)
        h0 = self._check_h0(h0, X.shape[0])
        outputs, _, final_state = self._backend.forward(X, h0, self._params, **self._spec(),
                                                        return_sequences=self.return_sequences)
        return outputs, final_state

    @reads_model
    def predict(self, X: Any, h0: Any = None) -> np.ndarray:
        """The outputs for X: (N, O), or (N, T, O) with ``return_sequences``."""
        return self.forward(X, h0)[0]

    def forecast(self, context: Any, steps: int, h0: Any = None) -> np.ndarray:
        """Autoregressive rollout: predict ``steps`` values past the end of ``context``,
        feeding each prediction back as the next input (so ``input_size == output_size``).

        ``context`` is (N, T, I) (or (N, T) when I == 1), run from ``h0`` (zeros when None).
        Returns (N, steps, O): ``[:, 0]`` is the output after the context's last step (what
        :meth:`predict` gives for a many-to-one model), ``[:, s]`` the output after feeding
        ``[:, s - 1]`` back in. The whole rollout runs in one backend call, and equals, bit for
        bit, a loop of :meth:`forward` calls carrying the state.
        """
        if self.input_size != self.output_size:
            raise ValueError(
                "forecast feeds each prediction back as the next input, so it needs "
                f"input_size == output_size, got input_size={self.input_size} and "
                f"output_size={self.output_size}")
        steps = check_int(steps, "steps", 1)
        X = self._check_x(context, "context")
        h0 = self._check_h0(h0, X.shape[0])
        forecasts: np.ndarray = self._backend.forecast(X, h0, self._params, **self._spec(),
                                                       steps=steps)
        return forecasts

    @reads_model
    def loss(self, X: Any, Y: Any, h0: Any = None) -> float:
        """Mean squared error over every target element."""
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        outputs = self.forward(X, h0)[0]
        return float(np.mean((outputs - Y) ** 2))

    def _loss_and_grad(self, X: np.ndarray, Y: np.ndarray, h0: Optional[np.ndarray],
                       bptt_truncate: Optional[int]) -> Tuple[float, np.ndarray, np.ndarray]:
        outputs, hidden_states, final_state = self._backend.forward(
            X, h0, self._params, **self._spec(), return_sequences=self.return_sequences)
        loss, grad = self._backend.backward(X, Y, h0, self._params, hidden_states, outputs,
                                            **self._spec(), bptt_truncate=bptt_truncate)
        return loss, grad, final_state

    @reads_model
    def gradients(self, X: Any, Y: Any, bptt_truncate: Optional[int] = None,
                  h0: Any = None) -> Dict[str, np.ndarray]:
        """The truncated gradient of the loss, as a dict shaped like :attr:`weights`."""
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        h0 = self._check_h0(h0, X.shape[0])
        k = _truncation(bptt_truncate, X.shape[1])
        grad = self._loss_and_grad(X, Y, h0, k)[1]
        return {name: view.copy() for name, view in self._views(grad).items()}

    # ------------------------------------------------------------------ training
    def _use_optimizer(self, optimizer: Optional[Optimizer]) -> Optimizer:
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an rnnkit optimizer such as rnnkit.SGD(lr=0.01) "
                            f"or rnnkit.Adam(), got {optimizer!r}")
        if optimizer is not None:
            self.optimizer = optimizer
        elif self.optimizer is None:
            self.optimizer = Adam()
        self.optimizer._bind(self._params.size, self._params.dtype)
        return self.optimizer

    @writes_model
    def train_step(self, X: Any, Y: Any, h0: Any = None, optimizer: Optional[Optimizer] = None,
                   bptt_truncate: Optional[int] = None, clip_norm: Optional[float] = None,
                   clip_value: Optional[float] = None) -> Tuple[float, np.ndarray]:
        """One clipped update on one minibatch, starting from state ``h0`` (zeros when None).

        Returns ``(loss, h_T)``: the loss before the update and the final state of that forward
        pass, to carry into the next call (the state is a plain array: no gradient flows back
        through it, like ``hidden.detach()`` in PyTorch).
        """
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        h0 = self._check_h0(h0, X.shape[0])
        k = _truncation(bptt_truncate, X.shape[1])
        clip_norm = check_optional_positive(clip_norm, "clip_norm")
        clip_value = check_optional_positive(clip_value, "clip_value")
        opt = self._use_optimizer(optimizer)
        with np.errstate(over="ignore", invalid="ignore"):    # a diverging step is reported
            loss, grad, final_state = self._loss_and_grad(X, Y, h0, k)
            norm = self._backend.clip(grad, clip_norm, clip_value)
        if not (np.isfinite(loss) and np.isfinite(norm)):
            raise DivergenceError(
                "train_step: the loss or the gradient is NaN or Inf, so the update was not "
                "applied; try clip_norm / clip_value or a smaller learning rate.")
        with InterruptGuard():          # Ctrl-C waits for the update (and its step count)
            opt.apply(self._backend, self._params, grad)
        return loss, final_state

    @writes_model
    def fit(self, X: Any, Y: Any, epochs: int = 1, batch_size: int = 32,
            optimizer: Optional[Optimizer] = None, bptt_truncate: Optional[int] = None,
            clip_norm: Optional[float] = None, clip_value: Optional[float] = None,
            validation_data: Optional[Tuple[Any, Any]] = None, shuffle: bool = True,
            verbose: int = 0, callbacks: Optional[Sequence[CallbackLike]] = None,
            on_nonfinite: str = "raise") -> History:
        """Train for ``epochs`` epochs of minibatch updates; returns the history.

        Each epoch shuffles the records (``shuffle=True``, with the model's generator), then for
        each minibatch of ``batch_size`` records, starting from h0 = 0: forward, loss, truncated
        gradient (``bptt_truncate`` k, None for full BPTT), clip (``clip_norm`` then
        ``clip_value``), update with ``optimizer`` (kept on the model with its state; Adam() the
        first time none is given). The whole epoch runs in one backend call.

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
        are those after the last completed update.
        """
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        epochs = check_int(epochs, "epochs", 0)
        batch_size = min(check_int(batch_size, "batch_size", 1), X.shape[0])  # one batch at most
        k = _truncation(bptt_truncate, X.shape[1])
        clip_norm = check_optional_positive(clip_norm, "clip_norm")
        clip_value = check_optional_positive(clip_value, "clip_value")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, Y_val), got "
                                f"{type(validation_data).__name__}")
            X_val = self._check_x(validation_data[0], "validation_data[0]")
            Y_val = self._check_y(validation_data[1], X_val, "validation_data[1]")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        check_choice(on_nonfinite, "on_nonfinite", ("raise", "stop"))
        N = X.shape[0]
        batch_sizes = np.diff(np.append(np.arange(0, N, batch_size), N))
        run = TrainingRun(self, callbacks, verbose, epochs, batch_sizes,
                          validation_data is not None)
        opt = self._use_optimizer(optimizer)
        history = run.history
        self.history = history
        run.train_begin()
        with InterruptGuard() as guard:     # Ctrl-C is honoured between updates (see below)
            for epoch in range(epochs):
                order = self._rng.permutation(N) if shuffle else np.arange(N)
                losses_out = np.empty(len(batch_sizes))
                run.epoch_begin(epoch, losses_out)
                progress = run.batch_progress()

                def keep_going(done: int, progress: Any = progress) -> bool:
                    return guard.keep_going(done) and (progress is None or
                                                       progress(done) is not False)

                losses, opt.step_count, status, error = self._backend.train_epoch(
                    X, Y, self._params, order, batch_size, **self._spec(), bptt_truncate=k,
                    clip_norm=clip_norm, clip_value=clip_value, **opt.epoch_args(),
                    callback=keep_going, losses_out=losses_out)
                if status != "completed":
                    _stop_training(status, error, guard, on_nonfinite, epoch + 1,
                                   len(losses), len(batch_sizes), history)
                    break                   # on_nonfinite="stop"
                logs = {"loss": float(np.dot(losses, batch_sizes) / N)}
                if validation_data is not None:
                    logs["val_loss"] = self.loss(X_val, Y_val)
                stop = run.epoch_end(logs)
                if guard.requested:         # Ctrl-C during the validation loss or a callback
                    _stop_training("stopped", None, guard, on_nonfinite, epoch + 1,
                                   len(batch_sizes), len(batch_sizes), history)
                if stop:
                    break
        return run.train_end()

    # ------------------------------------------------------------------ persistence
    @reads_model
    def save(self, path: PathLike) -> None:
        """Write the configuration, weights, optimizer (with its state) and the random
        generator's state to an ``.npz`` file, so that training resumes exactly after
        :func:`rnnkit.load`. The file is written to a temporary name and renamed into place."""
        arrays: Dict[str, Any] = {
            "format_version": np.array(FORMAT_VERSION),
            "config": np.array(json.dumps(self.get_config())),
            "params": self._params,
            "rng_state": np.array(json.dumps(self._rng.bit_generator.state)),
        }
        if self.optimizer is not None:
            arrays["optimizer"] = np.array(json.dumps(
                {"config": self.optimizer.config(), "step_count": self.optimizer.step_count}))
            for name, buf in self.optimizer.state.items():
                arrays[f"optimizer_state.{name}"] = buf
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".rnnkit-", suffix=".tmp", dir=directory)
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


def load(path: PathLike, backend: Optional[str] = None) -> RNN:
    """Read a model written by :meth:`RNN.save`. No pickle: only arrays and JSON are read, so
    no code runs from a file. ``backend`` overrides the saved one. A file that is truncated,
    corrupted, of another format version or not an rnnkit model raises ValueError."""
    path = os.fspath(path)
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
        size = param_count(sizes["input_size"], sizes["hidden_size"], sizes["output_size"], bias)
        params = _saved_array(files, "params", size, check_dtype(config.get("dtype")))
        model = RNN(**config)
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
            expected = set(opt._state_names)
            if not set(state) <= expected or (opt.step_count and set(state) != expected):
                raise ValueError(f"the {opt.name} optimizer after {opt.step_count} steps has "
                                 f"state {sorted(expected)}, the file holds {sorted(state)}")
            opt._bind(size, model.dtype)
            model.optimizer = opt
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{path!r} is not a valid rnnkit model file: "
                         f"{type(exc).__name__}: {exc}") from None
    return model
