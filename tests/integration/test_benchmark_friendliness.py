"""benchmarks/_friendliness.py: one card's text->image model trained for a fixed number of steps
and scored by the scene parser, through the real `tmt` verbs; a second run reuses finished steps."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.conftest import TinyPipeline

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import _friendliness as fr  # noqa: E402


def test_one_card_is_trained_translated_and_scored_then_reused(tiny_pipeline: TinyPipeline, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = fr.FriendlinessConfig(corpus=tiny_pipeline.corpus, work_dir=tmp_path / "work", steps=3, preset="tiny",
                                limit=4, threads=1)
    text_tok = fr.text_tokenizer(cfg)
    g = fr.friendliness(cfg, "card", tiny_pipeline.tokenizers["image"], text_tok)
    assert g["steps"] == 3 and g["preset"] == "tiny"
    work = cfg.work_dir / "card"
    # the model trained text->image only, for exactly the fixed number of steps
    model_cfg = (work / "t2i" / "config.yaml").read_text()
    assert "t2i" in model_cfg
    assert (work / "t2i" / "checkpoints" / "step_00000003").is_dir()
    # the stores carry text and image tokens, no speech
    index = json.loads((work / "store" / "train" / "index.json").read_text())
    assert "image" in json.dumps(index) and "speech" not in json.dumps(index.get("modalities", index))
    # test was translated (4 rows) and scored by the scene parser
    hyps = (work / "hyp" / "test" / "hypotheses.jsonl").read_text().splitlines()
    assert len(hyps) == 4 and g["test"]["n"] == 4
    assert 0.0 <= g["test"]["scene_exact"] <= g["test"]["scene_count"] <= 100.0
    scores = json.loads((work / "scores" / "test" / "scores.json").read_text())
    assert scores["directions"]["text->image"]["judge"]["judge"] == "tmt.corpora.scenes parser"

    # a second run over the same work dir runs no `tmt` verb and returns the same numbers
    def no_run(*a: object, **k: object) -> None:
        raise AssertionError(f"ran again: {a}")

    monkeypatch.setattr(fr, "_tmt", no_run)
    assert fr.friendliness(cfg, "card", tiny_pipeline.tokenizers["image"], fr.text_tokenizer(cfg)) == g


def test_extra_scenes_join_the_training_pool_at_their_weight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "train_extra", "valid"):  # no test splits: nothing to translate
        (corpus / f"{split}.jsonl.gz").write_bytes(b"")
    calls: dict[str, list[str]] = {}
    monkeypatch.setattr(fr, "_once", lambda work, step, args, threads: calls.setdefault(step, args))
    for weight in (0.5, 0.0):
        calls.clear()
        cfg = fr.FriendlinessConfig(corpus=corpus, work_dir=tmp_path / "w", steps=3, threads=1, extra_weight=weight)
        g = fr.friendliness(cfg, "card", tmp_path / "image", tmp_path / "text")
        train = calls["train"]
        stores = [train[i + 1] for i, a in enumerate(train) if a == "--store"]
        if weight:
            assert "tokenize-train_extra" in calls and g["extra_weight"] == 0.5
            assert stores == [str(tmp_path / "w/card/store/train"), f"{tmp_path / 'w/card/store/train_extra'}=0.5"]
        else:
            assert "tokenize-train_extra" not in calls and g["extra_weight"] == 0.0
            assert stores == [str(tmp_path / "w/card/store/train")]
        assert "image_code_init=1.0" in train and g["code_init"] == 1.0  # the default, as the quick preset trains
    calls.clear()
    fr.friendliness(replace(cfg, code_init=0.0), "card", tmp_path / "image", tmp_path / "text")
    assert "image_code_init=0.0" in calls["train"]
    metrics = tmp_path / "w/card/t2i/metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    rows = [{"split": "valid", "step": s, "ce/t2i": ce} for s, ce in ((250, 5.3), (500, 4.7), (750, 4.9))]
    metrics.write_text("\n".join(json.dumps(r) for r in [{"split": "train", "step": 250, "loss": 1.0}, *rows]))
    g = fr.friendliness(cfg, "card", tmp_path / "image", tmp_path / "text")
    assert g["valid_ce"] == 4.9 and g["best_valid"] == {"step": 500, "ce": 4.7}


def test_refined_encoding_reaches_the_tokenization(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid"):
        (corpus / f"{split}.jsonl.gz").write_bytes(b"")
    calls: dict[str, list[str]] = {}
    monkeypatch.setattr(fr, "_once", lambda work, step, args, threads: calls.setdefault(step, args))
    cfg = fr.FriendlinessConfig(corpus=corpus, work_dir=tmp_path / "w", steps=3, threads=1)
    for steps in (0, 10):
        calls.clear()
        fr.friendliness(cfg, f"card{steps}", tmp_path / "image", tmp_path / "text", refine_steps=steps)
        for split in ("train", "valid"):
            args = calls[f"tokenize-{split}"]
            assert args[args.index("--image-refine-steps") + 1] == str(steps)
