"""How much each direction counts in the training loss, and a direction schedule (issue 20).

Each direction's loss is its mean over its own target tokens (`SixWayStep`); the step
loss is the sum of `weight[d] * loss[d]` over the directions in the batch, divided by
their number. The weights come from `data.direction_weighting`:

- `uniform`: every direction 1 (the step loss is the plain mean over directions);
- `fixed`: `data.direction_weights` (a direction left out there counts 1);
- `temperature`: `p_d ∝ n_d ** (1 / T)` with `n_d` the number of training rows that train
  direction d (both modalities present, the target not generated), summed over the
  training stores and all ranks, store sampling weights not applied; T = 1 is
  proportional to the data, large T tends to uniform.

`fixed` and `temperature` weights are scaled to mean 1 over the directions that have
data, so the learning rate means the same as with uniform weights.

`data.direction_phases` adds a schedule before the full mixture: entries `STEPS:DIRS`
train only DIRS (a comma list, or `topK`: the K directions with the most rows) for
STEPS optimizer steps each, in order; a direction outside the phase weighs 0 and is
not computed. The phase of a step depends only on the step number, so a run resumed
mid-schedule continues exactly.

`data.stop_patience` (> 0) stops a direction for good once its validation CE has gone that
many validations without a new low: directions over-fit at different times (at `small` on
`mid`, the image targets after step 1000 while the speech targets improve to the end), and a
stopped direction's share of every later update goes to those still learning. Which
directions stopped, and the lows so far, are part of the checkpoint (`DirectionMix.state_dict`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tmt import TmtError
from tmt.store.pipeline import parse_directions

log = logging.getLogger(__name__)

WEIGHTINGS = ("uniform", "temperature", "fixed")


def base_weights(
    weighting: str, directions: Sequence[str], rows: Mapping[str, int], *,
    temperature: float = 1.0, fixed: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Per-direction loss weights (mean 1 over the directions with rows; 0 for those without)."""
    if weighting == "uniform":
        return dict.fromkeys(directions, 1.0)
    if weighting == "temperature":
        if temperature <= 0:
            raise TmtError(f"data.temperature must be > 0, got {temperature}")
        raw = {d: float(rows.get(d, 0)) ** (1.0 / temperature) if rows.get(d, 0) > 0 else 0.0 for d in directions}
    elif weighting == "fixed":
        given = check_fixed(fixed or {})
        raw = {d: given.get(d, 1.0) if rows.get(d, 0) > 0 else 0.0 for d in directions}
    else:
        raise TmtError(f"data.direction_weighting must be one of {', '.join(WEIGHTINGS)}, got '{weighting}'")
    live = [w for d, w in raw.items() if rows.get(d, 0) > 0]
    total = sum(live)
    if total <= 0:
        raise TmtError(
            f"no direction of {','.join(directions)} has training rows with a weight > 0 "
            f"(rows {dict(rows)}, data.direction_weights {dict(fixed or {})})"
        )
    return {d: w * len(live) / total for d, w in raw.items()}


def check_fixed(fixed: Mapping[str, float]) -> dict[str, float]:
    """`data.direction_weights` with short direction names; refuses unknown names and negative weights."""
    out: dict[str, float] = {}
    for name, w in fixed.items():
        (d,) = parse_directions([name])
        if float(w) < 0:
            raise TmtError(f"data.direction_weights: weight of {name} must be >= 0, got {w}")
        out[d] = float(w)
    return out


@dataclass(frozen=True)
class Phase:
    """Optimizer steps `start+1 .. end` train only `directions`."""

    start: int
    end: int
    directions: tuple[str, ...]


def parse_phases(specs: Sequence[str], directions: Sequence[str], rows: Mapping[str, int]) -> list[Phase]:
    """`["STEPS:DIRS", ...]` -> consecutive phases from step 0 (DIRS: `i2t,s2t` or `topK`)."""
    phases: list[Phase] = []
    start = 0
    for spec in specs:
        steps, sep, dirs = str(spec).partition(":")
        try:
            n = int(steps)
        except ValueError:
            n = 0
        if not sep or n < 1 or not dirs:
            raise TmtError(f"data.direction_phases: '{spec}' is not STEPS:DIRS (e.g. 1000:i2t,s2t or 1000:top2)")
        chosen = _phase_directions(dirs.strip(), directions, rows, spec)
        phases.append(Phase(start, start + n, chosen))
        start += n
    return phases


def _phase_directions(dirs: str, directions: Sequence[str], rows: Mapping[str, int], spec: str) -> tuple[str, ...]:
    if dirs.startswith("top"):
        try:
            k = int(dirs[3:])
        except ValueError:
            k = 0
        if k < 1:
            raise TmtError(f"data.direction_phases: '{spec}': topK needs K >= 1")
        ranked = sorted(directions, key=lambda d: -rows.get(d, 0))  # stable: ties keep the canonical order
        return tuple(d for d in directions if d in ranked[:k])
    chosen = parse_directions(dirs)
    extra = [d for d in chosen if d not in directions]
    if extra:
        raise TmtError(
            f"data.direction_phases: '{spec}' names {','.join(extra)}, not among the trained directions "
            f"{','.join(directions)}"
        )
    return tuple(chosen)


@dataclass
class DirectionMix:
    """The weights of every optimizer step: base weights, zeroed outside the current phase
    and for the directions stopped by `observe`."""

    base: dict[str, float]
    phases: list[Phase]
    rows: dict[str, int]
    patience: int = 0
    """Validations without a new low before a direction stops (0: never)."""
    stopped: dict[str, int] = field(default_factory=dict)
    """Direction -> the step after which it trains no more."""
    lows: dict[str, float] = field(default_factory=dict)
    """Direction -> its lowest validation CE so far."""
    waits: dict[str, int] = field(default_factory=dict)
    """Direction -> validations since its last new low."""

    def observe(self, step: int, ce: Mapping[str, float]) -> list[str]:
        """Record the CE per direction of the validation after optimizer step `step`; the
        directions it stops (never one that would leave the next step nothing to train). A
        direction that step did not train (outside the current phase, weight 0, stopped) is
        not judged."""
        if self.patience <= 0:
            return []
        trained = self.weights_at(max(step - 1, 0))
        newly: list[str] = []
        for d, v in ce.items():
            if trained.get(d, 0.0) <= 0:
                continue
            if d not in self.lows or v < self.lows[d]:
                self.lows[d], self.waits[d] = float(v), 0
                continue
            self.waits[d] = self.waits.get(d, 0) + 1
            live = [x for x, w in self.weights_at(step).items() if w > 0]  # what step + 1 would train
            if self.waits[d] >= self.patience and len(live) > 1:
                self.stopped[d] = step
                newly.append(d)
        return newly

    def state_dict(self) -> dict[str, Any]:
        return {"stopped": dict(self.stopped), "lows": dict(self.lows), "waits": dict(self.waits)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stopped = {str(k): int(v) for k, v in state.get("stopped", {}).items()}
        self.lows = {str(k): float(v) for k, v in state.get("lows", {}).items()}
        self.waits = {str(k): int(v) for k, v in state.get("waits", {}).items()}

    def phase_at(self, steps_done: int) -> Phase | None:
        """The phase of optimizer step `steps_done + 1` (None: the full mixture)."""
        for p in self.phases:
            if p.start <= steps_done < p.end:
                return p
        return None

    def weights_at(self, steps_done: int) -> dict[str, float]:
        p = self.phase_at(steps_done)
        return {
            d: (w if (p is None or d in p.directions) and d not in self.stopped else 0.0)
            for d, w in self.base.items()
        }

    def switches_at(self, steps_done: int) -> bool:
        """Whether step `steps_done + 1` starts a phase or the full mixture."""
        return any(steps_done in (p.start, p.end) for p in self.phases)

    def describe(self) -> str:
        parts = [f"{d} {w:.3f} (n={self.rows.get(d, 0)})" for d, w in self.base.items()]
        text = "direction weights: " + " ".join(parts)
        for p in self.phases:
            text += f"; steps {p.start + 1}-{p.end}: only {','.join(p.directions)}"
        if self.patience > 0:
            text += f"; a direction stops after {self.patience} validations without a new low"
        return text


def make_mix(
    weighting: str, directions: Sequence[str], rows: Mapping[str, int], *, temperature: float,
    fixed: Mapping[str, float], phases: Sequence[str], patience: int = 0,
) -> DirectionMix:
    """The run's `DirectionMix` from the data config's fields and the reader's row counts."""
    if patience < 0:
        raise TmtError(f"data.stop_patience must be >= 0 (0: never stop a direction), got {patience}")
    return DirectionMix(
        base=base_weights(weighting, directions, rows, temperature=temperature, fixed=fixed),
        phases=parse_phases(phases, directions, rows), rows={d: int(rows.get(d, 0)) for d in directions},
        patience=patience,
    )
