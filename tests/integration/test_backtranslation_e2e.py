"""Back-translation as a stage, end to end on the 20-scene fixture (issue: back-translation).

The shared tiny model back-translates the corpus' partial pools straight from their raw
manifests (images only, sharded over two workers; speech+text without images), training
continues on real + synthetic rows from that model, and both models are scored on the same
test split, direction by direction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tmt.cli import cli
from tmt.store.ops import validate_store
from tmt.store.token_store import TokenStore

pytestmark = pytest.mark.slow

SIX = {"image->text", "image->speech", "text->image", "speech->image", "speech->text", "text->speech"}


def _ok(*args: Any) -> Any:
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, f"tmt {' '.join(map(str, args))}\n{r.output}"
    return r


def test_backtranslation_stage_before_and_after(tiny_pipeline: Any, tmp_path: Path) -> None:
    p = tiny_pipeline
    images_only = p.corpus / "images_only.jsonl.gz"
    speech_text = p.corpus / "speech_text_only.jsonl.gz"
    bt_img, bt_st = tmp_path / "bt_images", tmp_path / "bt_speech_text"
    for k in range(2):  # two workers, each tokenizing only its own rows of the manifest
        _ok("backtranslate", "-m", p.exp, "--manifest", images_only, "-o", bt_img, "--shard", f"{k}/2",
            "--set", "beam_size=2")
    _ok("manifest", "merge-parts", bt_img, "--parts", "2")
    _ok("backtranslate", "-m", p.exp, "--manifest", speech_text, "-o", bt_st, "--set", "beam_size=2")

    n_images = sum(1 for _ in (json.loads(x) for x in __import__("gzip").open(images_only, "rt")))
    img = TokenStore(bt_img)
    assert len(img) == n_images
    for row in img:
        assert row.meta["synthetic"] and row.meta["synthetic_modalities"] == ["speech", "text"]
        assert row.meta["direction"] == "image->speech,image->text"
    st = TokenStore(bt_st)
    assert len(st) >= 1 and all(r.meta["direction"] == "text->image" for r in st)
    for store in (bt_img, bt_st):
        validate_store(store)
        stats = json.loads(_ok("manifest", "stats", "--json", store).output)
        assert stats["synthetic_rows"] == stats["rows"] and stats["real_rows"] == 0

    exp_bt = tmp_path / "exp_bt"
    _ok("train", "-o", exp_bt, "--preset", "tiny", "--vocab", p.vocab, "--init-from", p.exp,
        "--store", p.stores["train"], "--store", f"{bt_img}=0.5", "--store", f"{bt_st}=0.5",
        "--max-steps", "20", "--lr", "1e-3", "--device", "cpu")
    assert (exp_bt / "model.pt").is_file()

    scores = {}
    for name, exp in (("before", p.exp), ("after", exp_bt)):
        out = tmp_path / f"scores_{name}"
        _ok("score", "run", "--model", exp, "--manifest", p.manifests["test"], "--split", "test",
            "--directions", "all", "--limit", "2", "--beam-size", "2", "--vocoder", p.vocoder,
            "--no-coco", "--no-ceiling", "--out-dir", out)
        scores[name] = out
    r = _ok("score", "--compare", scores["before"], scores["after"], "--json")
    rows = json.loads(r.output)
    directions = {row["direction"] for row in rows}
    assert SIX <= directions, directions
