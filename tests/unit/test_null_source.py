"""Null-source training for classifier-free guidance: which rows get the null source, what the
replaced encoder output looks like, the training step's use of it, and the saved record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tmt.generation.generator import GenerationConfig, Generator
from tmt.models.checkpoint import load_model, load_model_config, save_model
from tmt.models.config import ModelError, get_preset
from tmt.models.tmt import TmtModel, create_model
from tmt.store.pipeline import RowBatch
from tmt.training.null_source import apply_null_sources, null_rows, null_source_ids, replace_sources
from tmt.training.steps import SixWayStep
from tmt.training.synthetic import scene_tokens, synthetic_vocab
from tmt.vocab import EOS

torch.set_num_threads(1)


def _model(prob: float) -> TmtModel:
    torch.manual_seed(0)
    return create_model(dataclasses.replace(get_preset("tiny"), null_source_prob=prob), synthetic_vocab())


def test_null_source_is_bos_of_the_source_then_eos() -> None:
    v = synthetic_vocab()
    assert null_source_ids(v, "speech").tolist() == [v.bos("speech"), EOS]


def test_null_rows_follow_the_probability() -> None:
    g = torch.Generator().manual_seed(0)
    rows = null_rows(20_000, 0.1, g)
    assert 0.09 < float(rows.float().mean()) < 0.11
    assert not null_rows(50, 0.0, g).any()


def test_replace_sources_swaps_marked_rows_only() -> None:
    enc = torch.randn(4, 5, 3)
    null = torch.randn(2, 3)
    out, lens = replace_sources(enc, [5, 4, 3, 5], null, torch.tensor([True, False, True, False]))
    assert lens == [2, 4, 2, 5]
    for r in (0, 2):
        assert torch.equal(out[r, :2], null) and not out[r, 2:].any()
    for r in (1, 3):
        assert torch.equal(out[r], enc[r])


def test_apply_null_sources_replaces_the_configured_fraction() -> None:
    """A constructed batch of 2000 encoded rows (length 6): about 10% come back as the
    encoded null source, length 2."""
    model = _model(0.1)
    enc = torch.randn(2000, 6, model.config.model_dim)
    torch.manual_seed(1)
    out, layout = apply_null_sources(model, "text", enc, [6] * 2000, 0.1)
    nulled = [i for i, n in enumerate(layout.seq_lens) if n == 2]
    assert 0.08 < len(nulled) / 2000 < 0.12
    ids = torch.as_tensor(null_source_ids(model.vocab, "text"))[None]
    ref, _ = model.encode(ids, layout.of(ids, [2]))
    assert torch.allclose(out[nulled[0], :2], ref[0], atol=1e-6)
    kept = next(i for i in range(2000) if i not in set(nulled))
    assert torch.equal(out[kept], enc[kept])


def _batch() -> RowBatch:
    v = synthetic_vocab()
    rows = [scene_tokens(a, b) for a, b in [(1, 2), (3, 4), (5, 6), (7, 1)] * 4]
    seqs = {m: [torch.as_tensor(v.to_joint(m, r[m])) for r in rows] for m in ("text", "speech", "image")}
    return RowBatch(ids=[f"r{i}" for i in range(len(rows))], seqs=seqs)  # type: ignore[arg-type]


def test_training_step_uses_null_sources_for_image_targets_only() -> None:
    batch = _batch()
    stats = {}
    for prob in (0.0, 0.9):
        step = SixWayStep(_model(prob), ["t2i", "t2s"]).train()
        torch.manual_seed(3)
        _, st = step(batch)
        stats[prob] = st.dirs
    assert stats[0.0]["t2s"].loss == pytest.approx(stats[0.9]["t2s"].loss)
    assert stats[0.0]["t2i"].loss != pytest.approx(stats[0.9]["t2i"].loss)
    step = SixWayStep(_model(0.9), ["t2i"]).eval()  # validation never sees null sources
    _, a = step(batch)
    _, b = SixWayStep(_model(0.0), ["t2i"]).eval()(batch)
    assert a.dirs["t2i"].loss == pytest.approx(b.dirs["t2i"].loss)


def test_saved_model_records_null_source_training(tmp_path: Path) -> None:
    save_model(_model(0.1), tmp_path / "exp")
    assert load_model_config(tmp_path / "exp").null_source_prob == 0.1
    model = load_model(tmp_path / "exp")
    Generator(model, model.vocab, GenerationConfig(guidance=2.0), image_len=8)  # accepted


def test_bad_null_source_prob_is_refused() -> None:
    with pytest.raises(ModelError, match="null_source_prob"):
        dataclasses.replace(get_preset("tiny"), null_source_prob=1.0).validate()
