"""Self-reranking of image and speech candidates (issue 18, section 2; issue 19 for speech).

With `GenerationConfig.rerank = K`, every source gets K candidates and keeps the one with
the best combined score

    w * forward log p(target | source) + reverse log p(source | target),

both teacher-forced under the same model and length-normalised (per predicted token); w is
`rerank_forward` (1 by default, 0 ranks by the reverse score alone). Image candidates can also
be judged by the image tokenizer itself (`rerank_align` = a > 0): + a * cos(image embedding of
the candidate's codes, embedding of the caption), the two embeddings an image-aligned card's
fit trains with its contrastive term, i.e. reranking by an image-caption model as DALL-E did
with CLIP, where here the judge comes free with the tokenizer (`Aligner`).
The reverse direction is the model's own target -> source direction (image -> text for
text -> image, speech -> text for text -> speech). Between speech and image either the
direct reverse direction (image -> speech, speech -> image) or the text pivot is used,
chosen by `rerank_speech`: the caption decoded from the side that is the source (speech ->
text or image -> text), scored as log p(caption | candidate). Scores come from batched
teacher forcing over all (source, candidate) pairs of a batch.

Image candidates are always sampled (beam search gives blank images); speech candidates are
sampled with `strategy: sample` and are otherwise the beam's K best, since sampled unit
sequences are far noisier than a beam's.

The scorer is a parameter, so tests can hand in numbers they control.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tmt.generation.scoring import _pad, forced_io

if TYPE_CHECKING:
    from tmt.generation.generator import GenerationConfig, Generator, Hypothesis

RERANK_TARGETS = ("image", "speech")
"""Target modalities whose candidates can be reranked (text targets are not: their reverse
directions, text -> image and text -> speech, are the weakest judges of a caption)."""

Scorer = Callable[[Sequence[np.ndarray], Sequence[np.ndarray], str], np.ndarray]
"""(sources, targets, target modality) -> (n,) length-normalised log p(targets[i] | sources[i]);
joint ids, sources without `<eos>`, targets without `<bos>`/`<eos>`."""


Aligner = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], np.ndarray]
"""(image candidates, captions) -> (n,) cosine of each candidate's image embedding with its caption's
embedding; tokenizer-local ids of both (the image tokenizer's codes, the text tokenizer's pieces)."""


def reranks(cfg: GenerationConfig, tgt: str) -> bool:
    """True when decoding into `tgt` samples `cfg.rerank` candidates and reranks them."""
    return cfg.rerank > 0 and tgt in RERANK_TARGETS


def candidates(cfg: GenerationConfig, tgt: str) -> Literal["sample", "beam"] | None:
    """How decoding into `tgt` makes its `cfg.rerank` candidates: K samples, the beam's K best, or
    None when `tgt` is not reranked."""
    if not reranks(cfg, tgt):
        return None
    return "sample" if tgt == "image" or cfg.strategy == "sample" else "beam"


def pivots(cfg: GenerationConfig, src: str, tgt: str) -> bool:
    """True when `src` -> `tgt` candidates explain the caption decoded from the source, not the source."""
    return cfg.rerank_speech == "text" and {src, tgt} == {"speech", "image"}


def rerank_directions(cfg: GenerationConfig, src: str, tgt: str) -> list[str]:
    """The directions (short names) reranking `src` -> `tgt` reads from the model besides `src` -> `tgt`
    itself: the reverse one (`tgt` -> `src`), or with the text pivot `src` -> text (the caption) and
    `tgt` -> text. Empty when `tgt` is not reranked."""
    if not reranks(cfg, tgt):
        return []
    if pivots(cfg, src, tgt):
        return [f"{src[0]}2t", f"{tgt[0]}2t"]
    return [f"{tgt[0]}2{src[0]}"]


def fan_out(k: int, seqs: Any, layout: Any, encoded: Any) -> tuple[Any, Any, Any]:
    """A padded source batch (and its encoder output, if any) with every row repeated `k` times."""
    import torch

    return take_rows(torch.arange(seqs.size(0), device=seqs.device).repeat_interleave(k), seqs, layout, encoded)


def take_rows(order: Any, seqs: Any, layout: Any, encoded: Any) -> tuple[Any, Any, Any]:
    """Rows `order` (a 1-D index tensor, repeats allowed) of a padded source batch, its layout and its
    encoder output (if any): sources encoded once can then be decoded many times."""
    from fairseq2.nn import BatchLayout

    from tmt.generation.constrained import EncoderOutput

    idx = order.tolist()
    lens = [layout.seq_lens[i] for i in idx]
    seqs = seqs.index_select(0, order)
    if encoded is not None:
        enc_lens = None if encoded.seq_lens is None else [encoded.seq_lens[i] for i in idx]
        encoded = EncoderOutput(encoded.output.index_select(0, order.to(encoded.output.device)), enc_lens)
    return seqs, BatchLayout.of(seqs, lens), encoded


def pair_logprobs(
    model: Any, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray], tgt_modality: str, *,
    batch_size: int = 64, prefix: int | None = None,
) -> np.ndarray:
    """(n,) length-normalised log p(targets[i] | sources[i]) by teacher forcing, `batch_size` pairs
    per forward (joint ids; `<eos>` / `<bos>` are added here). `prefix`: a joint id given after
    `<bos>` before every target (a speech target's voice token); it conditions, it is not scored."""
    import torch

    from tmt.models.tmt import make_layout
    from tmt.vocab import EOS, PAD

    if len(sources) != len(targets):
        raise ValueError("one source per target")
    dev = next(model.parameters()).device
    bos = model.vocab.bos(tgt_modality)
    out = np.zeros(len(targets), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for c0 in range(0, len(targets), batch_size):
                src = [np.concatenate([np.asarray(s, dtype=np.int64), [EOS]]) for s in sources[c0 : c0 + batch_size]]
                tgt = [np.asarray(t, dtype=np.int64) for t in targets[c0 : c0 + batch_size]]
                s, s_lens = _pad(src, PAD)
                ti, t_lens, to = forced_io(tgt, bos, prefix)
                s, ti, to = s.to(dev), ti.to(dev), to.to(dev)
                enc, enc_layout = model.encode(s, make_layout(s, s_lens))
                hidden = model.decode(enc, enc_layout, ti, make_layout(ti, t_lens))
                logp = torch.log_softmax(model.sliced_logits(hidden, tgt_modality).float(), dim=-1)
                local = model.to_slice_targets(to, tgt_modality)  # padding -> -100
                valid = local >= 0
                tok = logp.gather(-1, local.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                total = (tok * valid).sum(-1) / valid.sum(-1)
                out[c0 : c0 + len(tgt)] = total.double().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def reverse_targets(
    gen: Generator, sources: Sequence[np.ndarray], srcs: Sequence[str], tgt: str
) -> list[tuple[np.ndarray, str]]:
    """What each row's candidates must explain, as (joint ids, modality): the source itself, or
    with the text pivot (`pivots`) the caption decoded from the source."""
    out: list[tuple[np.ndarray, str]] = [(np.asarray(s, dtype=np.int64), m) for s, m in zip(sources, srcs, strict=True)]
    pivot = [i for i, m in enumerate(srcs) if pivots(gen.config, m, tgt)]
    if pivot:
        from tmt.generation.generator import Generator

        cfg = replace(gen.config, strategy="beam", nbest=1, rerank=0, rerank_align=0.0, guidance=0.0)
        pivot_gen = Generator(gen.model, gen.vocab, cfg, image_len=gen.image_len)
        local = [gen.vocab.from_joint(srcs[i], sources[i]) for i in pivot]
        caps = pivot_gen.generate(local, [srcs[i] for i in pivot], "text")
        for i, cap in zip(pivot, caps, strict=True):
            out[i] = (gen.vocab.to_joint("text", cap["text"][0].tokens), "text")
    return out


def _alignment(
    gen: Generator, rev: list[tuple[np.ndarray, str]], cands: list[list[np.ndarray]], pairs: list[tuple[int, int]]
) -> np.ndarray:
    """(len(pairs),) the image tokenizer's caption alignment of every (row, candidate) pair; the
    caption is what the row's candidates explain (`reverse_targets`), which must be text."""
    from tmt.generation.generator import GenerationError

    if gen.aligner is None:
        raise GenerationError("rerank_align needs the image tokenizer's caption alignment (an image-aligned card, "
                              "given by the Translator); set rerank_align 0")
    if any(rev[r][1] != "text" for r, _ in pairs):
        raise GenerationError("rerank_align scores candidates against a caption: it needs a text source or, "
                              "between speech and image, the text pivot (rerank_speech: text)")
    images = [gen.vocab.from_joint("image", cands[r][j]) for r, j in pairs]
    captions = [gen.vocab.from_joint("text", rev[r][0]) for r, _ in pairs]
    return np.asarray(gen.aligner(images, captions), dtype=np.float64)


def combined_order(combined: np.ndarray) -> np.ndarray:
    """Candidate indices, best combined score first; ties keep sampling order."""
    return np.argsort(-combined, kind="stable")


def rerank_batch(
    gen: Generator,
    sources: Sequence[np.ndarray],
    srcs: Sequence[str],
    tgt: str,
    hyps: list[list[Hypothesis]],
    scorer: Scorer | None = None,
) -> list[list[Hypothesis]]:
    """Each row's candidates ordered by combined score (best first, at most `nbest` kept), with
    `Hypothesis.rerank_score` set. `sources` are joint ids without `<eos>`."""
    score: Scorer = scorer if scorer is not None else partial(pair_logprobs, gen.model)
    forward: Scorer = score
    if scorer is None and tgt == "speech" and gen.voice_token is not None:  # scored in the voice decoded in
        forward = partial(pair_logprobs, gen.model, prefix=gen.voice_token)
    rev = reverse_targets(gen, sources, srcs, tgt)
    cands = [[gen.vocab.to_joint(tgt, h.tokens) for h in row] for row in hyps]
    pairs = [(r, j) for r, row in enumerate(cands) for j in range(len(row))]
    align = np.zeros(len(pairs), dtype=np.float64)
    if tgt == "image" and gen.config.rerank_align > 0:  # first: it refuses a row without a caption before any forward
        align = gen.config.rerank_align * _alignment(gen, rev, cands, pairs)
    weight = gen.config.rerank_forward
    fwd = np.zeros(len(pairs), dtype=np.float64)
    if weight > 0:  # weight 0: the forward pass is not run at all
        fwd = np.asarray(forward([sources[r] for r, _ in pairs], [cands[r][j] for r, j in pairs], tgt), dtype=np.float64)
    back = np.zeros(len(pairs), dtype=np.float64)
    for m in sorted({rev[r][1] for r, _ in pairs}):
        idx = [k for k, (r, _) in enumerate(pairs) if rev[r][1] == m]
        back[idx] = score([cands[pairs[k][0]][pairs[k][1]] for k in idx], [rev[pairs[k][0]][0] for k in idx], m)
    combined = weight * fwd + back + align
    out: list[list[Hypothesis]] = []
    k = 0
    for row in hyps:
        c = combined[k : k + len(row)]
        k += len(row)
        for j in range(len(row)):
            row[j].rerank_score = float(c[j])
        out.append([row[j] for j in combined_order(c)[: gen.config.nbest]])
    return out
