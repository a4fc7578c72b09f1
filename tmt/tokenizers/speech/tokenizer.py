"""The speech tokenizer: 50 Hz features -> nearest centroid -> run-length deduplicated units."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.audio import FRAME_RATE, SAMPLE_RATE, as_waveform
from tmt.core.io import atomic_write_json, make_dirs
from tmt.tokenizers.base import TokenizerError, fingerprint_of, read_tokenizer_json
from tmt.tokenizers.speech.card import (
    CLASS_NAME,
    HOP,
    WINDOW,
    SpeechCard,
    _fingerprint_card,
    card_from_dict,
    card_to_dict,
)
from tmt.tokenizers.speech.hubert import _build_model, _state_bytes, hubert_forward, load_hubert
from tmt.tokenizers.speech.mfcc import mfcc_batch, mfcc_features
from tmt.tokenizers.speech.speaker_norm import SpeakerStats
from tmt.vocab import row_voice

log = logging.getLogger(__name__)

SPEAKER_STATS = "speaker_stats.safetensors"
"""Per-speaker feature statistics of a `speaker_norm` card, beside the centroids."""


def run_length(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge consecutive duplicates: [5,5,5,2,2,7] -> ([5,2,7], [3,2,1])."""
    u = np.asarray(units)
    if u.size == 0:
        return u.astype(np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(u[1:] != u[:-1]) + 1])
    runs = np.diff(np.concatenate([starts, [u.size]]))
    return u[starts].astype(np.int64), runs.astype(np.int64)


def expand_runs(units: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Inverse of `run_length`: frame-level units."""
    return np.repeat(np.asarray(units, dtype=np.int64), np.asarray(durations, dtype=np.int64))



class SpeechTokenizer:
    """Speech -> deduplicated k-means units at 50 Hz (class `speech-kmeans`)."""

    modality = "speech"
    frame_rate = FRAME_RATE

    def __init__(
        self,
        card: SpeechCard,
        centroids: np.ndarray,
        *,
        hubert: Any = None,
        hubert_arch: dict[str, Any] | None = None,
        asset_dir: Path | None = None,
        fingerprint: str | None = None,
        speaker_stats: SpeakerStats | None = None,
    ) -> None:
        self.cfg = card
        self.speaker_stats = speaker_stats
        self.name = card.name
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.hubert = hubert
        self.hubert_arch = hubert_arch
        self.asset_dir = asset_dir
        self._fingerprint = fingerprint
        self._index: Any = None
        self.fit_stats: dict[str, Any] = {}
        if card.features == "hubert" and hubert is None:
            raise TokenizerError("a hubert speech tokenizer needs its HuBERT model")
        if self.centroids.ndim != 2 or self.centroids.shape[0] != card.clusters:
            raise TokenizerError(
                f"centroids have shape {self.centroids.shape}, expected ({card.clusters}, dim) for {card.clusters} clusters"
            )

    # ---- protocol ----------------------------------------------------
    @property
    def card(self) -> dict[str, Any]:
        return card_to_dict(self.cfg)

    @property
    def vocab_size(self) -> int:
        return int(self.centroids.shape[0])

    def code_features(self) -> np.ndarray:
        """(clusters, dim) the centroids with each feature dimension standardised (MFCCs, their deltas and
        HuBERT features have very different scales), read by `tmt train --set speech_code_init=W`."""
        c = self.centroids.astype(np.float64)
        std = c.std(0)
        return ((c - c.mean(0)) / np.where(std > 0, std, 1.0)).astype(np.float32)

    @property
    def dedup(self) -> bool:
        return bool(self.cfg.dedup)

    @property
    def feature_dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def fingerprint(self) -> str:
        """sha256 over the card (less the weights' path) + centroids (+ HuBERT weights)."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        blobs = [self.centroids.tobytes()]
        if self.speaker_stats is not None:
            blobs.append(self.speaker_stats.to_bytes())
        if self.hubert is not None:
            for k, v in sorted(self.hubert.state_dict().items()):
                blobs.append(k.encode())
                blobs.append(v.detach().contiguous().numpy().tobytes())
        return fingerprint_of(_fingerprint_card(self.cfg), asset_bytes=blobs)

    # ---- features ----------------------------------------------------
    def _waveforms(self, items: Sequence[Any]) -> list[np.ndarray]:
        return [as_waveform(it, silence_peak=self.cfg.silence_peak)[0] for it in items]

    def features_of_waveforms(self, wavs: Sequence[np.ndarray], *, batched: bool = True) -> list[np.ndarray]:
        """16 kHz waveforms -> [frames, dim] features at 50 Hz."""
        if self.cfg.features == "mfcc":
            if batched:
                return mfcc_batch(wavs, self.cfg.mfcc)
            return [mfcc_features(w, self.cfg.mfcc) for w in wavs]
        # HuBERT: cut long audio into chunks (attention is quadratic), then batch the pieces by
        # length so padding stays small; features of a file's chunks are concatenated.
        chunk = max(WINDOW, int(self.cfg.hubert.max_chunk_s * SAMPLE_RATE) // HOP * HOP)
        pieces: list[tuple[int, int, np.ndarray]] = []  # (file, chunk no, samples)
        for fi, w in enumerate(wavs):
            for ci, start in enumerate(range(0, len(w), chunk)):
                seg = w[start : start + chunk]
                if len(seg) >= WINDOW or ci == 0:
                    pieces.append((fi, ci, seg))
        out: dict[tuple[int, int], np.ndarray] = {}
        order = sorted(range(len(pieces)), key=lambda j: len(pieces[j][2]), reverse=True)
        budget = int(self.cfg.max_batch_seconds * SAMPLE_RATE)
        groups: list[list[int]] = []
        for j in order:
            if batched and groups and len(pieces[groups[-1][0]][2]) * (len(groups[-1]) + 1) <= budget:
                groups[-1].append(j)
            else:
                groups.append([j])
        for g in groups:
            feats = hubert_forward(
                self.hubert, [pieces[j][2] for j in g], self.cfg.hubert.layer,
                normalize=self.cfg.hubert.normalize_waveform,
            )
            for j, f in zip(g, feats, strict=True):
                out[(pieces[j][0], pieces[j][1])] = f
        result = []
        for fi in range(len(wavs)):
            parts = [out[(p[0], p[1])] for p in pieces if p[0] == fi]
            result.append(np.concatenate(parts, axis=0) if parts else np.zeros((0, self.feature_dim), np.float32))
        return result

    def features(self, items: Sequence[Any], *, batched: bool = True) -> list[np.ndarray]:
        """Paths / arrays -> [frames, dim] float32 features at 50 Hz."""
        return self.features_of_waveforms(self._waveforms(items), batched=batched)

    # ---- units -------------------------------------------------------
    def _assign(self, feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        import faiss

        if self._index is None:
            self._index = faiss.IndexFlatL2(self.feature_dim)
            self._index.add(self.centroids)
        if not feats:
            return []
        sizes = [len(f) for f in feats]
        allf = np.concatenate([np.asarray(f, dtype=np.float32).reshape(-1, self.feature_dim) for f in feats])
        if allf.shape[0] == 0:
            return [np.zeros(0, dtype=np.int64) for _ in feats]
        _, idx = self._index.search(np.ascontiguousarray(allf), 1)
        labels = idx[:, 0].astype(np.int64)
        return np.split(labels, np.cumsum(sizes)[:-1])

    def normalize(self, feats: Sequence[np.ndarray], voices: Sequence[str | None] | None) -> list[np.ndarray]:
        """Per-speaker normalisation when the card asks for it (`voices`: each input's speaker or None)."""
        if not self.cfg.speaker_norm:
            return list(feats)
        if self.speaker_stats is None:
            raise TokenizerError(f"{self.name}: the card asks for speaker_norm but no speaker statistics were fitted")
        vs = list(voices) if voices is not None else [None] * len(feats)
        return [self.speaker_stats.normalize(f, v) for f, v in zip(feats, vs, strict=True)]

    def frame_units(
        self, items: Sequence[Any], *, batched: bool = True, voices: Sequence[str | None] | None = None
    ) -> list[np.ndarray]:
        """Frame-level units (no dedup), one per 20 ms."""
        return self._assign(self.normalize(self.features(items, batched=batched), voices))

    def encode_with_durations(
        self, items: Sequence[Any], *, batched: bool = True, voices: Sequence[str | None] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """-> (units, run lengths in frames) per input; with dedup off the run lengths are all 1."""
        out = []
        for u in self.frame_units(items, batched=batched, voices=voices):
            out.append(run_length(u) if self.cfg.dedup else (u, np.ones_like(u)))
        return out

    def encode(
        self, items: Sequence[Any], *, batched: bool = True, voices: Sequence[str | None] | None = None
    ) -> list[np.ndarray]:
        """Paths / 16 kHz arrays / (array, rate) pairs -> units (deduplicated unless the card says not);
        `voices` name each input's speaker for a `speaker_norm` card."""
        return [u for u, _ in self.encode_with_durations(items, batched=batched, voices=voices)]

    def decode(self, tokens: Sequence[np.ndarray]) -> list[Any]:
        raise TokenizerError(
            "speech units are turned back into audio by the unit vocoder, not the tokenizer: "
            "train one with `tmt vocoder train` and run `tmt vocoder synthesize`"
        )

    def make_encoder(self) -> Callable[[list[dict[str, Any]]], list[dict[str, Any] | None]]:
        """Encoder for `tmt.tokenizers.encode.encode_manifest`: rows with a `speech` path ->
        {"speech": units, "durations": runs, "duration_s": seconds}."""

        def encode_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
            idx = [i for i, r in enumerate(rows) if r.get("speech")]
            out: list[dict[str, Any] | None] = [None] * len(rows)
            if not idx:
                return out
            wavs = self._waveforms([rows[i]["speech"] for i in idx])
            feats = self.normalize(self.features_of_waveforms(wavs), [row_voice(rows[i]) for i in idx])
            for i, w, u in zip(idx, wavs, self._assign(feats), strict=True):
                units, runs = run_length(u) if self.cfg.dedup else (u, np.ones_like(u))
                res: dict[str, Any] = {"speech": units, "duration_s": round(len(w) / SAMPLE_RATE, 4)}
                if self.cfg.dedup:
                    res["durations"] = runs
                out[i] = res
            return out

        return encode_rows

    # ---- persistence -------------------------------------------------
    def save(self, directory: str | Path) -> None:
        from safetensors.numpy import save_file

        d = Path(directory)
        make_dirs(d)
        tmp = d / "centroids.safetensors.tmp"
        save_file({"centroids": self.centroids}, str(tmp))
        tmp.replace(d / "centroids.safetensors")
        if self.hubert is not None:
            from safetensors.torch import save_file as save_torch

            tmp = d / "hubert.safetensors.tmp"
            save_torch(_state_bytes(self.hubert), str(tmp))
            tmp.replace(d / "hubert.safetensors")
        if self.speaker_stats is not None:
            self.speaker_stats.save(d / SPEAKER_STATS)
        info = {
            "kind": "speech",
            "class": CLASS_NAME,
            "name": self.name,
            "card": self.card,
            "vocab_size": self.vocab_size,
            "fingerprint": self.fingerprint,
            "feature_dim": self.feature_dim,
            "frame_rate": FRAME_RATE,
            "sample_rate": SAMPLE_RATE,
            "hubert_arch": self.hubert_arch,
        }
        atomic_write_json(d / "tokenizer.json", info)
        self.asset_dir = d

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True) -> SpeechTokenizer:
        from safetensors.numpy import load_file

        d = Path(directory)
        info = read_tokenizer_json(d)
        if info["class"] != CLASS_NAME:
            raise TokenizerError(f"{d} holds a '{info['class']}' tokenizer, not {CLASS_NAME}")
        card = card_from_dict(info["card"], str(d / "tokenizer.json"))
        cpath = d / "centroids.safetensors"
        if not cpath.is_file():
            raise TokenizerError(f"{d}: centroids.safetensors is missing; re-fit or re-import the tokenizer")
        centroids = load_file(str(cpath))["centroids"]
        hubert = None
        arch = info.get("hubert_arch")
        if card.features == "hubert":
            hpath = d / "hubert.safetensors"
            if not hpath.is_file() or not arch:
                raise TokenizerError(f"{d}: hubert.safetensors / hubert_arch missing; re-fit the tokenizer")
            from safetensors.torch import load_file as load_torch

            hubert = _build_model(arch)
            hubert.load_state_dict(load_torch(str(hpath)))
            hubert.eval()
            for p in hubert.parameters():
                p.requires_grad_(False)
        stats = SpeakerStats.load(d / SPEAKER_STATS) if card.speaker_norm else None
        tok = cls(card, centroids, hubert=hubert, hubert_arch=arch, asset_dir=d, speaker_stats=stats)
        if verify and tok.fingerprint != info["fingerprint"]:
            raise TokenizerError(
                f"{d}: the assets' fingerprint {tok.fingerprint[:12]} differs from tokenizer.json's "
                f"{info['fingerprint'][:12]}; the files were changed -- re-fit the tokenizer"
            )
        return tok

    # ---- construction ------------------------------------------------
    @classmethod
    def from_card(
        cls, card: SpeechCard, centroids: np.ndarray | None = None, *, trust_pickle: bool = False
    ) -> SpeechTokenizer:
        """A tokenizer with the card's feature extractor (HuBERT weights loaded) and given centroids
        (zeros when None: for computing features before k-means)."""
        hubert, arch = None, None
        if card.features == "hubert":
            if not card.hubert.weights:
                raise TokenizerError(
                    f"card '{card.name}' uses HuBERT features but names no weights: pass "
                    "--set hubert.weights=/path/to/hubert_base_ls960.pt (or a torchaudio .pt / HF directory)"
                )
            hubert, arch = load_hubert(
                card.hubert.weights, fmt=card.hubert.weights_format, arch_overrides=card.hubert.arch,
                num_layers=card.hubert.layer, trust_pickle=trust_pickle,
            )
        if card.features == "hubert":
            dim = int(arch["encoder_embed_dim"])  # type: ignore[index]
        else:
            dim = card.mfcc.num_ceps * (1 + card.mfcc.deltas)
        c = centroids if centroids is not None else np.zeros((card.clusters, dim), np.float32)
        if c.shape[1] != dim:
            raise TokenizerError(
                f"centroids have {c.shape[1]} dims but the card's {card.features} features have {dim}; "
                "the k-means was trained on other features"
            )
        return cls(card, c, hubert=hubert, hubert_arch=arch)

    @classmethod
    def fit(cls, card: SpeechCard, audio: Sequence[Any], **options: Any) -> SpeechTokenizer:
        """Train k-means on a seeded sample of `card.sample_size` frames of `audio` (paths or arrays):
        `tmt.tokenizers.speech.fit.fit_speech_tokenizer`, whose keyword options it takes."""
        from tmt.tokenizers.speech.fit import fit_speech_tokenizer

        return fit_speech_tokenizer(card, audio, **options)

