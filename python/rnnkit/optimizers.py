"""Optimizers with PyTorch's exact update rules. Each holds its hyperparameters and its state
(flat buffers the size of the model's parameter buffer); the math lives in the backends'
``sgd_step`` / ``adam_step``. State persists across ``fit`` calls and is saved with the model."""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, Generic, Optional, Tuple, TypeVar, overload

import numpy as np

from ._checks import check_float, check_int

__all__ = ["Optimizer", "SGD", "Adam", "optimizer_from_config"]

_bind_lock = threading.Lock()


def _new_bind_lock() -> None:
    """A forked child gets a free lock (another thread may have held it at the fork)."""
    global _bind_lock
    _bind_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_bind_lock)

_T = TypeVar("_T")


class _Checked(Generic[_T]):
    """A real hyperparameter checked whenever it is set: in the constructor and after it (a
    learning-rate schedule sets ``opt.lr``), so that a bad value is refused where it is given,
    by both backends alike, rather than in a later fit."""

    def __init__(self, **limits: Any) -> None:
        self.limits = limits

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: Optional[type] = None) -> "_Checked[_T]": ...

    @overload
    def __get__(self, obj: object, objtype: Optional[type] = None) -> _T: ...

    def __get__(self, obj: Optional[object], objtype: Optional[type] = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__} has no {self.name} yet") from None

    def __set__(self, obj: object, value: Any) -> None:
        obj.__dict__[self.name] = check_float(value, self.name, **self.limits)


class _CheckedBetas(_Checked[Tuple[float, float]]):
    """Adam's (beta1, beta2), each in [0, 1), checked whenever set."""

    def __set__(self, obj: object, value: Any) -> None:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {value!r}")
        obj.__dict__[self.name] = tuple(
            check_float(b, f"betas[{i}]", low=0.0, high=1.0, high_open=True)
            for i, b in enumerate(value))


class Optimizer:
    """Base class: the state buffers named by ``_state_names()`` are allocated on first use."""

    name = ""

    def __init__(self) -> None:
        self.state: Dict[str, np.ndarray] = {}
        self.step_count = 0
        self._owner: Optional[object] = None   # the token of the model it belongs to

    def _bind(self, size: int, dtype: np.dtype, owner: Optional[object] = None) -> None:
        """Make this the optimizer of a parameter buffer of ``size`` scalars of ``dtype``:
        allocate zero state, or check that the existing state fits it; and of the model whose
        token is ``owner``, when given. An optimizer belongs to one model (its step count and
        moments are that model's training), so one already bound to another model is refused,
        as is state of another size or dtype; a refusal changes nothing."""
        with _bind_lock:             # two threads binding one optimizer: one of them wins
            if owner is not None and self._owner is not None and self._owner is not owner:
                raise ValueError(
                    f"this optimizer already belongs to another model (its step count and "
                    f"state are that model's training); give each model its own: {self!r}")
            for n, buf in self.state.items():
                if buf.shape != (size,) or buf.dtype != dtype:
                    raise ValueError(
                        f"optimizer holds state for {buf.shape[0]} {buf.dtype} parameters, but "
                        f"the model has {size} {np.dtype(dtype)} parameters; use a new optimizer")
            self._start_state(size, dtype)
            if owner is not None:
                self._owner = owner

    def _start_state(self, size: int, dtype: np.dtype) -> None:
        """Zero state buffers for those the next update uses and the optimizer does not hold
        yet: all of them at first; SGD's momentum buffer when momentum was set since (by a
        callback between epochs, too)."""
        for n in self._state_names():
            self.state.setdefault(n, np.zeros(size, dtype=dtype))

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Unpickling; also of an optimizer pickled by rnnkit 0.1.0 before SGD's state names
        followed its momentum (its pickle holds them as an attribute)."""
        state.pop("_state_names", None)
        self.__dict__.update(state)

    def __getstate__(self) -> Dict[str, Any]:
        """Pickle and copy support: a copy belongs to no model until one binds it (a model's
        own copy is bound to the copied model at once, see Recurrent.__setstate__), and has
        its own state buffers, also from ``copy.copy``: training with the copy cannot move
        the moments of the original's model."""
        state = self.__dict__.copy()
        state["_owner"] = None
        state["state"] = {name: buf.copy() for name, buf in self.state.items()}
        return state

    def _state_names(self) -> Tuple[str, ...]:
        """The state buffers of this optimizer's updates (with its hyperparameters as they are
        now)."""
        raise NotImplementedError

    def config(self) -> Dict[str, Any]:
        raise NotImplementedError

    def epoch_args(self) -> Dict[str, Any]:
        """The optimizer arguments of the backends' ``train_epoch``."""
        raise NotImplementedError

    def apply(self, backend: Any, params: np.ndarray, grad: np.ndarray) -> None:
        """One update of ``params`` in place with the backend's step function."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD(lr, momentum, weight_decay)``.

    ``d = g + weight_decay * p; buf = momentum * buf + d; p -= lr * buf`` (buf = d when
    momentum is 0).
    """

    name = "sgd"
    lr = _Checked[float](low=0.0, low_open=True)
    momentum = _Checked[float](low=0.0)
    weight_decay = _Checked[float](low=0.0)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__()
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay

    def _state_names(self) -> Tuple[str, ...]:
        """The momentum buffer, once momentum is used: also when ``momentum`` is set after the
        optimizer has trained without (the next fit starts the buffer at zero: the first update
        with it is then ``d``, as PyTorch's), and kept when it is set back to 0 (unused then,
        as in PyTorch)."""
        if self.momentum != 0 or "momentum_buffer" in self.state:
            return ("momentum_buffer",)
        return ()

    def config(self) -> Dict[str, Any]:
        return {"name": self.name, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay}

    def epoch_args(self) -> Dict[str, Any]:
        return dict(optimizer="sgd", lr=self.lr, momentum=self.momentum,
                    weight_decay=self.weight_decay, beta1=0.0, beta2=0.0, eps=0.0,
                    momentum_buffer=self.state.get("momentum_buffer"), exp_avg=None,
                    exp_avg_sq=None, step=self.step_count)

    def apply(self, backend: Any, params: np.ndarray, grad: np.ndarray) -> None:
        backend.sgd_step(params, grad, self.state.get("momentum_buffer"), self.lr,
                         self.momentum, self.weight_decay)
        self.step_count += 1


class Adam(Optimizer):
    """Adam with bias correction, as ``torch.optim.Adam(lr, betas, eps, weight_decay)``."""

    name = "adam"
    lr = _Checked[float](low=0.0, low_open=True)
    betas = _CheckedBetas()
    # eps = 0 is allowed, as in PyTorch (and in saved models): a parameter whose gradient has
    # been 0 is then updated by 0 / 0, which fit reports (DivergenceError)
    eps = _Checked[float](low=0.0)
    weight_decay = _Checked[float](low=0.0)

    def __init__(self, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__()
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay

    def _state_names(self) -> Tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def config(self) -> Dict[str, Any]:
        return {"name": self.name, "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def epoch_args(self) -> Dict[str, Any]:
        return dict(optimizer="adam", lr=self.lr, momentum=0.0, weight_decay=self.weight_decay,
                    beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                    momentum_buffer=None, exp_avg=self.state["exp_avg"],
                    exp_avg_sq=self.state["exp_avg_sq"], step=self.step_count)

    def apply(self, backend: Any, params: np.ndarray, grad: np.ndarray) -> None:
        self.step_count += 1
        backend.adam_step(params, grad, self.state["exp_avg"], self.state["exp_avg_sq"],
                          self.step_count, self.lr, self.betas[0], self.betas[1], self.eps,
                          self.weight_decay)


def optimizer_from_config(config: Dict[str, Any], step_count: int,
                          state: Optional[Dict[str, np.ndarray]]) -> Optimizer:
    """Rebuild an optimizer saved by ``RNN.save`` (its config, step count and state)."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    opt: Optimizer
    if name == "sgd":
        opt = SGD(**cfg)
    elif name == "adam":
        cfg["betas"] = tuple(cfg.get("betas", (0.9, 0.999)))
        opt = Adam(**cfg)
    else:
        raise ValueError(f"unknown optimizer {name!r} in saved model; expected 'sgd' or 'adam'")
    opt.step_count = check_int(step_count, "optimizer step count", 0, maximum=2**63 - 1)
    opt.state = dict(state or {})
    return opt
