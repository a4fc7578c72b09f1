"""How voice-bound are speech units, and how often do unit sequences repeat an n-gram (issue 19 s2).

Two measurements on one corpus (a raw manifest with voices, e.g. the scenes corpus):

1. unit purity per voice: k-means units fitted on MFCC features as the tokenizer card does
   (per-utterance CMVN), without any normalisation, and with per-speaker normalisation instead of
   per-utterance CMVN (card: mfcc.cmvn false, speaker_norm true); for each unit the share of
   its occurrences (deduplicated) coming from its most frequent voice / engine, and how many
   units are more than 90% tied to one engine or voice.
2. n-gram repeats: the share of unit sequences that repeat some n-gram, n = 4..10 (what a
   decoder's no_repeat_ngram_size=n would rule out, the reference included). With --store, the
   same on a token store's speech units (the recipe's real training units).

    python benchmarks/voice_units.py --manifest data/scenes/train.jsonl.gz --rows 1500 --out r.json
    python benchmarks/voice_units.py --store exp/scenes-full/data/store/train
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tmt.store.manifest import media_path, read_manifest
from tmt.tokenizers.speech.card import load_speech_card
from tmt.tokenizers.speech.kmeans import kmeans_assign, kmeans_fit
from tmt.tokenizers.speech.speaker_norm import SpeakerStats
from tmt.tokenizers.speech.tokenizer import SpeechTokenizer, run_length
from tmt.vocab import row_voice

NGRAMS = range(4, 11)


def repeat_shares(seqs: list[np.ndarray]) -> dict[int, float]:
    """n -> share of sequences that contain some n-gram twice."""
    out = {}
    for n in NGRAMS:
        hit = 0
        for s in seqs:
            grams = [tuple(s[i : i + n].tolist()) for i in range(len(s) - n + 1)]
            hit += len(grams) != len(set(grams))
        out[n] = round(hit / max(1, len(seqs)), 4)
    return out


def purity(seqs: list[np.ndarray], voices: list[str], k: int) -> dict[str, Any]:
    """Per-unit share of occurrences from its most frequent voice / engine."""
    by_voice: list[Counter[str]] = [Counter() for _ in range(k)]
    by_engine: list[Counter[str]] = [Counter() for _ in range(k)]
    for s, v in zip(seqs, voices, strict=True):
        for u in s.tolist():
            by_voice[u][v] += 1
            by_engine[u][v.split(":")[0]] += 1
    used = [u for u in range(k) if by_voice[u]]
    pv = np.array([max(by_voice[u].values()) / sum(by_voice[u].values()) for u in used])
    pe = np.array([max(by_engine[u].values()) / sum(by_engine[u].values()) for u in used])
    w = np.array([sum(by_voice[u].values()) for u in used], dtype=np.float64)
    return {
        "units_used": len(used),
        "mean_voice_purity": round(float((pv * w).sum() / w.sum()), 4),
        "units_over_90pct_one_voice": int((pv > 0.9).sum()),
        "mean_engine_purity": round(float((pe * w).sum() / w.sum()), 4),
        "units_over_90pct_one_engine": int((pe > 0.9).sum()),
    }


def units_of(feats: list[np.ndarray], card: Any) -> list[np.ndarray]:
    rng = np.random.default_rng(card.seed)
    x = np.concatenate(feats)
    if len(x) > card.sample_size:
        x = x[np.sort(rng.choice(len(x), card.sample_size, replace=False))]
    centroids, _ = kmeans_fit(x, card.clusters, niter=card.iterations, nredo=card.n_init, seed=card.seed)
    return [run_length(kmeans_assign(f, centroids)[0])[0] for f in feats]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default=None, help="raw manifest with voices (k-means refitted three ways)")
    ap.add_argument("--card", default="tokenizers/speech-mfcc-km200.yaml")
    ap.add_argument("--rows", type=int, default=1500, help="speech rows used (seeded sample)")
    ap.add_argument("--store", default=None, help="also count n-gram repeats on this token store's speech units")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    result: dict[str, Any] = {}
    if a.manifest:
        result |= manifest_modes(a.manifest, a.card, a.rows)
    if a.store:
        result["store"] = store_counts(a.store)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


def store_counts(path: str) -> dict[str, Any]:
    """n-gram repeats and voice purity of a token store's speech units (the tokenizer it was made with)."""
    from tmt.store.token_store import TokenStore

    st = TokenStore(path)
    lens = st.lengths("speech")
    seqs, voices = [], []
    for i, meta in enumerate(st.iter_meta()):
        if lens[i] > 0:
            seqs.append(st.tokens(i, "speech"))
            voices.append(row_voice(meta) or "?")
    return {"path": path, "sequences": len(seqs), "repeat_share": repeat_shares(seqs)} | purity(
        seqs, voices, st.vocab_sizes["speech"]
    )


def manifest_modes(manifest: str, card_path: str, n_rows: int) -> dict[str, Any]:
    """Units refitted on `n_rows` rows with per-utterance CMVN, none, and per-speaker normalisation."""
    rows = [r for r in read_manifest(manifest) if r.get("speech") and row_voice(r)]
    pick = np.sort(np.random.default_rng(0).choice(len(rows), min(n_rows, len(rows)), replace=False))
    rows = [rows[int(i)] for i in pick]
    voices = [str(row_voice(r)) for r in rows]
    card = load_speech_card(card_path)
    paths = [str(media_path(manifest, r["speech"])) for r in rows]
    feats = SpeechTokenizer.from_card(card).features(paths)  # as the card says (MFCC: per-utterance CMVN)
    raw = SpeechTokenizer.from_card(load_speech_card(card_path, {"mfcc": {"cmvn": False}})).features(paths)
    stats = SpeakerStats.fit(raw, voices)
    result: dict[str, Any] = {"manifest": manifest, "rows": len(rows), "voices": len(set(voices)), "card": card_path}
    modes = {
        "per_utterance_cmvn": feats,  # the card as shipped
        "no_normalisation": raw,  # mfcc.cmvn false
        "per_speaker_norm": [stats.normalize(f, v) for f, v in zip(raw, voices, strict=True)],  # cmvn false + speaker_norm
    }
    for mode, fs in modes.items():
        seqs = units_of(fs, card)
        result[mode] = purity(seqs, voices, card.clusters) | {"repeat_share": repeat_shares(seqs)}
        print(mode, json.dumps(result[mode]), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
