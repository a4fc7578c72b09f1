"""Retrieval: R@k on hand-made score matrices, forced-decoding scores on a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tmt.evaluation.retrieval import chance_recall, recall_at_k


def test_recall_at_k_on_a_hand_made_matrix() -> None:
    s = np.array([
        [0.9, 0.1, 0.0, 0.2],  # positive (col 0) ranked 1st
        [0.8, 0.7, 0.0, 0.1],  # positive (col 1) ranked 2nd
        [0.5, 0.6, 0.1, 0.7],  # positive (col 2) ranked 4th
        [0.0, 0.0, 0.0, 0.0],  # all tied: pessimistic -> ranked 4th
    ])
    r = recall_at_k(s, ks=(1, 2, 3))
    assert r["r@1"] == 25.0 and r["r@2"] == 50.0 and r["r@3"] == 50.0
    assert r["median_rank"] == 3.0  # ranks 1, 2, 4, 4


def test_recall_with_several_positives_per_query() -> None:
    s = np.array([[0.1, 0.9, 0.8], [0.3, 0.2, 0.1]])
    pos = np.array([[True, False, True], [False, True, True]])
    r = recall_at_k(s, pos, ks=(1, 2))
    # query 0: best positive (0.8) is 2nd; query 1: best positive (0.2) is 2nd
    assert r["r@1"] == 0.0 and r["r@2"] == 100.0
    with pytest.raises(ValueError, match="at least one positive"):
        recall_at_k(s, np.zeros_like(pos))


def test_chance_recall() -> None:
    pos = np.eye(10, dtype=bool)
    assert chance_recall(pos, 1) == pytest.approx(10.0)
    assert chance_recall(pos, 5) == pytest.approx(50.0)
    two = np.zeros((1, 4), dtype=bool)
    two[0, :2] = True
    # 1 - C(2,1)/C(4,1) = 1/2
    assert chance_recall(two, 1) == pytest.approx(50.0)


@pytest.fixture(scope="module")
def tiny_model():  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("tmt.models.tmt")
    from tmt.vocab import JointVocab

    torch.set_num_threads(1)
    torch.manual_seed(0)
    vocab = JointVocab.from_sizes({"text": 20, "speech": 12, "image": 8})
    return tm.create_model(tm.tiny(), vocab).eval()


def test_forced_logprobs_match_the_restricted_softmax(tiny_model) -> None:  # type: ignore[no-untyped-def]
    import torch

    from tmt.generation.scoring import _layout, forced_logprobs
    from tmt.vocab import EOS

    model = tiny_model
    v = model.vocab
    rng = np.random.default_rng(0)
    srcs = [v.to_joint("speech", rng.integers(0, 12, n)) for n in (5, 3)]
    tgts = [v.to_joint("text", rng.integers(0, 20, n)) for n in (4, 2, 6)]
    got = forced_logprobs(model, srcs, tgts, "text", batch_size=2, normalize=False)
    got_mean = forced_logprobs(model, srcs, tgts, "text", batch_size=8, normalize=True)
    assert got.shape == (2, 3)
    # reference: one (source, target) pair at a time, full logits masked to text + <eos>
    for i, s in enumerate(srcs):
        for j, t in enumerate(tgts):
            src = torch.as_tensor(np.concatenate([s, [EOS]]))[None]
            tin = torch.as_tensor(np.concatenate([[v.bos("text")], t]))[None]
            tout = torch.as_tensor(np.concatenate([t, [EOS]]))
            with torch.no_grad():
                logits = model(src, _layout(src, [src.shape[1]]), tin, _layout(tin, [tin.shape[1]]))
            logp = torch.log_softmax(model.restricted_logits(logits, "text")[0].double(), -1)
            want = float(logp[torch.arange(len(tout)), tout].sum())
            assert got[i, j] == pytest.approx(want, abs=1e-4)
            assert got_mean[i, j] == pytest.approx(want / len(tout), abs=1e-4)


def test_evaluate_retrieval_on_a_token_store(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tmt import TmtError
    from tmt.evaluation.retrieval import RetrievalConfig, evaluate_retrieval
    from tmt.store.token_store import TokenStoreWriter

    rng = np.random.default_rng(1)
    with TokenStoreWriter(tmp_path / "s", streams={"speech": 12, "image": 8}) as w:
        for g in range(4):
            img = rng.integers(0, 8, 6)
            for k in range(2):
                w.add({"id": f"g{g}_{k}", "group": f"g{g}"}, {"speech": rng.integers(0, 12, 5), "image": img})
    res = evaluate_retrieval(tiny_model, tmp_path / "s", RetrievalConfig(src="speech", tgt="image", max_items=3))
    # 3 groups -> 6 spoken queries against 3 images (one per group)
    assert res["queries"] == 6 and res["candidates"] == 3
    assert res["metrics"]["r@5"] == 100.0 and res["metrics"]["r@10"] == 100.0
    assert 0.0 <= res["metrics"]["r@1"] <= 100.0
    assert res["chance"]["chance_r@1"] == pytest.approx(100 / 3)
    with pytest.raises(TmtError, match="no text tokens"):
        evaluate_retrieval(tiny_model, tmp_path / "s", RetrievalConfig(src="speech", tgt="text"))
