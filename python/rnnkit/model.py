"""The user-facing model: :class:`RNN`, an Elman network trained with truncated BPTT."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import reference
from .callbacks import CallbackLike, History, TrainingRun
from ._checks import (as_real_array, check_choice, check_dtype, check_int, check_optional_int,
                      check_optional_positive, check_shape)
from .layout import param_count, param_layout, param_views
from .optimizers import Adam, Optimizer, optimizer_from_config

__all__ = ["RNN", "load"]

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
        self.stop_training = False      # a callback sets it to end fit after the current epoch

        size = param_count(self.input_size, self.hidden_size, self.output_size, self.bias)
        self._params = np.empty(size, dtype=self.dtype)
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
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._backend = _backend_module(self.backend)

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
        return {name: view.copy() for name, view in self._views().items()}

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
    def forward(self, X: Any, h0: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Outputs and final state: ``(outputs, h_T)``, outputs (N, O) or (N, T, O), h_T (N, H).
        ``h0`` (N, H) is the initial state, zeros when None."""
        X = self._check_x(X)
        h0 = self._check_h0(h0, X.shape[0])
        outputs, _, final_state = self._backend.forward(X, h0, self._params, **self._spec(),
                                                        return_sequences=self.return_sequences)
        return outputs, final_state

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

    def gradients(self, X: Any, Y: Any, bptt_truncate: Optional[int] = None,
                  h0: Any = None) -> Dict[str, np.ndarray]:
        """The truncated gradient of the loss, as a dict shaped like :attr:`weights`."""
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        h0 = self._check_h0(h0, X.shape[0])
        k = check_optional_int(bptt_truncate, "bptt_truncate", 0)
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
        k = check_optional_int(bptt_truncate, "bptt_truncate", 0)
        clip_norm = check_optional_positive(clip_norm, "clip_norm")
        clip_value = check_optional_positive(clip_value, "clip_value")
        opt = self._use_optimizer(optimizer)
        loss, grad, final_state = self._loss_and_grad(X, Y, h0, k)
        self._backend.clip(grad, clip_norm, clip_value)
        opt.apply(self._backend, self._params, grad)
        return loss, final_state

    def fit(self, X: Any, Y: Any, epochs: int = 1, batch_size: int = 32,
            optimizer: Optional[Optimizer] = None, bptt_truncate: Optional[int] = None,
            clip_norm: Optional[float] = None, clip_value: Optional[float] = None,
            validation_data: Optional[Tuple[Any, Any]] = None, shuffle: bool = True,
            verbose: int = 0, callbacks: Optional[Sequence[CallbackLike]] = None) -> History:
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
        """
        X = self._check_x(X)
        Y = self._check_y(Y, X)
        epochs = check_int(epochs, "epochs", 0)
        batch_size = check_int(batch_size, "batch_size", 1)
        k = check_optional_int(bptt_truncate, "bptt_truncate", 0)
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
        N = X.shape[0]
        batch_sizes = np.diff(np.append(np.arange(0, N, batch_size), N))
        run = TrainingRun(self, callbacks, verbose, epochs, batch_sizes,
                          validation_data is not None)
        opt = self._use_optimizer(optimizer)
        run.train_begin()
        for epoch in range(epochs):
            order = self._rng.permutation(N) if shuffle else np.arange(N)
            losses_out = np.empty(len(batch_sizes))
            run.epoch_begin(epoch, losses_out)
            losses, opt.step_count, status, error = self._backend.train_epoch(
                X, Y, self._params, order, batch_size, **self._spec(), bptt_truncate=k,
                clip_norm=clip_norm, clip_value=clip_value, **opt.epoch_args(),
                callback=run.batch_progress(), losses_out=losses_out)
            if status == "nonfinite":
                raise FloatingPointError(
                    f"training diverged at epoch {epoch + 1}, batch {len(losses) + 1}: the loss "
                    "or the gradient became NaN or Inf. The weights are those after the last "
                    "good update; try clip_norm / clip_value or a smaller learning rate.")
            if status == "stopped":
                raise error if error is not None else KeyboardInterrupt()
            logs = {"loss": float(np.dot(losses, batch_sizes) / N)}
            if validation_data is not None:
                logs["val_loss"] = self.loss(X_val, Y_val)
            if run.epoch_end(logs):
                break
        return run.train_end()

    # ------------------------------------------------------------------ persistence
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
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def load(path: PathLike, backend: Optional[str] = None) -> RNN:
    """Read a model written by :meth:`RNN.save` (no pickle: only arrays and JSON are read).
    ``backend`` overrides the saved one."""
    try:
        with open(os.fspath(path), "rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an .npz archive")
            with loaded as f:
                files = {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a readable rnnkit model file: {exc}") from None
    try:
        version = int(files["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}, this rnnkit reads {FORMAT_VERSION}")
        config = json.loads(str(files["config"]))
        if backend is not None:
            config["backend"] = backend
        model = RNN(**config)
        params = files["params"]
        if params.shape != model._params.shape or params.dtype != model._params.dtype:
            raise ValueError(f"params has shape {params.shape} and dtype {params.dtype}, the "
                             f"configuration needs {model._params.shape} {model._params.dtype}")
        model._params[...] = params
        model._rng.bit_generator.state = json.loads(str(files["rng_state"]))
        if "optimizer" in files:
            saved = json.loads(str(files["optimizer"]))
            prefix = "optimizer_state."
            state = {k[len(prefix):]: v.copy() for k, v in files.items() if k.startswith(prefix)}
            model.optimizer = optimizer_from_config(saved["config"], saved["step_count"], state)
            model.optimizer._bind(model._params.size, model._params.dtype)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a valid rnnkit model file: {exc}") from None
    return model
