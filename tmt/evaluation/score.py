"""Score translation outputs of every direction; write scores.json, report.md and a chart.

Input: hypotheses directories written by `tmt translate` batch mode, or a
model + a manifest split (`score_model`: translates each direction into
OUT/hyp/<src>-<tgt> first, then scores those)::

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
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmt import __version__
from tmt.core.errors import TmtError
from tmt.core.hypotheses import read_hyp_dir
from tmt.core.io import make_dirs, read_json_object
from tmt.core.modality import DIRECTIONS as ALL_DIRECTION_PAIRS
from tmt.core.modality import parse_directions
from tmt.evaluation.metrics import MetricResult, bleu, caption_metrics, wer_cer

log = logging.getLogger(__name__)

DIRECTIONS: tuple[str, ...] = tuple(d.arrow for d in ALL_DIRECTION_PAIRS)
"""The six directions, in report order."""

LOWER_IS_BETTER = frozenset({"wer", "cer"})
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
    clip: str | None = None
    """Local transformers CLIPModel directory for image outputs of non-scene corpora."""
    asr_model_dir: str | None = None
    """CTranslate2 Whisper directory for the ASR judge; default: the bundled tiny.en."""
    asr_prompt: str | None = None
    """Vocabulary prompt for the ASR judge (off by default for fairness)."""
    coco: bool = True
    """Compute METEOR, ROUGE-L and CIDEr when pycocoevalcap and Java are present."""
    ceiling: bool = True
    """Also score ground-truth speech/images with the same judges (the ceiling)."""
    samples: int = 5
    """Sample outputs shown per direction in report.md."""
    max_items: int | None = None
    """Score only the first N hypotheses of each directory (quick looks)."""


# --------------------------------------------------------------------------- inputs
class References:
    """Manifest rows by id, and the captions of each group."""

    def __init__(self, manifest: str | Path) -> None:
        from tmt.store.manifest import read_manifest

        self.path = Path(manifest)
        rows = read_manifest(self.path)
        self.rows: dict[str, dict[str, Any]] = {str(r["id"]): r for r in rows}
        self.group_rows: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            self.group_rows.setdefault(str(r.get("group") or r["id"]), []).append(r)

    def captions(self, group: str, *, exclude_id: str | None = None) -> list[str]:
        return [
            str(r["text"]) for r in self.group_rows.get(group, [])
            if isinstance(r.get("text"), str) and r["text"].strip() and r["id"] != exclude_id
        ]

    def media(self, value: str | None) -> Path | None:
        if not value:
            return None
        from tmt.store.manifest import media_path

        return media_path(self.path, value)


def _group_of(h: dict[str, Any], row: dict[str, Any]) -> str:
    return str(h.get("group") or row.get("group") or row["id"])


# ------------------------------------------------------------------------- judges
class Judges:
    """Judges loaded once, on first use, and shared by every direction."""

    def __init__(self, cfg: ScoreConfig) -> None:
        self.cfg = cfg
        self._asr: Any = None
        self._asr_reason: str | None = None
        self._vocoder: Any = None
        self._vocoder_reason: str | None = None
        self._clip: Any = None
        self._store: Any = None
        self._store_index: dict[str, int] | None = None
        self._transcripts: dict[str, str] = {}

    def asr(self) -> tuple[Any, str]:
        if self._asr is None and self._asr_reason is None:
            from tmt.evaluation.asr import AsrJudgeConfig, load_asr_judge

            judge, reason = load_asr_judge(AsrJudgeConfig(model_dir=self.cfg.asr_model_dir, prompt=self.cfg.asr_prompt))
            self._asr, self._asr_reason = judge, (reason if judge is None else "")
        return self._asr, self._asr_reason or ""

    def transcribe(self, items: Sequence[Any]) -> list[str]:
        """The ASR judge on `items`; files already transcribed in this run are not redone."""
        judge, why = self.asr()
        if judge is None:
            raise ScoreError(f"ASR judge unavailable: {why}")
        keys = [str(Path(i).resolve()) if isinstance(i, (str, Path)) else None for i in items]
        todo = [i for i, k in enumerate(keys) if k is None or k not in self._transcripts]
        texts = judge.transcribe([items[i] for i in todo]) if todo else []
        out: list[str | None] = [None if k is None else self._transcripts.get(k) for k in keys]
        for i, t in zip(todo, texts, strict=True):
            out[i] = t
            if keys[i] is not None:
                self._transcripts[keys[i]] = t  # type: ignore[index]
        return [t or "" for t in out]

    def vocoder(self) -> tuple[Any, str]:
        if not self.cfg.vocoder:
            return None, "no --vocoder given"
        if self._vocoder is None and self._vocoder_reason is None:
            from tmt.models.vocoder import load_vocoder

            self._vocoder = load_vocoder(self.cfg.vocoder)
            self._vocoder_reason = ""
        return self._vocoder, self._vocoder_reason or ""

    def clip(self) -> Any:
        if self._clip is None and self.cfg.clip:
            from tmt.evaluation.images import ClipJudge

            self._clip = ClipJudge(self.cfg.clip)
        return self._clip

    def store_tokens(self, row_id: str, stream: str) -> np.ndarray | None:
        """Ground-truth tokens of one row from --ref-store (None when absent)."""
        if not self.cfg.ref_store:
            return None
        if self._store is None:
            from tmt.store.token_store import TokenStore

            self._store = TokenStore(self.cfg.ref_store)
            self._store_index = {str(m["id"]): i for i, m in enumerate(self._store.iter_meta())}
        assert self._store_index is not None
        i = self._store_index.get(row_id)
        if i is None or stream not in self._store.streams:
            return None
        toks = np.asarray(self._store.tokens(i, stream))
        return toks if len(toks) else None


# ------------------------------------------------------------------ one direction
def score_dir(hyp_dir: str | Path, cfg: ScoreConfig | None = None, *, judges: Judges | None = None) -> dict[str, Any]:
    """Score one hypotheses directory; returns the direction's entry of scores.json."""
    cfg = cfg or ScoreConfig()
    judges = judges or Judges(cfg)
    d = Path(hyp_dir)
    run, hyps = read_hyp_dir(d, error=ScoreError)
    src, tgt = str(run["src"]), str(run["tgt"])
    manifest = cfg.manifest or run.get("manifest")
    if not manifest:
        raise ScoreError(f"{d}/run.json names no manifest; pass --manifest with the references")
    refs = References(manifest)
    if cfg.max_items:
        hyps = hyps[: cfg.max_items]
    found = [h for h in hyps if str(h["id"]) in refs.rows]
    if not found:
        raise ScoreError(
            f"none of the {len(hyps)} hypothesis ids of {d} are in {manifest}; pass the manifest they were translated from"
        )
    result = MetricResult()
    if len(found) < len(hyps):
        result.notes.append(f"{len(hyps) - len(found)} hypotheses have no row in the manifest and were skipped")
    if src == "image":
        # the rows of one image share it (one row per caption): score one output per image,
        # against all of its captions, as COCO caption evaluation does
        seen: set[str] = set()
        uniq = []
        for h in found:
            g = _group_of(h, refs.rows[str(h["id"])])
            if g not in seen:
                seen.add(g)
                uniq.append(h)
        if len(uniq) < len(found):
            result.notes.append(f"{len(found) - len(uniq)} further outputs for an already scored image were ignored (one per image)")
        found = uniq
    via = run.get("via") or next((h.get("via") for h in found if h.get("via")), None)
    entry: dict[str, Any] = {
        "direction": f"{src}->{tgt}",
        "src": src,
        "tgt": tgt,
        "via": via,
        "hyp_dir": str(d),
        "manifest": str(manifest),
        "split": run.get("split"),
        "model": run.get("model"),
        "n": len(found),
    }
    transcripts: list[str] | None = None
    ceiling: dict[str, Any] | None = None
    if tgt == "text":
        hyp_texts = [str(h["hyp"]) for h in found]
        if src == "speech":
            result.update(wer_cer(hyp_texts, [str(refs.rows[str(h["id"])].get("text") or "") for h in found]))
        else:
            result.update(caption_metrics(hyp_texts, [refs.captions(_group_of(h, refs.rows[str(h["id"])])) for h in found], coco=cfg.coco))
    elif tgt == "speech":
        transcripts, judge_info = _score_speech(d, src, found, refs, cfg, judges, result)
        entry["judge"] = judge_info
        if cfg.ceiling:
            ceiling = _speech_ceiling(src, found, refs, cfg, judges)
    elif tgt == "image":
        ceiling = _score_image(d, found, refs, cfg, judges, result, entry)
    else:
        raise ScoreError(f"{d}: unknown target modality '{tgt}'")
    entry.update(result.to_json())
    entry["ceiling"] = ceiling
    entry["samples"] = _samples(d, src, tgt, found, refs, transcripts, cfg.samples)
    return entry


def _speech_inputs(
    d: Path, hyps: Sequence[dict[str, Any]], judges: Judges
) -> tuple[list[Any] | None, str, list[str]]:
    """The audio of each speech hypothesis: wav files, or units vocoded now.

    Returns (inputs or None, reason when None, notes)."""
    notes: list[str] = []
    items: list[Any] = []
    need_units: list[int] = []
    units: list[np.ndarray] = []
    for i, h in enumerate(hyps):
        p = d / str(h["hyp"])
        wav = p if p.suffix == ".wav" and p.is_file() else d / f"{h['id']}.wav"
        if wav.is_file():
            items.append(wav)
            continue
        items.append(None)
        need_units.append(i)
        upath = p if p.name.endswith(".txt") and p.is_file() else d / f"{h['id']}.units.txt"
        if upath.is_file():
            units.append(np.array(upath.read_text().split(), dtype=np.int64))
        elif h.get("tokens"):
            units.append(np.asarray(h["tokens"], dtype=np.int64))
        else:
            return None, f"{d}: no wav and no units for '{h['id']}'", notes
    if need_units:
        voc, why = judges.vocoder()
        if voc is None:
            return None, f"{len(need_units)} outputs are units only and {why} to vocode them", notes
        waves = voc.synthesize(units)
        for i, w in zip(need_units, waves, strict=True):
            items[i] = (np.asarray(w, dtype=np.float32), int(voc.sample_rate))
        notes.append(f"{len(need_units)} unit outputs vocoded with {judges.cfg.vocoder}")
    return items, "", notes


def _score_speech(
    d: Path,
    src: str,
    hyps: Sequence[dict[str, Any]],
    refs: References,
    cfg: ScoreConfig,
    judges: Judges,
    result: MetricResult,
) -> tuple[list[str] | None, dict[str, Any] | None]:
    names = ("wer", "cer") if src == "text" else ("bleu1", "bleu2", "bleu3", "bleu4")
    judge, why = judges.asr()
    if judge is None:
        for m in names:
            result.unavailable[m] = f"ASR judge unavailable: {why}"
        return None, None
    items, why, notes = _speech_inputs(d, hyps, judges)
    result.notes.extend(notes)
    if items is None:
        for m in names:
            result.unavailable[m] = why
        return None, judge.describe()
    transcripts = judges.transcribe(items)
    if src == "text":
        result.update(wer_cer(transcripts, [str(refs.rows[str(h["id"])].get("text") or "") for h in hyps]))
    else:
        result.update(caption_metrics(transcripts, [refs.captions(_group_of(h, refs.rows[str(h["id"])])) for h in hyps], coco=cfg.coco))
    result.notes.append(f"ASR judge: whisper tiny.en, vocabulary prompt {'ON' if judge.prompt else 'off'}")
    return transcripts, judge.describe()


def _speech_ceiling(
    src: str, hyps: Sequence[dict[str, Any]], refs: References, cfg: ScoreConfig, judges: Judges
) -> dict[str, Any] | None:
    """The ASR judge on ground truth for the same rows: resynthesised units when possible."""
    judge, why = judges.asr()
    out = MetricResult()
    if judge is None:
        out.unavailable["wer"] = f"ASR judge unavailable: {why}"
        return out.to_json() | {"source": None}
    rows = [refs.rows[str(h["id"])] for h in hyps]
    source = None
    items: list[Any] = []
    voc, _ = judges.vocoder()
    if voc is not None and cfg.ref_store:
        units = [judges.store_tokens(str(r["id"]), "speech") for r in rows]
        durs = [judges.store_tokens(str(r["id"]), "durations") for r in rows]
        keep = [i for i, u in enumerate(units) if u is not None]
        if keep:
            ku = [units[i] for i in keep]
            kd = [durs[i] for i in keep]
            waves = voc.synthesize(ku, kd if all(x is not None for x in kd) else None)
            rows = [rows[i] for i in keep]
            items = [(np.asarray(w, dtype=np.float32), int(voc.sample_rate)) for w in waves]
            source = "resynthesised ground-truth units (vocoder + ref store)"
    if not items:
        keep_rows = [r for r in rows if refs.media(r.get("speech")) is not None and refs.media(r.get("speech")).is_file()]  # type: ignore[union-attr]
        if not keep_rows:
            out.unavailable["wer"] = "no ground-truth speech: give --vocoder and --ref-store, or a manifest with recordings"
            return out.to_json() | {"source": None}
        rows = keep_rows
        items = [refs.media(r["speech"]) for r in rows]
        source = "original recordings (give --vocoder and --ref-store for the resynthesised ceiling)"
    transcripts = judges.transcribe(items)
    # intelligibility of ground truth: transcript vs its own text
    out.update(wer_cer(transcripts, [str(r.get("text") or "") for r in rows]))
    if src == "image":
        # the caption metrics a perfect speech caption would get, against the OTHER captions of its image
        loo = [refs.captions(str(r.get("group") or r["id"]), exclude_id=str(r["id"])) for r in rows]
        out.update(bleu(transcripts, loo))
        out.notes.append("ceiling BLEU scores each ground-truth transcript against the other captions of its image")
    return out.to_json() | {"source": source, "n": len(rows)}


def _score_image(
    d: Path,
    hyps: Sequence[dict[str, Any]],
    refs: References,
    cfg: ScoreConfig,
    judges: Judges,
    result: MetricResult,
    entry: dict[str, Any],
) -> dict[str, Any] | None:
    from tmt.evaluation import images as im

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
        try:
            from tmt.corpora import scenes
        except ImportError as e:
            result.unavailable["scene_exact"] = f"scene parser unavailable ({e})"
            return None
        ref_scenes = [_caption_scene(scenes, r) for r in rows]
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


def _caption_scene(scenes: Any, row: dict[str, Any]) -> Any:
    """The scene graph the hypothesis must match: the caption's (rows carry it as `scene`)."""
    if row.get("scene") is not None:
        return row["scene"]
    return scenes.caption_to_scene(str(row.get("text") or ""))


def _samples(
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
            s["references"] = refs.captions(_group_of(h, row))
        else:
            s["references"] = [row.get("text")] if row.get("text") else []
        if tgt != "text":
            gt = refs.media(row.get(tgt))
            s["reference_file"] = str(gt) if gt else None
        out.append(s)
    return out


# ---------------------------------------------------------------- several dirs
def direction_key(entry: dict[str, Any]) -> str:
    key = str(entry["direction"])
    return f"{key} (via {entry['via']})" if entry.get("via") else key


def score_runs(
    hyp_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    cfg: ScoreConfig | None = None,
) -> dict[str, Any]:
    """Score each hypotheses directory and write scores.json, report.md and scores.png to `out_dir`.

    `out_dir` defaults to the directory itself (one input) or the inputs' common parent.
    """
    cfg = cfg or ScoreConfig()
    if not hyp_dirs:
        raise ScoreError("give at least one hypotheses directory")
    out = Path(out_dir) if out_dir else default_out_dir(hyp_dirs)
    judges = Judges(cfg)
    directions: dict[str, Any] = {}
    for d in hyp_dirs:
        entry = score_dir(d, cfg, judges=judges)
        key = direction_key(entry)
        if key in directions:
            key = f"{key} [{Path(d).name}]"
        directions[key] = entry
        log.info("%s: %s", key, _headline_text(entry))
    scores = {
        "tmt_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "directions": {k: directions[k] for k in _ordered(directions)},
    }
    write_outputs(scores, out)
    return scores


def default_out_dir(hyp_dirs: Sequence[str | Path]) -> Path:
    if len(hyp_dirs) == 1:
        return Path(hyp_dirs[0])
    return Path(os.path.commonpath([str(Path(p).resolve()) for p in hyp_dirs]))


def _ordered(directions: dict[str, Any]) -> list[str]:
    rank = {d: i for i, d in enumerate(DIRECTIONS)}
    return sorted(directions, key=lambda k: (rank.get(directions[k]["direction"], 99), k))


def headline(entry: dict[str, Any]) -> tuple[str, float] | None:
    """(metric, value) shown for a direction in the chart, or None when nothing was computed."""
    metrics = entry.get("metrics", {})
    for m in PRIMARY.get(entry["tgt"], ()):
        if m in metrics:
            return m, float(metrics[m])
    return None


def _headline_text(entry: dict[str, Any]) -> str:
    h = headline(entry)
    if h is None:
        return "unavailable: " + "; ".join(f"{k}: {v}" for k, v in entry.get("unavailable", {}).items())[:300]
    return f"{h[0]} = {h[1]:.2f}"


# ---------------------------------------------------------------------- writers
def write_outputs(scores: dict[str, Any], out_dir: str | Path) -> None:
    from tmt.io import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    make_dirs(out)
    chart_ok = write_chart(scores, out / CHART_FILE)
    atomic_write_json(out / SCORES_FILE, scores)
    atomic_write_text(out / REPORT_FILE, render_report(scores, out, chart=chart_ok))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _link(path: str | None, out_dir: Path, label: str | None = None) -> str:
    if not path:
        return "-"
    rel = os.path.relpath(Path(path).resolve(), out_dir.resolve())
    return f"[{label or Path(path).name}]({rel.replace(os.sep, '/')})"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_report(scores: dict[str, Any], out_dir: Path, *, chart: bool = True) -> str:
    """report.md: a table per direction, ceilings, notes, samples with links to media."""
    lines = [
        "# tmt score report",
        "",
        f"tmt {scores.get('tmt_version')} · {scores.get('created')}",
        "",
        "Metrics in percent (BLEU, METEOR, ROUGE-L and CIDEr x100; WER/CER lower is better).",
        "",
    ]
    if chart:
        lines += [f"![scores]({CHART_FILE})", ""]
    summary = []
    for key, e in scores["directions"].items():
        h = headline(e)
        summary.append(f"| {key} | {e['n']} | {h[0] if h else '-'} | {_fmt(h[1]) if h else 'unavailable'} |")
    lines += ["| direction | n | headline | value |", "|---|---:|---|---:|", *summary, ""]
    for key, e in scores["directions"].items():
        lines += [f"## {key}", ""]
        lines.append(f"hypotheses: `{e['hyp_dir']}` · manifest: `{e['manifest']}` · split: {e.get('split')} · n = {e['n']}")
        if e.get("judge"):
            j = e["judge"]
            desc = j.get("judge", "")
            if "prompt_used" in j:
                desc += f" (vocabulary prompt: {'on' if j['prompt_used'] else 'off'})"
            lines.append(f"judge: {desc}")
        lines += ["", "| metric | value | ceiling |", "|---|---:|---:|"]
        ceil = (e.get("ceiling") or {}).get("metrics", {})
        for m, v in e.get("metrics", {}).items():
            lines.append(f"| {m} | {_fmt(v)} | {_fmt(ceil[m]) if m in ceil else '-'} |")
        for m, why in e.get("unavailable", {}).items():
            lines.append(f"| {m} | unavailable: {_md(why)} | - |")
        lines.append("")
        if e.get("ceiling"):
            c = e["ceiling"]
            if c.get("source"):
                lines.append(f"ceiling: {c['source']}")
            for m, why in c.get("unavailable", {}).items():
                lines.append(f"ceiling {m} unavailable: {why}")
            lines.append("")
        for note in e.get("notes", []):
            lines.append(f"- {note}")
        if e.get("notes"):
            lines.append("")
        if e.get("samples"):
            lines += ["### samples", "", "| id | source | output | transcript | references |", "|---|---|---|---|---|"]
            for s in e["samples"]:
                src = _md(s["source"]) if e["src"] == "text" else _link(s.get("source"), out_dir)
                if "hypothesis" in s:
                    hyp = _md(s["hypothesis"])
                else:
                    hyp = _link(s.get("hypothesis_file"), out_dir)
                    if s.get("reference_file"):
                        hyp += " (ref: " + _link(s["reference_file"], out_dir) + ")"
                refs = " / ".join(_md(r) for r in s.get("references", [])[:5])
                lines.append(f"| {s['id']} | {src} | {hyp} | {_md(s.get('transcript', '-'))} | {refs} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def write_chart(scores: dict[str, Any], path: str | Path) -> bool:
    """A bar chart of the six directions' headline metrics; False when matplotlib is unusable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # a chart is a convenience; the numbers are in scores.json
        log.warning("no chart: %s", exc)
        return False
    by_dir: dict[str, dict[str, Any]] = {}
    for key, ent in scores["directions"].items():
        name = ent["direction"] if not ent.get("via") and ent["direction"] not in by_dir else key
        by_dir[name] = ent
    names = list(DIRECTIONS) + [k for k in by_dir if k not in DIRECTIONS]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    for i, name in enumerate(names):
        e = by_dir.get(name)
        h = headline(e) if e else None
        if h is None:
            ax.bar(i, 0.0, color="lightgray")
            ax.text(i, 1.0, "n/a", ha="center", va="bottom", fontsize=9, color="gray")
            continue
        metric, val = h
        color = "tab:red" if metric in LOWER_IS_BETTER else "tab:blue"
        ax.bar(i, val, color=color)
        ax.text(i, val + 1.0, f"{metric}\n{val:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("->", "→\n") for n in names], fontsize=8)
    ax.set_ylabel("score (%)  (red: lower is better)")
    top = max([headline(e)[1] for e in by_dir.values() if headline(e)] + [10.0])  # type: ignore[index]
    ax.set_ylim(0, top * 1.3 + 5)
    ax.set_title("tmt: headline metric per direction")
    fig.tight_layout()
    from tmt.io import atomic_open

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return True


# ------------------------------------------------------------ model + split mode
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
    device: str = "cpu"
    """Torch device for translation."""


def translate_for_scoring(run: ModelRunConfig, out_dir: str | Path) -> list[Path]:
    """Translate the manifest rows into OUT/hyp/<src>-<tgt> for every direction; returns those dirs.

    Each direction is written to a temporary sibling and renamed into place only
    when complete, so a failure leaves no half-written hypotheses directory.
    """
    import shutil

    from tmt.generation.batch import manifest_inputs, translate_to_dir
    from tmt.generation.generator import GenerationConfig
    from tmt.generation.translator import Translator

    if run.limit is not None and run.limit < 1:
        raise ScoreError(f"--limit must be >= 1, got {run.limit}")
    dirs = parse_score_directions(run.directions)
    gen = GenerationConfig(beam_size=max(1, run.beam_size), strategy="beam" if run.beam_size > 1 else "greedy")
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
            "model": str(run.model), "beam_size": gen.beam_size if gen.strategy == "beam" else 1,
            "strategy": gen.strategy, "vocoder": run.vocoder, "limit": run.limit,
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
    import dataclasses

    cfg = cfg or ScoreConfig()
    cfg = dataclasses.replace(cfg, manifest=cfg.manifest or run.manifest, vocoder=cfg.vocoder or run.vocoder)
    hyp_dirs = translate_for_scoring(run, out_dir)
    return score_runs(hyp_dirs, out_dir, cfg)


# ---------------------------------------------------------------------- compare
def load_scores(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / SCORES_FILE
    if not p.is_file():
        raise ScoreError(f"{p} not found; run `tmt score` first")
    return read_json_object(p, what="tmt scores.json", required={"directions": dict}, error=ScoreError,
                            fix="give the scores.json written by `tmt score run`")


def compare(
    a: str | Path | dict[str, Any], b: str | Path | dict[str, Any], *, headline_only: bool = False
) -> list[dict[str, Any]]:
    """Rows {direction, metric, a, b, delta, better} for every metric in either run
    (only each direction's headline metric with `headline_only`).

    `delta` is b - a; `better` names the run that wins ("a", "b", "=" or "" when one is missing).
    """
    sa = a if isinstance(a, dict) else load_scores(a)
    sb = b if isinstance(b, dict) else load_scores(b)
    rows: list[dict[str, Any]] = []
    keys = list(sa["directions"]) + [k for k in sb["directions"] if k not in sa["directions"]]
    for key in keys:
        ea, eb = sa["directions"].get(key, {}), sb["directions"].get(key, {})
        ma, mb = ea.get("metrics", {}), eb.get("metrics", {})
        names = list(ma) + [x for x in mb if x not in ma]
        if headline_only:
            h = headline(ea) if ea else None
            h = h or (headline(eb) if eb else None)
            names = [h[0]] if h else []
        for m in names:
            va, vb = ma.get(m), mb.get(m)
            delta = None if va is None or vb is None else float(vb) - float(va)
            better = ""
            if delta is not None:
                if abs(delta) < 1e-9:
                    better = "="
                else:
                    b_wins = delta < 0 if m in LOWER_IS_BETTER else delta > 0
                    better = "b" if b_wins else "a"
            rows.append({"direction": key, "metric": m, "a": va, "b": vb, "delta": delta, "better": better})
    return rows
