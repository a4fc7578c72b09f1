"""Compare two scene graphs: per-attribute agreement and exact match.

`compare_scenes(pred, ref)` says which attributes (count, shape, colour, size,
position, relation) a predicted graph gets right under the best object
matching; `scene_matches` is its all-attributes verdict. Predictions may come
from `parse_scene` (with geometry) or `caption_to_scene` (relations only).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from tmt.corpora.scenes.captions import _relation_between
from tmt.corpora.scenes.geometry import _position_of, _rel_of

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
    holds between the matched objects; True when not applicable), `background` (only when the
    reference names a background tone: the prediction's tone, if it has the key, is the same), `all`.
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
    if ref.get("background") is not None:  # `tones` corpora; a prediction that names no tone is not judged on it
        out["background"] = pred.get("background", ref["background"]) == ref["background"]
    out["all"] = all(out[k] for k in out)
    return out


def scene_matches(pred: Mapping[str, Any], ref: Mapping[str, Any]) -> bool:
    """True when pred has the same objects (shape, colour, size), the same position
    (one object), the same relations and (where both name one) the same background tone as ref,
    up to object order and relation direction."""
    return compare_scenes(pred, ref)["all"]
