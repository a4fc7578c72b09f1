"""Evaluation: metrics and judges for all six directions, reports (`tmt score`).

- `metrics`: BLEU-1..4 (sacrebleu), WER/CER (jiwer), METEOR/ROUGE-L/CIDEr (pycocoevalcap).
- `asr`: the Whisper tiny.en ASR judge for speech outputs (faster-whisper, offline).
- `images`: scene-parser, CLIP and image-token judges for image outputs.
- `score`: hypotheses directories -> scores.json, report.md, scores.png; `compare`.
- `retrieval`: R@1/5/10 by forced-decoding log-probability.

Submodules are imported on use; importing `tmt.evaluation` loads nothing heavy.
"""

from __future__ import annotations
