"""The one error class users see; every tmt error derives from it."""

from __future__ import annotations


class TmtError(Exception):
    """An error caused by bad input or state that the user can fix.

    The CLI prints its message (no traceback) and exits with status 1 or 2.
    """

    exit_code = 1
