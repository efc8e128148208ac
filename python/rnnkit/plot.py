"""Plots of training and forecasts, with matplotlib (optional: ``pip install "rnnkit[plot]"``).

Each function draws into ``ax`` (a new figure when None) and returns the Axes, and saves the
figure as PNG (or whatever the extension says) when ``path`` is given, as the examples do. A
figure made here is laid out tightly and stays open, like pyplot's own (``plt.close(ax.figure)``
when done with it); a caller's ``ax`` keeps its figure's layout.
matplotlib is imported when a function is called, so ``import rnnkit.plot`` works without it;
calling one without matplotlib raises ImportError saying how to install it.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["history", "forecast"]

PathLike = Union[str, "os.PathLike[str]"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("rnnkit.plot needs matplotlib: pip install matplotlib "
                          f"(or 'rnnkit[plot]'); importing it failed: {exc}") from exc
    return plt


def _axes(ax: Any, figsize: Any) -> Any:
    if ax is not None:
        return ax
    # this figure is ours: laid out tightly when drawn or saved (`layout`: matplotlib >= 3.5)
    return _pyplot().subplots(figsize=figsize, layout="tight")[1]


def _save(ax: Any, path: Optional[PathLike]) -> None:
    if path is not None:
        ax.figure.savefig(os.fspath(path), dpi=100)


def history(hist: Union[Mapping[str, Sequence[float]], Any], ax: Any = None,
            path: Optional[PathLike] = None, log: bool = True, title: str = "loss (MSE)") -> Any:
    """Draw every non-empty curve of a History (or its ``.history`` dict, or any mapping of
    name to per-epoch values) against the epoch number, on a log scale unless ``log=False``."""
    curves = getattr(hist, "history", hist)
    if not isinstance(curves, Mapping):
        raise TypeError("hist must be a History or a dict of per-epoch lists, "
                        f"got {type(hist).__name__}")
    ax = _axes(ax, (6, 4))
    drawn = 0
    for name, values in curves.items():
        values = np.asarray([] if values is None else values, dtype=float).reshape(-1)
        if values.size:
            ax.plot(np.arange(1, values.size + 1), values, label=str(name))
            drawn += 1
    if not drawn:
        raise ValueError(f"hist has no values to plot (keys {sorted(curves)} are all empty)")
    if log:
        ax.set_yscale("log")
    ax.set(title=title, xlabel="epoch")
    ax.legend()
    _save(ax, path)
    return ax


def forecast(context: Any, predicted: Any, truth: Any = None, ax: Any = None,
             path: Optional[PathLike] = None, start: float = 0.0, step: float = 1.0,
             title: str = "forecast") -> Any:
    """Draw one series' context, its forecast and (optionally) the truth after the context.

    ``context`` is (T,) or (T, F); ``predicted`` (S,) or (S, F), e.g. ``model.forecast(...)[0]``;
    ``truth`` like ``predicted`` (a shorter or longer truth is drawn as given). The x axis
    starts at ``start`` and advances by ``step`` per time step; the forecast follows the
    context's last step. Features are drawn as separate lines.
    """
    arrays = {"context": np.asarray(context, dtype=float),
              "predicted": np.asarray(predicted, dtype=float)}
    if truth is not None:
        arrays["truth"] = np.asarray(truth, dtype=float)
    for name, arr in arrays.items():
        if arr.ndim not in (1, 2) or arr.shape[0] == 0:
            raise ValueError(f"{name} must have shape (T,) or (T, F) with T >= 1, got {arr.shape}")
    columns = {name: arr.reshape(arr.shape[0], -1) for name, arr in arrays.items()}  # (T, F)
    ctx, pred, tr = columns["context"], columns["predicted"], columns.get("truth")
    for name in ("predicted", "truth"):
        if name in columns and columns[name].shape[1] != ctx.shape[1]:
            raise ValueError(f"{name} must have {ctx.shape[1]} feature(s) like context (shape "
                             f"{arrays['context'].shape}), got shape {arrays[name].shape}")
    ax = _axes(ax, (10, 4))
    T, S = ctx.shape[0], pred.shape[0]
    x_ctx = start + step * np.arange(T)
    x_pred = start + step * np.arange(T, T + S)
    for f in range(ctx.shape[1]):
        suffix = f" [{f}]" if ctx.shape[1] > 1 else ""
        ax.plot(x_ctx, ctx[:, f], "k-", lw=1, label="context" + suffix)
        if tr is not None:
            ax.plot(start + step * np.arange(T, T + tr.shape[0]), tr[:, f], "g-", lw=1,
                    label="truth" + suffix)
        ax.plot(x_pred, pred[:, f], "r--", lw=1.5, label="forecast" + suffix)
    ax.axvline(x_ctx[-1], color="0.6", lw=0.8)
    ax.set(title=title, xlabel="x")
    ax.legend()
    _save(ax, path)
    return ax
