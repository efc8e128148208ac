"""Turning a series into training windows."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from ._checks import as_real_array, check_int

__all__ = ["sliding_windows"]


def sliding_windows(series: Any, seq_len: int, horizon: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Cut a series into overlapping windows and the value ``horizon`` steps after each.

    ``series`` is (L,) or (L, F). Returns X of shape (M, seq_len, F) and Y of shape (M, F), with
    M = L - seq_len - horizon + 1, ``X[i] = series[i : i + seq_len]`` and
    ``Y[i] = series[i + seq_len + horizon - 1]``. A 1-D series gives F = 1.

    >>> X, Y = sliding_windows(np.sin(np.arange(200.0)), seq_len=50)
    >>> X.shape, Y.shape
    ((150, 50, 1), (150, 1))
    """
    seq_len = check_int(seq_len, "seq_len", 1)
    horizon = check_int(horizon, "horizon", 1)
    try:
        s = np.asarray(series)
    except ValueError:      # ragged nested lists: as_real_array refuses them, naming `series`
        s = series
    float_dtype = isinstance(s, np.ndarray) and s.dtype.kind == "f"
    s = as_real_array(s, "series", s.dtype if float_dtype else np.dtype(np.float64))
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"series must have shape (L,) or (L, F) with F >= 1, got {s.shape}")
    M = s.shape[0] - seq_len - horizon + 1
    if M < 1:
        raise ValueError(f"series of length {s.shape[0]} is too short for seq_len={seq_len} and "
                         f"horizon={horizon}: it needs at least {seq_len + horizon} values")
    starts = np.arange(M)
    try:
        X = s[starts[:, None] + np.arange(seq_len)]      # (M, seq_len, F)
    except MemoryError:
        raise MemoryError(f"series of length {s.shape[0]} with seq_len={seq_len} makes {M} "
                          f"windows of shape ({seq_len}, {s.shape[1]}): more than can be "
                          "allocated") from None
    Y = s[starts + seq_len + horizon - 1]                # (M, F)
    return X, Y
