"""`tmt score --model`: translate a manifest split with a model, then score every direction.

This mode joins two stages (generation and evaluation), so it lives in the CLI
layer: `tmt.evaluation` scores hypotheses directories and never imports
`tmt.generation`. Each direction is translated into OUT/hyp/<src>-<tgt> (a
regular hypotheses directory), then `score_runs` scores them all into OUT.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmt.core.io import make_dirs
from tmt.core.modality import parse_directions
from tmt.evaluation.score import DIRECTIONS, ScoreConfig, ScoreError, score_runs

log = logging.getLogger(__name__)

HYP_SUBDIR = "hyp"
"""Model mode writes each direction's hypotheses to OUT/hyp/<src>-<tgt>."""


def parse_score_directions(spec: str | Sequence[str] | None) -> list[tuple[str, str]]:
    """Directions for model mode, in report order: `i2t,s2t`, `image->text`, `image-text` or `all`.

    None or `all` gives all six.
    """
    return [(d.src, d.tgt) for d in parse_directions(spec, allow_all=True, error=ScoreError)]


@dataclass(kw_only=True)
class ModelRunConfig:
    """What `tmt score run --model` translates before scoring."""

    model: str
    """Experiment directory (model.pt, config.yaml, vocab.json)."""
    manifest: str
    """Raw manifest whose rows are translated (and hold the references)."""
    split: str | None = None
    """Only rows of this split (None: every row of the manifest)."""
    directions: list[str] = field(default_factory=lambda: list(DIRECTIONS))
    """Directions to translate and score (`src->tgt`)."""
    vocoder: str | None = None
    """Unit vocoder directory: speech outputs become wavs (else units, vocoded at scoring time if possible)."""
    limit: int | None = None
    """Translate at most N inputs per direction (after keeping one row per image for image sources)."""
    one_per_image: bool = True
    """Image sources: translate one row per group (the rows of one image share it; scoring keeps one anyway)."""
    beam_size: int = 5
    """Beam width (1 = greedy)."""
    voice: str | None = None
    """Voice of speech targets for a model trained with voice tokens (None: vocab.json's default)."""
    device: str = "cpu"
    """Torch device for translation."""


def translate_for_scoring(run: ModelRunConfig, out_dir: str | Path) -> list[Path]:
    """Translate the manifest rows into OUT/hyp/<src>-<tgt> for every direction; returns those dirs.

    Each direction is written to a temporary sibling and renamed into place only
    when complete, so a failure leaves no half-written hypotheses directory.
    """
    from tmt.generation.batch import manifest_inputs, translate_to_dir
    from tmt.generation.generator import GenerationConfig
    from tmt.generation.translator import Translator

    if run.limit is not None and run.limit < 1:
        raise ScoreError(f"--limit must be >= 1, got {run.limit}")
    dirs = parse_score_directions(run.directions)
    gen = GenerationConfig(beam_size=max(1, run.beam_size), strategy="beam" if run.beam_size > 1 else "greedy",
                           voice=run.voice)
    gen.check()
    translator = Translator.from_checkpoint(run.model, device=run.device, vocoder=run.vocoder, config=gen)
    hyp_root = Path(out_dir) / HYP_SUBDIR
    make_dirs(hyp_root)
    written: list[Path] = []
    for src, tgt in dirs:
        inputs, ids, groups = manifest_inputs(
            run.manifest, run.split, src, limit=run.limit, one_per_group=src == "image" and run.one_per_image
        )
        final = hyp_root / f"{src}-{tgt}"
        tmp = hyp_root / f".{src}-{tgt}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        info = {
            "src": src, "tgt": tgt, "via": None, "manifest": str(run.manifest), "split": run.split,
            "model": str(run.model), "beam_size": gen.search()[0],
            "strategy": gen.strategy, "vocoder": run.vocoder, "limit": run.limit,
            "voice": (run.voice or translator.vocab.default_voice) if tgt == "speech" else None,
        }
        log.info("translating %d %s inputs into %s -> %s", len(ids), src, tgt, final)
        try:
            translate_to_dir(
                translator, inputs, ids, src=src, tgt=tgt, via=None, output_dir=tmp, run_info=info,
                groups=groups, chunk=max(gen.batch_size * 4, 16),
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        written.append(final)
    return written


def score_model(run: ModelRunConfig, out_dir: str | Path, cfg: ScoreConfig | None = None) -> dict[str, Any]:
    """Model + split mode: translate (see `translate_for_scoring`), then score every direction
    into `out_dir` (scores.json, report.md, scores.png; hypotheses under OUT/hyp/)."""
    cfg = cfg or ScoreConfig()
    cfg = dataclasses.replace(cfg, manifest=cfg.manifest or run.manifest, vocoder=cfg.vocoder or run.vocoder)
    hyp_dirs = translate_for_scoring(run, out_dir)
    scores = score_runs(hyp_dirs, out_dir, cfg)
    write_token_split(scores, out_dir, run.model, cfg.ref_store, run.device)
    return scores


def write_token_split(
    scores: dict[str, Any], out_dir: str | Path, model: str | None, ref_store: str | None, device: str = "cpu"
) -> None:
    """`add_token_split`, then scores.json, report.md and the chart again when it added anything."""
    if add_token_split(scores, model, ref_store, device):
        from tmt.evaluation.score.report import write_outputs

        write_outputs(scores, out_dir)


def add_token_split(
    scores: dict[str, Any], model: str | None, ref_store: str | None, device: str = "cpu"
) -> bool:
    """Image targets: teacher-forced accuracy (%) and CE of the tokens covering objects and of
    those covering only background (`tf_acc_object`, `tf_ce_object`, `tf_acc_background`,
    `tf_ce_background`), on every row of the reference store, by the model that translated
    each direction (its run.json's, else `model`), or the reason they are unavailable.
    True when `scores` changed."""
    image = [e for e in scores["directions"].values() if e.get("tgt") == "image" and e.get("src")]
    by_model: dict[str, list[dict[str, Any]]] = {}
    for e in image:
        by_model.setdefault(str(e.get("model") or model or ""), []).append(e)
    for exp, entries in by_model.items():
        dirs = sorted({f"{e['src'][0]}2i" for e in entries})
        res: dict[str, dict[str, float]] = {}
        why: str | None = None
        if not ref_store:
            why = "needs --ref-store (the split's token store, whose rows give the object masks)"
        elif not exp or not Path(exp).is_dir():
            why = f"the model directory '{exp}' (run.json) is not there"
        else:
            from tmt.training.token_split import split_on_store

            res, why = split_on_store(exp, ref_store, dirs, device)
        for e in entries:
            _put_split(e, res.get(f"{e['src'][0]}2i", {}), why)
    return bool(image)


def _put_split(entry: dict[str, Any], m: dict[str, float], why: str | None) -> None:
    if why or not m:
        entry.setdefault("unavailable", {})["tf_object_split"] = why or "no image tokens with a mask"
        return
    for g in ("object", "background"):
        if f"ce_{g}" in m:
            entry["metrics"][f"tf_acc_{g}"] = 100.0 * m[f"acc_{g}"]
            entry["metrics"][f"tf_ce_{g}"] = m[f"ce_{g}"]
    entry["tf_tokens"] = {g: int(m.get(f"tokens_{g}", 0)) for g in ("object", "background")}
