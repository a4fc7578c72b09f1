"""Beam search with a patience factor (Kasai et al., 2022, "A Call for Clarity in Beam Search").

fairseq2's beam search (like fairseq's) ends a source row as soon as `beam_size`
hypotheses have produced `<eos>`. When a model gives `<eos>` some mass early (the
unified model ends a transcript where an image caption could end), the short
hypotheses fill that quota first and the longer, better-scored ones are never
finished: on `valid` a wider beam then scores worse than greedy search. The
patience factor `p` keeps a row searching until `ceil(p * beam_size)` hypotheses
have finished; `p = 1` is fairseq2's rule exactly, and the candidates kept per
step stay `beam_size`, so the cost grows only with the extra steps.

fairseq2 0.8.1 hard-codes the quota in a private, final operator class
(`_AbstractBeamSearchSequenceGeneratorOp._finish_sequence`) and builds that
operator inside `BeamSearchSeq2SeqGenerator.__call__`, with no hook for either;
so this module subclasses both and changes only the quota.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from fairseq2.generation import SequenceGeneratorOutput
from fairseq2.generation.beam_search import BeamSearchSeq2SeqGenerator
from fairseq2.generation.beam_search.generator import _BeamSearchSeq2SeqGeneratorOp
from fairseq2.nn import BatchLayout
from torch import Tensor


class _PatientOp(_BeamSearchSeq2SeqGeneratorOp):  # type: ignore[misc]  # fairseq2 marks it @final
    """fairseq2's seq2seq beam-search operator with a quota of finished hypotheses per row."""

    quota: int

    def _finish_sequence(self, seq_idx: int, score: Tensor) -> bool:
        prompt_idx = int(self._prompt_indices[seq_idx])  # read before the parent records the hypothesis
        super()._finish_sequence(seq_idx, score)
        return len(self._output[prompt_idx]) >= self.quota


class PatientBeamSearchSeq2SeqGenerator(BeamSearchSeq2SeqGenerator):  # type: ignore[misc]  # @final too
    """`BeamSearchSeq2SeqGenerator` that ends a row after `ceil(patience * beam_size)` finished
    hypotheses (all other arguments as fairseq2's)."""

    def __init__(self, *args: Any, patience: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if patience < 1.0:
            raise ValueError(f"`patience` must be >= 1, got {patience}")
        self.quota = math.ceil(patience * self._beam_size)

    @torch.inference_mode()
    def __call__(
        self, source_seqs: Tensor, source_seqs_layout: BatchLayout, prompt_seqs: Tensor, prompt_seqs_layout: BatchLayout
    ) -> SequenceGeneratorOutput:
        # the same checks and arguments as fairseq2's __call__; only the operator class differs
        if source_seqs_layout.packed or prompt_seqs_layout.packed:
            raise ValueError("`source_seqs` and `prompt_seqs` must not be packed batches.")
        a_term, b_term = self._max_gen_len
        max_gen_len = int(a_term * max(source_seqs_layout.seq_lens) + b_term)
        if not 1 <= self._min_gen_len <= max_gen_len:
            raise ValueError(f"need 1 <= min_gen_len ({self._min_gen_len}) <= max_gen_len ({max_gen_len})")
        op = _PatientOp(
            self._model, self._target_vocab_info, source_seqs, source_seqs_layout, prompt_seqs,
            prompt_seqs_layout, self._algo, self._beam_size, self._min_gen_len, max_gen_len,
            self._max_seq_len, self._echo_prompt, self._normalize_scores, self._temperature,
            self._unk_penalty, self._len_penalty, self._prefill_chunk_size,
            self._decode_capacity_increment, self._step_processors, self._step_hooks,
        )
        op.quota = self.quota
        hypotheses, counters = op()
        return SequenceGeneratorOutput(hypotheses, counters)
