"""Scene vocabulary and geometry: the six shapes, the palette, how shapes are drawn.

Holds the symbolic vocabulary (shapes, colours, sizes, positions, relations,
the held-out colour-shape pairs), the size and placement constants, the unit
polygon of each shape, the renderer that turns a scene graph into a noisy RGB
image, and the two rules that name where objects are (`_rel_of` for a pair,
`_position_of` for one object). Everything else in the package builds on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tmt import TmtError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 170, 55),
    "blue": (40, 80, 225),
    "yellow": (240, 220, 40),
    "purple": (145, 55, 195),
    "orange": (250, 135, 25),
    "white": (245, 245, 245),
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
INVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}

HELD_OUT: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "triangle"),
    ("blue", "cross"),
    ("yellow", "diamond"),
    ("purple", "circle"),
    ("orange", "square"),
    ("white", "triangle"),
)
"""Colour-shape pairs that appear only in `test_novel` (compositional generalisation)."""


# ----------------------------------------------------------------------------- geometry
# Sizes are fractions of the image side. "radius" is the half-extent of the
# unrotated shape (a square of radius r has side 2r).
RADIUS = {"small": (0.09, 0.11), "large": (0.16, 0.18)}
SIZE_THRESHOLD = 0.135
"""Radius (fraction of the side) separating small from large in `parse_scene`."""
MAX_ROTATION = 10.0
"""Rotation jitter in degrees."""
MARGIN = 0.03
GAP = 0.05
CENTER_BOX = 0.11
"""A single object whose centre lies within this distance of the image centre is "center"."""
SUPERSAMPLE = 4
COARSE_STEP = 10.0
"""Rotation step (degrees) of the parser's coarse template search."""
NOISE_STD = 2.5
BACKGROUND = (55, 165)
"""Grey levels of the `random` background (one drawn per image, plus pixel noise)."""
COLOUR_JITTER = 12
BACKGROUNDS: tuple[str, ...] = ("random", "constant", "tones")
"""Background styles of `tmt prepare scenes`: `random` (a random grey per image plus pixel noise,
the corpus of generator version 1), `constant` (one grey, no noise) and `tones` (one of the named
`TONES`, no noise; captions say the tone unless it is the plain one)."""
CONSTANT_GREY = 110
"""Grey level of the `constant` background."""
TONES: dict[str, int] = {"grey": 110, "dark": 70, "light": 150}
"""Named background tones (grey levels) of the `tones` background."""
PLAIN_TONE = "grey"
"""The tone captions leave unsaid."""
TONE_TOLERANCE = 15
"""`parse_scene` names a background tone when the border's grey is this close to it."""


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (x right, y down) of a shape of radius 1 centred on its centroid."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    if shape == "triangle":
        t = np.deg2rad([-90, 30, 150])
        return 1.15 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "diamond":
        return np.array([[0, -1.15], [0.72, 0], [0, 1.15], [-0.72, 0]], float)
    if shape == "cross":
        w = 0.34
        return np.array(
            [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]],
            float,
        )
    if shape == "star":
        t = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.12, 0.46)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    raise TmtError(f"unknown shape '{shape}'; choose from {', '.join(SHAPES)}")


UNIT = {s: _unit_polygon(s) for s in SHAPES}
UNIT_AREA = {
    s: 0.5 * abs(float(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))))
    for s, p in UNIT.items()
}
PERIOD = {"circle": 360.0, "square": 90.0, "triangle": 120.0, "diamond": 180.0, "cross": 90.0, "star": 72.0}


def _vertices(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return UNIT[shape] @ rot.T * r + np.array([cx, cy])


def _extent(shape: str, r: float, angle: float) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) of the rotated shape relative to its centre."""
    v = _vertices(shape, 0.0, 0.0, r, angle)
    return float(v[:, 0].min()), float(v[:, 0].max()), float(v[:, 1].min()), float(v[:, 1].max())


def _draw(img: Image.Image, verts: np.ndarray, fill: Any, ss: int, origin: tuple[float, float] = (0.0, 0.0)) -> None:
    # continuous pixel coordinates -> supersampled canvas (pixel centres line up)
    pts = [((x - origin[0]) * ss - 0.5, (y - origin[1]) * ss - 0.5) for x, y in verts]
    ImageDraw.Draw(img).polygon(pts, fill=fill)


def render_scene(scene: Mapping[str, Any], render: Mapping[str, Any], image_size: int) -> Image.Image:
    """Draw a scene graph (with geometry) using the render settings: `background` (grey level) and,
    when present, `noise_seed` (Gaussian pixel noise of NOISE_STD; absent: no noise)."""
    s, ss = image_size, SUPERSAMPLE
    g = int(render["background"])
    img = Image.new("RGB", (s * ss, s * ss), (g, g, g))
    for o in scene["objects"]:
        verts = _vertices(o["shape"], o["center"][0] * s, o["center"][1] * s, o["radius"] * s, o["angle"])
        _draw(img, verts, tuple(o["rgb"]), ss)
    arr = np.asarray(img.reduce(ss), dtype=np.float64)
    if render.get("noise_seed") is None:
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    noise = np.random.default_rng(int(render["noise_seed"])).normal(0.0, NOISE_STD, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr + noise), 0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    """PNG without metadata chunks: same pixels, same bytes."""
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()



# ----------------------------------------------------------------------------- where objects are
def _rel_of(dx: float, dy: float) -> str:
    """Relation of object a to object b where (dx, dy) = centre(b) - centre(a)."""
    if abs(dy) >= abs(dx):
        return "above" if dy > 0 else "below"
    return "left of" if dx > 0 else "right of"


def _position_of(cx: float, cy: float) -> str:
    dx, dy = cx - 0.5, cy - 0.5
    if max(abs(dx), abs(dy)) < CENTER_BOX:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"
