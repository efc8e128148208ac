"""Argument checks shared by the public API: every error names the argument, what was
expected and what was given."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence, Tuple

import numpy as np

DTYPES = ("float32", "float64")


def check_int(value: Any, name: str, minimum: int, maximum: Optional[int] = None) -> int:
    """An integer (not a bool) >= minimum (and <= maximum, when given)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} "
                        f"({type(value).__name__})")
    n = int(value)
    if n < minimum or (maximum is not None and n > maximum):
        expected = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {expected}, got {value}")
    return n


def check_optional_int(value: Any, name: str, minimum: int) -> Optional[int]:
    return None if value is None else check_int(value, name, minimum)


def check_float(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the interval given by low/high (closed unless *_open)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    lo_ok = v > low if low_open else v >= low
    hi_ok = v < high if high_open else v <= high
    if not (math.isfinite(v) and lo_ok and hi_ok):
        # an infinite bound is never included: the number must be finite
        interval = (("(" if low_open or math.isinf(low) else "[") + f"{low:g}, {high:g}" +
                    (")" if high_open or math.isinf(high) else "]"))
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return v


def check_optional_positive(value: Any, name: str) -> Optional[float]:
    return None if value is None else check_float(value, name, low=0.0, low_open=True)


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is True or False (a NumPy bool too), else TypeError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_dtype(value: Any) -> np.dtype:
    dt: Optional[np.dtype[Any]]
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return dt


def as_real_array(value: Any, name: str, dtype: np.dtype) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype``; integer and other float arrays (and
    nested lists) are converted, bool/complex/string/object ones are refused, NaN/Inf too."""
    if value is None:
        raise TypeError(f"{name} must be an array of real numbers, got None")
    try:
        arr = np.asarray(value)
    except ValueError as exc:          # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of real numbers: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers (float or int), "
                        f"got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise TypeError(f"{name} must be an array, got a 0-d array (a scalar): {value!r}")
    if arr.dtype == dtype and arr.flags.c_contiguous:   # as it is: one pass, no copy
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or Inf")
        return arr
    try:
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or Inf")
        with np.errstate(over="ignore"):              # reported below, by name
            converted = np.ascontiguousarray(arr, dtype=dtype)
        finite = np.all(np.isfinite(converted))
    except MemoryError:
        raise MemoryError(f"{name}: cannot allocate a C-contiguous {np.dtype(dtype)} copy of "
                          f"shape {arr.shape}") from None
    arr = converted
    if not finite:
        raise ValueError(f"{name} has values beyond the range of {np.dtype(dtype)} "
                         f"(largest {np.finfo(dtype).max:g})")
    return arr


def check_shape(arr: np.ndarray, name: str, expected: Tuple[Any, ...]) -> None:
    """``expected`` holds ints or names for free sizes, e.g. ("N", 50, 1)."""
    ok = arr.ndim == len(expected) and all(
        not isinstance(e, int) or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        shown = "(" + ", ".join(str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {shown}, got {arr.shape}")
