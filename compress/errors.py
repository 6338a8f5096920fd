"""Errors a user can cause: reported as one line and exit status 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message names the problem and what would fix it."""

    exit_code = 2
