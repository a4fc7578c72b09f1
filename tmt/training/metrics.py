"""Training metrics: `metrics.jsonl` lines and the `curves.png` plot."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from tmt.core.io import atomic_open, pyplot, save_figure


class MetricsWriter:
    """Append one JSON object per line to `exp_dir/metrics.jsonl` (rank 0 only)."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records after `step` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        with atomic_open(self.path, "w") as f:
            f.write("".join(line + "\n" for line in keep))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_metrics(metrics_path: str | Path, out_png: str | Path) -> Path | None:
    """Training and validation cross-entropy per direction (and the learning rate) vs step."""
    records = read_metrics(metrics_path)
    if not records:
        return None
    plt = pyplot()

    series: dict[str, dict[str, list[tuple[int, float]]]] = {"train": defaultdict(list), "valid": defaultdict(list)}
    lr: list[tuple[int, float]] = []
    for r in records:
        split = r.get("split")
        if split not in series:
            continue
        for k, v in r.items():
            if k.startswith("ce/") and isinstance(v, int | float):
                series[split][k[3:]].append((int(r["step"]), float(v)))
        if split == "train" and "lr" in r:
            lr.append((int(r["step"]), float(r["lr"])))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, split in zip(axes[:2], ("train", "valid"), strict=True):
        for name, pts in sorted(series[split].items()):
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, marker="." if len(pts) < 30 else None)
        ax.set_title(f"{split} cross-entropy (nats/token)")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        if series[split]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if lr:
        axes[2].plot([p[0] for p in lr], [p[1] for p in lr])
    axes[2].set_title("learning rate")
    axes[2].set_xlabel("step")
    return save_figure(fig, out_png, dpi=90)
