"""Random scene graphs: sample objects and lay them out so their relations read clearly.

`sample_scene(rng, num_objects=...)` draws one scene graph with geometry (one
object at a named position, two objects in one relation, or a chain of three);
`clean_scene` rounds it to the form stored in manifests. The order of the
random draws is part of the corpus's identity: changing it changes the bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tmt import TmtError
from tmt.corpora.scenes.geometry import (
    COLOUR_JITTER,
    COLOURS,
    GAP,
    HELD_OUT,
    MARGIN,
    MAX_ROTATION,
    POSITIONS,
    RADIUS,
    RELATIONS,
    SHAPES,
    SIZES,
    _extent,
    _rel_of,
)


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
    out = {"objects": objs, "position": scene.get("position"), "relations": [dict(r) for r in scene.get("relations", [])]}
    if scene.get("background") is not None:  # `tones` corpora: the named background tone
        out["background"] = scene["background"]
    return out

