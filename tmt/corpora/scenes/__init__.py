"""The embedded tri-modal "scenes" corpus: drawn scenes, templated captions, synthetic speech.

Each scene is a small RGB image (64x64 by default) of one to three coloured
shapes on a grey background (`--background`: one constant grey, a named tone
said in the captions, or a random grey plus pixel noise), with a known **scene graph**:

    {"objects": [{"shape": "circle", "colour": "red", "size": "small",
                  "center": [x, y], "radius": r, "angle": deg}, ...],   # x, y, r as fractions of the side
     "position": "left" | "right" | "top" | "bottom" | "center" | None,  # one-object scenes only
     "relations": [{"subject": 0, "relation": "above", "object": 1}],    # scenes with 2-3 objects
     "background": "dark" | "grey" | "light"}                             # `tones` corpora only

`center`/`radius`/`angle` are the drawn geometry (informative; comparisons
ignore them). Five captions per image come from templates with synonyms and
varied word order; each caption is spoken by a random espeak-ng or flite voice.

The same package holds the judge: `parse_scene(image)` recovers the scene graph
from pixels (colour segmentation + template matching of the six shapes, no
learning), `caption_to_scene(text)` inverts the caption templates, and
`scene_matches` / `compare_scenes` compare two graphs.

`prepare_scenes(out_dir, ...)` writes the corpus (see its docstring).

Modules, bottom up: `geometry` (vocabulary, shapes, rendering), `layout`
(random scene graphs), `captions` (writing and reading captions), `parser`
(pixels to scene graph), `compare` (graph against graph), `plan` (settings,
splits, every scene decided from the seed), `prepare` (writing the corpus).
Import the names below from `tmt.corpora.scenes`; the module layout may change.
"""

from __future__ import annotations

from tmt.corpora.scenes.captions import (
    BACKGROUND_WORDS,
    CAPTIONS_PER_IMAGE,
    COLOUR_WORDS,
    POSITION_WORDS,
    RELATION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    TEMPLATES,
    caption_to_scene,
    caption_vocabulary,
    make_captions,
    say_background,
)
from tmt.corpora.scenes.compare import ATTRIBUTES, compare_scenes, scene_matches
from tmt.corpora.scenes.geometry import (
    BACKGROUND,
    BACKGROUNDS,
    CENTER_BOX,
    COARSE_STEP,
    COLOUR_JITTER,
    COLOURS,
    CONSTANT_GREY,
    GAP,
    HELD_OUT,
    INVERSE,
    MARGIN,
    MAX_ROTATION,
    NOISE_STD,
    PERIOD,
    PLAIN_TONE,
    POSITIONS,
    RADIUS,
    RELATIONS,
    SHAPES,
    SIZE_THRESHOLD,
    SIZES,
    SUPERSAMPLE,
    TONES,
    UNIT,
    UNIT_AREA,
    png_bytes,
    render_scene,
)
from tmt.corpora.scenes.layout import clean_scene, sample_scene
from tmt.corpora.scenes.parser import parse_scene
from tmt.corpora.scenes.plan import (
    EXTRA_SPLIT,
    GENERATOR_VERSION,
    SPLITS,
    ScenesConfig,
    _split_counts,
    plan_scenes,
)
from tmt.corpora.scenes.prepare import prepare_scenes

__all__ = [
    "ATTRIBUTES",
    "BACKGROUND",
    "BACKGROUNDS",
    "BACKGROUND_WORDS",
    "CAPTIONS_PER_IMAGE",
    "CENTER_BOX",
    "COARSE_STEP",
    "COLOURS",
    "COLOUR_JITTER",
    "COLOUR_WORDS",
    "CONSTANT_GREY",
    "EXTRA_SPLIT",
    "GAP",
    "GENERATOR_VERSION",
    "HELD_OUT",
    "INVERSE",
    "MARGIN",
    "MAX_ROTATION",
    "NOISE_STD",
    "PERIOD",
    "PLAIN_TONE",
    "POSITIONS",
    "POSITION_WORDS",
    "RADIUS",
    "RELATIONS",
    "RELATION_WORDS",
    "SHAPES",
    "SHAPE_WORDS",
    "SIZES",
    "SIZE_THRESHOLD",
    "SIZE_WORDS",
    "SPLITS",
    "SUPERSAMPLE",
    "TEMPLATES",
    "TONES",
    "UNIT",
    "UNIT_AREA",
    "ScenesConfig",
    "_split_counts",
    "caption_to_scene",
    "caption_vocabulary",
    "clean_scene",
    "compare_scenes",
    "make_captions",
    "parse_scene",
    "plan_scenes",
    "png_bytes",
    "prepare_scenes",
    "render_scene",
    "sample_scene",
    "say_background",
    "scene_matches",
]
