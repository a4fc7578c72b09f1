"""Synthetic unit corpora for tests and benchmarks (fixed seeds, no external data).

Each unit id is voiced as a steady tone (its own frequency and loudness) for its
run length of 320-sample frames, so a vocoder can learn the mapping within a few
hundred steps, and resynthesis quality is measurable (mel distance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.core.io import make_dirs


def unit_tone(units: np.ndarray, durations: np.ndarray, num_units: int, pitch: float = 1.0) -> np.ndarray:
    """The waveform of a unit sequence: a phase-continuous tone per unit (`pitch` scales every
    frequency: a "voice")."""
    freqs = pitch * (120.0 + 900.0 * (np.arange(num_units) / max(1, num_units - 1)))
    amps = 0.15 + 0.25 * ((np.arange(num_units) * 7) % 5) / 4
    f = np.repeat(freqs[units], durations * FRAME_HOP)
    a = np.repeat(amps[units], durations * FRAME_HOP)
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    return (a * np.sin(phase)).astype(np.float32)


def random_units(rng: np.random.Generator, num_units: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated units (no two equal neighbours) and durations in 1..6 frames."""
    units = [int(rng.integers(num_units))]
    while len(units) < length:
        u = int(rng.integers(num_units))
        if u != units[-1]:
            units.append(u)
    return np.asarray(units, dtype=np.int64), rng.integers(1, 7, length).astype(np.int64)


def make_unit_corpus(
    root: str | Path, *, num_rows: int = 12, num_units: int = 20, seed: int = 0, fingerprint: str = "f" * 64,
    min_len: int = 6, max_len: int = 20, voices: Sequence[str] = (), id_prefix: str = "utt",
) -> dict[str, Any]:
    """Write wavs, a raw manifest and a token store (speech + durations) under `root`. With `voices`,
    row i is spoken by voice i % len(voices) (its `voice` field), whose tones are (1 + k/2) times higher.
    Row ids are `id_prefix` + a number."""
    import soundfile as sf

    from tmt.store.manifest import write_manifest
    from tmt.store.token_store import DURATION_VOCAB, TokenStoreWriter

    root = Path(root)
    make_dirs(root / "wav")
    rng = np.random.default_rng(seed)
    rows, tokens = [], []
    for i in range(num_rows):
        units, durs = random_units(rng, num_units, int(rng.integers(min_len, max_len + 1)))
        k = i % len(voices) if voices else 0
        wav = unit_tone(units, durs, num_units, pitch=1.0 + 0.5 * k)
        rid = f"{id_prefix}{i:03d}"
        sf.write(root / "wav" / f"{rid}.wav", wav, SAMPLE_RATE, subtype="PCM_16")
        rows.append({"id": rid, "group": rid, "split": "train", "image": None, "speech": f"wav/{rid}.wav",
                     "text": f"utterance {i}", **({"voice": voices[k]} if voices else {})})
        tokens.append((units, durs))
    manifest = root / "raw.jsonl.gz"
    write_manifest(manifest, rows)
    store = root / "store"
    with TokenStoreWriter(
        store, streams={"speech": num_units, "durations": DURATION_VOCAB}, fingerprints={"speech": fingerprint},
        tokenizers={"speech": {"name": "synthetic-tones"}}, source={"synthetic": seed},
    ) as w:
        for row, (u, d) in zip(rows, tokens, strict=True):
            w.add({"id": row["id"], "group": row["group"]}, {"speech": u, "durations": d})
    return {"manifest": manifest, "store": store, "rows": rows, "tokens": tokens, "num_units": num_units}
