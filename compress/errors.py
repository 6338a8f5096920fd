"""Errors a user can cause: reported as one line and exit status 2 by the CLI, never a traceback.

``CompressError`` is the base; each kind says what kind of thing to fix. Library messages name
parameters (``max_samples``), never CLI flags; the CLI turns parameter names into flags.
"""

from __future__ import annotations


class CompressError(Exception):
    """Something the user can fix: the message names the problem and what would fix it."""

    exit_code = 2


class InputError(CompressError):
    """A model, data set, file or argument that cannot be used as given."""


class ConfigError(CompressError):
    """A recipe, plan spec or stage setting with invalid values (every problem listed at once)."""


class BudgetError(CompressError):
    """No allocation meets the budgets. ``constraint`` names the tightest budget and ``reachable``
    the least value of it that can be met with the others kept (both None when no single budget
    is to blame)."""

    def __init__(self, message: str, constraint: str | None = None, reachable: float | None = None):
        super().__init__(message)
        self.constraint = constraint
        self.reachable = reachable


class MissingDependencyError(CompressError):
    """An optional dependency is not installed; ``extra`` is the pip extra that provides it."""

    def __init__(self, what: str, extra: str, reason: str = ""):
        detail = f" ({reason})" if reason else ""
        super().__init__(f"{what} needs the optional dependencies of the '{extra}' extra{detail}: "
                         f"pip install 'compress[{extra}]'")
        self.extra = extra
