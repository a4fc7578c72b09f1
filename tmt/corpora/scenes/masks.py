"""Which image tokens cover an object: boxes from a scene graph, mapped onto a token grid.

Computed from the manifest alone (the scene's geometry: centre, radius and angle of each
object), never from the pixels. A grid tokenizer's token i covers the patch in row
i // w and column i % w of an h x w grid over the image; a token covers an object when
its patch overlaps the object's bounding box by a positive area, and covers only
background otherwise. `grid_mask` is generic (any corpus with boxes can use it); the
scenes corpus is one producer of boxes (`scene_boxes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tmt import TmtError
from tmt.corpora.scenes.geometry import _extent

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in image fractions: x to the right, y down, 0..1."""


RENDER_MARGIN = 0.5 / 64
"""Boxes grow by half a pixel of the corpus's 64-pixel images: the renderer's anti-aliased
edges paint up to a quarter pixel past the geometry (measured: tests/unit/test_token_split.py)."""


def scene_boxes(scene: Mapping[str, Any], margin: float = RENDER_MARGIN) -> list[Box] | None:
    """The box of each object of a manifest scene graph (the rotated shape's extent plus
    `margin`), clipped to the image; None when an object lacks its geometry (centre, radius, angle)."""
    boxes: list[Box] = []
    for o in scene.get("objects", []):
        if not all(k in o for k in ("shape", "center", "radius", "angle")):
            return None
        x0, x1, y0, y1 = _extent(o["shape"], float(o["radius"]), float(o["angle"]))
        cx, cy = float(o["center"][0]), float(o["center"][1])
        boxes.append((max(0.0, cx + x0 - margin), max(0.0, cy + y0 - margin),
                      min(1.0, cx + x1 + margin), min(1.0, cy + y1 + margin)))
    return boxes


def grid_mask(boxes: Sequence[Box], grid: tuple[int, int]) -> np.ndarray:
    """(h * w,) bool, row-major: True where the token's patch overlaps a box by a positive area."""
    h, w = grid
    if h < 1 or w < 1:
        raise TmtError(f"token grid must be at least 1x1, got {h}x{w}")
    mask = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        if x1 <= x0 or y1 <= y0:
            continue
        # cells [c/w, (c+1)/w) with c/w < x1 and (c+1)/w > x0 (strict: touching is not covering)
        c0, c1 = int(np.floor(x0 * w)), int(np.ceil(x1 * w))
        r0, r1 = int(np.floor(y0 * h)), int(np.ceil(y1 * h))
        mask[max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)] = True
    return mask.reshape(-1)


def scene_token_mask(
    scene: Mapping[str, Any], grid: tuple[int, int], margin: float = RENDER_MARGIN
) -> np.ndarray | None:
    """The object mask of a scene's image on a token grid; None without geometry."""
    boxes = scene_boxes(scene, margin)
    return None if boxes is None else grid_mask(boxes, grid)
