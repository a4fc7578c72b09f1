from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tmt.backtranslation import BacktranslateConfig, BacktranslateError, backtranslate, plan_row
from tmt.core.errors import TmtError
from tmt.store.ops import merge_parts, store_stats, validate_store
from tmt.store.token_store import (
    DURATION_VOCAB,
    TokenStore,
    TokenStoreWriter,
)
from tmt.vocab import JointVocab

SIZES = {"text": 40, "speech": 30, "image": 24}
IMAGE_LEN = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tmt.models.checkpoint import save_model
    from tmt.models.config import get_preset
    from tmt.models.tmt import create_model

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("bt")
    vocab = JointVocab.from_sizes(SIZES, {m: f"{m}-fp" for m in SIZES})
    model = create_model(get_preset("tiny"), vocab)
    save_model(model, root / "exp")
    rng = np.random.default_rng(0)
    streams = dict(SIZES) | {"durations": DURATION_VOCAB}
    with TokenStoreWriter(root / "partial", streams=streams, fingerprints=vocab.fingerprints()) as w:
        for i in range(7):
            w.add({"id": f"img{i}", "group": f"g{i}", "split": "images_only"}, {"image": rng.integers(0, 24, IMAGE_LEN)})
        for i in range(5):
            sp = rng.integers(0, 30, 12)
            w.add({"id": f"st{i}", "group": f"h{i}", "split": "speech_text_only"},
                  {"speech": sp, "durations": np.ones(12, dtype=np.int64), "text": rng.integers(0, 40, 5)})
        w.add({"id": "si0", "group": "k0"}, {"speech": rng.integers(0, 30, 9), "durations": np.ones(9, dtype=np.int64), "image": rng.integers(0, 24, IMAGE_LEN)})
        w.add({"id": "full0", "group": "f0"}, {"speech": rng.integers(0, 30, 9), "durations": np.ones(9, dtype=np.int64), "image": rng.integers(0, 24, IMAGE_LEN), "text": rng.integers(0, 40, 4)})
    return root, vocab


def test_plan_prefers_pivot_and_text():
    avail = ["text", "speech", "image"]
    pref = BacktranslateConfig().source_preference
    assert plan_row(["image"], avail, pref) == {"text": "image", "speech": "image"}
    assert plan_row(["speech", "text"], avail, pref) == {"image": "text"}
    assert plan_row(["speech", "image"], avail, pref) == {"text": "image"}  # the pivot case
    assert plan_row(["text", "speech", "image"], avail, pref) == {}


def test_backtranslate_marks_and_counts(setup, tmp_path):
    root, _ = setup
    cfg = BacktranslateConfig(beam_size=2, chunk_rows=4)
    stats = backtranslate(root / "exp", root / "partial", tmp_path / "bt", cfg, progress=False)
    assert stats["generated"] == {"image->speech": 7, "image->text": 8, "text->image": 5}
    assert stats["skipped_complete"] == 1
    s = TokenStore(tmp_path / "bt")
    assert len(s) == 13
    validate_store(tmp_path / "bt")
    for row in s:
        assert row.meta["synthetic"] is True and row.meta["checkpoint"].startswith("exp@")
        if row.meta["source_id"].startswith("img"):
            assert row.meta["direction"] == "image->speech,image->text"
            assert len(row.tokens["image"]) == IMAGE_LEN and len(row.tokens["text"]) >= 1
        if row.meta["source_id"].startswith("st"):
            assert len(row.tokens["image"]) == IMAGE_LEN  # exact image length
            assert row.meta["synthetic_modalities"] == ["image"]
            assert len(row.tokens["durations"]) == len(row.tokens["speech"])  # real durations kept
    pivot = next(r for r in s if r.meta["source_id"] == "si0")
    assert pivot.meta["direction"] == "image->text"
    st = store_stats(tmp_path / "bt")
    assert st["synthetic_rows"] == 13 and st["real_rows"] == 0


def test_round_trip_filter_and_ratio_cap(setup, tmp_path):
    root, _ = setup
    strict = BacktranslateConfig(beam_size=2, round_trip_threshold=0.0)  # log-probs are < 0: drop all
    stats = backtranslate(root / "exp", root / "partial", tmp_path / "none", strict, progress=False)
    assert stats["rows_written"] == 0 and sum(stats["filtered"].values()) == 20
    lax = BacktranslateConfig(beam_size=2, round_trip_threshold=-1e9)
    backtranslate(root / "exp", root / "partial", tmp_path / "all", lax, progress=False)
    assert all("round_trip" in r.meta for r in TokenStore(tmp_path / "all"))
    capped = BacktranslateConfig(beam_size=2, max_ratio=0.5)
    stats = backtranslate(root / "exp", root / "partial", tmp_path / "cap", capped, real_rows=10, progress=False)
    assert stats["inputs"] == 5 and stats["rows_written"] <= 5
    with pytest.raises(BacktranslateError, match="real rows"):
        backtranslate(root / "exp", root / "partial", tmp_path / "x", capped, progress=False)


def test_sharded_and_resumed_runs_equal_one_run(setup, tmp_path):
    root, _ = setup
    # beam search everywhere: sampled targets depend on how rows are chunked (one stream per chunk)
    cfg = BacktranslateConfig(beam_size=2, chunk_rows=3, image_sampling=False)
    backtranslate(root / "exp", root / "partial", tmp_path / "one", cfg, progress=False)
    for k in range(2):
        backtranslate(root / "exp", root / "partial", tmp_path / "two", cfg, shard=f"{k}/2", progress=False)
    merge_parts(tmp_path / "two", 2)
    a, b = TokenStore(tmp_path / "one"), TokenStore(tmp_path / "two")
    assert [m["id"] for m in a.iter_meta()] == [m["id"] for m in b.iter_meta()]
    for i in range(len(a)):
        for m in SIZES:
            np.testing.assert_array_equal(a[i].tokens[m], b[i].tokens[m])
    # a finished store is not redone
    again = backtranslate(root / "exp", root / "partial", tmp_path / "one", cfg, progress=False)
    assert again.get("already_complete") is True


def test_resume_after_interrupt(setup, tmp_path, monkeypatch):
    root, _ = setup
    import tmt.backtranslation as bt

    cfg = BacktranslateConfig(beam_size=2, chunk_rows=4)
    calls = {"n": 0}
    real = bt._translate_chunk

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(bt, "_translate_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        backtranslate(root / "exp", root / "partial", tmp_path / "r", cfg, progress=False)
    part = TokenStore(tmp_path / "r")
    assert not part.complete and part.index["progress"]["inputs_done"] == 8
    monkeypatch.setattr(bt, "_translate_chunk", real)
    backtranslate(root / "exp", root / "partial", tmp_path / "r", cfg, progress=False)
    backtranslate(root / "exp", root / "partial", tmp_path / "ref", cfg, progress=False)
    assert [m["id"] for m in TokenStore(tmp_path / "r").iter_meta()] == [m["id"] for m in TokenStore(tmp_path / "ref").iter_meta()]
    a, b = TokenStore(tmp_path / "r"), TokenStore(tmp_path / "ref")
    for i in range(len(a)):  # sampled images included: each chunk's random stream is resume-stable
        for m in SIZES:
            np.testing.assert_array_equal(a[i].tokens[m], b[i].tokens[m])


def test_image_targets_are_sampled_unless_told_otherwise(setup, tmp_path):
    import tmt.backtranslation as bt
    from tmt.generation import Translator

    root, _ = setup
    tr = Translator.from_checkpoint(root / "exp")
    store = TokenStore(root / "partial")
    gens = bt._make_generator(BacktranslateConfig(), tr, store)
    assert gens.for_target("image").config.strategy == "sample"
    assert gens.for_target("text").config.strategy == "beam"
    gens = bt._make_generator(BacktranslateConfig(image_sampling=False), tr, store)
    assert gens.for_target("image").config.strategy == "beam"
    gens = bt._make_generator(BacktranslateConfig(rerank=2, top_k=5), tr, store)
    assert gens.for_target("image").config.rerank == 2 and gens.for_target("text").config.rerank == 0
    gens = bt._make_generator(BacktranslateConfig(rerank=2, rerank_forward=0.0), tr, store)
    assert gens.for_target("image").config.rerank_forward == 0.0
    with pytest.raises(TmtError, match="null_source_prob"):
        bt._make_generator(BacktranslateConfig(guidance=1.0), tr, store)
    cfg = BacktranslateConfig(beam_size=2, chunk_rows=4, num_per_source=2, rerank=2)
    stats = backtranslate(root / "exp", root / "partial", tmp_path / "s", cfg, progress=False)
    assert stats["generated"]["text->image"] == 10  # two sampled (reranked) images per row
    rows = [r for r in TokenStore(tmp_path / "s") if r.meta["source_id"] == "st0"]
    assert len(rows) == 2 and not np.array_equal(rows[0].tokens["image"], rows[1].tokens["image"])


def test_cli_runs_and_stats_count_synthetic(setup, tmp_path):
    from tmt.cli import cli

    root, _ = setup
    r = CliRunner().invoke(cli, ["backtranslate", "-m", str(root / "exp"), "--store", str(root / "partial"),
                                 "-o", str(tmp_path / "bt"), "--set", "beam_size=2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output[r.output.index("{"):])
    assert stats["rows_written"] == 13
    r = CliRunner().invoke(cli, ["manifest", "stats", str(tmp_path / "bt")])
    assert "13 synthetic" in r.output and "image->text" in r.output


def test_pseudo_speech_records_the_voice_it_was_made_with(tmp_path):
    from tmt.models.checkpoint import save_model
    from tmt.models.config import get_preset
    from tmt.models.tmt import create_model

    torch.manual_seed(0)
    plain = JointVocab.from_sizes(SIZES, {m: f"{m}-fp" for m in SIZES})
    vocab = JointVocab(plain.tokenizers, voices=["flite:kal", "flite:slt"], default_voice="flite:kal")
    save_model(create_model(get_preset("tiny"), vocab), tmp_path / "exp")
    rng = np.random.default_rng(1)
    with TokenStoreWriter(tmp_path / "partial", streams=dict(SIZES), fingerprints=vocab.fingerprints()) as w:
        for i in range(3):
            w.add({"id": f"img{i}", "group": f"g{i}"}, {"image": rng.integers(0, 24, IMAGE_LEN)})
        w.add({"id": "st0", "group": "h0", "voice": "flite:slt"},
              {"speech": rng.integers(0, 30, 8), "text": rng.integers(0, 40, 4)})
    cfg = BacktranslateConfig(beam_size=2, voice="flite:slt", round_trip_threshold=-1e9)
    backtranslate(tmp_path / "exp", tmp_path / "partial", tmp_path / "bt", cfg, progress=False)
    metas = {m["source_id"]: m for m in TokenStore(tmp_path / "bt").iter_meta()}
    assert all(metas[f"img{i}"]["voice"] == "flite:slt" for i in range(3))  # made speech: the voice used
    assert "speech" not in metas["st0"]["synthetic_modalities"] and metas["st0"]["voice"] == "flite:slt"
    with pytest.raises(Exception, match="unknown voice 'robot'"):
        backtranslate(tmp_path / "exp", tmp_path / "partial", tmp_path / "bt2", BacktranslateConfig(voice="robot"),
                      progress=False)
