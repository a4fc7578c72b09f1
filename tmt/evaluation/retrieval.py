"""Cross-modal retrieval with the translation model: R@1/5/10 by forced decoding.

For each query (e.g. a spoken caption) every candidate of the other modality
(e.g. every image of the split) is scored by the model's log-probability of
producing the candidate's tokens from the query (teacher forcing), with the
softmax over the target modality's slice (+ `<eos>`), exactly as in decoding.
Candidates are ranked by that score; a query is a hit at k when a candidate of
its own `group` is among the top k. This is the speech-image retrieval task
of the related work, solved by a translation model instead of an embedding
model.

The model code (`tmt.models.tmt`) owns the tensors' fairseq2 layouts; this
module only pads ids and reads log-probabilities.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.errors import TmtError
from tmt.core.modality import check_modality
from tmt.generation.scoring import forced_logprobs

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def recall_at_k(
    scores: np.ndarray,
    positives: np.ndarray | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """R@k (percent) from a (queries x candidates) score matrix, higher = better.

    `positives[i, j]` is True when candidate j is a correct answer for query i
    (default: the diagonal). A query counts at k when ANY positive is ranked
    within the first k. Ties are broken pessimistically (a positive tied with a
    negative ranks after it), so a constant scorer gets no free hits.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-d matrix, got shape {s.shape}")
    pos = np.eye(*s.shape) > 0 if positives is None else np.asarray(positives, dtype=bool)
    if pos.shape != s.shape:
        raise ValueError(f"positives shape {pos.shape} differs from scores shape {s.shape}")
    if not pos.any(axis=1).all():
        raise ValueError("every query needs at least one positive candidate")
    # rank of the best positive = number of negatives scoring >= it
    best_pos = np.where(pos, s, -np.inf).max(axis=1)
    rank = (np.where(np.logical_not(pos), s, -np.inf) >= best_pos[:, None]).sum(axis=1)  # 0-based
    out = {f"r@{k}": 100.0 * float((rank < k).mean()) for k in ks}
    out["median_rank"] = float(np.median(rank + 1))
    return out


def chance_recall(positives: np.ndarray, k: int) -> float:
    """Expected R@k (percent) of a random ranking: 1 - C(N-p, k) / C(N, k) per query."""
    n = positives.shape[1]
    vals = [1.0 - math.comb(n - int(p), k) / math.comb(n, k) if k <= n else 1.0 for p in positives.sum(axis=1)]
    return 100.0 * float(np.mean(vals))


@dataclass(kw_only=True)
class RetrievalConfig:
    """Settings of `tmt score retrieval`."""

    src: str = "speech"
    """Query modality."""
    tgt: str = "image"
    """Candidate modality."""
    max_items: int = 100
    """Use the first N groups of the split (queries x candidates forward passes grow as N^2)."""
    batch_size: int = 64
    """Candidates scored per forward pass."""
    normalize: bool = True
    """Average the log-probability per predicted token (fair across candidate lengths)."""


def retrieval_items(
    store: Any, src: str, tgt: str, max_items: int
) -> tuple[list[np.ndarray], list[str], list[np.ndarray], list[str], list[str]]:
    """Queries and candidates from a token store (tokenizer-LOCAL ids).

    Image candidates are one per group (the group's image); text and speech
    candidates are every row that has them. Returns (query tokens, query
    groups, candidate tokens, candidate groups, candidate ids)."""
    groups: list[str] = []
    seen: set[str] = set()
    metas = list(store.iter_meta())
    for m in metas:
        g = str(m.get("group") or m["id"])
        if g not in seen:
            seen.add(g)
            groups.append(g)
    keep = set(groups[:max_items])
    q_tok, q_grp, c_tok, c_grp, c_ids = [], [], [], [], []
    cand_groups: set[str] = set()
    for i, m in enumerate(metas):
        g = str(m.get("group") or m["id"])
        if g not in keep:
            continue
        ts = store.tokens(i, src)
        if len(ts):
            q_tok.append(np.asarray(ts))
            q_grp.append(g)
        tt = store.tokens(i, tgt)
        if len(tt) and not (tgt == "image" and g in cand_groups):
            cand_groups.add(g)
            c_tok.append(np.asarray(tt))
            c_grp.append(g)
            c_ids.append(str(m["id"]))
    return q_tok, q_grp, c_tok, c_grp, c_ids


def evaluate_retrieval(model: Any, store_dir: str | Path, cfg: RetrievalConfig | None = None) -> dict[str, Any]:
    """R@1/5/10 of `cfg.src` queries against `cfg.tgt` candidates of a token store split."""
    from tmt.store.token_store import TokenStore

    cfg = cfg or RetrievalConfig()
    for m in (cfg.src, cfg.tgt):
        check_modality(m, error=TmtError)
    if cfg.src == cfg.tgt:
        raise TmtError("retrieval needs two different modalities (--src and --tgt)")
    store = TokenStore(store_dir)
    for m in (cfg.src, cfg.tgt):
        if m not in store.streams:
            raise TmtError(f"{store_dir} has no {m} tokens; tokenize the split with a {m} tokenizer first")
    q_tok, q_grp, c_tok, c_grp, _ = retrieval_items(store, cfg.src, cfg.tgt, cfg.max_items)
    if not q_tok or not c_tok:
        raise TmtError(f"{store_dir}: no rows with both {cfg.src} queries and {cfg.tgt} candidates")
    cand = set(c_grp)
    pairs = [(t, g) for t, g in zip(q_tok, q_grp, strict=True) if g in cand]
    vocab = model.vocab
    srcs = [vocab.to_joint(cfg.src, t) for t, _ in pairs]
    tgts = [vocab.to_joint(cfg.tgt, t) for t in c_tok]
    log.info("retrieval %s->%s: %d queries x %d candidates", cfg.src, cfg.tgt, len(srcs), len(tgts))
    scores = forced_logprobs(model, srcs, tgts, cfg.tgt, batch_size=cfg.batch_size, normalize=cfg.normalize)
    positives = np.array([[g == cg for cg in c_grp] for _, g in pairs], dtype=bool)
    res = recall_at_k(scores, positives)
    chance = {f"chance_r@{k}": chance_recall(positives, k) for k in DEFAULT_KS}
    return {
        "task": f"{cfg.src}->{cfg.tgt} retrieval",
        "store": str(store_dir),
        "queries": len(srcs),
        "candidates": len(tgts),
        "metrics": res,
        "chance": chance,
        "normalize": cfg.normalize,
    }
