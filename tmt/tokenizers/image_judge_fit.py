"""Fitting the pixel caption judge beside a fitted image tokenizer (`tmt tokenize image fit-judge`).

    images -> the tokenizer's encode -> decode: reconstructions, what generated images look like
    captions -> groups of one-word neighbours (hard negatives)     -> InfoNCE (CaptionJudge.loss)

Batches are built from groups of captions that differ in exactly one word ("a small red box near
the top" / "a small red star near the top"), found by bucketing each caption under every
one-word-masked form of it; their images differ in the detail the word names, so the judge must
see it. This reads nothing but the captions (no labels), as NegCLIP's hard negatives do; written
here because no library builds such batches. The fit takes minutes; a kill leaves the previous
judge in force (`save_judge`) and a rerun starts it over.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from tmt.core.budget import TimeBudget
from tmt.models.aligned_vq import caption_bytes
from tmt.models.caption_judge import CaptionJudge
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.image import ImageInput, ImageTokenizer, to_tensor
from tmt.tokenizers.image_judge import JudgeCard, save_judge

log = logging.getLogger(__name__)


class CaptionNeighbours:
    """For each caption, the indices of the captions that differ from it in exactly one word."""

    def __init__(self, captions: Sequence[str]) -> None:
        self.words = [tuple(c.lower().split()) for c in captions]
        self.buckets: dict[tuple[int, tuple[str, ...], tuple[str, ...]], list[int]] = defaultdict(list)
        for i, w in enumerate(self.words):
            for k in range(len(w)):
                self.buckets[(k, w[:k], w[k + 1:])].append(i)
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, i: int) -> np.ndarray:
        if i not in self._cache:
            w = self.words[i]
            found = {j for k in range(len(w)) for j in self.buckets[(k, w[:k], w[k + 1:])] if self.words[j] != w}
            self._cache[i] = np.array(sorted(found), dtype=np.int64)
        return self._cache[i]


def group_batch(neighbours: CaptionNeighbours, pool: np.ndarray, size: int, group: int,
                gen: torch.Generator, in_pool: np.ndarray | None = None) -> np.ndarray:
    """`size` caption indices from `pool`: random anchors, each followed by up to `group - 1` of its
    one-word neighbours (those in `pool`; `in_pool`, the pool as a mask over all captions, can be
    passed in by a caller that draws many batches)."""
    if in_pool is None:
        in_pool = np.zeros(len(neighbours.words), dtype=bool)
        in_pool[pool] = True
    out: list[int] = []
    while len(out) < size:
        i = int(pool[int(torch.randint(len(pool), (1,), generator=gen))])
        out.append(i)
        near = neighbours(i)
        near = near[in_pool[near]]
        if group > 1 and len(near):
            out += near[torch.randperm(len(near), generator=gen)[: group - 1].numpy()].tolist()
    return np.array(out[:size], dtype=np.int64)


def reconstructions(tok: ImageTokenizer, images: Sequence[ImageInput], progress: bool) -> np.ndarray:
    """(N, H, W, 3) uint8: each image encoded and decoded by the tokenizer."""
    from tqdm import tqdm

    out = []
    for i in tqdm(range(0, len(images), 256), desc="reconstruct", unit="batch", disable=not progress):
        out.append(tok.decode_array(list(tok.encode_array(tok.load_images(images[i:i + 256])))))
    return np.concatenate(out)


def _pairs(captions: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    owner = [i for i, cs in enumerate(captions) for c in cs if c.strip()]
    text = [c for cs in captions for c in cs if c.strip()]
    if not text:
        raise TokenizerError("the caption judge needs image-caption pairs; the manifest's image rows have no text")
    return np.array(owner, dtype=np.int64), text


def _holdout(n_images: int, fraction: float, gen: torch.Generator) -> np.ndarray:
    """Boolean mask of held-out images (none when there are fewer than 20 images)."""
    held = np.zeros(n_images, dtype=bool)
    k = int(n_images * fraction) if n_images >= 20 else 0
    held[torch.randperm(n_images, generator=gen)[:k].numpy()] = True
    return held


def neighbour_accuracy(judge: CaptionJudge, pixels: np.ndarray, owner: np.ndarray, text: list[str],
                       neighbours: CaptionNeighbours, pairs: np.ndarray, max_rivals: int = 16) -> float | None:
    """Share of `pairs` whose image scores its own caption above each of (up to `max_rivals` of) the
    captions that differ from it in one word. Synonyms count as rivals, so 100% is out of reach."""
    wins = []
    with torch.no_grad():
        for p in pairs:
            rivals = neighbours(int(p))[:max_rivals]
            if not len(rivals):
                continue
            caps = [text[p]] + [text[r] for r in rivals]
            image = judge.image_embedding(to_tensor(pixels[owner[p]][None]))[0]
            s = judge.caption_embedding(caption_bytes(caps, judge.cfg.max_caption_bytes)) @ image
            wins.append(bool(s[0] > s[1:].max()))
    return float(np.mean(wins)) if wins else None


def fit_caption_judge(tok: ImageTokenizer, tok_dir: str, images: Sequence[ImageInput],
                      captions: Sequence[Sequence[str]], card: JudgeCard, *, progress: bool = True) -> dict:
    """Fit a judge on the tokenizer's reconstructions of `images` with their `captions` (a list per
    image); save it beside the tokenizer in `tok_dir` -> its stats."""
    from tqdm import tqdm

    t = card.train
    if t.steps < 1 or t.batch_size < 2 or t.group < 1 or not 0 <= t.holdout < 1:
        raise TokenizerError(f"judge fit: steps >= 1, batch_size >= 2, group >= 1 and 0 <= holdout < 1 needed, "
                             f"got {t.steps}, {t.batch_size}, {t.group}, {t.holdout}")
    card = replace(card, model=replace(card.model, image_size=list(tok.image_size)))
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    owner, text = _pairs(captions)
    pixels = reconstructions(tok, images, progress)
    held = _holdout(len(images), t.holdout, gen)
    pool, test = np.flatnonzero(~held[owner]), np.flatnonzero(held[owner])
    neighbours = CaptionNeighbours(text)
    in_pool = np.zeros(len(text), dtype=bool)
    in_pool[pool] = True
    text_id = np.unique(text, return_inverse=True)[1]  # equal ids: the same caption text
    judge = CaptionJudge(card.model)
    opt = torch.optim.AdamW(judge.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    budget, start = TimeBudget(t.max_minutes), time.monotonic()
    loss = float("nan")
    step = 0
    bar = tqdm(total=t.steps, desc="fit judge", unit="step", disable=not progress, dynamic_ncols=True)
    while step < t.steps and not budget.exhausted():
        idx = group_batch(neighbours, pool, t.batch_size, t.group, gen, in_pool)
        for g in opt.param_groups:
            g["lr"] = t.lr * min(1.0, (step + 1) / max(1, t.warmup_steps)) * 0.5 * (1 + np.cos(np.pi * step / t.steps))
        same = torch.from_numpy(text_id[idx][:, None] == text_id[idx][None, :])
        caps = caption_bytes([text[i] for i in idx], card.model.max_caption_bytes)
        out = judge.loss(to_tensor(pixels[owner[idx]]), caps, same)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
        step, loss = step + 1, float(out.detach())
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    judge.eval()
    acc = neighbour_accuracy(judge, pixels, owner, text, neighbours, test[:500]) if len(test) else None
    stats = {"steps": step, "final_loss": round(loss, 4), "minutes": round((time.monotonic() - start) / 60, 2),
             "images": len(images), "pairs": len(text), "heldout_pairs": len(test),
             "neighbour_acc": None if acc is None else round(acc, 4)}
    save_judge(tok_dir, judge, card, stats)
    log.info("caption judge: %s", stats)
    return stats
