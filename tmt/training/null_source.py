"""Null sources for classifier-free guidance (issue 18, section 2).

While training, a fraction (`model.null_source_prob`) of the image-target examples
see a *null source* instead of their own: the encoder input `<bos:src> <eos>`, a
marker that names the source modality and says nothing else. The decoder so learns
the unconditional distribution p(image) next to p(image | source), and decoding can
push the conditional logits away from the unconditional ones
(`tmt.generation.guidance`). The marker never occurs in a real encoder input: real
sources are `x1..xn <eos>` without a `<bos>`.

The fraction is part of the model config, so a saved model records that it was
trained with null sources; decoding refuses guidance for a model that was not.
"""

from __future__ import annotations

import numpy as np
import torch
from fairseq2.nn import BatchLayout
from torch import Tensor

from tmt.models.tmt import TmtModel
from tmt.vocab import EOS, JointVocab

NULL_SOURCE_TARGETS = ("image",)
"""Target modalities whose training examples get null sources."""


def null_source_ids(vocab: JointVocab, src: str) -> np.ndarray:
    """The null source of modality `src` in joint ids, `<eos>` included: `<bos:src> <eos>`."""
    return np.array([vocab.bos(src), EOS], dtype=np.int64)


def null_rows(n: int, prob: float, generator: torch.Generator | None = None) -> Tensor:
    """(n,) bool: which of `n` examples get the null source (each with probability `prob`)."""
    if prob <= 0 or n == 0:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n, generator=generator) < prob


def replace_sources(
    enc: Tensor, lens: list[int], null_enc: Tensor, rows: Tensor
) -> tuple[Tensor, list[int]]:
    """Encoder outputs `enc` (N, S, D) with the rows marked in `rows` replaced by `null_enc`
    (L, D), and the new per-row lengths (a replaced row has L valid positions, the rest is
    padding). The encoder output is widened when it is shorter than L."""
    width = null_enc.size(0)
    if enc.size(1) < width:
        enc = torch.nn.functional.pad(enc, (0, 0, 0, width - enc.size(1)))
    idx = rows.nonzero().squeeze(-1).tolist()
    if not idx:
        return enc, list(lens)
    out = enc.clone()
    pick = torch.tensor(idx, device=enc.device)
    out[pick] = 0.0
    out[pick, :width] = null_enc.to(out.dtype)
    chosen = set(idx)
    new_lens = [width if i in chosen else n for i, n in enumerate(lens)]
    return out, new_lens


def apply_null_sources(
    model: TmtModel, src: str, enc: Tensor, lens: list[int], prob: float
) -> tuple[Tensor, BatchLayout]:
    """Training: replace a `prob` fraction of an encoded source batch by the null source of
    `src` (encoded here, with gradients); returns the encoder output and its layout."""
    rows = null_rows(enc.size(0), prob)
    if not bool(rows.any()):
        return enc, BatchLayout.of(enc, lens)
    ids = torch.as_tensor(null_source_ids(model.vocab, src), device=enc.device)[None]
    null_enc, _ = model.encode(ids, BatchLayout.of(ids, [ids.size(1)]))
    out, new_lens = replace_sources(enc, lens, null_enc[0], rows.to(enc.device))
    return out, BatchLayout.of(out, new_lens)
