"""Strict number checks at the safety filter's boundary: exactly ``n`` finite reals, or why not.

The filter's validation stage (:meth:`simbridge.deploy.safety.SafetyFilter.filter`) and the
:class:`~simbridge.deploy.safety_limits.SafetyLimits` checks both go through here, so "is this a
usable vector of numbers" has one answer: no strings, bools, complex numbers, masked or object
arrays, wrong shapes or values beyond float range. Plain numpy; never raises.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

_KIND_NAMES = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "strings", "S": "bytes"}


def real_vector(value: Any, n: int, what: str, names: str = "") -> np.ndarray | str:
    """A float64 copy of ``value`` if it is exactly ``n`` finite real numbers, else why it is not.

    Strict on purpose: a (7, 1) array, a numeric string, a bool or a masked entry is a bug upstream
    that must stop the arm, not something to reshape, parse or guess a value for.
    """
    if type(value) is np.ndarray and value.shape == (n,) and value.dtype.kind in "fiu":  # the usual case
        with np.errstate(over="ignore"):  # float128 beyond float64 range -> inf, refused below
            arr = value.astype(np.float64)
        if not np.isfinite(arr).all():
            return f"{what} has non-finite values at indices {np.flatnonzero(~np.isfinite(arr)).tolist()}"
        return arr
    if isinstance(value, np.ma.MaskedArray):
        return f"{what} is a masked array: pass plain numbers (a masked entry has no value to execute)"
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            return f"{what} must have {n} values {names}, got {len(value)}".replace("  ", " ")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in value):
            return f"{what} is not numeric: every entry must be a real number, got {value!r:.120}"
        try:
            arr = np.array(value, dtype=np.float64)
        except (OverflowError, TypeError, ValueError) as exc:  # e.g. an int beyond float range
            return f"{what} is not numeric: {type(exc).__name__}: {exc}"
    elif isinstance(value, np.ndarray) or (
        hasattr(value, "__array__") and not isinstance(value, (str, bytes))
    ):
        try:
            arr = np.asarray(value)
        except Exception as exc:  # a foreign array type that cannot export itself
            return f"{what} is not numeric: {type(exc).__name__}: {exc}"
        if arr.dtype.kind not in "fiu":
            return f"{what} is not numeric: an array of {_KIND_NAMES.get(arr.dtype.kind, arr.dtype.name)}"
        if arr.shape != (n,):
            return f"{what} must have {n} values {names}, got shape {arr.shape}".replace("  ", " ")
        with np.errstate(over="ignore"):  # float128 beyond float64 range -> inf, refused below
            arr = arr.astype(np.float64)
    else:
        return f"{what} is not numeric: {type(value).__name__} {value!r:.80}"
    if not np.all(np.isfinite(arr)):
        return f"{what} has non-finite values at indices {np.flatnonzero(~np.isfinite(arr)).tolist()}"
    return arr


def real_scalar(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool or a string), else None."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "fiu":
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return None
