"""Score translation outputs of every direction; write scores.json, report.md and a chart.

Input: hypotheses directories written by `tmt translate` batch mode (`tmt score
--model` translates a manifest split into such directories first; that mode
lives in the CLI layer, `tmt.cli.score_model`)::

    D/run.json          {"src", "tgt", "via", "manifest", "split", "model", "beam_size", ...}
    D/hypotheses.jsonl  {"id", "group", "src", "tgt", "hyp", "tokens", "score", "via"} per input;
                        "hyp" is the text, or for speech/image targets a file path relative to D
    D/<id>.wav|png|units.txt

References come from the raw manifest (the one in run.json unless given):
the row with the hypothesis' id (its text, speech, image, scene) and, for
caption metrics, the texts of every row of the same `group`.

Metrics per direction (tgt decides the family):

    image->text    BLEU-1..4 (+ METEOR, ROUGE-L, CIDEr with the judges extra)
    speech->text   WER, CER
    text->speech   ASR judge transcript vs the input text: WER, CER
    image->speech  ASR judge transcript vs the group's captions: BLEU-1..4 (+ COCO metrics)
    text->image    scenes: parser exact match + per-attribute accuracy;
    speech->image  else CLIP (local checkpoint) or image-token agreement

For speech outputs a ceiling is computed too: the ASR judge on resynthesised
ground-truth units (`--vocoder` + `--ref-store`), or on the original
recordings when those are not given. For scene images: the parser on the
ground-truth images.

Modules, bottom up: `config` (settings, error, names), `inputs` (a hypotheses
directory and its references), `judges` (ASR, vocoder, CLIP, reference store),
`directions` (scoring one direction), `report` (scores.json, report.md, chart,
`compare`), `runs` (`score_dir`, `score_runs`). Import the names below from
`tmt.evaluation.score`.
"""

from __future__ import annotations

from tmt.evaluation.score.config import (
    CHART_FILE,
    DIRECTIONS,
    LOWER_IS_BETTER,
    PRIMARY,
    REPORT_FILE,
    SCORES_FILE,
    ScoreConfig,
    ScoreError,
)
from tmt.evaluation.score.inputs import HypRun, References, load_hyp_run
from tmt.evaluation.score.judges import Judges
from tmt.evaluation.score.report import (
    compare,
    headline,
    load_scores,
    render_report,
    write_chart,
    write_outputs,
)
from tmt.evaluation.score.runs import default_out_dir, direction_key, score_dir, score_runs

__all__ = [
    "CHART_FILE",
    "DIRECTIONS",
    "LOWER_IS_BETTER",
    "PRIMARY",
    "REPORT_FILE",
    "SCORES_FILE",
    "HypRun",
    "Judges",
    "References",
    "ScoreConfig",
    "ScoreError",
    "compare",
    "default_out_dir",
    "direction_key",
    "headline",
    "load_hyp_run",
    "load_scores",
    "render_report",
    "score_dir",
    "score_runs",
    "write_chart",
    "write_outputs",
]
