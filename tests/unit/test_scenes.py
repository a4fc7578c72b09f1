"""The scenes generator, caption templates and the scene-graph judge (no speech: fast)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tmt import TmtError
from tmt.corpora.scenes import (
    ATTRIBUTES,
    HELD_OUT,
    SPLITS,
    TEMPLATES,
    ScenesConfig,
    _split_counts,
    caption_to_scene,
    caption_vocabulary,
    compare_scenes,
    parse_scene,
    plan_scenes,
    render_scene,
    scene_matches,
)


def _recovery(cfg: ScenesConfig, split: str | None = None) -> tuple[float, dict[str, float], int]:
    plans = [p for p in plan_scenes(cfg) if split is None or p["split"] == split]
    per_attr: Counter[str] = Counter()
    for p in plans:
        res = compare_scenes(parse_scene(render_scene(p["scene"], p["render"], cfg.image_size)), p["scene"])
        per_attr.update(k for k, v in res.items() if v)
    n = len(plans)
    return per_attr["all"] / n, {k: per_attr[k] / n for k in ATTRIBUTES}, n


def test_parser_recovers_clean_generated_scenes(capsys):
    # 320 images of the default configuration (1-2 objects), drawn without speech
    cfg = ScenesConfig(num_scenes=320, seed=123, speech=False)
    t0 = time.perf_counter()
    rate, per_attr, n = _recovery(cfg)
    dt = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\nscene parser: exact scene recovery {rate:.2%} on {n} clean generated images "
            f"({dt / n * 1000:.1f} ms/image); per attribute "
            + ", ".join(f"{k} {v:.2%}" for k, v in per_attr.items())
        )
    assert rate >= 0.98


def test_parser_recovers_three_object_scenes(capsys):
    rate, _, n = _recovery(ScenesConfig(num_scenes=60, seed=5, speech=False, min_objects=3, max_objects=3))
    with capsys.disabled():
        print(f"\nscene parser: exact recovery {rate:.2%} on {n} three-object images")
    assert rate >= 0.95


def test_parser_takes_arrays_in_several_layouts():
    p = plan_scenes(ScenesConfig(num_scenes=3, seed=2, speech=False))[0]
    img = render_scene(p["scene"], p["render"], 64)
    arr = np.asarray(img)
    for x in (img, arr, arr.astype(np.float32) / 255.0, np.moveaxis(arr, 2, 0)):
        assert scene_matches(parse_scene(x), p["scene"])
    blank = parse_scene(np.full((64, 64, 3), 120, np.uint8))
    assert blank == {"objects": [], "position": None, "relations": [], "background": "grey"}
    assert not scene_matches(blank, p["scene"])
    with pytest.raises(TmtError, match="expects an RGB image"):
        parse_scene(np.zeros((4, 4, 4, 4)))


def test_images_are_distinct_and_deterministic():
    cfg = ScenesConfig(num_scenes=40, seed=9, speech=False)
    a = [np.asarray(render_scene(p["scene"], p["render"], 64)).tobytes() for p in plan_scenes(cfg)]
    b = [np.asarray(render_scene(p["scene"], p["render"], 64)).tobytes() for p in plan_scenes(cfg)]
    assert a == b
    assert len(set(a)) == len(a)
    other = [p["scene"] for p in plan_scenes(ScenesConfig(num_scenes=40, seed=10, speech=False))]
    assert other != [p["scene"] for p in plan_scenes(cfg)]


def test_captions_follow_templates_and_parse_back():
    assert all(len(ts) >= 8 for n, ts in TEMPLATES.items() if n <= 2)
    plans = plan_scenes(ScenesConfig(num_scenes=150, seed=4, speech=False, max_objects=3))
    used = Counter()
    for p in plans:
        texts = [c["text"] for c in p["captions"]]
        assert len(texts) == 5 and len(set(texts)) == 5
        for c in p["captions"]:
            assert c["text"] == c["text"].lower()
            assert set(c["text"].split()) <= set(caption_vocabulary())
            parsed = caption_to_scene(c["text"])
            assert parsed is not None, c["text"]
            assert scene_matches(parsed, p["scene"]), (c["text"], p["scene"])
            used[(len(p["scene"]["objects"]), c["template"])] += 1
    assert sum(1 for (n, _t) in used if n == 2) >= 8  # varied templates in use
    assert caption_to_scene("a photo of a dog") is None
    assert caption_to_scene("A small red circle above a big blue square.") == {
        "objects": [
            {"shape": "circle", "colour": "red", "size": "small"},
            {"shape": "square", "colour": "blue", "size": "large"},
        ],
        "position": None,
        "relations": [{"subject": 0, "relation": "above", "object": 1}],
    }


def test_held_out_pairs_only_in_test_novel():
    plans = plan_scenes(ScenesConfig(num_scenes=300, seed=1, speech=False))
    held = set(HELD_OUT)
    for p in plans:
        pairs = {(o["colour"], o["shape"]) for o in p["scene"]["objects"]}
        if p["split"] == "test_novel":
            assert pairs & held
        else:
            assert not pairs & held
    counts = Counter(p["split"] for p in plans)
    assert set(counts) == set(SPLITS)
    assert counts["train"] == 210


def test_split_counts_give_every_split_an_image():
    assert _split_counts(20, ScenesConfig().fractions) == {
        "train": 14, "valid": 1, "test": 1, "test_novel": 1, "images_only": 2, "speech_text_only": 1,
    }
    assert sum(_split_counts(6, ScenesConfig().fractions).values()) == 6
    assert min(_split_counts(6, ScenesConfig().fractions).values()) == 1
    with pytest.raises(TmtError, match="unknown split"):
        _split_counts(10, {"dev": 1.0})


def _obj(shape, colour, size, center=None):
    o = {"shape": shape, "colour": colour, "size": size}
    if center:
        o["center"] = center
    return o


def test_compare_scenes_is_order_and_direction_invariant():
    ref = {
        "objects": [_obj("circle", "red", "small"), _obj("square", "blue", "large")],
        "position": None,
        "relations": [{"subject": 0, "relation": "above", "object": 1}],
    }
    swapped = {
        "objects": [_obj("square", "blue", "large", [0.5, 0.7]), _obj("circle", "red", "small", [0.5, 0.3])],
        "position": None,
        "relations": [{"subject": 0, "relation": "below", "object": 1}],
    }
    assert scene_matches(swapped, ref)
    wrong_colour = {**swapped, "objects": [_obj("square", "green", "large", [0.5, 0.7]), swapped["objects"][1]]}
    res = compare_scenes(wrong_colour, ref)
    assert res == {"count": True, "shape": True, "colour": False, "size": True, "position": True, "relation": True, "all": False}
    wrong_rel = {**swapped, "objects": [_obj("square", "blue", "large", [0.8, 0.5]), _obj("circle", "red", "small", [0.2, 0.5])]}
    assert compare_scenes(wrong_rel, ref)["relation"] is False
    one = {"objects": [swapped["objects"][0]], "position": None, "relations": []}
    assert compare_scenes(one, ref)["count"] is False and not scene_matches(one, ref)
    single = {"objects": [_obj("star", "white", "large")], "position": "left", "relations": []}
    assert compare_scenes({"objects": [_obj("star", "white", "large", [0.8, 0.5])], "position": "right", "relations": []}, single)["position"] is False
    assert scene_matches({"objects": [_obj("star", "white", "large", [0.2, 0.52])], "position": "left", "relations": []}, single)


def test_parse_scene_on_png_roundtrip(tmp_path):
    from tmt.testing.fixtures import make_png

    path = make_png(tmp_path / "x.png", seed=3)
    scene = parse_scene(Image.open(path))
    assert len(scene["objects"]) == 2 and scene["objects"][0]["score"] > 0.8
