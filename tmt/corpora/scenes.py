"""The embedded tri-modal "scenes" corpus: drawn scenes, templated captions, synthetic speech.

Each scene is a small RGB image (64x64 by default) of one to three coloured
shapes on a noisy gray background, with a known **scene graph**:

    {"objects": [{"shape": "circle", "colour": "red", "size": "small",
                  "center": [x, y], "radius": r, "angle": deg}, ...],   # x, y, r as fractions of the side
     "position": "left" | "right" | "top" | "bottom" | "center" | None,  # one-object scenes only
     "relations": [{"subject": 0, "relation": "above", "object": 1}]}    # scenes with 2-3 objects

`center`/`radius`/`angle` are the drawn geometry (informative; comparisons
ignore them). Five captions per image come from templates with synonyms and
varied word order; each caption is spoken by a random espeak-ng or flite voice.

The same module holds the judge: `parse_scene(image)` recovers the scene graph
from pixels (colour segmentation + template matching of the six shapes, no
learning), `caption_to_scene(text)` inverts the caption templates, and
`scene_matches` / `compare_scenes` compare two graphs.

`prepare_scenes(out_dir, ...)` writes the corpus (see its docstring).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tmt import TmtError
from tmt.io import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
"""Bumped whenever the same settings would draw or say something different."""

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

SPLITS: tuple[str, ...] = ("train", "valid", "test", "test_novel", "images_only", "speech_text_only")

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
COLOUR_JITTER = 12


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
    """Draw a scene graph (with geometry) using the render settings (background, noise seed)."""
    s, ss = image_size, SUPERSAMPLE
    g = int(render["background"])
    img = Image.new("RGB", (s * ss, s * ss), (g, g, g))
    for o in scene["objects"]:
        verts = _vertices(o["shape"], o["center"][0] * s, o["center"][1] * s, o["radius"] * s, o["angle"])
        _draw(img, verts, tuple(o["rgb"]), ss)
    arr = np.asarray(img.reduce(ss), dtype=np.float64)
    noise = np.random.default_rng(int(render["noise_seed"])).normal(0.0, NOISE_STD, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr + noise), 0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    """PNG without metadata chunks: same pixels, same bytes."""
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# ----------------------------------------------------------------------------- sampling
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


def _sample_object(rng: np.random.Generator, pairs: Sequence[tuple[str, str]], size: str | None = None) -> dict[str, Any]:
    colour, shape = pairs[int(rng.integers(len(pairs)))]
    size = size or SIZES[int(rng.integers(2))]
    base = np.array(COLOURS[colour])
    rgb = np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255)
    return {
        "shape": shape,
        "colour": colour,
        "size": size,
        "radius": float(rng.uniform(*RADIUS[size])),
        "angle": float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)),
        "rgb": [int(v) for v in rgb],
    }


def _place_single(rng: np.random.Generator, o: dict[str, Any]) -> str | None:
    x0, x1, y0, y1 = _extent(o["shape"], o["radius"], o["angle"])
    lo_x, hi_x = MARGIN - x0, 1 - MARGIN - x1
    lo_y, hi_y = MARGIN - y0, 1 - MARGIN - y1
    pos = POSITIONS[int(rng.integers(len(POSITIONS)))]
    off = 0.2  # at least this far from the centre along the position's axis
    jit = 0.05  # at most this far off the axis
    if pos == "center":
        cx, cy = 0.5 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.03, 0.03)
    elif pos in ("left", "right"):
        lo, hi = (lo_x, 0.5 - off) if pos == "left" else (0.5 + off, hi_x)
        if lo > hi:
            return None
        cx, cy = rng.uniform(lo, hi), 0.5 + rng.uniform(-jit, jit)
    else:
        lo, hi = (lo_y, 0.5 - off) if pos == "top" else (0.5 + off, hi_y)
        if lo > hi:
            return None
        cx, cy = 0.5 + rng.uniform(-jit, jit), rng.uniform(lo, hi)
    o["center"] = [float(cx), float(cy)]
    return pos


def _place_pair(rng: np.random.Generator, a: dict[str, Any], b: dict[str, Any], rel: str) -> bool:
    """Place a and b so that `a rel b` holds clearly; False if they cannot fit."""
    first, second = (a, b) if rel in ("above", "left of") else (b, a)  # first is above / left
    vertical = rel in ("above", "below")
    ea, eb = _extent(first["shape"], first["radius"], first["angle"]), _extent(second["shape"], second["radius"], second["angle"])
    # main axis: index 2,3 (y) when vertical else 0,1 (x)
    i0, i1 = (2, 3) if vertical else (0, 1)
    j0, j1 = (0, 1) if vertical else (2, 3)
    need = ea[i1] - eb[i0] + GAP  # centre distance so that the boxes are GAP apart
    lo_a, hi_b = MARGIN - ea[i0], 1 - MARGIN - eb[i1]
    if lo_a + need > hi_b:
        return False
    ma = rng.uniform(lo_a, hi_b - need)
    mb = rng.uniform(ma + need, hi_b)
    d = mb - ma
    pa_lo, pa_hi = MARGIN - ea[j0], 1 - MARGIN - ea[j1]
    pa = rng.uniform(pa_lo, pa_hi)
    pb_lo = max(MARGIN - eb[j0], pa - 0.35 * d)
    pb_hi = min(1 - MARGIN - eb[j1], pa + 0.35 * d)
    if pb_lo > pb_hi:
        return False
    pb = rng.uniform(pb_lo, pb_hi)
    if vertical:
        first["center"], second["center"] = [float(pa), float(ma)], [float(pb), float(mb)]
    else:
        first["center"], second["center"] = [float(ma), float(pa)], [float(mb), float(pb)]
    return True


def _separated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ea, eb = _extent(a["shape"], a["radius"], a["angle"]), _extent(b["shape"], b["radius"], b["angle"])
    (ax, ay), (bx, by) = a["center"], b["center"]
    sep_x = max(bx + eb[0] - (ax + ea[1]), ax + ea[0] - (bx + eb[1]))
    sep_y = max(by + eb[2] - (ay + ea[3]), ay + ea[2] - (by + eb[3]))
    return max(sep_x, sep_y) >= GAP


def _place_many(rng: np.random.Generator, objs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Rejection-sample a chain layout o0 r o1 r o2 ... with clear relations."""
    for _ in range(400):
        for o in objs:
            x0, x1, y0, y1 = _extent(o["shape"], o["radius"], o["angle"])
            o["center"] = [float(rng.uniform(MARGIN - x0, 1 - MARGIN - x1)), float(rng.uniform(MARGIN - y0, 1 - MARGIN - y1))]
        if not all(_separated(p, q) for p, q in itertools.combinations(objs, 2)):
            continue
        rels = []
        for i in range(len(objs) - 1):
            dx = objs[i + 1]["center"][0] - objs[i]["center"][0]
            dy = objs[i + 1]["center"][1] - objs[i]["center"][1]
            if min(abs(dx), abs(dy)) > 0.5 * max(abs(dx), abs(dy)):
                break
            rels.append({"subject": i, "relation": _rel_of(dx, dy), "object": i + 1})
        else:
            return rels
    return None


def sample_scene(
    rng: np.random.Generator, *, num_objects: int, novel: bool = False
) -> dict[str, Any]:
    """Draw one scene graph with geometry. `novel` scenes hold one held-out colour-shape pair;
    the others hold none."""
    seen = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT]
    for _ in range(100):
        objs = [_sample_object(rng, seen) for _ in range(num_objects)]
        if novel:
            objs[int(rng.integers(num_objects))] = _sample_object(rng, HELD_OUT)
        if num_objects == 1:
            pos = _place_single(rng, objs[0])
            if pos is None:
                continue
            return {"objects": objs, "position": pos, "relations": []}
        if num_objects == 2:
            rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
            if not _place_pair(rng, objs[0], objs[1], rel):
                continue
            return {"objects": objs, "position": None, "relations": [{"subject": 0, "relation": rel, "object": 1}]}
        rels = _place_many(rng, objs)
        if rels is not None:
            return {"objects": objs, "position": None, "relations": rels}
    raise TmtError(f"could not lay out a scene with {num_objects} objects; use fewer objects")


def clean_scene(scene: Mapping[str, Any]) -> dict[str, Any]:
    """The scene graph as stored in manifests: symbolic attributes plus rounded geometry."""
    objs = []
    for o in scene["objects"]:
        d = {k: o[k] for k in ("shape", "colour", "size")}
        if "center" in o:
            d["center"] = [round(float(v), 4) for v in o["center"]]
        if "radius" in o:
            d["radius"] = round(float(o["radius"]), 4)
        if "angle" in o:
            d["angle"] = round(float(o["angle"]), 2)
        if "rgb" in o:
            d["rgb"] = list(o["rgb"])
        objs.append(d)
    return {"objects": objs, "position": scene.get("position"), "relations": [dict(r) for r in scene.get("relations", [])]}


# ----------------------------------------------------------------------------- captions
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "violet")}
SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
    "star": ("star",),
}
RELATION_WORDS = {
    "above": ("above", "on top of", "over"),
    "below": ("below", "under", "beneath", "underneath"),
    "left of": ("to the left of", "left of", "on the left side of"),
    "right of": ("to the right of", "right of", "on the right side of"),
}
POSITION_WORDS = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "center": ("in the center", "in the middle"),
}
# {oN}: object N's phrase; {rNM}: relation of object N to object M; {p}: position.
TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "a {o0} {p}",
        "there is a {o0} {p}",
        "{p} there is a {o0}",
        "one {o0} sits {p}",
        "a {o0} is {p}",
        "a picture of a {o0} {p}",
        "{p} is a {o0}",
        "a {o0} placed {p}",
        "an image with a {o0} {p}",
        "you can see a {o0} {p}",
    ),
    2: (
        "a {o0} {r01} a {o1}",
        "a {o1} {r10} a {o0}",
        "there is a {o0} {r01} a {o1}",
        "there is a {o1} {r10} a {o0}",
        "one {o0} sits {r01} a {o1}",
        "one {o1} sits {r10} a {o0}",
        "{r01} a {o1} there is a {o0}",
        "a {o0} is {r01} a {o1}",
        "a picture of a {o1} {r10} a {o0}",
        "you can see a {o0} {r01} a {o1}",
    ),
    3: (
        "a {o0} {r01} a {o1} which is {r12} a {o2}",
        "there is a {o0} {r01} a {o1} and the {o1} is {r12} a {o2}",
        "a {o2} {r21} a {o1} which is {r10} a {o0}",
        "a {o1} {r10} a {o0} and {r12} a {o2}",
        "you can see a {o0} {r01} a {o1} which is {r12} a {o2}",
        "one {o2} sits {r21} a {o1} which is {r10} a {o0}",
    ),
}
CAPTIONS_PER_IMAGE = 5


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _relation_between(scene: Mapping[str, Any], i: int, j: int) -> str:
    for r in scene["relations"]:
        if (r["subject"], r["object"]) == (i, j):
            return str(r["relation"])
        if (r["subject"], r["object"]) == (j, i):
            return INVERSE[r["relation"]]
    raise KeyError((i, j))


def _fill(template: str, scene: Mapping[str, Any], rng: np.random.Generator) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "p":
            return _pick(rng, POSITION_WORDS[scene["position"]])
        if key[0] == "o":
            o = scene["objects"][int(key[1])]
            return f"{_pick(rng, SIZE_WORDS[o['size']])} {_pick(rng, COLOUR_WORDS[o['colour']])} {_pick(rng, SHAPE_WORDS[o['shape']])}"
        return _pick(rng, RELATION_WORDS[_relation_between(scene, int(key[1]), int(key[2]))])

    return re.sub(r"\{(\w+)\}", sub, template)


def make_captions(scene: Mapping[str, Any], rng: np.random.Generator, n: int = CAPTIONS_PER_IMAGE) -> list[tuple[int, str]]:
    """`n` distinct captions (template index, text) for a scene."""
    templates = TEMPLATES[len(scene["objects"])]
    order = [int(i) for i in rng.permutation(len(templates))]
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    for k in range(n):
        t = order[k % len(order)]  # distinct templates first, then synonyms make the difference
        text = _fill_consistent(templates[t], scene, rng)
        for _ in range(20):
            if text not in seen:
                break
            text = _fill_consistent(templates[t], scene, rng)
        seen.add(text)
        out.append((t, text))
    return out


def _fill_consistent(template: str, scene: Mapping[str, Any], rng: np.random.Generator) -> str:
    # choose one phrase per object so repeated mentions ("... and the small red circle is ...") agree
    phrases: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key[0] == "o":
            if key not in phrases:
                phrases[key] = _fill("{" + key + "}", scene, rng)
            return phrases[key]
        return _fill("{" + key + "}", scene, rng)

    return re.sub(r"\{(\w+)\}", sub, template)


def _alt(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def _reverse(table: Mapping[str, Sequence[str]]) -> dict[str, str]:
    return {w: k for k, ws in table.items() for w in ws}


_SIZE_OF, _COLOUR_OF, _SHAPE_OF = _reverse(SIZE_WORDS), _reverse(COLOUR_WORDS), _reverse(SHAPE_WORDS)
_REL_OF, _POS_OF = _reverse(RELATION_WORDS), _reverse(POSITION_WORDS)
_OBJ_RE = f"(?:{_alt(_SIZE_OF)}) (?:{_alt(_COLOUR_OF)}) (?:{_alt(_SHAPE_OF)})"
_OBJ_PARTS = re.compile(f"({_alt(_SIZE_OF)}) ({_alt(_COLOUR_OF)}) ({_alt(_SHAPE_OF)})")


def _compile(template: str) -> tuple[re.Pattern[str], list[str]]:
    parts = re.split(r"\{(\w+)\}", template)
    pattern, keys = "", []
    for n, part in enumerate(parts):
        if n % 2 == 0:
            pattern += re.escape(part)
            continue
        keys.append(part)
        alt = _OBJ_RE if part[0] == "o" else _alt(_POS_OF) if part == "p" else _alt(_REL_OF)
        pattern += f"(?P<g{len(keys) - 1}>{alt})"
    return re.compile(pattern), keys


_COMPILED = [(len_, _compile(t)) for len_, ts in TEMPLATES.items() for t in ts]


def caption_to_scene(text: str) -> dict[str, Any] | None:
    """Parse a caption written by the scene templates back into a scene graph (None if it
    is not one). Case and surrounding whitespace/punctuation are ignored."""
    norm = re.sub(r"\s+", " ", text.lower().strip().rstrip(".!")).strip()
    for n, (pat, keys) in _COMPILED:
        m = pat.fullmatch(norm)
        if not m:
            continue
        objs: list[dict[str, Any] | None] = [None] * n
        position, rels = None, []
        ok = True
        for g, key in enumerate(keys):
            val = m.group(f"g{g}")
            if key == "p":
                position = _POS_OF[val]
            elif key[0] == "o":
                pm = _OBJ_PARTS.fullmatch(val)
                assert pm is not None
                o = {"shape": _SHAPE_OF[pm.group(3)], "colour": _COLOUR_OF[pm.group(2)], "size": _SIZE_OF[pm.group(1)]}
                i = int(key[1])
                if objs[i] is not None and objs[i] != o:
                    ok = False
                objs[i] = o
            else:
                rels.append({"subject": int(key[1]), "relation": _REL_OF[val], "object": int(key[2])})
        if ok and all(o is not None for o in objs):
            return {"objects": objs, "position": position, "relations": rels}
    return None


def caption_vocabulary() -> list[str]:
    """Every word the templates can produce, sorted."""
    words: set[str] = set()
    for table in (SIZE_WORDS, COLOUR_WORDS, SHAPE_WORDS, RELATION_WORDS, POSITION_WORDS):
        for ws in table.values():
            for w in ws:
                words.update(w.split())
    for ts in TEMPLATES.values():
        for t in ts:
            words.update(w for w in re.sub(r"\{\w+\}", " ", t).split())
    return sorted(words)


# ----------------------------------------------------------------------------- parser
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


def parse_scene(image: Any, *, max_objects: int = 6, min_area: float = 0.003) -> dict[str, Any]:
    """Recover the scene graph from an image (PIL image or HxWx3 array, uint8 or float in 0..1).

    Colour segmentation against the background (median of the border), connected
    components, palette colour of each component's core, and shape/size by soft-IoU
    template matching over rotations. Returns the manifest's `scene` structure; each
    object also carries `score` (template IoU, 0..1). Relations are given for every
    pair (i < j); `position` only when there is exactly one object.
    """
    from scipy import ndimage

    arr = _as_rgb_array(image)
    h, w = arr.shape[:2]
    side = float(min(h, w))
    border = np.concatenate([arr[:2].reshape(-1, 3), arr[-2:].reshape(-1, 3), arr[:, :2].reshape(-1, 3), arr[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    diff = arr - bg
    dist = np.sqrt((diff**2).sum(axis=2))
    noise = float(np.median(np.abs(np.sqrt(((border - bg) ** 2).sum(axis=1)))))
    mask = dist > max(30.0, 6.0 * noise)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), int))
    if n == 0:
        return {"objects": [], "position": None, "relations": []}
    areas = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    keep = [i + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area * h * w][:max_objects]
    palette_names = list(COLOURS)
    palette = np.array([COLOURS[c] for c in palette_names], float)
    objects: list[dict[str, Any]] = []
    for lab in keep:
        comp = labels == lab
        dvals = dist[comp]
        core = comp & (dist >= np.median(dvals))
        colour_rgb = np.median(arr[core], axis=0)
        colour = palette_names[int(np.argmin(((palette - colour_rgb) ** 2).sum(axis=1)))]
        ref = colour_rgb - bg
        grown = ndimage.binary_dilation(comp, structure=np.ones((3, 3), bool)) & ((labels == 0) | comp)
        # coverage by projecting each pixel's difference from the background onto the
        # object's colour, in YCbCr with chroma down-weighted: luma edges stay sharp
        # where compression or upsampling smears colour
        dy, ry = diff @ _YCC, ref @ _YCC
        alpha = np.clip((dy @ (ry * _YCC_W)) / max(float((ry * _YCC_W) @ ry), 1e-9), 0.0, 1.0) * grown
        ys, xs = np.nonzero(grown)
        pad = 3
        box = (max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0), min(int(xs.max()) + pad + 1, w), min(int(ys.max()) + pad + 1, h))
        a = alpha[box[1] : box[3], box[0] : box[2]]
        total = float(a.sum())
        if total <= 0:
            continue
        yy, xx = np.mgrid[box[1] : box[3], box[0] : box[2]]
        cx = float((a * (xx + 0.5)).sum() / total)
        cy = float((a * (yy + 0.5)).sum() / total)
        shape, r, angle, score = _match_shape(a, box, cx, cy)
        objects.append(
            {
                "shape": shape,
                "colour": colour,
                "size": "large" if r / side >= SIZE_THRESHOLD else "small",
                "center": [round(cx / w, 4), round(cy / h, 4)],
                "radius": round(r / side, 4),
                "angle": round(angle, 2),
                "score": round(score, 4),
            }
        )
    # reading order (top-left first) so the output does not depend on component labels
    objects.sort(key=lambda o: (o["center"][1], o["center"][0]))
    rels = [
        {"subject": i, "relation": _rel_of(q["center"][0] - p["center"][0], q["center"][1] - p["center"][1]), "object": j}
        for (i, p), (j, q) in itertools.combinations(enumerate(objects), 2)
    ]
    position = _position_of(*objects[0]["center"]) if len(objects) == 1 else None
    return {"objects": objects, "position": position, "relations": rels}


# ----------------------------------------------------------------------------- comparison
ATTRIBUTES = ("count", "shape", "colour", "size", "position", "relation")


def _pred_relation(pred: Mapping[str, Any], i: int, j: int) -> str | None:
    objs = pred["objects"]
    if "center" in objs[i] and "center" in objs[j]:
        (ax, ay), (bx, by) = objs[i]["center"], objs[j]["center"]
        return _rel_of(bx - ax, by - ay)
    try:
        return _relation_between(pred, i, j)
    except KeyError:
        return None


def _pred_position(pred: Mapping[str, Any], i: int) -> str | None:
    o = pred["objects"][i]
    if len(pred["objects"]) == 1 and pred.get("position"):
        return str(pred["position"])
    if "center" in o:
        return _position_of(*o["center"])
    return None


def compare_scenes(pred: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, bool]:
    """Per-attribute agreement of a predicted scene graph with a reference one.

    Objects are matched by the assignment that agrees on the most attributes.
    Keys: `count` (same number of objects), `shape`, `colour`, `size` (every
    reference object matched with that attribute equal), `position` (one-object
    references; True when not applicable), `relation` (every reference relation
    holds between the matched objects; True when not applicable), `all`.
    `all` is True exactly when `scene_matches(pred, ref)`.
    """
    p_objs, r_objs = list(pred.get("objects", [])), list(ref.get("objects", []))
    out = dict.fromkeys(ATTRIBUTES, False)
    out["count"] = len(p_objs) == len(r_objs)
    best: tuple[int, dict[str, bool]] | None = None
    if len(p_objs) >= len(r_objs) and r_objs:
        for perm in itertools.permutations(range(len(p_objs)), len(r_objs)):
            res = {k: all(p_objs[perm[i]][k] == r_objs[i][k] for i in range(len(r_objs))) for k in ("shape", "colour", "size")}
            if len(r_objs) == 1 and ref.get("position"):
                res["position"] = _pred_position(pred, perm[0]) == ref["position"]
            else:
                res["position"] = True
            res["relation"] = all(
                _pred_relation(pred, perm[r["subject"]], perm[r["object"]]) == r["relation"] for r in ref.get("relations", [])
            )
            per_object = sum(p_objs[perm[i]][k] == r_objs[i][k] for i in range(len(r_objs)) for k in ("shape", "colour", "size"))
            key = per_object + 3 * (res["position"] + res["relation"])
            if best is None or key > best[0]:
                best = (key, res)
    elif not r_objs:
        best = (0, {"shape": True, "colour": True, "size": True, "position": True, "relation": True})
    if best is not None:
        out.update(best[1])
    out["all"] = all(out[k] for k in ATTRIBUTES)
    return out


def scene_matches(pred: Mapping[str, Any], ref: Mapping[str, Any]) -> bool:
    """True when pred has the same objects (shape, colour, size), the same position
    (one object) and the same relations as ref, up to object order and relation direction."""
    return compare_scenes(pred, ref)["all"]


# ----------------------------------------------------------------------------- corpus
@dataclass(kw_only=True)
class ScenesConfig:
    """Settings of `tmt prepare scenes`."""

    num_scenes: int = 2000
    """Number of images; each gets five captions and five recordings."""
    seed: int = 0
    """Random seed: the same seed and settings give the same bytes."""
    image_size: int = 64
    """Side of the square RGB images, in pixels."""
    min_objects: int = 1
    """Fewest objects per image."""
    max_objects: int = 2
    """Most objects per image (1 to 3)."""
    captions_per_image: int = 5
    """Captions (and recordings) per image."""
    speech: bool = True
    """Synthesise one recording per caption; false writes text-only captions."""
    engines: tuple[str, ...] = ("espeak-ng", "flite")
    """Speech engines to use when installed (at least one must be)."""
    fractions: dict[str, float] = field(
        default_factory=lambda: {
            "train": 0.7,
            "valid": 0.05,
            "test": 0.05,
            "test_novel": 0.05,
            "images_only": 0.075,
            "speech_text_only": 0.075,
        }
    )
    """Share of the images in each split (normalised); every split gets at least one image
    when there are enough."""


def _split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise TmtError(f"unknown split(s) {sorted(unknown)} in fractions; valid: {', '.join(SPLITS)}")
    total = sum(fractions[s] for s in names)
    if not names or total <= 0:
        raise TmtError("split fractions must add up to a positive number")
    exact = {s: n * fractions[s] / total for s in names}
    counts = {s: math.floor(v) for s, v in exact.items()}
    if n >= len(names):  # every split gets at least one image
        for s in names:
            counts[s] = max(counts[s], 1)
    while sum(counts.values()) > n:
        s = max((s for s in names if counts[s] > 1), key=lambda s: counts[s] - exact[s])
        counts[s] -= 1
    while sum(counts.values()) < n:
        s = max(names, key=lambda s: exact[s] - counts[s])
        counts[s] += 1
    return counts


def plan_scenes(cfg: ScenesConfig, pool: Sequence[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Everything about each scene, decided up front from the seed (no media yet)."""
    from tmt.corpora.tts import sample_voice

    if not 1 <= cfg.min_objects <= cfg.max_objects <= 3:
        raise TmtError(f"need 1 <= min_objects <= max_objects <= 3, got {cfg.min_objects}..{cfg.max_objects}")
    if cfg.num_scenes < 1:
        raise TmtError(f"--num-scenes must be at least 1, got {cfg.num_scenes}")
    counts = _split_counts(cfg.num_scenes, cfg.fractions)
    order = np.random.default_rng([cfg.seed, 7]).permutation(cfg.num_scenes)
    split_of: dict[int, str] = {}
    start = 0
    for s, c in counts.items():
        for i in order[start : start + c]:
            split_of[int(i)] = s
        start += c
    plans = []
    for i in range(cfg.num_scenes):
        rng = np.random.default_rng([cfg.seed, 1, i])
        split = split_of[i]
        n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        scene = sample_scene(rng, num_objects=n_obj, novel=split == "test_novel")
        captions = make_captions(scene, rng, cfg.captions_per_image)
        render = {"background": int(rng.integers(BACKGROUND[0], BACKGROUND[1] + 1)), "noise_seed": int(rng.integers(2**31))}
        voice_rng = np.random.default_rng([cfg.seed, 2, i])
        voices = [sample_voice(voice_rng, pool).to_dict() if pool else None for _ in captions]
        sid = f"scene_{i:06d}"
        plans.append(
            {
                "id": sid,
                "index": i,
                "split": split,
                "scene": clean_scene(scene),
                "render": render,
                "captions": [{"template": t, "text": text} for t, text in captions],
                "voices": voices,
            }
        )
    return plans


def _build_scene(task: tuple[dict[str, Any], str, int, bool]) -> list[float | None]:
    """Worker: write one scene's png and wavs (skipping files already there); returns durations."""
    from tmt.corpora.tts import Voice, synthesize_to_wav

    plan, out_dir, image_size, speech = task
    out = Path(out_dir)
    png = out / "images" / f"{plan['id']}.png"
    if not png.is_file():
        atomic_write_bytes(png, png_bytes(render_scene(plan["scene"], plan["render"], image_size)))
    durations: list[float | None] = []
    for k, (cap, voice) in enumerate(zip(plan["captions"], plan["voices"], strict=True)):
        if not speech or voice is None:
            durations.append(None)
            continue
        wav = out / "speech" / f"{plan['id']}_{k}.wav"
        if wav.is_file():
            import soundfile as sf

            durations.append(round(float(sf.info(str(wav)).duration), 4))
        else:
            durations.append(round(synthesize_to_wav(cap["text"], Voice(**voice), wav), 4))
    return durations


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def _rows(plans: Sequence[dict[str, Any]], durations: Sequence[list[float | None]]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for plan, durs in zip(plans, durations, strict=True):
        sid, split = plan["id"], plan["split"]
        image = f"images/{sid}.png"
        if split == "images_only":
            rows[split].append({"id": sid, "group": sid, "split": split, "image": image, "speech": None, "text": None, "scene": plan["scene"]})
            continue
        for k, (cap, voice, dur) in enumerate(zip(plan["captions"], plan["voices"], durs, strict=True)):
            has_speech = voice is not None and dur is not None
            rows[split].append(
                {
                    "id": f"{sid}_{k}",
                    "group": sid,
                    "split": split,
                    "image": None if split == "speech_text_only" else image,
                    "speech": f"speech/{sid}_{k}.wav" if has_speech else None,
                    "text": cap["text"],
                    "caption_index": k,
                    "template": cap["template"],
                    "scene": plan["scene"],
                    "tts": voice if has_speech else None,
                    "duration": dur if has_speech else None,
                }
            )
    return rows


def _readme(cfg: ScenesConfig, rows: Mapping[str, list[dict[str, Any]]], engines: Sequence[str], plans: Sequence[dict[str, Any]]) -> str:
    voices = Counter(f"{r['tts']['engine']}:{r['tts']['voice']}" for rs in rows.values() for r in rs if r.get("tts"))
    hours = sum(r.get("duration") or 0.0 for rs in rows.values() for r in rs) / 3600
    lines = [
        "# scenes: the embedded tri-modal corpus",
        "",
        f"Written by `tmt prepare scenes` (generator version {GENERATOR_VERSION}). Regenerate with:",
        "",
        f"    tmt prepare scenes --num-scenes {cfg.num_scenes} --seed {cfg.seed} --image-size {cfg.image_size} "
        f"--max-objects {cfg.max_objects} --out <dir>",
        "",
        f"{len(plans)} images ({cfg.image_size}x{cfg.image_size} RGB, {cfg.min_objects}-{cfg.max_objects} objects), "
        f"{cfg.captions_per_image} captions per image, "
        + (f"one 16 kHz mono 16-bit recording per caption ({hours:.2f} h)." if cfg.speech else "no speech."),
        "",
        "| split | images | rows | image | speech | text |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in SPLITS:
        rs = rows[s]
        lines.append(
            f"| {s} | {len({r['group'] for r in rs})} | {len(rs)} | {sum(r['image'] is not None for r in rs)} "
            f"| {sum(r['speech'] is not None for r in rs)} | {sum(r['text'] is not None for r in rs)} |"
        )
    lines += [
        "",
        "`test_novel` images each hold one colour-shape pair never seen in the other splits: "
        + ", ".join(f"{c} {s}" for c, s in HELD_OUT)
        + ".",
        "`images_only` and `speech_text_only` are the unpaired pools for back-translation; the withheld",
        "modality of their scenes is still on disk (images/, speech/) to score back-translation against.",
        "",
        f"Engines: {', '.join(engines) if cfg.speech else 'none'}. Voices (recordings): "
        + (", ".join(f"{v} ({n})" for v, n in sorted(voices.items())) or "none")
        + ".",
        "",
        f"Shapes: {', '.join(SHAPES)}. Colours: {', '.join(COLOURS)}. Sizes: {', '.join(SIZES)}. "
        f"Positions: {', '.join(POSITIONS)}. Relations: {', '.join(RELATIONS)}.",
        "",
        f"Caption vocabulary ({len(caption_vocabulary())} words): {' '.join(caption_vocabulary())}",
        "",
        "Each row's `scene` is the scene graph; `tts` is {engine, voice, rate, pitch}.",
        "`tmt.corpora.scenes.parse_scene(image)` recovers the graph from pixels.",
        "",
    ]
    return "\n".join(lines)


def prepare_scenes(
    out_dir: str | Path,
    *,
    num_scenes: int = 2000,
    seed: int = 0,
    image_size: int = 64,
    max_objects: int = 2,
    min_objects: int = 1,
    jobs: int = 1,
    engines: Sequence[str] = ("espeak-ng", "flite"),
    speech: bool = True,
    captions_per_image: int = CAPTIONS_PER_IMAGE,
    fractions: Mapping[str, float] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write the scenes corpus into `out_dir`; returns a summary dict.

    Layout: `images/<scene>.png`, `speech/<scene>_<k>.wav`, one raw manifest per split
    (`train`, `valid`, `test`, `test_novel`, `images_only`, `speech_text_only`
    `.jsonl.gz`; media paths relative to `out_dir`), `README.md` and `prepare.json`
    (the settings). Re-running with the same settings skips media already written;
    different settings in a non-empty directory are refused unless `overwrite`.
    """
    from tmt.store.manifest import validate_rows, write_manifest

    base = ScenesConfig()
    cfg = ScenesConfig(
        num_scenes=num_scenes,
        seed=seed,
        image_size=image_size,
        min_objects=min_objects,
        max_objects=max_objects,
        captions_per_image=captions_per_image,
        speech=speech,
        engines=tuple(engines),
        fractions=dict(fractions) if fractions is not None else base.fractions,
    )
    if image_size < 32:
        raise TmtError(f"--image-size must be at least 32 pixels, got {image_size}")
    if captions_per_image < 1:
        raise TmtError(f"captions per image must be at least 1, got {captions_per_image}")
    from tmt.corpora.tts import available_engines, voice_names

    used = available_engines(cfg.engines) if cfg.speech else []
    out = Path(out_dir)
    stamp_path = out / "prepare.json"
    config = dataclasses.asdict(cfg) | {"engines": list(cfg.engines)}
    settings = {"generator_version": GENERATOR_VERSION, "config": config, "engines_used": used}
    if stamp_path.is_file():
        old = json.loads(stamp_path.read_text())
        if old.get("settings") != settings and not overwrite:
            raise TmtError(
                f"{out} already holds a scenes corpus made with other settings ({stamp_path}); "
                "use another --out directory or pass --overwrite"
            )
        if old.get("settings") != settings:
            for sub in ("images", "speech"):
                shutil.rmtree(out / sub, ignore_errors=True)
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TmtError(f"{out} exists and is not a scenes corpus directory; choose an empty --out or pass --overwrite")
    (out / "images").mkdir(parents=True, exist_ok=True)
    if cfg.speech:
        (out / "speech").mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp_path, {"settings": settings, "complete": False})

    plans = plan_scenes(cfg, voice_names(used) if cfg.speech else None)
    tasks = [(p, str(out), cfg.image_size, cfg.speech) for p in plans]
    show = progress if progress is not None else (sys.stderr.isatty() or os.environ.get("TMT_PROGRESS") == "1")
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="scenes", unit="scene", file=sys.stderr, disable=not show, dynamic_ncols=True)
    durations: list[list[float | None]] = []
    try:
        if jobs <= 1:
            for t in tasks:
                durations.append(_build_scene(t))
                bar.update()
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch/OpenMP state
            with ctx.Pool(jobs, initializer=_init_worker) as pool:
                for d in pool.imap(_build_scene, tasks, chunksize=max(1, min(16, len(tasks) // (4 * jobs)))):
                    durations.append(d)
                    bar.update()
    finally:
        bar.close()
    rows = _rows(plans, durations)
    counts = {}
    for split in SPLITS:
        path = out / f"{split}.jsonl.gz"
        validate_rows(rows[split], manifest=path, check_files=True)
        counts[split] = write_manifest(path, rows[split])
    atomic_write_text(out / "README.md", _readme(cfg, rows, used, plans))
    atomic_write_json(stamp_path, {"settings": settings, "complete": True, "rows": counts})
    summary = {
        "out": str(out),
        "images": len(plans),
        "captions": sum(len(p["captions"]) for p in plans),
        "wavs": sum(d is not None for ds in durations for d in ds),
        "rows": counts,
        "engines": used,
    }
    log.info("scenes corpus in %s: %s", out, summary)
    return summary
