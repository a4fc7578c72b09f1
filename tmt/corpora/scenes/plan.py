"""The corpus plan: settings, split sizes, and every scene decided up front from the seed.

`plan_scenes(cfg)` fixes each scene's split, graph, captions, render settings
and voices before any media is written, so the same seed and settings give
the same corpus whatever the number of worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tmt import TmtError
from tmt.corpora.scenes.captions import make_captions, say_background
from tmt.corpora.scenes.geometry import BACKGROUND, BACKGROUNDS, CONSTANT_GREY, TONES
from tmt.corpora.scenes.layout import clean_scene, sample_scene

GENERATOR_VERSION = 1
"""Bumped whenever the same settings would draw or say something different."""

SPLITS: tuple[str, ...] = ("train", "valid", "test", "test_novel", "images_only", "speech_text_only")
EXTRA_SPLIT = "train_extra"
"""The split of `extra_scenes`: images and captions, no speech (written only when there are any)."""


@dataclass(kw_only=True)
class ScenesConfig:
    """Settings of `tmt prepare scenes`."""

    num_scenes: int = 2000
    """Number of images; each gets five captions and five recordings."""
    seed: int = 0
    """Random seed: the same seed and settings give the same bytes."""
    image_size: int = 64
    """Side of the square RGB images, in pixels."""
    min_objects: int = 1
    """Fewest objects per image."""
    max_objects: int = 2
    """Most objects per image (1 to 3)."""
    captions_per_image: int = 5
    """Captions (and recordings) per image."""
    speech: bool = True
    """Synthesise one recording per caption; false writes text-only captions."""
    background: Literal["random", "constant", "tones"] = "constant"
    """Background of the images: `constant` (one grey, no pixel noise), `tones` (a named tone per
    image, dark/grey/light, no noise; captions of dark and light scenes say "on a dark background"
    and the scene graph records it) or `random` (a random grey 55-165 plus pixel noise: the
    corpus before this option, byte for byte)."""
    extra_scenes: int = 0
    """Extra scenes with images and captions (no speech unless `extra_speech`), in their own split
    `train_extra` (cheap training data for the image directions and the image tokenizer fit)."""
    extra_speech: int = 0
    """Recordings per extra scene: its first N captions are also spoken (0 to `captions_per_image`;
    0 keeps synthesis, the costly part, to the main splits)."""
    engines: tuple[str, ...] = ("espeak-ng", "flite")
    """Speech engines to use when installed (at least one must be)."""
    fractions: dict[str, float] = field(
        default_factory=lambda: {
            "train": 0.7,
            "valid": 0.05,
            "test": 0.05,
            "test_novel": 0.05,
            "images_only": 0.075,
            "speech_text_only": 0.075,
        }
    )
    """Share of the images in each split (normalised); every split gets at least one image
    when there are enough."""


def _split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise TmtError(f"unknown split(s) {sorted(unknown)} in fractions; valid: {', '.join(SPLITS)}")
    total = sum(fractions[s] for s in names)
    if not names or total <= 0:
        raise TmtError("split fractions must add up to a positive number")
    exact = {s: n * fractions[s] / total for s in names}
    counts = {s: math.floor(v) for s, v in exact.items()}
    if n >= len(names):  # every split gets at least one image
        for s in names:
            counts[s] = max(counts[s], 1)
    while sum(counts.values()) > n:
        s = max((s for s in names if counts[s] > 1), key=lambda s: counts[s] - exact[s])
        counts[s] -= 1
    while sum(counts.values()) < n:
        s = max(names, key=lambda s: exact[s] - counts[s])
        counts[s] += 1
    return counts


def check_config(cfg: ScenesConfig) -> None:
    """Refuse settings the corpus cannot be drawn with, naming the option and the allowed values."""
    if not 1 <= cfg.min_objects <= cfg.max_objects <= 3:
        raise TmtError(f"need 1 <= min_objects <= max_objects <= 3, got {cfg.min_objects}..{cfg.max_objects}")
    if cfg.num_scenes < 1:
        raise TmtError(f"--num-scenes must be at least 1, got {cfg.num_scenes}")
    if cfg.image_size < 32:
        raise TmtError(f"--image-size must be at least 32 pixels, got {cfg.image_size}")
    if cfg.captions_per_image < 1:
        raise TmtError(f"captions per image must be at least 1, got {cfg.captions_per_image}")
    if cfg.extra_scenes < 0:
        raise TmtError(f"--extra-scenes must be 0 or more, got {cfg.extra_scenes}")
    if not 0 <= cfg.extra_speech <= cfg.captions_per_image:
        raise TmtError(f"--extra-speech must be 0 to {cfg.captions_per_image} (captions per image), got {cfg.extra_speech}")
    if cfg.background not in BACKGROUNDS:
        raise TmtError(f"unknown --background '{cfg.background}'; choose from {', '.join(BACKGROUNDS)}")


def plan_scenes(cfg: ScenesConfig, pool: Sequence[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Everything about each scene, decided up front from the seed (no media yet); the
    `extra_scenes` follow the others, in split `train_extra`, with voices for their first
    `extra_speech` captions only."""
    check_config(cfg)
    counts = _split_counts(cfg.num_scenes, cfg.fractions)
    order = np.random.default_rng([cfg.seed, 7]).permutation(cfg.num_scenes)
    split_of: dict[int, str] = {}
    start = 0
    for s, c in counts.items():
        for i in order[start : start + c]:
            split_of[int(i)] = s
        start += c
    plans = [_plan_one(cfg, i, split_of[i], pool) for i in range(cfg.num_scenes)]
    plans += [_plan_one(cfg, i, EXTRA_SPLIT, pool) for i in range(cfg.num_scenes, cfg.num_scenes + cfg.extra_scenes)]
    return plans



def _plan_one(cfg: ScenesConfig, i: int, split: str, pool: Sequence[tuple[str, str]] | None) -> dict[str, Any]:
    """Scene `i`: its graph, captions, render settings and voices (None: no recording)."""
    from tmt.corpora.tts import sample_voice

    rng = np.random.default_rng([cfg.seed, 1, i])
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    scene = sample_scene(rng, num_objects=n_obj, novel=split == "test_novel")
    captions = make_captions(scene, rng, cfg.captions_per_image)
    # both draws happen for every background, so scene i is the same scene whatever the background
    level, noise_seed = int(rng.integers(BACKGROUND[0], BACKGROUND[1] + 1)), int(rng.integers(2**31))
    render: dict[str, Any] = {"background": level, "noise_seed": noise_seed}
    if cfg.background == "constant":
        render = {"background": CONSTANT_GREY}
    elif cfg.background == "tones":
        tone_rng = np.random.default_rng([cfg.seed, 3, i])
        tone = list(TONES)[int(tone_rng.integers(len(TONES)))]
        scene["background"] = tone
        captions = say_background(captions, tone, tone_rng)
        render = {"background": TONES[tone]}
    voice_rng = np.random.default_rng([cfg.seed, 2, i])
    voices = [sample_voice(voice_rng, pool).to_dict() if pool else None for _ in captions]
    if split == EXTRA_SPLIT:  # extra scenes: only the first `extra_speech` captions are spoken
        voices = [v if k < cfg.extra_speech else None for k, v in enumerate(voices)]
    return {
        "id": f"scene_{i:06d}",
        "index": i,
        "split": split,
        "scene": clean_scene(scene),
        "render": render,
        "captions": [{"template": t, "text": text} for t, text in captions],
        "voices": voices,
    }
