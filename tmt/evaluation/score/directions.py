"""Scoring one direction: the metric family is chosen by the target modality.

    text targets    BLEU-1..4 (+ COCO metrics) against the group's captions, or WER/CER for speech->text
    speech targets  the ASR judge's transcript, scored like text; ceiling: ground-truth speech
    image targets   scenes: the scene parser, exact match + per-attribute accuracy (ceiling: the
                    ground-truth images); other corpora: CLIP, else image-token agreement
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.evaluation import images as im
from tmt.evaluation.metrics import (
    MetricResult,
    bleu,
    caption_metrics,
    mean_of_realisations,
    wer_cer,
)
from tmt.evaluation.score.config import ScoreConfig, ScoreError
from tmt.evaluation.score.inputs import HypRun, References, group_of
from tmt.evaluation.score.judges import Judges


def score_direction(
    hr: HypRun, cfg: ScoreConfig, judges: Judges, result: MetricResult, entry: dict[str, Any]
) -> tuple[list[str] | None, dict[str, Any] | None]:
    """Fill `result` (and `entry["judge"]`) for one direction; returns (ASR transcripts or None, ceiling or None)."""
    d, src, tgt, found, refs = hr.hyp_dir, hr.src, hr.tgt, hr.hyps, hr.refs
    if tgt == "text":
        score_text(src, found, refs, cfg, result)
        return None, None
    if tgt == "speech":
        transcripts, judge_info = score_speech(d, src, found, refs, cfg, judges, result)
        entry["judge"] = judge_info
        return transcripts, (speech_ceiling(src, found, refs, cfg, judges) if cfg.ceiling else None)
    if tgt == "image":
        return None, score_image(d, found, refs, cfg, judges, result, entry)
    raise ScoreError(f"{d}: unknown target modality '{tgt}'")


def _text_metrics(
    src: str, texts: list[str], hyps: Sequence[dict[str, Any]], refs: References, cfg: ScoreConfig
) -> MetricResult:
    """WER/CER against each row's own text (text and speech sources), or caption metrics
    against the group's captions (image sources); on the scenes corpus also the scene each
    output describes (`said_scene_*`)."""
    rows = [refs.rows[str(h["id"])] for h in hyps]
    if src == "image":
        out = caption_metrics(texts, [refs.captions(group_of(h, r)) for h, r in zip(hyps, rows, strict=True)], coco=cfg.coco)
    else:
        out = wer_cer(texts, [str(r.get("text") or "") for r in rows])
    if rows and all("scene" in r for r in rows):
        out.update(said_scenes(texts, rows), prefix="said_")
    return out


def said_scenes(texts: Sequence[str], rows: Sequence[dict[str, Any]]) -> MetricResult:
    """What the outputs say, not how: each text (or transcript) read back into a scene graph by
    the caption parser and compared with the row's scene, exact and per attribute. BLEU rewards
    a generic opener that most captions share; this counts only a described scene that is right.
    A text the parser cannot read (not one of the corpus' caption forms) counts as wrong."""
    from tmt.corpora.scenes import caption_to_scene

    return im.scene_scores([caption_to_scene(t) for t in texts], [_caption_scene(r) for r in rows],
                           what="caption parser could not read {} of {} outputs")


def score_text(src: str, hyps: Sequence[dict[str, Any]], refs: References, cfg: ScoreConfig, result: MetricResult) -> None:
    """Text outputs: WER/CER (speech sources) or caption metrics (image sources)."""
    result.update(_text_metrics(src, [str(h["hyp"]) for h in hyps], hyps, refs, cfg))


def _speech_inputs(
    d: Path, hyps: Sequence[dict[str, Any]], judges: Judges
) -> tuple[list[tuple[str, list[Any]]] | None, str, list[str]]:
    """The audio of each speech hypothesis, once per noise realisation of the vocoder (`--realisations`):
    wav files (the same in every realisation), or units vocoded now. With several realisations every
    output that has units is voiced from them, its wav set aside (that wav is one realisation).

    Returns ([(realisation, inputs), ...] or None, reason when None, notes)."""
    notes: list[str] = []
    items: list[Any] = []
    need_units: list[int] = []
    units: list[np.ndarray] = []
    revoice = judges.cfg.realisations > 1
    for i, h in enumerate(hyps):
        p = d / str(h["hyp"])
        wav = p if p.suffix == ".wav" and p.is_file() else d / f"{h['id']}.wav"
        found = _hyp_units(d, p, h) if revoice or not wav.is_file() else None
        if found is None and wav.is_file():
            items.append(wav)
            continue
        if found is None:
            return None, f"{d}: no wav and no units for '{h['id']}'", notes
        items.append(None)
        need_units.append(i)
        units.append(found)
    if not need_units:
        return [("recordings", items)], "", notes
    voc, why = judges.vocoder()
    if voc is None:
        return None, f"{len(need_units)} outputs are units only and {why} to vocode them", notes
    runs = []
    for name, waves in judges.vocode(units):
        run = list(items)
        for i, w in zip(need_units, waves, strict=True):
            run[i] = w
        runs.append((name, run))
    notes.append(f"{len(need_units)} unit outputs vocoded with {judges.cfg.vocoder}"
                 + (f", {len(runs)} noise realisations" if len(runs) > 1 else ""))
    return runs, "", notes


def _hyp_units(d: Path, p: Path, h: dict[str, Any]) -> np.ndarray | None:
    """A speech hypothesis' units: its `.units.txt` file, else the tokens of its hypotheses.jsonl row."""
    upath = p if p.name.endswith(".txt") and p.is_file() else d / f"{h['id']}.units.txt"
    if upath.is_file():
        return np.array(upath.read_text().split(), dtype=np.int64)
    return np.asarray(h["tokens"], dtype=np.int64) if h.get("tokens") else None


def score_speech(
    d: Path,
    src: str,
    hyps: Sequence[dict[str, Any]],
    refs: References,
    cfg: ScoreConfig,
    judges: Judges,
    result: MetricResult,
) -> tuple[list[str] | None, dict[str, Any] | None]:
    """The ASR judge's transcripts scored like text; several noise realisations are averaged and the
    first realisation's transcripts are returned (for the report's samples)."""
    names = ("wer", "cer") if src == "text" else ("bleu1", "bleu2", "bleu3", "bleu4")
    judge, why = judges.asr()
    if judge is None:
        for m in names:
            result.unavailable[m] = f"ASR judge unavailable: {why}"
        return None, None
    runs, why, notes = _speech_inputs(d, hyps, judges)
    result.notes.extend(notes)
    if runs is None:
        for m in names:
            result.unavailable[m] = why
        return None, judge.describe()
    heard = [(name, judges.transcribe(items)) for name, items in runs]
    result.update(mean_of_realisations([(name, _text_metrics(src, texts, hyps, refs, cfg)) for name, texts in heard]))
    result.notes.append(f"ASR judge: whisper tiny.en, vocabulary prompt {'ON' if judge.prompt else 'off'}")
    return heard[0][1], judge.describe()


def _ground_truth_audio(
    rows: Sequence[dict[str, Any]], refs: References, cfg: ScoreConfig, judges: Judges
) -> tuple[list[dict[str, Any]], list[tuple[str, list[Any]]], str | None]:
    """The rows that have ground-truth speech and its audio (per noise realisation): their units
    resynthesised (vocoder + ref store) when possible, else the original recordings."""
    voc, _ = judges.vocoder()
    if voc is not None and cfg.ref_store:
        found = [(r, u, judges.store_tokens(str(r["id"]), "durations"))
                 for r in rows if (u := judges.store_tokens(str(r["id"]), "speech")) is not None]
        if found:
            kept = [r for r, _, _ in found]
            durs = [d for _, _, d in found if d is not None]
            runs = judges.vocode([u for _, u, _ in found], durs if len(durs) == len(found) else None,
                                 voice=_row_voices(voc, kept))
            return kept, runs, "resynthesised ground-truth units (vocoder + ref store)"
    recorded = [r for r in rows if (p := refs.media(r.get("speech"))) is not None and p.is_file()]
    if not recorded:
        return [], [], None
    return (recorded, [("recordings", [refs.media(r["speech"]) for r in recorded])],
            "original recordings (give --vocoder and --ref-store for the resynthesised ceiling)")


def speech_ceiling(
    src: str, hyps: Sequence[dict[str, Any]], refs: References, cfg: ScoreConfig, judges: Judges
) -> dict[str, Any] | None:
    """The ASR judge on ground truth for the same rows: resynthesised units when possible."""
    judge, why = judges.asr()
    out = MetricResult()
    if judge is None:
        out.unavailable["wer"] = f"ASR judge unavailable: {why}"
        return out.to_json() | {"source": None}
    rows, runs, source = _ground_truth_audio([refs.rows[str(h["id"])] for h in hyps], refs, cfg, judges)
    if not runs:
        out.unavailable["wer"] = "no ground-truth speech: give --vocoder and --ref-store, or a manifest with recordings"
        return out.to_json() | {"source": None}
    # image sources: the caption metrics a perfect speech caption would get, against the OTHER captions of its image
    loo = ([refs.captions(str(r.get("group") or r["id"]), exclude_id=str(r["id"])) for r in rows]
           if src == "image" else [])
    named = []
    for name, items in runs:
        transcripts = judges.transcribe(items)
        # intelligibility of ground truth: transcript vs its own text
        one = wer_cer(transcripts, [str(r.get("text") or "") for r in rows])
        if src == "image":
            one.update(bleu(transcripts, loo))
            one.notes.append("ceiling BLEU scores each ground-truth transcript against the other captions of its image")
        named.append((name, one))
    out.update(mean_of_realisations(named))
    return out.to_json() | {"source": source, "n": len(rows)}


def score_image(
    d: Path,
    hyps: Sequence[dict[str, Any]],
    refs: References,
    cfg: ScoreConfig,
    judges: Judges,
    result: MetricResult,
    entry: dict[str, Any],
) -> dict[str, Any] | None:
    paths: list[Path | None] = []
    for h in hyps:
        p = d / str(h["hyp"])
        alt = d / f"{h['id']}.png"
        paths.append(p if p.is_file() else (alt if alt.is_file() else None))
    missing = sum(p is None for p in paths)
    if missing:
        result.notes.append(f"{missing} image outputs are missing (counted as wrong where applicable)")
    rows = [refs.rows[str(h["id"])] for h in hyps]
    is_scenes = any("scene" in r for r in rows)
    ceiling: dict[str, Any] | None = None
    if is_scenes:
        ref_scenes = [_caption_scene(r) for r in rows]
        result.update(im.scene_scores(im.parse_images(paths), ref_scenes))
        entry["judge"] = {"judge": "tmt.corpora.scenes parser"}
        if cfg.ceiling:
            gt = [refs.media(r.get("image")) for r in rows]
            c = im.scene_scores(im.parse_images(gt), ref_scenes)
            ceiling = c.to_json() | {"source": "scene parser on the ground-truth images"}
        return ceiling
    # other corpora
    clip = judges.clip()
    if clip is not None:
        ok = [i for i, p in enumerate(paths) if p is not None]
        result.update(im.clip_scores(
            clip, [paths[i] for i in ok],  # type: ignore[misc]
            [refs.media(rows[i].get("image")) for i in ok],
            [rows[i].get("text") for i in ok],
        ))
        entry["judge"] = {"judge": "CLIP", "model_dir": clip.model_dir}
    else:
        result.notes.append("no --clip checkpoint given: CLIP similarities not computed")
        ref_toks = [judges.store_tokens(str(r["id"]), "image") for r in rows]
        pairs = [(h.get("tokens") or [], t) for h, t in zip(hyps, ref_toks, strict=True) if t is not None]
        if pairs:
            result.update(im.token_agreement([p[0] for p in pairs], [p[1] for p in pairs]))
        else:
            result.unavailable["token_agreement"] = (
                "needs --ref-store (a token store of this split with image tokens) or --clip DIR"
            )
    return None


def _caption_scene(row: dict[str, Any]) -> Any:
    """The scene graph the hypothesis must match: the caption's (rows carry it as `scene`)."""
    if row.get("scene") is not None:
        return row["scene"]
    from tmt.corpora.scenes import caption_to_scene

    return caption_to_scene(str(row.get("text") or ""))


def _sample_exact(path: str, row: dict[str, Any]) -> bool:
    """Whether the scene parser reads the image at `path` as the row's scene (the report's verdict)."""
    from tmt.corpora.scenes import scene_matches

    parsed = im.parse_images([path])[0]
    return parsed is not None and bool(scene_matches(parsed, _caption_scene(row)))


def samples(
    d: Path,
    src: str,
    tgt: str,
    hyps: Sequence[dict[str, Any]],
    refs: References,
    transcripts: Sequence[str] | None,
    n: int,
) -> list[dict[str, Any]]:
    out = []
    for i, h in enumerate(hyps[:n]):
        row = refs.rows[str(h["id"])]
        s: dict[str, Any] = {"id": str(h["id"])}
        s["source"] = row.get("text") if src == "text" else str(refs.media(row.get(src)) or "")
        if tgt == "text":
            s["hypothesis"] = str(h["hyp"])
        else:
            s["hypothesis_file"] = str(d / str(h["hyp"]))
        if transcripts is not None:
            s["transcript"] = transcripts[i]
        if tgt == "image" or src == "image":
            s["references"] = refs.captions(group_of(h, row))
        else:
            s["references"] = [row.get("text")] if row.get("text") else []
        if tgt != "text":
            gt = refs.media(row.get(tgt))
            s["reference_file"] = str(gt) if gt else None
        if tgt == "image" and "scene" in row:
            s["exact"] = _sample_exact(s["hypothesis_file"], row)
        out.append(s)
    return out


def _row_voices(voc: Any, rows: Sequence[dict[str, Any]]) -> list[str | None]:
    """Each reference row in its own voice where the vocoder knows it (else its default voice)."""
    from tmt.vocab import row_voice

    known = set(getattr(voc, "voices", []) or [])
    return [v if (v := row_voice(r)) in known else None for r in rows]
