"""Checks for user-supplied values: each returns the value in canonical form or raises InvalidParameterError
with one sentence naming the parameter, what it must be and what it got. Used by the attacks' parameter
spec, the report, the defences, the leaderboard and the commands alike."""

from __future__ import annotations

import math
from typing import Any

from core.errors import InvalidParameterError

SEED_MAX = (
    2**31 - 1
)  # the largest seed: every generator here takes it, and a browser's number widget shows it exactly


def check_float(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, strict_low: bool = False
) -> float:
    """A finite real number in [low, high] (or (low, high] with strict_low); InvalidParameterError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidParameterError(f"{name} must be finite, got {value}.")
    if low is not None and (value < low or (strict_low and value == low)):
        bound = ">" if strict_low else ">="
        raise InvalidParameterError(f"{name} must be {bound} {low}, got {value}.")
    if high is not None and value > high:
        raise InvalidParameterError(f"{name} must be <= {high}, got {value}.")
    return value


def check_int(name: str, value: Any, *, low: int = 0, high: int | None = None) -> int:
    """An integer in [low, high]; InvalidParameterError otherwise (floats like 3.0 are accepted)."""
    if isinstance(value, bool):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}.")
    if value < low or (high is not None and value > high):
        upper = f" and <= {high}" if high is not None else ""
        raise InvalidParameterError(f"{name} must be >= {low}{upper}, got {value}.")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidParameterError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
    return value
