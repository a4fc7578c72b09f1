"""Teacher-forced accuracy and cross-entropy of image targets, split into the tokens that
cover objects and the tokens that cover only background (issue 18 section 0).

Per-row token masks are the generic form: a store row's meta may carry them as a column
(`image_token_mask`: one 0/1 per image token); otherwise they are recomputed from the
row's scene graph (the scenes corpus: object boxes on the image tokenizer's grid,
`tmt.corpora.scenes.masks`). A tokenizer without a grid (or rows without masks) gives
"unavailable" with the reason, never a number.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from tmt.core.modality import parse_direction
from tmt.corpora.scenes.masks import scene_token_mask
from tmt.models.tmt import TmtModel, make_layout
from tmt.store.pipeline import BatchReader, RowBatch, decoder_io
from tmt.store.token_store import TokenStore
from tmt.training.distributed import all_reduce_sum

if TYPE_CHECKING:
    from tmt.training.state import Run

MASK_KEY = "image_token_mask"
"""Store meta column: one 0/1 per image token (1: the token covers an object)."""
GROUPS = ("object", "background")


def image_grid(info: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(h, w) of an image tokenizer's token grid from its store/vocab info; None without a grid."""
    card = (info or {}).get("card") or {}
    if isinstance(card.get("grid"), list | tuple) and len(card["grid"]) == 2:
        return int(card["grid"][0]), int(card["grid"][1])
    from tmt.tokenizers.base import REGISTRY, resolve_class

    token_grid = getattr(resolve_class(card["class"]), "token_grid", None) if card.get("class") in REGISTRY else None
    return token_grid(card) if token_grid is not None else None


def row_token_mask(meta: Mapping[str, Any], grid: tuple[int, int] | None) -> np.ndarray | None:
    """The object mask of one row's image tokens: its MASK_KEY column, else from its scene."""
    if MASK_KEY in meta:
        return np.asarray(meta[MASK_KEY], dtype=bool).reshape(-1)
    scene = meta.get("scene")
    if grid is None or not isinstance(scene, Mapping):
        return None
    return scene_token_mask(scene, grid)


def store_masks(paths: Sequence[str]) -> tuple[dict[str, np.ndarray], str | None]:
    """({row id as the BatchReader names it: mask}, None) or ({}, why the split is unavailable)."""
    masks: dict[str, np.ndarray] = {}
    for k, path in enumerate(paths):
        store = TokenStore(path)
        grid = image_grid(store.index.get("tokenizers", {}).get("image"))
        for meta in store.iter_meta():
            m = row_token_mask(meta, grid)
            if m is not None:
                masks[f"{k}:{meta['id']}" if len(paths) > 1 else str(meta["id"])] = m
        if not masks and grid is None:
            return {}, f"store {path}: its image tokenizer has no token grid and its rows no {MASK_KEY}"
    if not masks:
        return {}, f"no row of {', '.join(paths)} has a scene with geometry or an {MASK_KEY} column"
    return masks, None


@dataclass
class SplitSums:
    """Sums over tokens of one group."""

    nll: float = 0.0
    correct: float = 0.0
    tokens: float = 0.0


def split_sums(
    nll: Tensor, correct: Tensor, lengths: Sequence[int], masks: Sequence[np.ndarray | None]
) -> dict[str, SplitSums]:
    """Group per-token `nll` and `correct` ((N, T), position t = image token t) by each row's
    mask; positions at or past a row's length (its <eos>, padding) and rows without a mask
    (or whose mask length differs from its token count) are left out."""
    out = {g: SplitSums() for g in GROUPS}
    for i, (n, m) in enumerate(zip(lengths, masks, strict=True)):
        if m is None or len(m) != n:
            continue
        obj = torch.from_numpy(np.asarray(m, dtype=bool))
        for g, sel in (("object", obj), ("background", ~obj)):
            out[g].nll += float(nll[i, :n][sel].sum())
            out[g].correct += float(correct[i, :n][sel].sum())
            out[g].tokens += float(sel.sum())
    return out


def split_metrics(sums: Mapping[str, SplitSums]) -> dict[str, float]:
    """{ce_object, acc_object, tokens_object, ce_background, ...} for groups with tokens."""
    out: dict[str, float] = {}
    for g, s in sums.items():
        if s.tokens > 0:
            out[f"ce_{g}"], out[f"acc_{g}"], out[f"tokens_{g}"] = s.nll / s.tokens, s.correct / s.tokens, s.tokens
    return out


def _batch_sums(model: TmtModel, batch: RowBatch, src: str, masks: Mapping[str, np.ndarray],
                dev: torch.device) -> dict[str, SplitSums] | None:
    rows = [r for r in batch.rows_with(src, "image") if batch.ids[r] in masks]
    if not rows:
        return None
    x, lens = batch.source(src, rows)
    x = x.to(dev)
    enc, enc_layout = model.encode(x, make_layout(x, lens))
    seqs = [batch.seqs["image"][r] for r in rows]
    ti, to, tl = decoder_io(seqs, "image")  # type: ignore[arg-type]
    ti, to = ti.to(dev), to.to(dev)
    h = model.decode(enc, enc_layout, ti, make_layout(ti, tl))
    lprobs = F.log_softmax(model.sliced_logits(h, "image").float(), dim=-1)  # (N, T, 1 + V)
    local = model.to_slice_targets(to, "image").clamp(min=0)  # padding (-100): ignored below
    nll = -lprobs.gather(-1, local.unsqueeze(-1)).squeeze(-1)
    correct = (lprobs.argmax(-1) == local).float()
    return split_sums(nll.cpu(), correct.cpu(), [len(s) for s in seqs],  # type: ignore[arg-type]
                      [masks[batch.ids[r]] for r in rows])


@torch.no_grad()
def object_background(
    model: TmtModel, reader: BatchReader, directions: Sequence[str], masks: Mapping[str, np.ndarray]
) -> dict[str, dict[str, SplitSums]]:
    """One pass over `reader`: {image-target direction: {group: sums}} (this rank's rows)."""
    was_training = model.training
    model.eval()
    dev = model.final_proj.weight.device
    image_dirs = {d: parse_direction(d)[0] for d in directions if parse_direction(d)[1] == "image"}
    out = {d: {g: SplitSums() for g in GROUPS} for d in image_dirs}
    reader.reset()
    for batch in reader:
        for d, src in image_dirs.items():
            sums = _batch_sums(model, batch, src, masks, dev)
            for g, s in (sums or {}).items():
                out[d][g].nll += s.nll
                out[d][g].correct += s.correct
                out[d][g].tokens += s.tokens
    if was_training:
        model.train()
    return out


@functools.lru_cache(maxsize=4)
def _cached_masks(paths: tuple[str, ...]) -> tuple[dict[str, np.ndarray], str | None]:
    return store_masks(paths)


def validation_record(run: Run, reader: BatchReader) -> tuple[dict[str, Any], str]:
    """The metrics-record entries (ce_obj/<d>, acc_obj/<d>, ce_bg/<d>, acc_bg/<d>, or
    object_split: "unavailable: why") and a log line, for the run's image-target directions."""
    dirs = [d for d in run.directions if parse_direction(d)[1] == "image"]
    if not dirs:
        return {}, ""
    if run.fsdp:
        why = "not computed under distributed=fsdp (each rank holds a shard of the model)"
        return {"object_split": f"unavailable: {why}"}, f"object/background split unavailable: {why}"
    masks, why_not = _cached_masks(tuple(str(s) for s in run.cfg.data.valid_stores))
    if why_not:
        return {"object_split": f"unavailable: {why_not}"}, f"object/background split unavailable: {why_not}"
    sums = object_background(run.model, reader, dirs, masks)
    t = torch.tensor([[s.nll, s.correct, s.tokens] for d in dirs for s in sums[d].values()], dtype=torch.float64)
    all_reduce_sum(t, run.info)
    rec: dict[str, Any] = {}
    parts = []
    for i, d in enumerate(dirs):
        m = split_metrics({g: SplitSums(*t[2 * i + j].tolist()) for j, g in enumerate(GROUPS)})
        for g, short in (("object", "obj"), ("background", "bg")):
            if f"ce_{g}" in m:
                rec[f"ce_{short}/{d}"], rec[f"acc_{short}/{d}"] = m[f"ce_{g}"], m[f"acc_{g}"]
        parts.append(f"{d} object {m.get('ce_object', float('nan')):.3f}/{m.get('acc_object', float('nan')):.2f} "
                     f"background {m.get('ce_background', float('nan')):.3f}/{m.get('acc_background', float('nan')):.2f}")
    return rec, "object/background ce/acc: " + " | ".join(parts)


def split_on_store(
    model_dir: str, store: str, directions: Sequence[str], device: str = "cpu"
) -> tuple[dict[str, dict[str, float]], str | None]:
    """Teacher-forced object/background metrics of a model on every row of one token store:
    ({direction: {ce_object, acc_object, tokens_object, ...}}, None) or ({}, why unavailable)."""
    from tmt.models.checkpoint import load_model

    masks, why = store_masks([store])
    if why:
        return {}, why
    dirs = [d for d in directions if parse_direction(d)[1] == "image"]
    model = load_model(model_dir, device=device)
    reader = BatchReader([store], model.vocab, directions=dirs, train=False, prefetch=0,
                         max_seq_len=model.config.max_seq_len)
    try:
        sums = object_background(model, reader, dirs, masks)
    finally:
        reader.close()
    return {d: split_metrics(s) for d, s in sums.items()}, None
