"""Per-speaker (per-voice) feature normalisation before k-means (issue 19 section 2).

Per-utterance CMVN removes each recording's own offset, but a short caption is a poor
estimate of its speaker's mean and spread: units then still encode who speaks. Here each
speaker's (voice's) mean and standard deviation per feature dimension are estimated over all
its frames at fit time, and every frame of that speaker is normalised with them, so the
clusters can spend themselves on what is said. A speaker not seen at fit time (or a row that
names none) falls back to the utterance's own statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmt.tokenizers.base import TokenizerError

EPS = 1e-5
"""Floor on a standard deviation (a constant dimension stays finite)."""


@dataclass
class SpeakerStats:
    """Mean and standard deviation per feature dimension of each known speaker."""

    names: list[str]
    """Speaker / voice names (row i of `mean` and `std`)."""
    mean: np.ndarray
    """(speakers, dim) float32."""
    std: np.ndarray
    """(speakers, dim) float32, >= EPS."""

    @classmethod
    def fit(cls, feats: Sequence[np.ndarray], voices: Sequence[str | None]) -> SpeakerStats:
        """Statistics of every named speaker over its utterances' frames (unnamed rows are ignored)."""
        if len(feats) != len(voices):
            raise TokenizerError(f"speaker normalisation: {len(feats)} feature arrays but {len(voices)} voices")
        sums: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        for f, v in zip(feats, voices, strict=True):
            if v is None or len(f) == 0:
                continue
            x = np.asarray(f, dtype=np.float64)
            s, q, n = sums.get(v, (np.zeros(x.shape[1]), np.zeros(x.shape[1]), 0))
            sums[v] = (s + x.sum(0), q + (x * x).sum(0), n + len(x))
        if not sums:
            raise TokenizerError(
                "speaker normalisation needs the speaker of the audio: no row names one (a `voice`, `tts` "
                "{engine, voice} or `speaker` field); fit without speaker_norm"
            )
        names = sorted(sums)
        mean = np.stack([sums[n][0] / sums[n][2] for n in names])
        var = np.stack([sums[n][1] / sums[n][2] for n in names]) - mean**2
        std = np.sqrt(np.maximum(var, 0.0)).clip(min=EPS)
        return cls(names, mean.astype(np.float32), std.astype(np.float32))

    def normalize(self, f: np.ndarray, voice: str | None) -> np.ndarray:
        """Frames of one utterance normalised with its speaker's stats (unknown: its own stats)."""
        if voice is not None and voice in self.names:
            k = self.names.index(voice)
            mean, std = self.mean[k], self.std[k]
        else:
            mean, std = f.mean(0), f.std(0).clip(min=EPS)
        return ((f - mean) / std).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """One safetensors file: mean, std, and the names in its metadata."""
        import json

        from safetensors.numpy import save_file

        tmp = Path(str(path) + ".tmp")
        save_file({"mean": self.mean, "std": self.std}, str(tmp), metadata={"names": json.dumps(self.names)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> SpeakerStats:
        import json

        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise TokenizerError(f"{p} is missing: the card asks for speaker_norm; re-fit the tokenizer")
        with safe_open(str(p), framework="numpy") as fh:
            meta = fh.metadata() or {}
            mean, std = fh.get_tensor("mean"), fh.get_tensor("std")
        names = json.loads(meta.get("names", "[]"))
        if len(names) != len(mean) or mean.shape != std.shape:
            raise TokenizerError(f"{p}: {len(names)} speaker names for {len(mean)} rows of statistics; re-fit")
        return cls(list(names), mean, std)

    def to_bytes(self) -> bytes:
        """What the tokenizer's fingerprint hashes."""
        return "\n".join(self.names).encode() + self.mean.tobytes() + self.std.tobytes()
