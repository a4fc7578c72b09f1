"""Synthetic, learnable token stores for tests and benchmarks.

Each "scene" has two attributes (a noun a, an adjective b). Its text, speech
and image token sequences are deterministic functions of (a, b), so every
direction is learnable and a small model can overfit a few scenes:

    text   : [THE, ADJ_b, NOUN_a] (+ [AND, NOUN_a'] for some scenes)
    speech : each text word w becomes 2-3 units derived from w
    image  : `image_len` codes derived from (a, b)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmt.store.token_store import TokenStoreWriter
from tmt.vocab import JointVocab

SIZES: dict[str, int] = {"text": 40, "speech": 30, "image": 24}
FINGERPRINTS: dict[str, str] = {m: f"synthetic-{m}-v1" for m in SIZES}


def synthetic_vocab(sizes: dict[str, int] | None = None) -> JointVocab:
    return JointVocab.from_sizes(sizes or SIZES, fingerprints=FINGERPRINTS)


def scene_tokens(
    a: int, b: int, *, sizes: dict[str, int] | None = None, image_len: int = 8, long: int = 1
) -> dict[str, np.ndarray]:
    """The three sequences of scene (a, b); `long` repeats the text to make longer rows."""
    sz = sizes or SIZES
    tv, sv, iv = sz["text"], sz["speech"], sz["image"]
    words = [0, 1 + b, 10 + a]
    if (a + b) % 3 == 0:
        words += [2, 10 + (a + 1) % 20]
    words = words * long
    text = np.array([w % tv for w in words], dtype=np.int64)
    units: list[int] = []
    for w in text.tolist():
        units += [(3 * w) % sv, (3 * w + 1) % sv] + ([(5 * w + 2) % sv] if w % 2 else [])
    speech = np.array(units, dtype=np.int64)
    image = np.array([(a * 5 + b * 3 + 7 * k + (a * b) % 4) % iv for k in range(image_len)], dtype=np.int64)
    return {"text": text, "speech": speech, "image": image}


def make_synthetic_store(
    root: str | Path,
    *,
    num_scenes: int = 20,
    sizes: dict[str, int] | None = None,
    image_len: int = 8,
    long: int = 1,
    fingerprints: dict[str, str] | None = None,
    drop: dict[str, float] | None = None,
    seed: int = 0,
    voices: list[str] | None = None,
) -> Path:
    """Write a store of `num_scenes` rows (scene i: a = i % 20, b = i // 20 ...).

    `drop` gives per-modality probabilities of leaving a modality out of a row (partial data);
    `voices` gives row i the meta field `voice` = voices[i % len(voices)]."""
    sz = sizes or SIZES
    rng = np.random.default_rng(seed)
    with TokenStoreWriter(
        root, streams=dict(sz), fingerprints=fingerprints or FINGERPRINTS, source={"synthetic": seed}, overwrite=True
    ) as w:
        for i in range(num_scenes):
            a, b = i % 20, (i // 20 + i) % 9
            toks: dict[str, np.ndarray | None] = dict(scene_tokens(a, b, sizes=sz, image_len=image_len, long=long))
            for m, p in (drop or {}).items():
                if rng.random() < p:
                    toks[m] = None
            meta = {"id": f"scene{i:04d}", "group": f"scene{i:04d}", "split": "train"}
            if voices:
                meta["voice"] = voices[i % len(voices)]
            w.add(meta, toks)
    return Path(root)
