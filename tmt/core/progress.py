"""When a progress bar shows: one rule for every tqdm bar in tmt.

A bar is drawn on stderr when the caller wants one and stderr is a terminal, or when
`TMT_PROGRESS=1` forces it (logs and CI). Results never go to stderr, so a bar never mixes
with them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

ENV_VAR = "TMT_PROGRESS"
"""Set to 1 to draw bars even when stderr is not a terminal."""


def progress_enabled(requested: bool | None = None) -> bool:
    """Whether a bar shows: True or False when the caller decided, else (None) stderr is a tty or
    TMT_PROGRESS=1."""
    if requested is not None:
        return requested
    return bool(sys.stderr.isatty()) or os.environ.get(ENV_VAR) == "1"


def progress_bar(*, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool | None = None,
                 **kwargs: Any) -> Any:
    """A tqdm bar on stderr that obeys `progress_enabled` (a silent one when it is off)."""
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not progress_enabled(enabled), **kwargs)


def progress(it: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Iterate `it` with a progress bar (see `progress_enabled`)."""
    from tqdm import tqdm

    yield from tqdm(it, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not progress_enabled(),
                    dynamic_ncols=True)


__all__ = ["ENV_VAR", "progress", "progress_bar", "progress_enabled"]
