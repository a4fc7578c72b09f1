"""Validation curves of a unified model against single-direction models at equal compute
(`tmt score curves`; the scenes recipe's stage 11 writes them beside the score table).

The scenes recipe gives each single-direction baseline a step budget such that the six together
spend the unified run's compute (steps x positions), so a single model's step s stands for the
unified model's step r*s, r = unified steps per single step. Read side by side at those points,
the per-direction validation cross-entropies say whether a direction the unified model loses
is behind all along (its share of the shared updates is too small) or only at the end
(over-fitting, a checkpoint choice), which the decoded scores alone cannot.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from tmt.core.errors import TmtError
from tmt.core.io import pyplot, save_figure
from tmt.core.modality import parse_direction
from tmt.training.metrics import read_metrics

Curve = list[tuple[int, float]]
"""(step, validation cross-entropy) in step order."""


def valid_curves(exp_dir: str | Path) -> dict[str, Curve]:
    """Each direction's validation CE over the steps of `exp_dir/metrics.jsonl`, keyed `i2t` etc."""
    path = Path(exp_dir) / "metrics.jsonl"
    records = [r for r in read_metrics(path) if r.get("split") == "valid"]
    if not records:
        raise TmtError(f"{path}: no validation records; train with validation stores (tmt train --valid-store ...)")
    out: dict[str, Curve] = {}
    for r in records:
        for k, v in r.items():
            if k.startswith("ce/") and isinstance(v, int | float):
                out.setdefault(parse_direction(k[3:]).short, []).append((int(r["step"]), float(v)))
    return {d: sorted(pts) for d, pts in out.items()}


def single_curve(exp_dir: str | Path) -> tuple[str, Curve]:
    """The one direction a single-direction experiment trained, and its curve."""
    curves = valid_curves(exp_dir)
    if len(curves) != 1:
        raise TmtError(f"{exp_dir}: expected a single-direction experiment, found directions {', '.join(curves)}")
    return next(iter(curves.items()))


@dataclass
class CurveRow:
    """One direction of the comparison."""

    direction: str
    """Short name, e.g. `t2s`."""
    unified_best: tuple[int, float]
    """The unified model's lowest validation CE: (step, ce)."""
    single_best: tuple[int, float]
    """The single model's lowest validation CE: (step, ce)."""
    pairs: list[tuple[int, int, float, float]] = field(default_factory=list)
    """Equal-compute points: (single step, unified step, single ce, unified ce)."""

    @property
    def lower(self) -> str:
        """`unified`, `single` or `equal` (best CE, at the table's three decimals)."""
        u, s = round(self.unified_best[1], 3), round(self.single_best[1], 3)
        return "equal" if u == s else "unified" if u < s else "single"

    @property
    def unified_lower_points(self) -> int:
        """How many equal-compute points have the unified model lower."""
        return sum(u < s for _, _, s, u in self.pairs)


def compare_curves(unified: dict[str, Curve], singles: dict[str, Curve], ratio: float) -> list[CurveRow]:
    """One row per direction both sides have; a single step s is paired with the unified
    validation step nearest r*s (r = `ratio`), at most half the usual validation interval away."""
    if ratio <= 0:
        raise TmtError(f"the step ratio must be > 0 (unified steps per single step at equal compute), got {ratio}")
    rows = []
    for d, single in singles.items():
        uni = unified.get(d)
        if not uni or not single:
            continue
        row = CurveRow(d, min(uni, key=lambda p: p[1]), min(single, key=lambda p: p[1]))
        gap = statistics.median([b[0] - a[0] for a, b in itertools.pairwise(uni)] or [0])  # validation interval
        for s_step, s_ce in single:
            u_step, u_ce = min(uni, key=lambda p: abs(p[0] - ratio * s_step))
            if abs(u_step - ratio * s_step) <= max(gap / 2, 0.5):
                row.pairs.append((s_step, u_step, s_ce, u_ce))
        rows.append(row)
    return rows


def render_curves(rows: list[CurveRow], ratio: float) -> str:
    """A markdown table: best CE (its step) of each side, the lower one, and at how many
    equal-compute points the unified model is lower."""
    lines = [
        f"Validation cross-entropy (nats/token) at equal compute: unified step = {ratio:g} x single step.",
        "",
        "| direction | unified: best (step) | single: best (step) | lower | unified lower at equal compute |",
        "|---|---:|---:|---|---:|",
    ]
    for r in rows:
        u, s = r.unified_best, r.single_best
        lines.append(f"| {parse_direction(r.direction).arrow} | {u[1]:.3f} ({u[0]}) | {s[1]:.3f} ({s[0]}) "
                     f"| {r.lower} | {r.unified_lower_points} of {len(r.pairs)} |")
    return "\n".join(lines) + "\n"


def plot_curves(unified: dict[str, Curve], singles: dict[str, Curve], ratio: float, out_png: str | Path) -> Path:
    """One panel per direction: both curves on the single model's step axis (unified steps / ratio)."""
    plt = pyplot()

    dirs = [d for d in singles if d in unified]
    fig, axes = plt.subplots(1, max(len(dirs), 1), figsize=(3.2 * max(len(dirs), 1), 3), squeeze=False)
    for ax, d in zip(axes[0], dirs, strict=False):
        ax.plot([p[0] / ratio for p in unified[d]], [p[1] for p in unified[d]], label="unified", marker=".")
        ax.plot([p[0] for p in singles[d]], [p[1] for p in singles[d]], label="single", marker=".")
        ax.set_title(parse_direction(d).arrow)
        ax.set_xlabel("single-model step (equal compute)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation CE (nats/token)")
    axes[0][0].legend(fontsize=8)
    return save_figure(fig, out_png)
