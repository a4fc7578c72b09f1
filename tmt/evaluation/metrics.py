"""Text metrics: BLEU-1..4 (sacrebleu), WER/CER (jiwer), COCO caption metrics.

Every scorer returns a `MetricResult`: the numbers it could compute, and for
each metric it could not, the reason. An unavailable metric is never given a
number (no zeros standing in for "not computed").

Conventions
- BLEU-n is the cumulative corpus BLEU with n-gram orders 1..n (the COCO
  caption convention: BLEU-4 uses 1-4 grams), computed by sacrebleu with its
  `13a` tokenizer, lower-cased by default (our text tokenizer is lower-cased
  WordPiece), `exp` smoothing, and any number of references per hypothesis.
  Scores are on sacrebleu's 0-100 scale.
- WER and CER are corpus-level (total edits / total reference words or
  characters), after `normalize_for_scoring` (lower case, punctuation removed,
  whitespace collapsed) on both sides, as is usual when scoring an ASR judge's
  output (Whisper writes capitals and full stops, our references may not).
- METEOR, ROUGE-L and CIDEr come from `pycocoevalcap` (the `judges` extra),
  which needs Java for its PTB tokenizer and METEOR. SPICE is never run: it
  downloads Stanford CoreNLP models at first use, and tmt runs offline.
"""

from __future__ import annotations

import logging
import re
import shutil
import statistics
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SPICE_NOTE = "SPICE skipped: it needs Stanford CoreNLP models fetched from the network, and tmt scores offline."


@dataclass
class MetricResult:
    """Numbers that were computed, plus a reason for each metric that was not."""

    values: dict[str, float] = field(default_factory=dict)
    """metric name -> value."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """metric name -> why it could not be computed."""
    notes: list[str] = field(default_factory=list)
    """Free-form remarks worth showing in the report."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Supporting counts (edit operations, reference lengths, ...)."""

    def update(self, other: MetricResult, prefix: str = "") -> MetricResult:
        self.values.update({prefix + k: v for k, v in other.values.items()})
        self.unavailable.update({prefix + k: v for k, v in other.unavailable.items()})
        self.notes.extend(n for n in other.notes if n not in self.notes)
        self.extra.update({prefix + k: v for k, v in other.extra.items()})
        return self

    def to_json(self) -> dict[str, Any]:
        return {"metrics": dict(self.values), "unavailable": dict(self.unavailable), "notes": list(self.notes), "extra": dict(self.extra)}


def mean_over_runs(runs: Sequence[Mapping[str, Any]], keys: Iterable[str], digits: int = 2) -> dict[str, float]:
    """Per key, the mean over `runs` (e.g. a vocoder's noise realisations) of its numbers; a key that is
    not a number in every run is left out (an unavailable metric stays unavailable, never half-averaged)."""
    out: dict[str, float] = {}
    for key in keys:
        values = [v for r in runs if isinstance(v := r.get(key), int | float) and not isinstance(v, bool)]
        if runs and len(values) == len(runs):
            out[key] = round(statistics.fmean(values), digits)
    return out


def mean_of_realisations(named: Sequence[tuple[str, MetricResult]]) -> MetricResult:
    """One result from the same outputs judged through several noise realisations of the vocoder: the
    first's reasons, notes and extras, every metric's mean, and each realisation's numbers under
    `extra["realisations"]` (one realisation: returned as it is)."""
    if len(named) == 1:
        return named[0][1]
    first = named[0][1]
    runs = [r.values for _, r in named]
    out = MetricResult(values=mean_over_runs(runs, first.values, digits=4), unavailable=dict(first.unavailable),
                       notes=list(first.notes), extra=dict(first.extra))
    out.extra["realisations"] = [{"noise": name} | r.values for name, r in named]
    out.notes.append(f"speech metrics are the mean over {len(named)} noise realisations of the vocoder "
                     "(each under extra.realisations)")
    return out


_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)", re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalize_for_scoring(text: str) -> str:
    """Lower-case, drop punctuation (keeping in-word apostrophes), collapse spaces: what BLEU/WER
    compare (the text tokenizer's own normalisation is `tmt.tokenizers.text.normalize_text`)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("_", " ")
    text = _PUNCT.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _check_lengths(hyps: Sequence[Any], refs: Sequence[Any]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")


# --------------------------------------------------------------------------- BLEU
def bleu(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    *,
    max_order: int = 4,
    lowercase: bool = True,
    tokenize: str = "13a",
) -> MetricResult:
    """Corpus BLEU-1..`max_order`, each hypothesis with its own list of references.

    `refs[i]` is the list of references of `hyps[i]` (any length >= 1).
    Returns `bleu1`..`bleu4` plus `bleu_bp` (brevity penalty of BLEU-4) and
    the n-gram precisions in `extra`.
    """
    from sacrebleu.metrics import BLEU

    _check_lengths(hyps, refs)
    out = MetricResult()
    keep = [i for i, r in enumerate(refs) if any(x.strip() for x in r)]
    if not keep:
        for n in range(1, max_order + 1):
            out.unavailable[f"bleu{n}"] = "no references"
        return out
    if len(keep) < len(refs):
        out.notes.append(f"BLEU: {len(refs) - len(keep)} hypotheses without references were skipped")
    hyp_list = [hyps[i] for i in keep]
    ref_lists = [[x for x in refs[i] if x.strip()] for i in keep]
    # sacrebleu wants reference *streams* (the k-th reference of every segment);
    # segments with fewer references pad their stream with None.
    n_streams = max(len(r) for r in ref_lists)
    streams: list[list[str | None]] = [
        [r[k] if k < len(r) else None for r in ref_lists] for k in range(n_streams)
    ]
    for n in range(1, max_order + 1):
        scorer = BLEU(max_ngram_order=n, lowercase=lowercase, tokenize=tokenize)
        res = scorer.corpus_score(list(hyp_list), streams)  # type: ignore[arg-type]
        out.values[f"bleu{n}"] = float(res.score)
        if n == max_order:
            out.values["bleu_bp"] = float(res.bp)
            out.extra["bleu_precisions"] = [float(p) for p in res.precisions]
            out.extra["bleu_sys_len"] = int(res.sys_len)
            out.extra["bleu_ref_len"] = int(res.ref_len)
            out.extra["bleu_signature"] = str(scorer.get_signature())
    return out


# ------------------------------------------------------------------- WER / CER
def wer_cer(hyps: Sequence[str], refs: Sequence[str], *, normalize: bool = True) -> MetricResult:
    """Corpus-level WER and CER (in percent) with jiwer.

    Pairs whose reference is empty after normalisation are skipped (jiwer
    cannot divide by an empty reference) and counted in the notes.
    """
    import jiwer

    _check_lengths(hyps, refs)
    out = MetricResult()
    norm = normalize_for_scoring if normalize else (lambda s: _SPACES.sub(" ", s).strip())
    pairs = [(norm(h), norm(r)) for h, r in zip(hyps, refs, strict=True)]
    kept = [(h, r) for h, r in pairs if r]
    if len(kept) < len(pairs):
        out.notes.append(f"WER/CER: {len(pairs) - len(kept)} pairs with an empty reference were skipped")
    if not kept:
        out.unavailable["wer"] = out.unavailable["cer"] = "no non-empty references"
        return out
    h_list = [h for h, _ in kept]
    r_list = [r for _, r in kept]
    w = jiwer.process_words(r_list, h_list)
    c = jiwer.process_characters(r_list, h_list)
    out.values["wer"] = 100.0 * float(w.wer)
    out.values["cer"] = 100.0 * float(c.cer)
    out.extra["words"] = {
        "ref": int(w.hits + w.substitutions + w.deletions),
        "sub": int(w.substitutions),
        "del": int(w.deletions),
        "ins": int(w.insertions),
    }
    out.extra["chars"] = {
        "ref": int(c.hits + c.substitutions + c.deletions),
        "sub": int(c.substitutions),
        "del": int(c.deletions),
        "ins": int(c.insertions),
    }
    per = utterance_wers(w.alignments, r_list)
    out.extra["utterances"] = {"median_wer": float(statistics.median(per)), "over_100": int(sum(v > 100.0 for v in per))}
    return out


def utterance_wers(alignments: Sequence[Sequence[Any]], refs: Sequence[str]) -> list[float]:
    """Each pair's own WER (percent) from jiwer's word alignments of the same call. A corpus WER
    sums the errors of all pairs, so one transcript that babbles on (an ASR judge hallucinating
    dozens of words into unclear audio) moves it by as much as many honest mistakes; the median
    and the count of pairs over 100% (more errors than reference words: insertions) tell those apart."""
    out = []
    for chunks, ref in zip(alignments, refs, strict=True):
        errors = sum((c.hyp_end_idx - c.hyp_start_idx) if c.type == "insert" else (c.ref_end_idx - c.ref_start_idx)
                     for c in chunks if c.type != "equal")
        out.append(100.0 * errors / max(len(ref.split()), 1))
    return out


# ------------------------------------------------------------- COCO metrics
def coco_available() -> tuple[bool, str]:
    """Whether pycocoevalcap and Java are present; the reason when not."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False, "pycocoevalcap is not installed (pip install 'tmt[judges]')"
    if shutil.which("java") is None:
        return False, "Java is not on PATH (pycocoevalcap's PTB tokenizer and METEOR need it)"
    return True, ""


def coco_caption_metrics(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    *,
    metrics: Sequence[str] = ("meteor", "rouge_l", "cider"),
) -> MetricResult:
    """METEOR, ROUGE-L and CIDEr (COCO caption evaluation; values on a 0-100 scale).

    Unavailable (with the reason) when the `judges` extra or Java is missing,
    or when the Java tools fail.
    """
    _check_lengths(hyps, refs)
    out = MetricResult(notes=[SPICE_NOTE])
    ok, why = coco_available()
    if not ok:
        for m in metrics:
            out.unavailable[m] = why
        return out
    keep = [i for i, r in enumerate(refs) if any(x.strip() for x in r)]
    if not keep:
        for m in metrics:
            out.unavailable[m] = "no references"
        return out
    try:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        gts = {str(i): [{"caption": x} for x in refs[i] if x.strip()] for i in keep}
        res = {str(i): [{"caption": hyps[i] if hyps[i].strip() else "<empty>"}] for i in keep}
        tok = PTBTokenizer()
        gts_t = tok.tokenize(gts)
        res_t = tok.tokenize(res)
        # METEOR's Java side chokes on a hypothesis that tokenizes to nothing
        res_t = {k: [v[0] if v and v[0].strip() else "empty"] for k, v in res_t.items()}
    except Exception as e:  # the PTB tokenizer is a Java subprocess writing next to its jar
        for m in metrics:
            out.unavailable[m] = f"pycocoevalcap PTB tokenizer failed: {e}"
        return out
    if "cider" in metrics and len(keep) < 100:
        out.notes.append(f"CIDEr's n-gram IDF comes from the references of the {len(keep)} scored items; unstable below ~100 images")
    for m in metrics:
        try:
            out.values[m] = 100.0 * _coco_one(m, gts_t, res_t)
        except Exception as e:
            out.unavailable[m] = f"pycocoevalcap {m} failed: {type(e).__name__}: {e}"
    return out


def _coco_one(name: str, gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    if name == "meteor":
        from pycocoevalcap.meteor.meteor import Meteor

        scorer: Any = Meteor()
        try:
            score, _ = scorer.compute_score(gts, res)
        finally:
            _close_meteor(scorer)
        return float(score)
    if name == "rouge_l":
        from pycocoevalcap.rouge.rouge import Rouge

        score, _ = Rouge().compute_score(gts, res)
        return float(score)
    if name == "cider":
        from pycocoevalcap.cider.cider import Cider

        score, _ = Cider().compute_score(gts, res)
        return float(score)
    raise ValueError(f"unknown COCO metric '{name}'; expected meteor, rouge_l or cider")


def _close_meteor(scorer: Any) -> None:
    """Stop METEOR's Java process now rather than at garbage collection."""
    p = getattr(scorer, "meteor_p", None)
    if p is None:
        return
    try:
        if p.stdin:
            p.stdin.close()
        p.kill()
        p.wait(timeout=10)
    except Exception:
        pass
    # its __del__ would kill again; make that a no-op
    scorer.meteor_p = _DeadProcess()


class _DeadProcess:
    class _Pipe:
        def close(self) -> None:
            pass

    stdin = _Pipe()

    def kill(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 0


def caption_metrics(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    *,
    coco: bool = True,
) -> MetricResult:
    """BLEU-1..4 plus (when `coco` and available) METEOR, ROUGE-L and CIDEr."""
    out = bleu(hyps, refs)
    if coco:
        out.update(coco_caption_metrics(hyps, refs))
    else:
        out.notes.append("METEOR/ROUGE-L/CIDEr not requested (--no-coco)")
    return out
