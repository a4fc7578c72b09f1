"""k-means over feature frames (faiss) and the trusted import of fairseq's `km.bin` centroids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmt.tokenizers.base import TokenizerError


def kmeans_fit(
    x: np.ndarray, k: int, *, niter: int = 50, nredo: int = 1, seed: int = 0, verbose: bool = False
) -> tuple[np.ndarray, float]:
    """faiss k-means on all rows of x -> (centroids float32 [k, d], inertia = sum of squared distances)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] < k:
        raise TokenizerError(
            f"k-means needs at least {k} feature frames for {k} clusters, got {x.shape[0]}; "
            "use more audio or fewer clusters"
        )
    km = faiss.Kmeans(
        x.shape[1], int(k), niter=int(niter), nredo=int(nredo), seed=int(seed), verbose=verbose,
        max_points_per_centroid=max(256, x.shape[0] // k + 1),  # we sample ourselves: use every row given
        min_points_per_centroid=1,
    )
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    return centroids, kmeans_inertia(x, centroids)


def kmeans_assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row -> (labels int64 [n], squared distances [n])."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    d, i = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return i[:, 0].astype(np.int64), d[:, 0]


def kmeans_inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    return float(kmeans_assign(x, centroids)[1].astype(np.float64).sum())



def read_km_centroids(km_path: str | Path, *, trust_pickle: bool = False) -> np.ndarray:
    """Centroids float32 [K, dim] of fairseq's `km.bin` (a joblib-pickled scikit-learn MiniBatchKMeans).

    Unpickling can run arbitrary code, so this refuses unless `trust_pickle` is set.
    """
    p = Path(km_path)
    if not p.is_file():
        raise TokenizerError(f"k-means model not found: {p}")
    if not trust_pickle:
        raise TokenizerError(
            f"{p} is a pickle (joblib); loading a pickle can run arbitrary code. If you trust its origin, "
            "pass --trust-pickle; it is converted to centroids.safetensors on import"
        )
    import joblib

    try:
        km = joblib.load(p)
    except Exception as e:  # any unpickling failure means "not a km.bin"
        raise TokenizerError(f"{p}: cannot unpickle a k-means model ({type(e).__name__}: {e})") from None
    centers = getattr(km, "cluster_centers_", None)
    if centers is None and isinstance(km, np.ndarray):
        centers = km
    if centers is None:
        raise TokenizerError(f"{p}: holds a {type(km).__name__}, expected a fitted scikit-learn KMeans/MiniBatchKMeans")
    return np.asarray(centers, dtype=np.float32)
