"""A picture of an image-target direction: each sample's reference image beside the generated one.

`tmt score` writes `grid_<src>-image.png` next to report.md for every direction
with image outputs, and report.md shows it; people judge generated images
faster by looking than by reading exact-match rates. Each cell holds the
reference (left) and the output (right), the sample id, whether the scene
parser read the output as the exact scene (when the corpus has one), and the
start of the source caption.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CELL = 128
"""Side of each image in the grid, pixels (64x64 scenes are shown at twice their size)."""
COLUMNS = 4
"""Reference/output pairs per row of the grid."""
LABEL_LINES = 3
"""Lines of text under each pair: id and verdict, then the wrapped source caption."""


def grid_name(entry: dict[str, Any]) -> str:
    """File name of a direction's grid, e.g. `grid_text-image.png` (via-directions get their pivot too)."""
    via = f"_via-{entry['via']}" if entry.get("via") else ""
    return f"grid_{entry['src']}-{entry['tgt']}{via}.png"


def _label(sample: dict[str, Any], src: str) -> list[str]:
    exact = sample.get("exact")
    verdict = "" if exact is None else ("exact" if exact else "wrong")
    lines = [f"{sample['id']}  {verdict}".rstrip()]
    caption = str(sample.get("source") or "") if src == "text" else " / ".join(sample.get("references", [])[:1])
    lines += textwrap.wrap(caption, width=2 * CELL // 6)[: LABEL_LINES - 1]
    return lines


def _open(path: str | None) -> Any:
    """The image at `path` resized to a cell, or a grey placeholder where it is missing or unreadable."""
    from PIL import Image

    if path and Path(path).is_file():
        try:
            with Image.open(path) as im:
                return im.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST)
        except OSError as e:  # one unreadable output must not cost the whole picture
            log.warning("grid: cannot read %s: %s", path, e)
    return Image.new("RGB", (CELL, CELL), (200, 200, 200))


def write_image_grid(entry: dict[str, Any], path: str | Path) -> bool:
    """Write the grid of `entry["samples"]` (reference | output pairs) to `path`; False when there is none."""
    samples: Sequence[dict[str, Any]] = [s for s in entry.get("samples", []) if s.get("hypothesis_file")]
    if entry.get("tgt") != "image" or not samples:
        return False
    from PIL import Image, ImageDraw

    from tmt.core.io import atomic_open

    line_h = 12
    cell_w, cell_h = 2 * CELL + 8, CELL + LABEL_LINES * line_h + 10
    cols = min(COLUMNS, len(samples))
    rows = (len(samples) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, s in enumerate(samples):
        x, y = (k % cols) * cell_w, (k // cols) * cell_h
        canvas.paste(_open(s.get("reference_file")), (x, y))
        canvas.paste(_open(s.get("hypothesis_file")), (x + CELL + 4, y))
        for j, text in enumerate(_label(s, str(entry.get("src")))):
            colour = (0, 120, 0) if j == 0 and s.get("exact") is True else (0, 0, 0)
            draw.text((x + 2, y + CELL + 2 + j * line_h), text, fill=colour)
    with atomic_open(path, "wb") as f:
        canvas.save(f, format="PNG")
    return True
