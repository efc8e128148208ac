"""A scikit-learn estimator around :class:`rnnkit.RNN`, :class:`rnnkit.GRU` and
:class:`rnnkit.LSTM`: :class:`RNNRegressor`.

It follows scikit-learn's conventions, so that Pipeline, GridSearchCV, cross_val_score and
joblib work with it as with any scikit-learn regressor: hyperparameters only in ``__init__``
(validated in ``fit``), the sizes inferred from the data in ``fit``, learned state in
trailing-underscore attributes, and it passes ``sklearn.utils.estimator_checks.check_estimator``.

X is 2-D (n_samples, n_timesteps), one feature per step, as scikit-learn's own tools pass it
(a StandardScaler in front scales each time step), or 3-D (n_samples, n_timesteps,
n_features). y is (n_samples,) or (n_samples, n_outputs): the network reads the whole
sequence and its output after the last step is the prediction (many-to-one).

Needs scikit-learn >= 1.6 (``pip install "rnnkit[sklearn]"``).
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, Optional

import numpy as np

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - only without scikit-learn
    raise ImportError("rnnkit.sklearn needs scikit-learn >= 1.6: pip install 'rnnkit[sklearn]' "
                      f"(importing it failed: {exc})") from exc

from ._checks import (check_bool, check_choice, check_int, check_optional_int,
                      check_optional_positive)
from .callbacks import History
from .cells import ACTIVATIONS
from .model import BACKENDS, CELL_CLASSES
from .optimizers import SGD, Adam, Optimizer

__all__ = ["RNNRegressor"]

#: The recurrent cells when this module was imported: "rnn" (Elman), "gru", "lstm" (the model
#: classes' ``cell``); ``fit`` checks against the registry itself, so a cell added later works.
CELLS = tuple(CELL_CLASSES)
OPTIMIZERS = ("adam", "sgd")


class RNNRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]  # untyped sklearn
    """Many-to-one recurrent regressor (an Elman, GRU or LSTM network trained with truncated
    BPTT).

    Parameters
    ----------
    hidden_size : int, default=32
        Hidden units H.
    cell : {"rnn", "gru", "lstm"}, default="rnn"
        The recurrent cell: "rnn" (Elman, :class:`rnnkit.RNN`), "gru" (:class:`rnnkit.GRU`),
        "lstm" (:class:`rnnkit.LSTM`).
    activation : {"tanh", "sigmoid", "relu"}, default="tanh"
    epochs : int, default=100
        Epochs run by ``fit``; ``partial_fit`` runs one more each call.
    batch_size : int, default=32
    optimizer : {"adam", "sgd"}, default="adam"
    learning_rate : float, default=0.01
    momentum : float, default=0.0
        SGD only.
    weight_decay : float, default=0.0
    bptt_truncate : int or None, default=None
        Truncation k of backpropagation through time (None: full BPTT).
    clip_norm, clip_value : float or None, default=None
        Gradient clipping (global norm, then per element).
    shuffle : bool, default=True
    dtype : {"float64", "float32"}, default="float64"
    backend : {"cpp", "reference"}, default="cpp"
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights and the shuffling; an int gives the same model as
        ``rnnkit.RNN(seed=random_state)``.
    verbose : int, default=0
        Passed to :meth:`rnnkit.Recurrent.fit`.
    num_layers : int, default=1
        Stacked recurrent layers.

    Attributes
    ----------
    model_ : rnnkit.RNN, rnnkit.GRU or rnnkit.LSTM
        The trained network (its optimizer state included).
    history_ : dict
        ``{"loss": [...]}``, one value per epoch run by ``fit`` and ``partial_fit``.
    n_features_in_ : int
        Columns of a 2-D X (time steps), or X.shape[1] of a 3-D X.
    input_size_ : int
        Features per time step (1 for a 2-D X).
    n_outputs_ : int
        Outputs (1 for a 1-D y).
    """

    def __init__(self, hidden_size: int = 32, cell: str = "rnn", activation: str = "tanh",
                 epochs: int = 100, batch_size: int = 32, optimizer: str = "adam",
                 learning_rate: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 bptt_truncate: Optional[int] = None, clip_norm: Optional[float] = None,
                 clip_value: Optional[float] = None, shuffle: bool = True,
                 dtype: str = "float64", backend: str = "cpp", random_state: Any = None,
                 verbose: int = 0, num_layers: int = 1) -> None:
        self.hidden_size = hidden_size
        self.cell = cell
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.bptt_truncate = bptt_truncate
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.shuffle = shuffle
        self.dtype = dtype
        self.backend = backend
        self.random_state = random_state
        self.verbose = verbose
        self.num_layers = num_layers

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True   # (n_samples, n_timesteps, n_features)
        tags.target_tags.multi_output = True   # y (n_samples, n_outputs)
        tags.target_tags.single_output = True
        return tags

    # ------------------------------------------------------------------ helpers
    def _check_cell(self) -> None:
        check_choice(self.cell, "cell", tuple(CELL_CLASSES))

    def _seed(self) -> Optional[int]:
        rs = self.random_state
        if rs is None:
            return None
        if isinstance(rs, numbers.Integral) and not isinstance(rs, (bool, np.bool_)):
            return check_int(rs, "random_state", 0)
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    def _make_optimizer(self) -> Optimizer:
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        if self.optimizer == "adam":
            return Adam(lr=self.learning_rate, weight_decay=self.weight_decay)
        return SGD(lr=self.learning_rate, momentum=self.momentum, weight_decay=self.weight_decay)

    def _fit_args(self) -> Dict[str, Any]:
        """fit's settings, each checked as Recurrent.fit checks it (here, before anything of
        the estimator changes)."""
        return dict(batch_size=check_int(self.batch_size, "batch_size", 1),
                    bptt_truncate=check_optional_int(self.bptt_truncate, "bptt_truncate", 0),
                    clip_norm=check_optional_positive(self.clip_norm, "clip_norm"),
                    clip_value=check_optional_positive(self.clip_value, "clip_value"),
                    shuffle=check_bool(self.shuffle, "shuffle"),
                    verbose=check_int(self.verbose, "verbose", 0))

    def _validate(self, X: Any, y: Any = None, reset: bool = True) -> Any:
        """X as float64 (n, T) or (n, T, F) and y as (n,) or (n, O), checked by scikit-learn
        (n_features_in_ is X.shape[1], the time steps)."""
        if y is None and not reset:
            return validate_data(self, X, reset=False, allow_nd=True, dtype=np.float64)
        return validate_data(self, X, y, reset=reset, allow_nd=True, multi_output=True,
                             y_numeric=True, dtype=np.float64)

    def _sequences(self, X: np.ndarray) -> np.ndarray:
        if X.ndim == 2:
            return X[:, :, None]
        if X.ndim != 3:
            raise ValueError(f"X must have shape (n_samples, n_timesteps) or (n_samples, "
                             f"n_timesteps, n_features), got {X.shape}")
        return X

    def _init_model(self, X3: np.ndarray, y: np.ndarray) -> None:
        self._check_cell()
        check_choice(self.activation, "activation", ACTIVATIONS)
        check_choice(self.backend, "backend", BACKENDS)
        self.input_size_ = int(X3.shape[2])
        self.n_outputs_ = 1 if y.ndim == 1 else int(y.shape[1])
        self._y_1d = y.ndim == 1
        self.model_ = CELL_CLASSES[self.cell](
            input_size=self.input_size_, hidden_size=check_int(self.hidden_size, "hidden_size", 1),
            output_size=self.n_outputs_, activation=self.activation, dtype=self.dtype,
            seed=self._seed(), backend=self.backend,
            num_layers=check_int(self.num_layers, "num_layers", 1))
        self.model_.optimizer = self._make_optimizer()
        self.history_: Dict[str, Any] = {"loss": []}

    def _run(self, X3: np.ndarray, y: np.ndarray, epochs: int, fit_args: Dict[str, Any]) -> None:
        Y = y[:, None] if y.ndim == 1 else y
        hist: History = self.model_.fit(X3, Y, epochs=epochs, **fit_args)
        self.history_["loss"] += hist["loss"]

    def _prepare(self, X: Any, y: Any, first: bool) -> Any:
        """(X3, y, fit arguments) checked, and on a first fit the new network built, all or
        nothing: if anything is refused (data or hyperparameters), the estimator's attributes
        are left as they were (a fitted estimator stays usable), as scikit-learn's own
        estimators validate before they change their fitted state."""
        saved = dict(self.__dict__)
        try:
            fit_args = self._fit_args()
            X, y = self._validate(X, y, reset=first)
            X3 = self._sequences(X)
            if first:
                self._init_model(X3, y)
            elif (1 if y.ndim == 1 else y.shape[1]) != self.n_outputs_ or \
                    (y.ndim == 1) != self._y_1d:
                first_form = "(n_samples,)" if self._y_1d else f"(n_samples, {self.n_outputs_})"
                raise ValueError(f"y must have shape {first_form} as in the first fit (predict "
                                 f"returns that shape), got shape {y.shape}")
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
        return X3, y, fit_args

    # ------------------------------------------------------------------ API
    def fit(self, X: Any, y: Any) -> "RNNRegressor":
        """Build a new network sized from X and y and train it for ``epochs`` epochs."""
        epochs = check_int(self.epochs, "epochs", 1)
        X3, y, fit_args = self._prepare(X, y, first=True)
        self._run(X3, y, epochs, fit_args)
        return self

    def partial_fit(self, X: Any, y: Any) -> "RNNRegressor":
        """One more epoch on (X, y), the optimizer's state carried on; on an unfitted estimator,
        build the network first (as ``fit`` would) and run one epoch."""
        X3, y, fit_args = self._prepare(X, y, first=not hasattr(self, "model_"))
        self._run(X3, y, 1, fit_args)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n_samples,) for a 1-D y at fit, else (n_samples, n_outputs); float64
        (scikit-learn's convention) whatever ``dtype`` the network computes in."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        pred = self.model_.predict(self._sequences(X)).astype(np.float64, copy=False)
        return pred[:, 0] if self._y_1d else pred

