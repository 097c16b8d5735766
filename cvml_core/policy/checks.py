"""Argument checks shared by the core and the callbacks: each returns the value as a
plain Python type or raises ``ValueError("<name> must be ... Received: <name>=<value>")``."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any


def _received(name: str, value: Any) -> str:
    return f"Received: {name}={value!r}"


def is_integer(value: Any) -> bool:
    """An int or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_folder(name: str, value: Any) -> str:
    """A folder path (str or ``os.PathLike``), not empty; returned as str."""
    if isinstance(value, (str, os.PathLike)) and str(value):
        return str(value)
    raise ValueError(f"{name} must be a folder path. {_received(name, value)}")


def check_bool(name: str, value: Any) -> bool:
    """True or False (numpy's bool too)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ValueError(
        f"{name} must be True or False. {_received(name, value)} of type "
        f"{type(value).__name__}"
    )


def check_int(name: str, value: Any, minimum: int, meaning: str = "") -> int:
    """An integer >= ``minimum``; ``meaning`` (e.g. "0: never") is shown in the error."""
    if is_integer(value) and value >= minimum:
        return int(value)
    note = f" ({meaning})" if meaning else ""
    raise ValueError(f"{name} must be an integer >= {minimum}{note}. {_received(name, value)}")


def check_number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    none_ok: bool = False,
) -> Any:
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``), as a
    float; with ``none_ok``, None too."""
    if value is None and none_ok:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and number <= high and (
            number > low if low_open else number >= low
        ):
            return number
    if math.isinf(low) and math.isinf(high):
        allowed = "a finite number"
    elif math.isinf(high):
        allowed = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
    if none_ok:
        allowed = f"None or {allowed}"
    raise ValueError(f"{name} must be {allowed}. {_received(name, value)}")
