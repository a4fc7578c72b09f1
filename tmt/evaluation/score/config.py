"""`tmt score` settings, its error, and the names shared by the scoring modules.

`ScoreConfig` holds the judges' inputs and report options; `DIRECTIONS` fixes
the report order; `PRIMARY` picks each direction's headline metric.
"""

from __future__ import annotations

from dataclasses import dataclass

from tmt.core.errors import TmtError
from tmt.core.modality import DIRECTIONS as ALL_DIRECTION_PAIRS

DIRECTIONS: tuple[str, ...] = tuple(d.arrow for d in ALL_DIRECTION_PAIRS)
"""The six directions, in report order."""

LOWER_IS_BETTER = frozenset({"wer", "cer", "tf_ce_object", "tf_ce_background"})
"""Metrics where smaller numbers are better (everything else: larger is better)."""

PRIMARY: dict[str, tuple[str, ...]] = {
    "text": ("bleu4", "wer"),
    "speech": ("bleu4", "wer"),
    "image": ("scene_exact", "clip_image_text", "clip_image_image", "token_agreement"),
}
"""Headline metric per target modality for the chart: the first one present."""

SCORES_FILE = "scores.json"
REPORT_FILE = "report.md"
CHART_FILE = "scores.png"


class ScoreError(TmtError):
    """A hypotheses directory, manifest or judge input is missing or malformed."""


@dataclass(kw_only=True)
class ScoreConfig:
    """Settings of `tmt score`."""

    manifest: str | None = None
    """Raw manifest with the references; default: the one named in each run.json."""
    ref_store: str | None = None
    """Token store of the same split: ground-truth units (ASR ceiling) and image tokens (token agreement)."""
    vocoder: str | None = None
    """Unit vocoder directory, for hypotheses given only as units and for the resynthesised ceiling."""
    realisations: int = 1
    """Noise realisations of a `unit-world` vocoder: speech outputs (from their units) and the resynthesised
    ceiling are voiced this many times (WORLD's own noise, then `world.noise_seed` 1, 2, ...) and their
    metrics are the mean, each realisation's under `extra.realisations`. One realisation moves text->speech
    WER by up to 6 points on 250 rows (docs/results.md, session 30)."""
    clip: str | None = None
    """Local transformers CLIPModel directory for image outputs of non-scene corpora."""
    asr_model_dir: str | None = None
    """CTranslate2 Whisper directory for the ASR judge; default: the bundled tiny.en."""
    asr_prompt: str | None = None
    """Vocabulary prompt for the ASR judge (off by default for fairness)."""
    asr_no_repeat_ngram: int = 4
    """The ASR judge never repeats a token n-gram of this size (0: off; `AsrJudgeConfig.no_repeat_ngram_size`)."""
    coco: bool = True
    """Compute METEOR, ROUGE-L and CIDEr when pycocoevalcap and Java are present."""
    ceiling: bool = True
    """Also score ground-truth speech/images with the same judges (the ceiling)."""
    samples: int = 5
    """Sample outputs shown per direction in report.md."""
    max_items: int | None = None
    """Score only the first N hypotheses of each directory (quick looks)."""

    def __post_init__(self) -> None:
        if self.realisations < 1:
            raise ScoreError(f"realisations must be >= 1, got {self.realisations}")
        if self.realisations > 1 and not self.vocoder:
            raise ScoreError("--realisations voices speech outputs again from their units: give the unit-world "
                             "vocoder (--vocoder DIR)")

