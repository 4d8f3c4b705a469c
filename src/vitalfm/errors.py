"""User-facing errors: one clear message naming the problem and the fix."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class VitalfmError(Exception):
    """A problem the user can fix. ``str()`` gives the problem and the fix on two lines."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}\n  How to fix: {self.fix}"


class ConfigError(VitalfmError):
    """An invalid configuration value."""


class DatabaseError(VitalfmError):
    """The database cannot be reached, refuses us, or lacks what the study needs."""


class DataError(VitalfmError):
    """The data do not support the requested step (empty cohort, a vital with no rows, ...)."""


def exit_on_user_error(func: Callable[..., T]) -> Callable[..., T]:
    """Turn a :class:`VitalfmError` into one message on stderr and exit status 1.

    Script entry points use this so that a user sees the problem and the fix, not a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return func(*args, **kwargs)
        except VitalfmError as err:
            print(f"ERROR: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    return wrapper
