"""Token embeddings that start from their tokenizer's own code geometry (image codes, speech units).

A translation model sees image codes as unrelated symbols: code 17 and code 18 of an FSQ
tokenizer differ in one level of one latent dimension, yet their embedding rows (which are
also the output projection, `TiedProjection`) start as independent random vectors, and the
model has to learn from data alone which codes are alike. On the scenes corpus that is where
image targets stall: after 10k steps of the `full` preset the unified model's object tokens
still cost 6.4 nats of a possible 6.9 (docs/results.md, session 26).

`image_code_init = w` starts each image code's row as

    sqrt(1 - w^2) * (its random row) + w * (a fixed random projection of the code's features)

with the features from the tokenizer (`code_features()`: FSQ one one-hot block per latent
dimension, EMA VQ the codebook vector), centred, projected to `model_dim` and scaled to the
random rows' size. With FSQ features the initial logit of a code is a sum of one score per
level, so the model can predict the levels of a token before it learns their combinations;
with VQ features, codes with nearby vectors start with nearby rows (a random projection keeps
distances, Johnson-Lindenstrauss). Only the initialisation changes: the rows train as before.

`speech_code_init` does the same for speech units with the k-means centroids of the speech
tokenizer (each feature dimension standardised), so units of similar frames start alike.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tmt import TmtError
from tmt.models.tmt import TmtModel
from tmt.vocab import JointVocab

log = logging.getLogger(__name__)


def structured_rows(features: Tensor, like: Tensor, generator: torch.Generator) -> Tensor:
    """(K, F) code features -> (K, d) rows with the root-mean-square size of `like` (K, d):
    centred features times a Gaussian (F, d) matrix drawn from `generator`."""
    f = features.double()
    centred = f - f.mean(0, keepdim=True)
    proj = torch.randn(features.shape[1], like.shape[1], generator=generator, dtype=torch.float64)
    rows = centred @ proj
    rms = rows.pow(2).mean().sqrt()
    if rms == 0:
        raise TmtError("the tokenizer's code features are all equal, so they say nothing about its codes; "
                       "set the code_init weight to 0")
    return (rows * (like.double().pow(2).mean().sqrt() / rms)).to(like.dtype)


def blend_code_rows(model: TmtModel, vocab: JointVocab, features: np.ndarray, weight: float, seed: int,
                    modality: str = "image") -> None:
    """Mix the `modality` slice of the model's (tied) embedding with `structured_rows` of `features`."""
    if not 0.0 <= weight <= 1.0:
        raise TmtError(f"{modality}_code_init must be in [0, 1], got {weight}")
    start, end = vocab.range(modality)
    if features.ndim != 2 or features.shape[0] != end - start:
        raise TmtError(f"the {modality} tokenizer describes {features.shape[0] if features.ndim else 0} codes, the "
                       f"vocabulary has {end - start} {modality} ids; build the vocabulary from this tokenizer")
    weight_matrix = model.frontend.embed.weight
    with torch.no_grad():
        rand = weight_matrix[start:end]
        g = torch.Generator().manual_seed(seed)
        rows = structured_rows(torch.from_numpy(features), rand.detach().cpu(), g).to(rand.device)
        weight_matrix[start:end] = math.sqrt(1.0 - weight * weight) * rand + weight * rows


def init_code_rows(model: TmtModel, vocab: JointVocab, modality: str, weight: float, tokenizer_dir: str | None,
                   seed: int) -> None:
    """`<modality>_code_init`: load the modality's tokenizer (the given directory, else the path
    vocab.json recorded), check its fingerprint against the vocabulary, and blend its code features in."""
    from tmt.tokenizers.base import load_tokenizer

    key, fix = f"{modality}_code_init", f"`--set {modality}_tokenizer=DIR`"
    info = vocab.tokenizers.get(modality)
    if info is None or info.size == 0:
        raise TmtError(f"{key} needs a vocabulary with {modality} tokens; this one has none")
    where = tokenizer_dir or info.path
    if not where or not (Path(where) / "tokenizer.json").is_file():
        raise TmtError(f"{key}: no {modality} tokenizer at {where!r}; pass its directory with {fix}")
    tok = load_tokenizer(where)
    if info.fingerprint and tok.fingerprint != info.fingerprint:
        raise TmtError(f"{key}: the tokenizer in {where} (fingerprint {tok.fingerprint[:12]}) is not the "
                       f"one vocab.json was built from ({info.fingerprint[:12]}); pass that one with {fix}")
    features = getattr(tok, "code_features", None)
    if features is None:
        raise TmtError(f"{key}: the tokenizer in {where} ({type(tok).__name__}) has no code features")
    blend_code_rows(model, vocab, features(), weight, seed, modality)
    log.info("%s-token embeddings start %.0f%% from the code features of %s", modality, 100 * weight * weight, where)
