"""Training feedback the way Keras users expect it: a :class:`History`, callbacks
(:class:`EarlyStopping`, :class:`ModelCheckpoint`, or any callable ``f(epoch, logs)``) and the
progress display of ``fit(verbose=...)``.

``fit`` (:meth:`rnnkit.Recurrent.fit`) drives one :class:`TrainingRun` through a few hooks (``train_begin``,
``batch_progress``, ``epoch_end``, ``train_end``); everything about callbacks and display lives
here, so that ``fit`` itself stays the training loop.

The C++ epoch loop reports progress through ``train_epoch``'s ``callback(batches_done)``, which
it calls after the first minibatch and then at most every 50 ms (never once per sample); the
running loss is read from the losses buffer the loop fills as it goes.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Union)

import numpy as np

from ._checks import check_bool, check_choice, check_float, check_int

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .model import Recurrent

__all__ = ["History", "Callback", "EarlyStopping", "ModelCheckpoint", "TrainingRun"]

Logs = Dict[str, float]
#: A callback: a :class:`Callback`, or any callable ``f(epoch, logs)`` (return False to stop).
CallbackLike = Union["Callback", Callable[[int, Logs], Any]]


class History(Mapping[str, List[float]]):
    """What ``fit`` returns: ``history`` is a dict of lists, one value per epoch run
    (``"loss"`` and ``"val_loss"``, the latter empty without validation data), ``epoch`` the
    0-based epoch indices, ``params`` the training settings.

    It also reads as that dict (``hist["loss"]``, ``sorted(hist)``, ``hist == {...}``), as the
    plain dict that ``fit`` returned before did.
    """

    def __init__(self, keys: Sequence[str] = ("loss", "val_loss"),
                 params: Optional[Dict[str, Any]] = None) -> None:
        self.history: Dict[str, List[float]] = {k: [] for k in keys}
        self.epoch: List[int] = []
        self.params: Dict[str, Any] = dict(params or {})

    def append(self, epoch: int, logs: Logs) -> None:
        """Record one epoch's logs (every key of ``logs`` gets a list)."""
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key: str) -> List[float]:
        return self.history[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.history)

    def __len__(self) -> int:
        return len(self.history)

    def __repr__(self) -> str:
        return f"History({self.history!r})"


class Callback:
    """Base class of the callbacks: override the hooks you need. ``model`` is the RNN being
    trained (set before ``on_train_begin``); set ``model.stop_training = True`` to stop after
    the current epoch, as in Keras."""

    model: Optional["Recurrent"] = None
    #: the fit's settings, set before ``on_train_begin`` (as Keras' ``params``): "epochs",
    #: "steps" (minibatches an epoch), "samples" and "validation" (whether val_loss is logged)
    params: Dict[str, Any] = {}

    def set_model(self, model: "Recurrent") -> None:
        self.model = model

    def set_params(self, params: Dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        """Called once before the first epoch."""

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        """Called after each epoch (0-based ``epoch``) with ``logs`` {"loss", ["val_loss"]}."""

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        """Called once after the last epoch (also when a callback stopped training)."""

    def _check_fit(self, params: Dict[str, Any]) -> None:
        """Refuse a fit whose settings (``params``) this callback cannot work with: called
        before the fit changes anything (its optimizer, ``model.history``)."""


class _CallableCallback(Callback):
    """Adapts a plain ``f(epoch, logs)``; a return value of False (``np.False_`` too: what a
    NumPy comparison gives) stops training. ``logs`` is the epoch's own dict: a value the
    function adds is recorded in the History, as a Callback's is."""

    def __init__(self, fn: Callable[[int, Logs], Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        result = self.fn(epoch, logs)
        if isinstance(result, (bool, np.bool_)) and not result and self.model is not None:
            self.model.stop_training = True


def _monitor_value(logs: Logs, monitor: str, who: str) -> float:
    if monitor not in logs:
        raise ValueError(f"{who}: monitor={monitor!r} is not in the epoch logs, which have "
                         f"{sorted(logs)}; pass validation_data to fit, or monitor='loss'")
    return float(logs[monitor])


def _check_monitor_available(params: Dict[str, Any], monitor: str, who: str) -> None:
    """Before the first update: monitoring val_loss needs validation data in this fit. (Other
    keys a callback may add to the logs are only known at the end of an epoch.)"""
    if monitor == "val_loss" and not params.get("validation", True):
        raise ValueError(f"{who}: monitor='val_loss' needs validation_data, and this fit has "
                         f"none; pass validation_data to fit, or monitor='loss'")


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs in a row (lower is better: ``mode="min"``; ``"max"`` for scores). As in
    Keras, ``patience=0`` stops at the first epoch that does not improve, like ``patience=1``.

    With ``restore_best_weights=True`` the model ends training with the weights of its best
    epoch (only the weights: the optimizer state and the generator go on from the last epoch,
    as in Keras). ``stopped_epoch`` is the 0-based epoch at which it stopped (None if it did
    not), ``best`` and ``best_epoch`` the best value seen and its epoch.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 restore_best_weights: bool = False, mode: str = "min") -> None:
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a str such as 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.patience = check_int(patience, "patience", 0)
        self.min_delta = abs(check_float(min_delta, "min_delta"))
        self.restore_best_weights = check_bool(restore_best_weights, "restore_best_weights")
        self.mode = check_choice(mode, "mode", ("min", "max"))
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: Optional[int] = None
        self.best_weights: Optional[Dict[str, np.ndarray]] = None
        self.stopped_epoch: Optional[int] = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _check_fit(self, params: Dict[str, Any]) -> None:
        _check_monitor_available(params, self.monitor, "EarlyStopping")

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        value = _monitor_value(logs, self.monitor, "EarlyStopping")
        if self._improved(value) or self.best_epoch is None:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights and self.model is not None:
                self.best_weights = self.model.weights
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1) and self.model is not None:   # as Keras does
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        if self.restore_best_weights and self.best_weights is not None and self.model is not None:
            self.model.set_weights(self.best_weights)

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best_weights={self.restore_best_weights}, "
                f"mode={self.mode!r})")


class ModelCheckpoint(Callback):
    """Save the model with :meth:`RNN.save` (atomic: written to a temporary file, renamed into
    place) after every epoch, or with ``save_best_only=True`` only when ``monitor`` improved.

    ``path`` may hold ``str.format`` fields filled from the epoch (1-based, as Keras names its
    files) and the logs, e.g. ``"ckpt-{epoch:03d}-{val_loss:.4f}.npz"``. ``saved`` lists the
    paths written.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "min") -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a str such as 'val_loss', got {monitor!r}")
        self.save_best_only = check_bool(save_best_only, "save_best_only")
        self.path = os.fspath(path)
        self.monitor = monitor
        self.mode = check_choice(mode, "mode", ("min", "max"))
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: List[str] = []

    def _check_fit(self, params: Dict[str, Any]) -> None:
        if self.save_best_only:
            _check_monitor_available(params, self.monitor, "ModelCheckpoint")

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if self.model is None:
            return
        if self.save_best_only:
            value = _monitor_value(logs, self.monitor, "ModelCheckpoint")
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        try:
            path = self.path.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint path {self.path!r} could not be filled from "
                             f"epoch and the logs {sorted(logs)}: {exc!r}") from None
        self.model.save(path)
        self.saved.append(path)

    def __repr__(self) -> str:
        return (f"ModelCheckpoint({self.path!r}, monitor={self.monitor!r}, "
                f"save_best_only={self.save_best_only}, mode={self.mode!r})")


def _as_callbacks(callbacks: Optional[Sequence[CallbackLike]]) -> List[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks) or not isinstance(
            callbacks, (list, tuple)):
        raise TypeError("callbacks must be a list of rnnkit.callbacks.Callback objects or "
                        f"callables f(epoch, logs), got {type(callbacks).__name__}")
    out: List[Callback] = []
    for i, cb in enumerate(callbacks):
        if isinstance(cb, Callback):
            out.append(cb)
        elif callable(cb):
            out.append(_CallableCallback(cb))
        else:
            raise TypeError(f"callbacks[{i}] must be a Callback or a callable f(epoch, logs), "
                            f"got {type(cb).__name__}")
    return out


def _tqdm() -> Any:
    """tqdm's class when it is installed, else None (a plain line per epoch is printed)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _format_logs(logs: Logs) -> str:
    return " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())


class TrainingRun:
    """One ``fit`` call's feedback: the History, the callbacks and the progress display.

    ``verbose=0`` is silent; ``1`` shows a progress bar over each epoch's minibatches with the
    running loss (tqdm, on stderr) and, without tqdm, prints one line per epoch; ``2`` prints one
    line per epoch (``epoch 3/10 - loss: ... - val_loss: ... - 0.12s``) to stdout.
    """

    def __init__(self, model: "Recurrent", callbacks: Optional[Sequence[CallbackLike]], verbose: int,
                 epochs: int, batch_sizes: np.ndarray, has_validation: bool) -> None:
        self.model = model
        self.callbacks = _as_callbacks(callbacks)
        self.verbose = check_int(verbose, "verbose", 0)
        self.epochs = epochs
        self.batch_sizes = batch_sizes
        self.history = History(params={"epochs": epochs, "steps": len(batch_sizes),
                                       "samples": int(batch_sizes.sum()),
                                       "validation": has_validation})
        for cb in self.callbacks:      # refusals come before fit changes anything
            cb._check_fit(self.history.params)
        self._tqdm = _tqdm() if self.verbose == 1 else None
        self._bar: Any = None
        self._losses: Optional[np.ndarray] = None
        self._epoch = 0
        self._start = 0.0

    # -------------------------------------------------------------- hooks called by fit
    def train_begin(self) -> None:
        self.model.stop_training = False
        for cb in self.callbacks:
            cb.set_model(self.model)
            cb.set_params(self.history.params)
            cb.on_train_begin()

    def epoch_begin(self, epoch: int, losses: np.ndarray) -> None:
        """``losses`` is the buffer that the epoch loop fills, read for the running loss."""
        self._epoch, self._losses, self._start = epoch, losses, time.perf_counter()
        if self._tqdm is not None:
            self._bar = self._tqdm(total=len(self.batch_sizes), unit="batch", leave=True,
                                   desc=f"epoch {epoch + 1}/{self.epochs}", file=sys.stderr,
                                   dynamic_ncols=True)

    def running_loss(self, batches_done: int) -> float:
        """The mean loss of the epoch's first ``batches_done`` minibatches, by batch size."""
        assert self._losses is not None
        w = self.batch_sizes[:batches_done]
        return float(np.dot(self._losses[:batches_done], w) / w.sum())

    def batch_progress(self) -> Optional[Callable[[int], None]]:
        """The ``callback`` for the backend's ``train_epoch`` (None when nothing is shown)."""
        if self._bar is None:
            return None

        def progress(batches_done: int) -> None:
            self._bar.update(batches_done - self._bar.n)
            self._bar.set_postfix_str(f"loss: {self.running_loss(batches_done):.4g}",
                                      refresh=False)
        return progress

    def epoch_end(self, logs: Logs) -> bool:
        """Run the callbacks, then record the epoch and show it, with whatever values the
        callbacks added to ``logs`` (as Keras, whose History comes last); True when training
        should stop. A callback that raises still leaves the epoch recorded."""
        elapsed = time.perf_counter() - self._start
        try:
            for cb in self.callbacks:
                cb.on_epoch_end(self._epoch, logs)
        finally:
            self.history.append(self._epoch, logs)
            if self._bar is not None:
                self._bar.update(len(self.batch_sizes) - self._bar.n)
                self._bar.set_postfix_str(f"{_format_logs(logs)} - {elapsed:.2f}s",
                                          refresh=True)
                self._bar.close()
                self._bar = None
            elif self.verbose:
                print(f"epoch {self._epoch + 1}/{self.epochs} - {_format_logs(logs)} - "
                      f"{elapsed:.2f}s", flush=True)
        return bool(self.model.stop_training)

    def train_end(self) -> History:
        """Close the display, run the callbacks' ``on_train_end``; returns the History."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for cb in self.callbacks:
            cb.on_train_end()
        return self.history
