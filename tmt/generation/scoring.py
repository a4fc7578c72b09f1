"""Teacher-forced scoring: log p(target | source) for given source/target token pairs.

Used by cross-modal retrieval (`tmt.evaluation.retrieval`) and by back-translation's
round-trip filter; it lives here, beside decoding, so both can use it without an
upward import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _pad(seqs: Sequence[np.ndarray], pad: int) -> tuple[Any, list[int]]:
    import torch

    lens = [len(x) for x in seqs]
    out = torch.full((len(seqs), max(lens)), pad, dtype=torch.long)
    for i, x in enumerate(seqs):
        out[i, : len(x)] = torch.as_tensor(np.asarray(x, dtype=np.int64))
    return out, lens


def forced_io(targets: Sequence[np.ndarray], bos: int, given: int | None = None) -> tuple[Any, list[int], Any]:
    """Padded decoder inputs `<bos> [given] target` (with their lengths) and outputs `[pad] target
    <eos>` for teacher forcing: a `given` token (a speech target's voice) conditions, it is not scored."""
    from tmt.vocab import EOS, PAD

    pre = [] if given is None else [given]
    tgt_in, lens = _pad([np.concatenate([[bos], pre, t]) for t in targets], PAD)
    tgt_out, _ = _pad([np.concatenate([[PAD] * len(pre), t, [EOS]]) for t in targets], PAD)
    return tgt_in, lens, tgt_out


def _layout(seqs: Any, lens: list[int]) -> Any:
    """A batch layout for padded `seqs`, built by the model module (fairseq2 stays there)."""
    from tmt.models.tmt import make_layout

    return make_layout(seqs, lens)


def forced_logprobs(
    model: Any,
    sources: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    tgt_modality: str,
    *,
    batch_size: int = 64,
    normalize: bool = True,
    voice: str | None = None,
) -> np.ndarray:
    """(len(sources), len(targets)) log p(target | source) under teacher forcing.

    `sources` are encoder inputs in JOINT ids without `<eos>`; `targets` are
    joint ids of `tgt_modality` without `<bos>`/`<eos>` (both are added here).
    `normalize` divides by the number of predicted tokens (target + `<eos>`), so
    candidates of different lengths compare fairly. Speech targets of a vocabulary
    with voices get `voice`'s token (None: the default voice) after `<bos>`, given, not scored.
    """
    import torch

    from tmt.vocab import EOS

    vocab = model.vocab
    bos = vocab.bos(tgt_modality)
    dev = next(model.parameters()).device
    given = vocab.voice_token(voice) if tgt_modality == "speech" else None
    tgt_in, tgt_lens, tgt_out = forced_io(targets, bos, given)
    tgt_in, tgt_out = tgt_in.to(dev), tgt_out.to(dev)
    local = model.to_slice_targets(tgt_out, tgt_modality)  # pad -> -100
    valid = local >= 0
    out = np.zeros((len(sources), len(targets)), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for qi, src in enumerate(sources):
                s = torch.as_tensor(np.concatenate([np.asarray(src, dtype=np.int64), [EOS]]), device=dev)[None]
                enc, _ = model.encode(s, _layout(s, [s.shape[1]]))
                for c0 in range(0, len(targets), batch_size):
                    c1 = min(c0 + batch_size, len(targets))
                    b = c1 - c0
                    enc_b = enc.expand(b, -1, -1)
                    ti = tgt_in[c0:c1]
                    hidden = model.decode(enc_b, _layout(enc_b, [enc.shape[1]] * b), ti, _layout(ti, tgt_lens[c0:c1]))
                    logp = torch.log_softmax(model.sliced_logits(hidden, tgt_modality).float(), dim=-1)
                    v = valid[c0:c1]
                    tok = logp.gather(-1, local[c0:c1].clamp(min=0).unsqueeze(-1)).squeeze(-1)
                    total = (tok * v).sum(-1)
                    if normalize:
                        total = total / v.sum(-1)
                    out[qi, c0:c1] = total.double().cpu().numpy()
    finally:
        model.train(was_training)
    return out
