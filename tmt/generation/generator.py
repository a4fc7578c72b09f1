"""Batched, constrained decoding of token sequences into any target modality.

`Generator.generate` takes tokenizer-local source sequences, encodes each
batch once, and decodes it into one or more target modalities with fairseq2's
beam search (default, beam 5), greedy search (beam 1) or sampling (top-k /
top-p). Output is restricted to the target modality (`constrained.py`); image
targets get exactly `image_len` tokens; text and speech targets get at most
`a * source_len + b` tokens and at least `min_len`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from fairseq2.generation import SequenceGenerationError
from fairseq2.generation.sampling import SamplingSeq2SeqGenerator
from fairseq2.generation.step_processor import NGramRepeatBlockProcessor
from fairseq2.nn import BatchLayout
from torch import Tensor
from torch.nn import Module

from tmt.core.batching import length_batches
from tmt.core.errors import TmtError
from tmt.core.modality import check_modality
from tmt.generation.beam import PatientBeamSearchSeq2SeqGenerator
from tmt.generation.constrained import (
    LOCAL_BOS,
    LOCAL_EOS,
    LOCAL_OFFSET,
    EncoderOutput,
    RestrictedSeq2Seq,
    TargetSpace,
    encode,
    has_fast_path,
)
from tmt.generation.guidance import GuidedSeq2Seq, check_guidance, stack_null_sources, uses_guidance
from tmt.generation.rerank import Aligner, candidates, fan_out, rerank_batch, reranks, take_rows
from tmt.generation.samplers import TopKGenSampler, TopPGenSampler
from tmt.generation.segment import SegmentConfig
from tmt.vocab import EOS, PAD, JointVocab

log = logging.getLogger(__name__)


class GenerationError(TmtError):
    """Decoding failed for a named input (no hypothesis survived, bad settings)."""


@dataclass(kw_only=True)
class LengthLimit:
    """Length bounds for one target modality (text and speech; images are fixed)."""

    a: float = 1.0
    """Maximum tokens = a * source_len + b (source_len excludes <eos>)."""
    b: int = 16
    """Constant term of the maximum length."""
    min_len: int = 1
    """Minimum number of tokens before <eos>."""


@dataclass(kw_only=True)
class LengthLimits:
    """Length limits per target modality (image outputs always have the tokenizer's count)."""

    text: LengthLimit = field(default_factory=lambda: LengthLimit(a=0.5, b=32, min_len=1))
    """Text targets: captions are short whatever the source."""
    speech: LengthLimit = field(default_factory=lambda: LengthLimit(a=4.0, b=200, min_len=1))
    """Speech targets: deduplicated units, roughly 25-50 per second of speech."""

    def get(self, modality: str) -> LengthLimit:
        lim: LengthLimit = getattr(self, modality)
        return lim


@dataclass(kw_only=True)
class GenerationConfig:
    """How to decode: search strategy, beam size, lengths, batching."""

    strategy: Literal["beam", "greedy", "sample"] = "beam"
    """`beam` search, `greedy` (beam 1) or `sample` (top-k / top-p sampling)."""
    beam_size: int = 5
    """Beam width for `beam`."""
    beam_patience: float = 1.0
    """Beam search ends a row once ceil(beam_patience * beam_size) hypotheses have finished
    (Kasai et al., 2022); 1 is fairseq's rule. Larger values let longer hypotheses finish when
    the model gives <eos> mass early (`tmt.generation.beam`)."""
    nbest: int = 1
    """Hypotheses kept per input and target (at most beam_size)."""
    len_penalty: float = 1.0
    """Scores are divided by length ** len_penalty (beam search)."""
    normalize_scores: bool = True
    """Report length-normalised log-probabilities (per token) instead of sums."""
    temperature: float = 1.0
    """Logit temperature (sampling, and beam search when != 1)."""
    top_k: int = 0
    """Sample from the k most likely tokens (0: use top_p)."""
    top_p: float = 0.9
    """Nucleus sampling mass when top_k is 0."""
    seed: int | None = None
    """Random seed for sampling (None: torch's global random state). One random generator,
    seeded once, serves the whole run, so batches get independent samples and the same seed
    gives the same output."""
    guidance: float = 0.0
    """Classifier-free guidance scale for image targets: logits = cond + S * (cond - uncond),
    from one batched forward of the sources and their null sources (0: off, plain conditional
    decoding). Needs a model trained with `model.null_source_prob > 0`."""
    rerank: int = 0
    """Image and speech targets: make this many candidates per source and keep the one with the
    best `rerank_forward` * forward log p(target | source) + reverse log p(source | target) (0: off;
    `tmt.generation.rerank`). Image candidates are sampled (top_k / top_p / temperature) whatever
    `strategy` says; speech candidates are sampled with `strategy: sample`, else the beam's K best
    (the beam widened to K if it is narrower)."""
    rerank_forward: float = 1.0
    """Weight of the forward log p(target | source) in the reranking score (1: forward + reverse;
    0: the reverse score alone, and no forward pass). On the quick demo's models the forward score
    did not tell right image scenes from wrong ones (docs/results.md, session 36)."""
    rerank_align: float = 0.0
    """Image candidates: + this weight times the image tokenizer's own caption alignment, the
    cosine between the candidate's image embedding and the caption's (the embeddings an
    image-aligned card's contrastive term trains; the caption is the text source or, from speech,
    the text pivot). 0: off. Needs an image-aligned tokenizer (the Translator hands it in)."""
    rerank_speech: Literal["speech", "text"] = "text"
    """Reverse score between speech and image: directly (log p(speech | image) for speech sources,
    log p(image | speech) for speech targets), or the text pivot (the caption decoded from the
    source, scored as log p(caption | candidate))."""
    batch_size: int = 16
    """Inputs decoded together (sorted by source length)."""
    max_batch_tokens: int = 8192
    """Cap on padded source tokens per batch."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size in text targets (0: off). It stops an undertrained
    model's loops; image targets are exempt, their background codes repeat by nature."""
    speech_no_repeat_ngram_size: int = 0
    """The same for speech targets (0: off). Real unit sequences repeat short n-grams (a 4-gram in
    about half of them), so a small n here would rule out the reference itself; use off or >= 8."""
    voice: str | None = None
    """Voice of speech targets, for a vocabulary with voices (None: the default voice of vocab.json)."""
    image_len: int | None = None
    """Tokens per image; None: from the image tokenizer / model config."""
    lengths: LengthLimits = field(default_factory=LengthLimits)
    """Per target modality length limits (text, speech)."""
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    """Inputs longer than the model's source limit: split into pieces (speech at pauses, text at
    sentences), translated piece by piece and joined; `segment.enabled: false` refuses them."""

    def search(self) -> tuple[int, float]:
        """(beam width, patience) the beam search runs with: greedy is a beam of 1 with fairseq's
        rule (more finished hypotheses would let it leave the argmax path)."""
        return (self.beam_size, self.beam_patience) if self.strategy == "beam" else (1, 1.0)

    def check(self) -> None:
        if self.strategy not in ("beam", "greedy", "sample"):
            raise GenerationError(f"unknown strategy '{self.strategy}'; use beam, greedy or sample")
        if self.beam_size < 1:
            raise GenerationError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.beam_patience < 1:
            raise GenerationError(f"beam_patience must be >= 1 (1: fairseq's rule), got {self.beam_patience}")
        if self.nbest < 1 or (self.strategy == "beam" and self.nbest > self.beam_size):
            raise GenerationError(f"nbest must be in 1..beam_size ({self.beam_size}), got {self.nbest}")
        if self.batch_size < 1:
            raise GenerationError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("no_repeat_ngram_size", "speech_no_repeat_ngram_size"):
            if getattr(self, name) < 0:
                raise GenerationError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if self.guidance < 0:
            raise GenerationError(f"guidance must be >= 0 (0: off), got {self.guidance}")
        if self.rerank < 0:
            raise GenerationError(f"rerank must be >= 0 (0: off), got {self.rerank}")
        if not (self.rerank_forward >= 0 and math.isfinite(self.rerank_forward)):
            raise GenerationError(f"rerank_forward must be a finite weight >= 0, got {self.rerank_forward}")
        if not (self.rerank_align >= 0 and math.isfinite(self.rerank_align)):
            raise GenerationError(f"rerank_align must be a finite weight >= 0, got {self.rerank_align}")
        if self.rerank_align > 0 and self.rerank == 0:
            raise GenerationError(f"rerank_align ({self.rerank_align}) weighs a term of the reranking score; "
                                  "give rerank K > 0 too, or rerank_align 0")
        if self.rerank_speech not in ("speech", "text"):
            raise GenerationError(f"rerank_speech must be speech or text, got '{self.rerank_speech}'")
        if self.temperature <= 0:
            raise GenerationError(f"temperature must be > 0, got {self.temperature}")
        for m in ("text", "speech"):
            lim = self.lengths.get(m)
            if lim.min_len < 1 or lim.b < 0 or lim.a < 0:
                raise GenerationError(f"lengths.{m}: need min_len >= 1, a >= 0, b >= 0 (got {lim})")
        self.segment.check()


@dataclass
class Hypothesis:
    """One decoded sequence."""

    tokens: np.ndarray
    """Tokenizer-local ids of the target modality (no <eos>)."""
    score: float
    """Log-probability (per token when normalised) under the restricted distribution."""
    step_scores: np.ndarray | None = None
    """Per-token log-probabilities, <eos> last (beam search)."""
    rerank_score: float | None = None
    """Self-reranking: `rerank_forward` * forward + reverse length-normalised log-probability
    (+ `rerank_align` * caption alignment for images; None without `rerank`)."""


class Generator:
    """Decode batches of source token sequences into target modalities."""

    def __init__(
        self,
        model: Module,
        vocab: JointVocab,
        config: GenerationConfig | None = None,
        *,
        image_len: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.config = config or GenerationConfig()
        self.config.check()
        self.image_len = self.config.image_len or image_len
        self.fast = has_fast_path(model)
        try:
            self.device = next(model.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")
        self._spaces: dict[str, TargetSpace] = {}
        # joint id of the voice given after <bos:speech> (None: no voices); an unknown voice fails here
        self.voice_token = vocab.voice_token(self.config.voice)
        check_guidance(model, self.config.guidance)
        self._rng: torch.Generator | None = None
        self._rng_seed: int | None = None
        self.aligner: Aligner | None = None
        """The image tokenizer's caption alignment for `rerank_align` (set by the Translator)."""

    def rng(self) -> torch.Generator | None:
        """The run's random generator for sampling (None without a seed: torch's global state).
        Made once per seed: a new `config.seed` starts a new stream, the same one continues it."""
        seed = self.config.seed
        if seed is None:
            return None
        if self._rng is None or self._rng_seed != seed:
            self._rng = torch.Generator(device=self.device).manual_seed(seed)
            self._rng_seed = seed
        return self._rng

    def restart_sampling(self) -> None:
        """Start the seeded random stream over: the next sample draws as the first of a run did
        (a server makes each request with a seed reproducible this way)."""
        self._rng = None

    # ---- public ------------------------------------------------------------
    def generate(
        self,
        sources: Sequence[np.ndarray | Sequence[int]],
        src: str | Sequence[str],
        tgt: str | Sequence[str],
        *,
        names: Sequence[str] | None = None,
    ) -> list[dict[str, list[Hypothesis]]]:
        """Decode every source into every target modality in `tgt`.

        `sources` hold tokenizer-local ids of modality `src` (one name for all,
        or one per source). Returns, per source, {target: n-best hypotheses},
        best first. Raises GenerationError naming the input when nothing
        survives.
        """
        n = len(sources)
        srcs = [src] * n if isinstance(src, str) else list(src)
        tgts = [tgt] if isinstance(tgt, str) else list(tgt)
        names = list(names) if names is not None else [f"input #{i}" for i in range(n)]
        if len(srcs) != n or len(names) != n:
            raise ValueError("src and names must have one entry per source")
        for m in (*srcs, *tgts):
            check_modality(m, error=GenerationError)
        if not tgts:
            raise GenerationError("no target modality given")
        joint = []
        for i, (s, m) in enumerate(zip(sources, srcs, strict=True)):
            a = np.asarray(s, dtype=np.int64)
            if a.ndim != 1 or a.size == 0:
                raise GenerationError(f"{names[i]}: the {m} input produced no tokens; nothing to translate")
            try:
                ids = self.vocab.to_joint(m, a)
            except TmtError as e:
                raise GenerationError(f"{names[i]}: {e}") from None
            joint.append(np.concatenate([ids, [EOS]]))
        max_src = int(getattr(self.model, "max_source_seq_len", 1 << 30))
        for i, j in enumerate(joint):
            if len(j) > max_src:
                raise GenerationError(
                    f"{names[i]}: {len(j) - 1} {srcs[i]} tokens exceed the model's source limit "
                    f"({max_src - 1}); shorten the input"
                )
        results: list[dict[str, list[Hypothesis]]] = [{} for _ in range(n)]
        for batch in length_batches([len(j) for j in joint], self.config.max_batch_tokens,
                                    max_items=self.config.batch_size):
            self._decode_batch(batch, joint, tgts, names, results, srcs)
        return results

    # ---- internals ---------------------------------------------------------
    def _space(self, modality: str) -> TargetSpace:
        if modality not in self._spaces:
            try:
                self._spaces[modality] = TargetSpace.of(self.vocab, modality, self.device)
            except ValueError as e:
                raise GenerationError(f"cannot translate into {modality}: {e}") from None
        return self._spaces[modality]

    def length_bounds(self, tgt: str, src_len: int) -> tuple[int, int]:
        """(min, max) target tokens for a source of `src_len` tokens (no <eos>)."""
        given = 1 if tgt == "speech" and self.voice_token is not None else 0  # the voice token
        cap = int(getattr(self.model, "max_target_seq_len", 1 << 30)) - 2 - given  # <bos> ... <eos>
        if tgt == "image":
            if self.image_len is None:
                raise GenerationError(
                    "the number of tokens per image is unknown: pass image_len (the image tokenizer's "
                    "tokens_per_image) or set generation.image_len"
                )
            if self.image_len > cap:
                raise GenerationError(
                    f"images need {self.image_len} tokens but the model decodes at most {cap}; "
                    "train with a larger max_target_seq_len"
                )
            return self.image_len, self.image_len
        lim = self.config.lengths.get(tgt)
        hi = min(cap, math.floor(lim.a * src_len + lim.b))
        lo = min(lim.min_len, cap)
        return lo, max(hi, lo)

    def _decode_batch(
        self,
        batch: list[int],
        joint: list[np.ndarray],
        tgts: list[str],
        names: list[str],
        results: list[dict[str, list[Hypothesis]]],
        srcs: list[str],
    ) -> None:
        lens = [len(joint[i]) for i in batch]
        seqs = torch.full((len(batch), max(lens)), PAD, dtype=torch.int64)
        for r, i in enumerate(batch):
            seqs[r, : lens[r]] = torch.from_numpy(joint[i])
        seqs = seqs.to(self.device)
        layout = BatchLayout.of(seqs, lens)
        encoded: EncoderOutput | None = None
        if self.fast and len(tgts) > 1:
            with torch.inference_mode():
                encoded = encode(self.model, seqs, layout)  # shared by all targets
        for tgt in tgts:
            bounds = [self.length_bounds(tgt, n - 1) for n in lens]
            bsrcs = [srcs[i] for i in batch]
            hyps = self._run(seqs, layout, tgt, bounds, encoded, [names[i] for i in batch], bsrcs)
            if reranks(self.config, tgt):
                hyps = rerank_batch(self, [joint[i][:-1] for i in batch], bsrcs, tgt, hyps)
            for r, i in enumerate(batch):
                results[i][tgt] = hyps[r]

    def _run(
        self,
        seqs: Tensor,
        layout: BatchLayout,
        tgt: str,
        bounds: list[tuple[int, int]],
        encoded: EncoderOutput | None,
        names: list[str],
        srcs: list[str],
    ) -> list[list[Hypothesis]]:
        k = self.config.rerank if candidates(self.config, tgt) == "sample" else 1
        stacked = None
        if uses_guidance(self.config.guidance, tgt):  # each row, then each row's null source: one forward, both logits
            s2, lens2 = stack_null_sources(seqs, list(layout.seq_lens), self.vocab, srcs)
            layout2 = BatchLayout.of(s2, lens2)
            stacked = (s2, layout2, self._encode_once(s2, layout2, k))
        elif encoded is None:
            encoded = self._encode_once(seqs, layout, k)
        if k > 1:  # K samples per source: each source row K times (its encoder output repeated, not recomputed)
            seqs, layout, encoded = fan_out(k, seqs, layout, encoded)
            if stacked is not None:  # the fanned rows, then their null sources in the same order
                b = seqs.size(0) // k
                rows = torch.arange(b, device=seqs.device).repeat_interleave(k)
                stacked = take_rows(torch.cat([rows, rows + b]), *stacked)
            bounds, names, srcs = ([x for x in xs for _ in range(k)] for xs in (bounds, names, srcs))  # type: ignore[assignment]
        space = self._space(tgt)
        min_lens = torch.tensor([b[0] for b in bounds], dtype=torch.int64, device=self.device)
        max_lens = torch.tensor([b[1] for b in bounds], dtype=torch.int64, device=self.device)
        prompt = torch.full((seqs.size(0), 1), LOCAL_BOS, dtype=torch.int64, device=self.device)
        forced = None
        if tgt == "speech" and self.voice_token is not None:  # decoder input <bos:speech> <voice> ...
            forced = torch.full((seqs.size(0),), space.local_voice(self.voice_token), device=self.device)
            prompt = torch.cat([prompt, forced[:, None]], dim=1)
        model: RestrictedSeq2Seq | GuidedSeq2Seq
        if stacked is not None:  # image targets only: no voice prefix
            inner = RestrictedSeq2Seq(
                self.model, space, min_lens.repeat(2), max_lens.repeat(2), encoded=stacked[2], fast=self.fast
            )
            model = GuidedSeq2Seq(inner, stacked[0], stacked[1], self.config.guidance)
        else:
            model = RestrictedSeq2Seq(
                self.model, space, min_lens, max_lens, encoded=encoded, fast=self.fast, forced=forced
            )
        gen = self._make_generator(model, space, tgt, int(max_lens.max()))
        try:
            out = gen(seqs, layout, prompt, BatchLayout.of(prompt))
        except SequenceGenerationError:
            raise GenerationError(
                f"decoding into {tgt} produced invalid scores (NaN) for a batch containing "
                f"{', '.join(names)}; check the model checkpoint"
            ) from None
        hyps = self._collect(out, space, tgt, bounds, names)
        if k > 1:
            hyps = [[h for row in hyps[i : i + k] for h in row] for i in range(0, len(hyps), k)]
        return hyps

    def _encode_once(self, seqs: Tensor, layout: BatchLayout, k: int) -> EncoderOutput | None:
        """The batch's encoder output when its rows are about to be decoded `k` > 1 times each (fast
        path only; otherwise None and the model encodes the rows it is given)."""
        if k <= 1 or not self.fast:
            return None
        with torch.inference_mode():
            return encode(self.model, seqs, layout)

    def _make_generator(self, model: Any, space: TargetSpace, tgt: str, longest: int) -> Any:
        """The fairseq2 sampling or beam-search generator the config asks for (greedy: a beam of 1)."""
        cfg = self.config
        # the generator's own global limit only needs to cover the longest row:
        # the wrapper forces <eos> per row (fairseq2 would use the batch's longest source)
        gen_len = (0.0, longest + 1)
        n = {"text": cfg.no_repeat_ngram_size, "speech": cfg.speech_no_repeat_ngram_size}.get(tgt, 0)
        procs = [NGramRepeatBlockProcessor(n)] if n else None
        gen: Any
        made = candidates(cfg, tgt)
        if cfg.strategy == "sample" or made == "sample":
            rng = self.rng()
            sampler = TopKGenSampler(cfg.top_k, rng) if cfg.top_k > 0 else TopPGenSampler(cfg.top_p, rng)
            gen = SamplingSeq2SeqGenerator(
                model, space.vocab_info(), sampler, num_gens=1, min_gen_len=1, max_gen_len=gen_len, compute_scores=True, normalize_scores=cfg.normalize_scores,
                temperature=cfg.temperature, len_penalty=cfg.len_penalty, step_processors=procs,
            )
        else:
            beam_size, patience = cfg.search()
            if made == "beam":  # the candidates are the beam's best `rerank`
                beam_size = max(beam_size, cfg.rerank)
            gen = PatientBeamSearchSeq2SeqGenerator(
                model, space.vocab_info(), beam_size=beam_size, patience=patience,
                min_gen_len=1, max_gen_len=gen_len, normalize_scores=cfg.normalize_scores,
                temperature=cfg.temperature, len_penalty=cfg.len_penalty, step_processors=procs,
            )
        return gen

    def _collect(
        self, out: Any, space: TargetSpace, tgt: str, bounds: list[tuple[int, int]], names: list[str]
    ) -> list[list[Hypothesis]]:
        """Each row's finite-scored hypotheses (up to `nbest`) as tokenizer ids, checked for specials."""
        cfg = self.config
        hyps_out: list[list[Hypothesis]] = []
        # beam candidates for reranking: the beam's best `rerank`, cut to `nbest` by the reranker
        keep = cfg.rerank if candidates(cfg, tgt) == "beam" else cfg.nbest
        for r, hyps in enumerate(out.hypotheses):
            kept = [h for h in hyps if h.score is not None and math.isfinite(float(h.score))]
            if not kept:
                raise GenerationError(
                    f"{names[r]}: no {tgt} hypothesis survived decoding (length bounds {bounds[r]}); "
                    "check the generation length settings"
                )
            row = []
            for h in kept[:keep]:
                seq = h.seq
                if int(seq[-1]) == LOCAL_EOS:
                    seq = seq[:-1]
                if bool((seq < LOCAL_OFFSET).any()):
                    raise GenerationError(f"{names[r]}: decoder emitted a special token inside a {tgt} output")
                row.append(Hypothesis(
                    tokens=space.to_tokenizer_ids(seq).cpu().numpy(),
                    score=float(h.score),
                    step_scores=None if h.step_scores is None else h.step_scores.float().cpu().numpy(),
                ))
            hyps_out.append(row)
        return hyps_out
