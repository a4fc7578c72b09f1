"""Object and background image tokens (issue 18 section 0): masks from scene graphs on a
token grid, the split of teacher-forced CE and accuracy, and the training validation log."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tmt.corpora.scenes import clean_scene, render_scene, sample_scene
from tmt.corpora.scenes.masks import grid_mask, scene_boxes, scene_token_mask
from tmt.training.token_split import (
    MASK_KEY,
    image_grid,
    row_token_mask,
    split_metrics,
    split_sums,
    store_masks,
)

torch.set_num_threads(1)

SQUARE = {"objects": [{"shape": "square", "colour": "red", "size": "small",
                       "center": [0.5, 0.5], "radius": 0.1, "angle": 0.0}]}


def test_a_centred_square_covers_the_four_middle_tokens_of_an_8x8_grid() -> None:
    [box] = scene_boxes(SQUARE, margin=0.0) or []
    assert box == pytest.approx((0.4, 0.4, 0.6, 0.6))
    [box] = scene_boxes(SQUARE) or []  # half a 64-pixel image's pixel of margin
    assert box == pytest.approx((0.4 - 0.5 / 64, 0.4 - 0.5 / 64, 0.6 + 0.5 / 64, 0.6 + 0.5 / 64))
    mask = scene_token_mask(SQUARE, (8, 8))
    assert mask is not None and mask.shape == (64,)
    assert sorted(np.flatnonzero(mask)) == [27, 28, 35, 36]  # rows 3-4, columns 3-4
    # a 4x8 grid (the 32-token card): rows 1-2 (0.25-0.75), columns 3-4
    assert sorted(np.flatnonzero(scene_token_mask(SQUARE, (4, 8)))) == [11, 12, 19, 20]
    # rotated by 45 degrees its box grows to 0.359-0.641: rows and columns 2-5 of the 8x8 grid
    rot = {"objects": [dict(SQUARE["objects"][0], angle=45.0)]}
    [box] = scene_boxes(rot, margin=0.0) or []
    half = 0.1 * np.sqrt(2)
    assert box == pytest.approx((0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half))
    assert sorted(np.flatnonzero(scene_token_mask(rot, (8, 8)))) == [r * 8 + c for r in range(2, 6) for c in range(2, 6)]


def test_touching_a_patch_edge_is_not_covering_it_and_boxes_are_clipped() -> None:
    assert sorted(np.flatnonzero(grid_mask([(0.25, 0.25, 0.5, 0.5)], (4, 4)))) == [5]
    assert sorted(np.flatnonzero(grid_mask([(0.9, 0.9, 1.0, 1.0)], (2, 2)))) == [3]
    assert not grid_mask([(0.5, 0.5, 0.5, 0.7)], (4, 4)).any()  # empty box
    edge = {"objects": [dict(SQUARE["objects"][0], center=[0.05, 0.5])]}
    [box] = scene_boxes(edge) or []
    assert box[0] == 0.0
    assert scene_boxes({"objects": [{"shape": "star", "colour": "red", "size": "small"}]}) is None


def test_masks_from_the_manifest_agree_with_the_rendered_pixels() -> None:
    rng = np.random.default_rng(3)
    for k in range(40):
        scene = clean_scene(sample_scene(rng, num_objects=1 + k % 3))
        img = np.asarray(render_scene(scene, {"background": 110, "noise_seed": k}, 64), dtype=np.int64)
        changed = (np.abs(img - 110) > 20).any(-1)  # pixels an object painted
        mask = scene_token_mask(scene, (8, 8))
        assert mask is not None
        patches = changed.reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, 64).any(-1)
        assert patches.any() and not mask.all()
        assert not (patches & ~mask).any(), f"scene {k}: object pixels in a background token"


def test_image_grid_and_row_masks() -> None:
    card = {"class": "image-vq", "name": "x", "model": {"image_size": 64, "factor": [16, 8]}}
    assert image_grid({"card": card}) == (4, 8)
    assert image_grid({"card": {"class": "image-titok", "grid": [2, 16]}}) == (2, 16)
    assert image_grid({"card": {"class": "image-titok"}}) is None  # 1-D tokens: no grid
    aligned = {"class": "image-aligned", "name": "a", "model": {"image_size": 64, "factor": [16, 8]}}
    assert image_grid({"card": aligned}) == (4, 8)  # the text-aligned family's grid layout
    queries = aligned | {"model": aligned["model"] | {"layout": "queries", "num_queries": 32}}
    assert image_grid({"card": queries}) is None  # its learned queries read the whole image: no grid
    assert image_grid(None) is None
    meta = {"id": "a", "scene": SQUARE}
    assert sorted(np.flatnonzero(row_token_mask(meta, (8, 8)))) == [27, 28, 35, 36]
    assert row_token_mask(meta, None) is None
    assert list(row_token_mask({MASK_KEY: [0, 1, 1]}, None)) == [False, True, True]  # the column wins


def test_split_of_nll_and_accuracy_on_a_constructed_batch() -> None:
    nll = torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, 5.0], [7.0, 7.0, 7.0]])
    correct = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    masks = [np.array([1, 0], bool), np.array([0, 1, 1], bool), None]
    # row 0: 2 image tokens (position 2 is its <eos>); row 2: no mask, left out
    sums = split_sums(nll, correct, [2, 3, 3], masks)
    assert (sums["object"].nll, sums["object"].correct, sums["object"].tokens) == (10.0, 3.0, 3.0)
    assert (sums["background"].nll, sums["background"].correct, sums["background"].tokens) == (5.0, 0.0, 2.0)
    m = split_metrics(sums)
    assert m["ce_object"] == pytest.approx(10 / 3) and m["acc_object"] == 1.0
    assert m["ce_background"] == 2.5 and m["acc_background"] == 0.0
    # a mask whose length differs from the row's tokens (another tokenizer's grid) is not used
    assert split_sums(nll, correct, [3, 3, 3], masks)["object"].tokens == 2.0
    assert split_metrics(split_sums(nll, correct, [2, 3, 3], [None] * 3)) == {}


def _masked_store(root: Path, with_masks: bool) -> None:
    from tmt.store.token_store import TokenStoreWriter
    from tmt.training.synthetic import FINGERPRINTS, SIZES, scene_tokens

    with TokenStoreWriter(root, streams=dict(SIZES), fingerprints=FINGERPRINTS, source={"t": 1}, overwrite=True) as w:
        for i in range(12):
            meta = {"id": f"s{i}", "group": f"s{i}", "split": "valid"}
            if with_masks:
                meta[MASK_KEY] = [int((i + k) % 3 == 0) for k in range(8)]
            w.add(meta, dict(scene_tokens(i % 5, i // 5, image_len=8)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny t2i + i2t model trained 2 steps, validated on a store with image_token_mask rows."""
    from tmt.training.config import train_preset
    from tmt.training.synthetic import synthetic_vocab
    from tmt.training.trainer import train

    d = tmp_path_factory.mktemp("split")
    _masked_store(d / "masked", True)
    _masked_store(d / "plain", False)
    synthetic_vocab().save(d / "vocab.json")
    cfg = train_preset("tiny")
    cfg = replace(cfg, data=replace(cfg.data, vocab=str(d / "vocab.json"), stores=[str(d / "masked")],
                                    valid_stores=[str(d / "masked")], max_tokens=300, directions=["t2i", "i2t"]),
                  max_steps=2, valid_every=2, save_every=2, log_every=2, plot=False)
    train(cfg, d / "exp")
    cfg = replace(cfg, data=replace(cfg.data, valid_stores=[str(d / "plain")]))
    train(cfg, d / "exp2")
    return d


def _valid_record(exp: Path) -> dict[str, Any]:
    [valid] = [r for r in map(json.loads, (exp / "metrics.jsonl").read_text().splitlines()) if r["split"] == "valid"]
    return valid


def test_validation_logs_the_split_and_says_unavailable_without_masks(trained: Path) -> None:
    from tmt.models.checkpoint import load_model
    from tmt.store.pipeline import BatchReader
    from tmt.training.synthetic import synthetic_vocab
    from tmt.training.token_split import object_background

    valid = _valid_record(trained / "exp")
    assert {"ce_obj/t2i", "acc_obj/t2i", "ce_bg/t2i", "acc_bg/t2i"} <= set(valid)
    assert not any(k.endswith("/i2t") and "_" in k.split("/")[0] for k in valid)  # text targets: no split
    # the logged numbers are the model's: recompute them from the saved weights
    masks, why = store_masks([str(trained / "masked")])
    assert why is None and len(masks) == 12
    reader = BatchReader([str(trained / "masked")], synthetic_vocab(), directions=["t2i"], train=False, prefetch=0,
                         max_tokens=300)
    try:
        m = split_metrics(object_background(load_model(trained / "exp"), reader, ["t2i"], masks)["t2i"])
    finally:
        reader.close()
    assert m["tokens_object"] == sum(int(v.sum()) for v in masks.values())
    assert valid["ce_obj/t2i"] == pytest.approx(m["ce_object"], rel=1e-5)
    assert valid["acc_bg/t2i"] == pytest.approx(m["acc_background"])
    # a store without masks or scenes: "unavailable", never a number
    valid = _valid_record(trained / "exp2")
    assert valid["object_split"].startswith("unavailable: store ") and "no token grid" in valid["object_split"]
    assert "ce_obj/t2i" not in valid


def test_score_model_mode_adds_the_split_to_image_targets_only(trained: Path) -> None:
    from tmt.cli.score_model import add_token_split

    def scores() -> dict[str, Any]:
        return {"directions": {
            "text->image": {"src": "text", "tgt": "image", "metrics": {"exact_match": 0.0}, "unavailable": {}},
            "image->text": {"src": "image", "tgt": "text", "metrics": {"bleu4": 1.0}, "unavailable": {}},
        }}

    valid = _valid_record(trained / "exp")
    s = scores()
    assert add_token_split(s, str(trained / "exp"), str(trained / "masked"))
    t2i = s["directions"]["text->image"]
    assert t2i["metrics"]["tf_ce_object"] == pytest.approx(valid["ce_obj/t2i"], rel=1e-5)
    assert t2i["metrics"]["tf_acc_background"] == pytest.approx(100 * valid["acc_bg/t2i"])
    assert t2i["tf_tokens"]["object"] + t2i["tf_tokens"]["background"] == 12 * 8
    assert s["directions"]["image->text"]["metrics"] == {"bleu4": 1.0}
    for store, why in ((None, "needs --ref-store"), (str(trained / "plain"), "no token grid")):
        s = scores()
        assert add_token_split(s, str(trained / "exp"), store)
        assert why in s["directions"]["text->image"]["unavailable"]["tf_object_split"]
        assert "tf_ce_object" not in s["directions"]["text->image"]["metrics"]
    s = scores()
    del s["directions"]["text->image"]
    assert not add_token_split(s, str(trained / "exp"), str(trained / "masked"))
    # hypotheses-directory mode: each direction's own model (its run.json's), not the argument
    s = scores()
    s["directions"]["speech->image"] = {"src": "speech", "tgt": "image", "metrics": {}, "unavailable": {},
                                        "model": str(trained / "gone")}
    s["directions"]["text->image"]["model"] = str(trained / "exp")
    assert add_token_split(s, None, str(trained / "masked"))
    assert s["directions"]["text->image"]["metrics"]["tf_ce_object"] == pytest.approx(valid["ce_obj/t2i"], rel=1e-5)
    assert "is not there" in s["directions"]["speech->image"]["unavailable"]["tf_object_split"]
