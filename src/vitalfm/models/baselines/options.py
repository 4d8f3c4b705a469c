"""Checks of the baselines' ``models.<name>.options``: each error names the option and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vitalfm.models.base import ModelError


def option_error(family: str, name: str, value: Any, expected: str) -> ModelError:
    return ModelError(
        f"{family} option {name} = {value!r} is invalid",
        f"set models.<name>.options.{name} to {expected}",
    )


def positive_int(family: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise option_error(family, name, value, "a positive integer")
    return value


def positive_int_list(family: str, name: str, value: Any, length: int) -> list[int]:
    """A list of ``length`` positive integers (one per stack)."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != length
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise option_error(family, name, value, f"a list of {length} positive integers")
    return list(value)


def fraction(family: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise option_error(family, name, value, "a number in [0, 1)")
    return float(value)


def choice(family: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise option_error(family, name, value, "one of " + ", ".join(allowed))
    return str(value)
