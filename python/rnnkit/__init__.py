"""rnnkit: small, fast, exact recurrent neural networks for sequences.

A C++ core (``rnnkit._core``) and a pure-NumPy reference (:mod:`rnnkit.reference`) implement
the same functions; :class:`RNN` (Elman), :class:`GRU` and :class:`LSTM`, stacks of ``num_layers``
recurrent layers, train on either with truncated BPTT, clipping, SGD or Adam.
"""

from typing import Any as _Any, List as _List

from . import callbacks, data
from ._faults import DivergenceError, ModelInUseError
from .callbacks import EarlyStopping, History, ModelCheckpoint
from .layout import param_count, param_layout, param_views
from .model import (GRU, LSTM, RNN, Recurrent, get_num_threads, load, set_num_threads,
                    set_scratch_cache_limit)
from .optimizers import SGD, Adam, Optimizer

__version__ = "0.1.0"


_LAZY = ("reference", "plot", "sklearn")


def __getattr__(name: str) -> _Any:
    """rnnkit.reference, rnnkit.plot and rnnkit.sklearn, imported when first used: most
    programs run the C++ core only, and plot and sklearn need optional libraries (matplotlib,
    scikit-learn; using them without says how to install them)."""
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> _List[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Recurrent", "RNN", "GRU", "LSTM", "SGD", "Adam", "Optimizer", "load", "History",
           "EarlyStopping", "ModelCheckpoint", "DivergenceError", "ModelInUseError", "callbacks", "data",
           "reference", "param_layout", "param_count", "param_views", "set_num_threads",
           "get_num_threads", "set_scratch_cache_limit", "__version__"]
