"""tmt: discrete-token multimodal translation between speech, images and text."""

from __future__ import annotations

__version__ = "0.1.0"

MODALITIES: tuple[str, ...] = ("text", "speech", "image")
"""The three modalities, in the fixed order of the joint vocabulary."""


class TmtError(Exception):
    """An error caused by bad input or state that the user can fix.

    The CLI prints its message (no traceback) and exits with status 1 or 2.
    """

    exit_code = 1
