"""The checks every public setting goes through (thresholds, counts, sizes): one wording, one
`FacemaskError`, and no silent acceptance of `True` as 1 or of a string that happens to compare."""

from __future__ import annotations

import numbers

import numpy as np

from facemask_sdk.errors import FacemaskError


def in_range(name: str, value: object, low: float, high: float) -> float:
    """`value` as a float in [low, high], or `FacemaskError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= float(value) <= high:
        raise FacemaskError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def unit_interval(name: str, value: object) -> float:
    """A threshold or a share: a number in [0, 1]."""
    return in_range(name, value, 0.0, 1.0)


def positive(name: str, value: object) -> float:
    """A duration or a scale: a number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise FacemaskError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def whole_number(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """A count, a size or a port: an integer >= `minimum` (and <= `maximum` where given)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise FacemaskError(f"{name} must be a whole number {bounds}, got {value!r}")
    return int(value)


def true_or_false(name: str, value: object) -> bool:
    """A switch: True or False (NumPy's bool too), never a truthy 1 or "yes"."""
    if not isinstance(value, (bool, np.bool_)):
        raise FacemaskError(f"{name} must be True or False, got {value!r}")
    return bool(value)
