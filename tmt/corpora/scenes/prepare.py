"""Write the scenes corpus: media, one raw manifest per split, a README card, a settings stamp.

`prepare_scenes(out_dir, ...)` plans the corpus (`plan.py`), draws the images
and synthesises the recordings (in worker processes when `jobs > 1`), then
writes the manifests, `README.md` and `prepare.json`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tmt import TmtError
from tmt.core.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    make_dirs,
    read_json_object,
)
from tmt.core.progress import progress_bar
from tmt.corpora.scenes.captions import CAPTIONS_PER_IMAGE, caption_vocabulary
from tmt.corpora.scenes.geometry import (
    BACKGROUND,
    COLOURS,
    CONSTANT_GREY,
    HELD_OUT,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    TONES,
    png_bytes,
    render_scene,
)
from tmt.corpora.scenes.plan import (
    EXTRA_SPLIT,
    GENERATOR_VERSION,
    SPLITS,
    ScenesConfig,
    check_config,
    plan_scenes,
)

log = logging.getLogger("tmt.corpora.scenes")  # the package name, as in log lines before the split

def _build_scene(task: tuple[dict[str, Any], str, int, bool]) -> list[float | None]:
    """Worker: write one scene's png and wavs (skipping files already there); returns durations."""
    from tmt.corpora.tts import Voice, synthesize_to_wav

    plan, out_dir, image_size, speech = task
    out = Path(out_dir)
    png = out / "images" / f"{plan['id']}.png"
    if not png.is_file():
        atomic_write_bytes(png, png_bytes(render_scene(plan["scene"], plan["render"], image_size)))
    durations: list[float | None] = []
    for k, (cap, voice) in enumerate(zip(plan["captions"], plan["voices"], strict=True)):
        if not speech or voice is None:
            durations.append(None)
            continue
        wav = out / "speech" / f"{plan['id']}_{k}.wav"
        if wav.is_file():
            import soundfile as sf

            durations.append(round(float(sf.info(str(wav)).duration), 4))
        else:
            durations.append(round(synthesize_to_wav(cap["text"], Voice(**voice), wav), 4))
    return durations


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def _splits(cfg: ScenesConfig) -> tuple[str, ...]:
    """The splits the corpus writes: SPLITS, then `train_extra` when there are extra scenes."""
    return SPLITS + ((EXTRA_SPLIT,) if cfg.extra_scenes else ())


def _rows(plans: Sequence[dict[str, Any]], durations: Sequence[list[float | None]],
          splits: Sequence[str] = SPLITS) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}
    for plan, durs in zip(plans, durations, strict=True):
        sid, split = plan["id"], plan["split"]
        image = f"images/{sid}.png"
        if split == "images_only":
            rows[split].append({"id": sid, "group": sid, "split": split, "image": image, "speech": None, "text": None, "scene": plan["scene"]})
            continue
        for k, (cap, voice, dur) in enumerate(zip(plan["captions"], plan["voices"], durs, strict=True)):
            has_speech = voice is not None and dur is not None
            rows[split].append(
                {
                    "id": f"{sid}_{k}",
                    "group": sid,
                    "split": split,
                    "image": None if split == "speech_text_only" else image,
                    "speech": f"speech/{sid}_{k}.wav" if has_speech else None,
                    "text": cap["text"],
                    "caption_index": k,
                    "template": cap["template"],
                    "scene": plan["scene"],
                    "tts": voice if has_speech else None,
                    "duration": dur if has_speech else None,
                }
            )
    return rows


def _background_note(cfg: ScenesConfig) -> str:
    if cfg.background == "random":
        return f"Backgrounds: a random grey ({BACKGROUND[0]}-{BACKGROUND[1]}) per image plus pixel noise."
    if cfg.background == "constant":
        return f"Backgrounds: one grey ({CONSTANT_GREY}) for every image, no pixel noise."
    tones = ", ".join(f"{name} ({grey})" for name, grey in TONES.items())
    return (f"Backgrounds: a named tone per image, no pixel noise: {tones}. Captions of dark and light scenes "
            'say so ("... on a dark background"); the scene graph records it as `background`.')


def _readme(cfg: ScenesConfig, rows: Mapping[str, list[dict[str, Any]]], engines: Sequence[str], plans: Sequence[dict[str, Any]]) -> str:
    voices = Counter(f"{r['tts']['engine']}:{r['tts']['voice']}" for rs in rows.values() for r in rs if r.get("tts"))
    hours = sum(r.get("duration") or 0.0 for rs in rows.values() for r in rs) / 3600
    vocab = caption_vocabulary(tones=cfg.background == "tones")
    lines = [
        "# scenes: the embedded tri-modal corpus",
        "",
        f"Written by `tmt prepare scenes` (generator version {GENERATOR_VERSION}). Regenerate with:",
        "",
        f"    tmt prepare scenes --num-scenes {cfg.num_scenes} --seed {cfg.seed} --image-size {cfg.image_size} "
        f"--max-objects {cfg.max_objects}"
        + (f" --background {cfg.background}" if cfg.background != "random" else "")
        + (f" --extra-scenes {cfg.extra_scenes}" if cfg.extra_scenes else "")
        + (f" --extra-speech {cfg.extra_speech}" if cfg.extra_speech else "")
        + " --out <dir>",
        "",
        f"{len(plans)} images ({cfg.image_size}x{cfg.image_size} RGB, {cfg.min_objects}-{cfg.max_objects} objects), "
        f"{cfg.captions_per_image} captions per image, "
        + (f"one 16 kHz mono 16-bit recording per caption ({hours:.2f} h)." if cfg.speech else "no speech."),
        "",
        "| split | images | rows | image | speech | text |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in rows:
        rs = rows[s]
        lines.append(
            f"| {s} | {len({r['group'] for r in rs})} | {len(rs)} | {sum(r['image'] is not None for r in rs)} "
            f"| {sum(r['speech'] is not None for r in rs)} | {sum(r['text'] is not None for r in rs)} |"
        )
    lines += [
        "",
        "`test_novel` images each hold one colour-shape pair never seen in the other splits: "
        + ", ".join(f"{c} {s}" for c, s in HELD_OUT)
        + ".",
        "`images_only` and `speech_text_only` are the unpaired pools for back-translation; the withheld",
        "modality of their scenes is still on disk (images/, speech/) to score back-translation against.",
    ]
    if cfg.extra_scenes:
        spoken = (f"the first {cfg.extra_speech} caption(s) of each also spoken" if cfg.extra_speech and cfg.speech
                  else "no speech")
        lines.append(f"`{EXTRA_SPLIT}` holds {cfg.extra_scenes} extra scenes with images and captions, {spoken} "
                     "(cheap training data for the image directions and the image tokenizer).")
    if cfg.background != "random":
        lines.append(_background_note(cfg))
    lines += [
        "",
        f"Engines: {', '.join(engines) if cfg.speech else 'none'}. Voices (recordings): "
        + (", ".join(f"{v} ({n})" for v, n in sorted(voices.items())) or "none")
        + ".",
        "",
        f"Shapes: {', '.join(SHAPES)}. Colours: {', '.join(COLOURS)}. Sizes: {', '.join(SIZES)}. "
        f"Positions: {', '.join(POSITIONS)}. Relations: {', '.join(RELATIONS)}.",
        "",
        f"Caption vocabulary ({len(vocab)} words): {' '.join(vocab)}",
        "",
        "Each row's `scene` is the scene graph; `tts` is {engine, voice, rate, pitch}.",
        "`tmt.corpora.scenes.parse_scene(image)` recovers the graph from pixels.",
        "",
    ]
    return "\n".join(lines)


def _claim_out_dir(out: Path, settings: Mapping[str, Any], *, speech: bool, overwrite: bool) -> Path:
    """Make `out` ready for a corpus with these settings and stamp it incomplete; returns the stamp's path.

    A stamp with the same settings means a rerun (media already written are kept);
    other settings, or a non-empty directory without a stamp, are refused unless `overwrite`.
    """
    stamp_path = out / "prepare.json"
    if stamp_path.is_file():
        old = read_json_object(stamp_path, what="scenes corpus stamp", fix="pass --overwrite to rebuild the corpus")
        if old.get("settings") != settings and not overwrite:
            raise TmtError(
                f"{out} already holds a scenes corpus made with other settings ({stamp_path}); "
                "use another --out directory or pass --overwrite"
            )
        if old.get("settings") != settings:
            for sub in ("images", "speech"):
                shutil.rmtree(out / sub, ignore_errors=True)
    elif out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TmtError(f"{out} exists and is not a scenes corpus directory; choose an empty --out or pass --overwrite")
    make_dirs(out / "images")
    if speech:
        make_dirs(out / "speech")
    atomic_write_json(stamp_path, {"settings": settings, "complete": False})
    return stamp_path


def _build_media(
    plans: Sequence[dict[str, Any]], out: Path, cfg: ScenesConfig, *, jobs: int, progress: bool | None
) -> list[list[float | None]]:
    """Write every scene's png and wavs (in `jobs` worker processes when > 1); returns
    each scene's recording durations, in plan order."""
    tasks = [(p, str(out), cfg.image_size, cfg.speech) for p in plans]
    bar = progress_bar(total=len(tasks), desc="scenes", unit="scene", enabled=progress)
    durations: list[list[float | None]] = []
    try:
        if jobs <= 1:
            for t in tasks:
                durations.append(_build_scene(t))
                bar.update()
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch/OpenMP state
            with ctx.Pool(jobs, initializer=_init_worker) as pool:
                for d in pool.imap(_build_scene, tasks, chunksize=max(1, min(16, len(tasks) // (4 * jobs)))):
                    durations.append(d)
                    bar.update()
    finally:
        bar.close()
    return durations


def _write_manifests(out: Path, rows: Mapping[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Validate and write one `<split>.jsonl.gz` per split; returns the row count of each."""
    from tmt.store.manifest import validate_rows, write_manifest

    counts = {}
    for split in rows:
        path = out / f"{split}.jsonl.gz"
        validate_rows(rows[split], manifest=path, check_files=True)
        counts[split] = write_manifest(path, rows[split])
    return counts


_UNSTAMPED = (("background", "random"), ("extra_scenes", 0), ("extra_speech", 0))
"""(setting, value) pairs that draw the corpus as it was before the setting existed: left out of the stamp."""


def _settings(cfg: ScenesConfig, engines_used: Sequence[str]) -> dict[str, Any]:
    """The settings stamped into prepare.json. Settings that leave the corpus as it was before
    they existed stay out, so a corpus written then still counts as written with the same settings."""
    config = dataclasses.asdict(cfg) | {"engines": list(cfg.engines)}
    config = {k: v for k, v in config.items() if (k, v) not in _UNSTAMPED}
    return {"generator_version": GENERATOR_VERSION, "config": config, "engines_used": list(engines_used)}


def prepare_scenes(
    out_dir: str | Path,
    *,
    num_scenes: int = 2000,
    seed: int = 0,
    image_size: int = 64,
    max_objects: int = 2,
    min_objects: int = 1,
    jobs: int = 1,
    engines: Sequence[str] = ("espeak-ng", "flite"),
    speech: bool = True,
    background: str = "constant",
    extra_scenes: int = 0,
    extra_speech: int = 0,
    captions_per_image: int = CAPTIONS_PER_IMAGE,
    fractions: Mapping[str, float] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write the scenes corpus into `out_dir`; returns a summary dict.

    Layout: `images/<scene>.png`, `speech/<scene>_<k>.wav`, one raw manifest per split
    (`train`, `valid`, `test`, `test_novel`, `images_only`, `speech_text_only`, and
    `train_extra` with `extra_scenes`, spoken for their first `extra_speech` captions;
    `.jsonl.gz`; media paths relative to `out_dir`),
    `README.md` and `prepare.json` (the settings). Re-running with the same settings skips media already written;
    different settings in a non-empty directory are refused unless `overwrite`.
    """
    cfg = ScenesConfig(
        num_scenes=num_scenes,
        seed=seed,
        image_size=image_size,
        min_objects=min_objects,
        max_objects=max_objects,
        captions_per_image=captions_per_image,
        speech=speech,
        background=background,  # type: ignore[arg-type]  # checked by plan_scenes
        extra_scenes=extra_scenes,
        extra_speech=extra_speech,
        engines=tuple(engines),
        fractions=dict(fractions) if fractions is not None else ScenesConfig().fractions,
    )
    check_config(cfg)  # before the output directory is touched
    from tmt.corpora.tts import available_engines, voice_names

    used = available_engines(cfg.engines) if cfg.speech else []
    out = Path(out_dir)
    settings = _settings(cfg, used)
    stamp_path = _claim_out_dir(out, settings, speech=cfg.speech, overwrite=overwrite)

    plans = plan_scenes(cfg, voice_names(used) if cfg.speech else None)
    durations = _build_media(plans, out, cfg, jobs=jobs, progress=progress)
    rows = _rows(plans, durations, _splits(cfg))
    counts = _write_manifests(out, rows)
    atomic_write_text(out / "README.md", _readme(cfg, rows, used, plans))
    atomic_write_json(stamp_path, {"settings": settings, "complete": True, "rows": counts})
    summary = {"out": str(out), "images": len(plans), "captions": sum(len(p["captions"]) for p in plans),
               "wavs": sum(d is not None for ds in durations for d in ds), "rows": counts, "engines": used}
    log.info("scenes corpus in %s: %s", out, summary)
    return summary
