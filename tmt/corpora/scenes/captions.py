"""Captions: the templates and synonym tables, caption writing, and reading captions back.

`make_captions(scene, rng)` writes distinct captions for a scene from the
templates (synonyms and varied word order); `caption_to_scene(text)` inverts
the templates into a scene graph (the text-side judge); `caption_vocabulary`
lists every word they can produce.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tmt.corpora.scenes.geometry import COLOURS, INVERSE, PLAIN_TONE, TONES

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
BACKGROUND_WORDS = {
    "dark": ("on a dark background", "against a dark background"),
    "light": ("on a light background", "against a light background"),
}
"""How captions say a background tone (`tones` corpora); the plain tone goes unsaid."""
assert set(BACKGROUND_WORDS) == set(TONES) - {PLAIN_TONE}
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


def say_background(captions: Sequence[tuple[int, str]], tone: str, rng: np.random.Generator) -> list[tuple[int, str]]:
    """The captions with the background tone said at the end of each (unchanged for the plain tone)."""
    if tone == PLAIN_TONE:
        return list(captions)
    return [(t, f"{text} {_pick(rng, BACKGROUND_WORDS[tone])}") for t, text in captions]


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
_TONE_OF = _reverse(BACKGROUND_WORDS)
_TONE_RE = re.compile(f" ({_alt(_TONE_OF)})$")


def caption_to_scene(text: str) -> dict[str, Any] | None:
    """Parse a caption written by the scene templates back into a scene graph (None if it
    is not one). Case and surrounding whitespace/punctuation are ignored. A caption that says its
    background ("... on a dark background") gives the graph a `background` tone; others give none."""
    norm = re.sub(r"\s+", " ", text.lower().strip().rstrip(".!")).strip()
    tone = _TONE_RE.search(norm)
    if tone:
        norm = norm[: tone.start()]
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
            scene: dict[str, Any] = {"objects": objs, "position": position, "relations": rels}
            if tone:
                scene["background"] = _TONE_OF[tone.group(1)]
            return scene
    return None


def caption_vocabulary(*, tones: bool = False) -> list[str]:
    """Every word the templates can produce, sorted (`tones`: with the background phrases)."""
    words: set[str] = set()
    tables: list[Mapping[str, Sequence[str]]] = [SIZE_WORDS, COLOUR_WORDS, SHAPE_WORDS, RELATION_WORDS, POSITION_WORDS]
    for table in tables + ([BACKGROUND_WORDS] if tones else []):
        for ws in table.values():
            for w in ws:
                words.update(w.split())
    for ts in TEMPLATES.values():
        for t in ts:
            words.update(w for w in re.sub(r"\{\w+\}", " ", t).split())
    return sorted(words)

