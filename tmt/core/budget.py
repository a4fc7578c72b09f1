"""One wall-clock training budget for every training loop (translator, VQ-VAE, vocoder).

`max_minutes` has one spelling (`--set train.max_minutes=N`) and one meaning everywhere:
`None` = no time limit; a number > 0 = stop (saving first) once that many minutes of training are
spent; 0 is the deprecated spelling of None; a negative number is refused. The budget spans
resumed runs: the seconds trained before the checkpoint count, so a run killed after 40 of 75
minutes trains 35 more when resumed. Loops store `spent()` in their checkpoint and pass it back as `prior_seconds`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tmt.core.errors import TmtError

log = logging.getLogger(__name__)

MAX_MINUTES_KEY = "train.max_minutes"
"""The one spelling of the budget in every training loop's config (`--set train.max_minutes=N`)."""


def check_max_minutes(value: float | None, name: str = MAX_MINUTES_KEY) -> float | None:
    """`value` as the one meaning of a time budget: None or > 0. The old spelling 0 (= no limit)
    is accepted with a warning and returned as None; a negative value is refused."""
    if value is None:
        return None
    if value == 0:
        log.warning("%s=0 for 'no time limit' is deprecated; leave %s unset (null) instead", name, name)
        return None
    if value < 0:
        raise TmtError(f"{name} must be > 0 (minutes) or unset for no limit, got {value}")
    return float(value)


class TimeBudget:
    """Seconds of training spent (including `prior_seconds` from before a resume) against an
    optional limit of `max_minutes`."""

    def __init__(
        self, max_minutes: float | None, prior_seconds: float = 0.0, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.max_minutes = max_minutes
        self.prior_seconds = float(prior_seconds)
        self._clock = clock
        self._start = self._now() - self.prior_seconds

    def _now(self) -> float:
        # time.monotonic looked up on each call (tests replace it with a fake clock)
        return self._clock() if self._clock is not None else time.monotonic()

    @property
    def limit_seconds(self) -> float | None:
        """The budget in seconds, or None without a limit."""
        return None if self.max_minutes is None else self.max_minutes * 60

    def spent(self) -> float:
        """Seconds trained so far, resumed runs included (what a checkpoint stores)."""
        return self._now() - self._start

    def fraction(self) -> float:
        """Share of the budget spent, capped at 1.0 (0.0 without a limit)."""
        limit = self.limit_seconds
        if limit is None:
            return 0.0
        return min(1.0, self.spent() / limit)

    def exhausted(self) -> bool:
        """True once the budget is spent (never without a limit)."""
        limit = self.limit_seconds
        return limit is not None and self.spent() >= limit

    def spent_before_start(self) -> bool:
        """True if a resumed run's earlier seconds already use the whole budget (train no further)."""
        limit = self.limit_seconds
        return limit is not None and self.prior_seconds >= limit
