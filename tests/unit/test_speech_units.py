"""Units: run-length dedup, MFCC at 50 Hz, faiss k-means, km.bin import, fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tmt.config import from_dict
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.speech import (
    MfccConfig,
    SpeechCard,
    SpeechTokenizer,
    expand_runs,
    import_km,
    kmeans_assign,
    kmeans_fit,
    mfcc_batch,
    mfcc_features,
    run_length,
)

torch.set_num_threads(1)


def test_run_length_example() -> None:
    u, d = run_length(np.array([5, 5, 5, 2, 2, 7, 5]))
    assert u.tolist() == [5, 2, 7, 5] and d.tolist() == [3, 2, 1, 1]
    u, d = run_length(np.zeros(0, dtype=np.int64))
    assert u.size == 0 and d.size == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=60))
def test_run_length_roundtrip(xs: list[int]) -> None:
    u, d = run_length(np.array(xs, dtype=np.int64))
    assert expand_runs(u, d).tolist() == xs
    assert np.all(u[1:] != u[:-1]) and (d >= 1).all() and int(d.sum()) == len(xs)


def _speechy(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f = 200 + 150 * np.sin(2 * np.pi * 1.5 * t)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f) / 16000) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_mfcc_is_50hz_39d_and_normalised() -> None:
    for n in (400, 16000, 16000 * 3 + 123):
        f = mfcc_features(_speechy(n / 16000), MfccConfig())
        assert f.shape == ((n - 400) // 320 + 1, 39) and f.dtype == np.float32
    f = mfcc_features(_speechy(2.0), MfccConfig())
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-3)
    # deterministic (no dither)
    np.testing.assert_array_equal(f, mfcc_features(_speechy(2.0), MfccConfig()))


def _kaldi_reference(wav: np.ndarray) -> np.ndarray:
    """MFCC+deltas+CMVN the straightforward way: torchaudio's kaldi.mfcc and compute_deltas."""
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as AF

    m = kaldi.mfcc(torch.from_numpy(wav)[None], frame_length=25.0, frame_shift=20.0, dither=0.0,
                   num_ceps=13, num_mel_bins=23, use_energy=False)
    d1 = AF.compute_deltas(m.T[None])[0].T
    d2 = AF.compute_deltas(d1.T[None])[0].T
    f = torch.cat([m, d1, d2], dim=1)
    return ((f - f.mean(0)) / f.std(0, unbiased=False)).numpy()


def test_mfcc_matches_kaldi_and_batching_changes_nothing() -> None:
    wavs = [_speechy(s, seed=i) for i, s in enumerate((0.7, 2.0, 1.3))]
    batch = mfcc_batch(wavs, MfccConfig())
    for w, b in zip(wavs, batch, strict=True):
        ref = _kaldi_reference(w)
        assert b.shape == ref.shape
        np.testing.assert_allclose(b, ref, atol=2e-3)
        np.testing.assert_allclose(b, mfcc_features(w, MfccConfig()), atol=1e-5)


def test_kmeans_recovers_blobs() -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((5, 8)).astype(np.float32) * 10
    labels = rng.integers(0, 5, 2000)
    x = centers[labels] + 0.1 * rng.standard_normal((2000, 8)).astype(np.float32)
    cents, inertia = kmeans_fit(x, 5, niter=20, nredo=3, seed=0)
    assigned, _ = kmeans_assign(x, cents)
    # one-to-one correspondence between found and true clusters
    pairs = {(int(a), int(b)) for a, b in zip(assigned, labels, strict=True)}
    assert len(pairs) == 5
    assert inertia / 2000 < 0.1 * 8 * 1.5
    with pytest.raises(TokenizerError, match="at least 10"):
        kmeans_fit(x[:4], 10)


def _mfcc_card(**kw: object) -> SpeechCard:
    return from_dict(SpeechCard, {"name": "t", "clusters": 16, "sample_size": 3000, "iterations": 10, **kw})


def test_fit_encode_and_dedup_option() -> None:
    wavs = [_speechy(1.0 + 0.3 * i, seed=i) for i in range(4)]
    tok = SpeechTokenizer.fit(_mfcc_card(), wavs)
    assert tok.vocab_size == 16 and tok.fit_stats["frames"] > 200
    units = tok.encode(wavs)
    frames = tok.frame_units(wavs)
    for u, f in zip(units, frames, strict=True):
        assert u.tolist() == run_length(f)[0].tolist() and u.max() < 16
    keep = SpeechTokenizer(_mfcc_card(dedup=False), tok.centroids)
    assert [u.tolist() for u in keep.encode(wavs)] == [f.tolist() for f in frames]
    assert all((d == 1).all() for _, d in keep.encode_with_durations(wavs))
    assert keep.fingerprint != tok.fingerprint  # the dedup setting is part of the card
    with pytest.raises(TokenizerError, match="tmt vocoder synthesize"):
        tok.decode(units)


def test_fingerprint_depends_on_centroids_and_card_not_description(tmp_path: Path) -> None:
    c = np.random.default_rng(0).standard_normal((16, 39)).astype(np.float32)
    a = SpeechTokenizer(_mfcc_card(), c)
    assert a.fingerprint == SpeechTokenizer(_mfcc_card(description="other words"), c.copy()).fingerprint
    c2 = c.copy()
    c2[0, 0] += 1e-3
    assert SpeechTokenizer(_mfcc_card(), c2).fingerprint != a.fingerprint
    assert SpeechTokenizer(_mfcc_card(mfcc={"cmvn": False}), c).fingerprint != a.fingerprint
    a.save(tmp_path / "t")
    # tampering with the assets is detected at load
    from safetensors.numpy import save_file

    save_file({"centroids": c2}, str(tmp_path / "t" / "centroids.safetensors"))
    with pytest.raises(TokenizerError, match="fingerprint"):
        SpeechTokenizer.load(tmp_path / "t")


def test_km_bin_import_only_with_trust(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    from sklearn.cluster import MiniBatchKMeans

    wavs = [_speechy(1.5, seed=i) for i in range(3)]
    feats = np.concatenate([mfcc_features(w, MfccConfig()) for w in wavs])
    km = MiniBatchKMeans(n_clusters=12, n_init=1, random_state=0, batch_size=256).fit(feats)
    joblib.dump(km, tmp_path / "km.bin")
    card = _mfcc_card()
    with pytest.raises(TokenizerError, match="--trust-pickle"):
        import_km(tmp_path / "km.bin", card)
    tok = import_km(tmp_path / "km.bin", card, trust_pickle=True)
    assert tok.vocab_size == 12  # the cluster count comes from the file
    np.testing.assert_allclose(tok.centroids, km.cluster_centers_, rtol=1e-6)
    # faiss assignment equals scikit-learn's predict
    frames = tok.frame_units(wavs)
    np.testing.assert_array_equal(np.concatenate(frames), km.predict(feats))
    # converted: the saved tokenizer holds no pickle and loads without any flag
    tok.save(tmp_path / "imported")
    assert sorted(p.name for p in (tmp_path / "imported").iterdir()) == ["centroids.safetensors", "tokenizer.json"]
    assert SpeechTokenizer.load(tmp_path / "imported").fingerprint == tok.fingerprint
    (tmp_path / "junk.bin").write_bytes(b"not a pickle")
    with pytest.raises(TokenizerError, match="cannot unpickle"):
        import_km(tmp_path / "junk.bin", card, trust_pickle=True)


def test_import_km_cli_requires_flag(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    from click.testing import CliRunner
    from sklearn.cluster import MiniBatchKMeans

    from tmt.cli import cli

    feats = np.random.default_rng(0).standard_normal((300, 39)).astype(np.float32)
    joblib.dump(MiniBatchKMeans(n_clusters=10, n_init=1, random_state=0).fit(feats), tmp_path / "km.bin")
    card = Path(__file__).resolve().parents[2] / "tokenizers" / "speech-mfcc-km200.yaml"
    args = ["tokenize", "speech", "import-km", "--km", str(tmp_path / "km.bin"), "--card", str(card),
            "--out", str(tmp_path / "tok")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "--trust-pickle" in res.output and not (tmp_path / "tok").exists()
    res = CliRunner().invoke(cli, [*args, "--trust-pickle"])
    assert res.exit_code == 0, res.output
    assert SpeechTokenizer.load(tmp_path / "tok").vocab_size == 10
    res = CliRunner().invoke(cli, ["tokenize", "speech", "import-km", "--help"])
    assert "can run arbitrary code" in " ".join(res.output.split()) and "Examples:" in res.output
