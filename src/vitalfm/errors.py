"""User-facing errors: one clear message naming the problem and the fix."""

from __future__ import annotations


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
