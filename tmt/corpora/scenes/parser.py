"""The image-side judge: recover a scene graph from pixels, without learning.

`parse_scene(image)` segments colours against the background, takes connected
components, names each one's palette colour, and finds its shape, size and
rotation by soft-IoU matching against rendered templates of the six shapes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from tmt import TmtError
from tmt.corpora.scenes.geometry import (
    COARSE_STEP,
    COLOURS,
    PERIOD,
    SHAPES,
    SIZE_THRESHOLD,
    SUPERSAMPLE,
    TONE_TOLERANCE,
    TONES,
    UNIT_AREA,
    _draw,
    _position_of,
    _rel_of,
    _vertices,
)


def _as_rgb_array(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3):
        arr = np.moveaxis(arr, 0, 2)  # CHW -> HWC
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise TmtError(f"parse_scene expects an RGB image (H, W, 3); got an array of shape {arr.shape}")
    arr = arr[..., :3].astype(np.float64)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.size and arr.max() <= 1.0 and np.asarray(image).dtype.kind == "f":
        arr = arr * 255.0
    return arr


def _template(shape: str, cx: float, cy: float, r: float, angle: float, box: tuple[int, int, int, int]) -> np.ndarray:
    """Coverage (0..1) of a shape over the pixel window box = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    img = Image.new("L", ((x1 - x0) * SUPERSAMPLE, (y1 - y0) * SUPERSAMPLE), 0)
    _draw(img, _vertices(shape, cx, cy, r, angle), 255, SUPERSAMPLE, origin=(x0, y0))
    return np.asarray(img.reduce(SUPERSAMPLE), dtype=np.float64) / 255.0


def _match_shape(alpha: np.ndarray, box: tuple[int, int, int, int], cx: float, cy: float) -> tuple[str, float, float, float]:
    """Best (shape, radius px, angle, score) by soft IoU against rendered templates."""
    area = float(alpha.sum())

    def score(shape: str, angle: float) -> float:
        r = math.sqrt(area / UNIT_AREA[shape])
        t = _template(shape, cx, cy, r, angle, box)
        return float(np.minimum(alpha, t).sum() / max(np.maximum(alpha, t).sum(), 1e-9))

    # coarse search over each shape's rotation period, then refine the two best shapes
    coarse: list[tuple[float, str, float]] = []
    for shape in SHAPES:
        period = PERIOD[shape]
        angles = [0.0] if shape == "circle" else list(np.arange(-period / 2, period / 2, COARSE_STEP))
        s, a = max((score(shape, float(a)), float(a)) for a in angles)
        coarse.append((s, shape, a))
    coarse.sort(reverse=True)
    best = (coarse[0][1], coarse[0][2], coarse[0][0])
    for s, shape, a in coarse[:2]:
        if shape != "circle":
            for step in (COARSE_STEP / 2, COARSE_STEP / 4):
                s, a = max([(s, a)] + [(score(shape, a + d), a + d) for d in (-step, step)])
        if s > best[2]:
            best = (shape, a, s)
    shape, angle, sc = best
    return shape, math.sqrt(area / UNIT_AREA[shape]), angle, sc


_YCC = np.array([[0.299, -0.168736, 0.5], [0.587, -0.331264, -0.418688], [0.114, 0.5, -0.081312]])
_YCC_W = np.array([1.0, 0.25, 0.25])
_PALETTE_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _PALETTE_NAMES], float)


@dataclass
class _Segmentation:
    """An image split into background and candidate objects."""

    arr: np.ndarray
    """The image, HxWx3 float64 in 0..255."""
    bg: np.ndarray
    """Background colour (median of the border)."""
    diff: np.ndarray
    """Each pixel's difference from the background."""
    dist: np.ndarray
    """Length of `diff` per pixel."""
    labels: np.ndarray
    """Connected-component label per pixel (0: background)."""
    keep: list[int]
    """Labels of the components read as objects, largest first."""


def _segment(arr: np.ndarray, *, max_objects: int, min_area: float) -> _Segmentation:
    """Colour segmentation against the border's median, then connected components."""
    from scipy import ndimage

    h, w = arr.shape[:2]
    border = np.concatenate([arr[:2].reshape(-1, 3), arr[-2:].reshape(-1, 3), arr[:, :2].reshape(-1, 3), arr[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    diff = arr - bg
    dist = np.sqrt((diff**2).sum(axis=2))
    noise = float(np.median(np.abs(np.sqrt(((border - bg) ** 2).sum(axis=1)))))
    mask = dist > max(30.0, 6.0 * noise)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), int))
    keep: list[int] = []
    if n > 0:
        areas = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        keep = [i + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area * h * w][:max_objects]
    return _Segmentation(arr=arr, bg=bg, diff=diff, dist=dist, labels=labels, keep=keep)


def _coverage(seg: _Segmentation, comp: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, grown): per-pixel coverage of the object whose colour differs from the background by `ref`,
    over the component grown by one pixel into the background."""
    from scipy import ndimage

    grown = ndimage.binary_dilation(comp, structure=np.ones((3, 3), bool)) & ((seg.labels == 0) | comp)
    # coverage by projecting each pixel's difference from the background onto the
    # object's colour, in YCbCr with chroma down-weighted: luma edges stay sharp
    # where compression or upsampling smears colour
    dy, ry = seg.diff @ _YCC, ref @ _YCC
    alpha = np.clip((dy @ (ry * _YCC_W)) / max(float((ry * _YCC_W) @ ry), 1e-9), 0.0, 1.0) * grown
    return alpha, grown


def _read_object(seg: _Segmentation, lab: int) -> dict[str, Any] | None:
    """Colour, shape, size and geometry of one component; None when it has no coverage."""
    arr, dist = seg.arr, seg.dist
    h, w = arr.shape[:2]
    side = float(min(h, w))
    comp = seg.labels == lab
    dvals = dist[comp]
    core = comp & (dist >= np.median(dvals))
    colour_rgb = np.median(arr[core], axis=0)
    colour = _PALETTE_NAMES[int(np.argmin(((_PALETTE - colour_rgb) ** 2).sum(axis=1)))]
    alpha, grown = _coverage(seg, comp, colour_rgb - seg.bg)
    ys, xs = np.nonzero(grown)
    pad = 3
    box = (max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0), min(int(xs.max()) + pad + 1, w), min(int(ys.max()) + pad + 1, h))
    a = alpha[box[1] : box[3], box[0] : box[2]]
    total = float(a.sum())
    if total <= 0:
        return None
    yy, xx = np.mgrid[box[1] : box[3], box[0] : box[2]]
    cx = float((a * (xx + 0.5)).sum() / total)
    cy = float((a * (yy + 0.5)).sum() / total)
    shape, r, angle, score = _match_shape(a, box, cx, cy)
    return {
        "shape": shape,
        "colour": colour,
        "size": "large" if r / side >= SIZE_THRESHOLD else "small",
        "center": [round(cx / w, 4), round(cy / h, 4)],
        "radius": round(r / side, 4),
        "angle": round(angle, 2),
        "score": round(score, 4),
    }


def _tone_of(bg: np.ndarray) -> str | None:
    """The named background tone (`TONES`) of a border colour, or None when none is close."""
    if float(bg.max() - bg.min()) > TONE_TOLERANCE:
        return None  # not grey
    level = float(bg.mean())
    name, grey = min(TONES.items(), key=lambda kv: abs(kv[1] - level))
    return name if abs(grey - level) <= TONE_TOLERANCE else None


def parse_scene(image: Any, *, max_objects: int = 6, min_area: float = 0.003) -> dict[str, Any]:
    """Recover the scene graph from an image (PIL image or HxWx3 array, uint8 or float in 0..1).

    Colour segmentation against the background (median of the border), connected
    components, palette colour of each component's core, and shape/size by soft-IoU
    template matching over rotations. Returns the manifest's `scene` structure; each
    object also carries `score` (template IoU, 0..1). Relations are given for every
    pair (i < j); `position` only when there is exactly one object; `background` is the
    named tone (`TONES`) closest to the border's grey, or None when none is within TONE_TOLERANCE.
    """
    seg = _segment(_as_rgb_array(image), max_objects=max_objects, min_area=min_area)
    objects = [o for o in (_read_object(seg, lab) for lab in seg.keep) if o is not None]
    # reading order (top-left first) so the output does not depend on component labels
    objects.sort(key=lambda o: (o["center"][1], o["center"][0]))
    rels = [
        {"subject": i, "relation": _rel_of(q["center"][0] - p["center"][0], q["center"][1] - p["center"][1]), "object": j}
        for (i, p), (j, q) in itertools.combinations(enumerate(objects), 2)
    ]
    position = _position_of(*objects[0]["center"]) if len(objects) == 1 else None
    return {"objects": objects, "position": position, "relations": rels, "background": _tone_of(seg.bg)}
