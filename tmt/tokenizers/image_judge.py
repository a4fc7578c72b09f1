"""The pixel caption judge kept beside a fitted image tokenizer (`tmt.models.caption_judge`).

A judge is fitted after its tokenizer (`tmt tokenize image fit-judge`, `image_judge_fit.py`) and
lives in the tokenizer's directory without touching it::

    tokenizer.json      + "judge": {card, tokenizer_fingerprint, weights, stats}
    judge-<sha12>.safetensors

The weights file is named by its content and written first; the `judge` entry of tokenizer.json,
replaced atomically, is the commit point, so a kill at any moment leaves the previous judge (or
none) in force. The tokenizer's fingerprint, and so every token store and model built on it, is
unchanged: the judge never takes part in encoding or decoding. Reranking reads it through the
tokenizer's `caption_alignment` (`--rerank-align`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tmt import TmtError
from tmt.config import from_dict, to_dict
from tmt.core.io import atomic_write_bytes, atomic_write_json
from tmt.models.caption_judge import CaptionJudge, CaptionJudgeConfig
from tmt.tokenizers.base import TokenizerError, read_tokenizer_json

JUDGE_KEY = "judge"
"""Key of the judge's entry in tokenizer.json."""


@dataclass(kw_only=True)
class JudgeTrainConfig:
    """Fitting settings of the pixel judge (`--set train.steps=N`)."""

    steps: int = 1500
    """Optimizer steps."""
    batch_size: int = 128
    """(image, caption) pairs per step."""
    group: int = 8
    """A batch is built from groups of this many captions: one drawn at random, the rest drawn from the
    captions that differ from it in exactly one word (same length). Their images are each other's
    hard negatives (the same scene but for a shape, a colour, a place), which random batches almost
    never hold. 1: plain random batches."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, then cosine to 0)."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    max_minutes: float | None = None
    """Stop after this many minutes even if `steps` are not done (unset: no limit)."""
    holdout: float = 0.05
    """Fraction of the images kept out of training to measure the judge (`stats.neighbour_acc`)."""
    seed: int = 0
    """Seed of the weights, the batches and the hold-out split."""


@dataclass(kw_only=True)
class JudgeCard:
    """A judge's settings: its network and its fit."""

    model: CaptionJudgeConfig = field(default_factory=CaptionJudgeConfig)
    """Architecture."""
    train: JudgeTrainConfig = field(default_factory=JudgeTrainConfig)
    """Fitting settings."""


def save_judge(directory: str | Path, judge: CaptionJudge, card: JudgeCard, stats: dict[str, Any]) -> None:
    """Write the judge's weights, then point tokenizer.json at them (atomically); remove older judges' weights."""
    from safetensors.torch import save as save_safetensors

    d = Path(directory)
    info = read_tokenizer_json(d)
    data = save_safetensors({k: v.detach().contiguous().clone() for k, v in judge.state_dict().items()})
    name = f"judge-{hashlib.sha256(data).hexdigest()[:12]}.safetensors"
    atomic_write_bytes(d / name, data)
    info[JUDGE_KEY] = {"card": to_dict(card), "tokenizer_fingerprint": info["fingerprint"], "weights": name,
                       "stats": stats}
    atomic_write_json(d / "tokenizer.json", info)
    for stale in d.glob("judge-*.safetensors"):  # earlier judges, and any a re-saved tokenizer let go
        if stale.name != name:
            stale.unlink(missing_ok=True)


def kept_judge(directory: str | Path, fingerprint: str) -> dict[str, Any]:
    """{"judge": entry} when the tokenizer.json in `directory` holds a judge fitted for a tokenizer of this
    `fingerprint` (a tokenizer saved again with the same weights keeps its judge), else {}."""
    p = Path(directory) / "tokenizer.json"
    if not p.is_file():
        return {}
    try:
        entry = read_tokenizer_json(directory).get(JUDGE_KEY)
    except TokenizerError:  # an unreadable old description is being replaced
        return {}
    return {JUDGE_KEY: entry} if isinstance(entry, dict) and entry.get("tokenizer_fingerprint") == fingerprint else {}


def load_judge(directory: str | Path, info: dict[str, Any]) -> CaptionJudge | None:
    """The judge named by a tokenizer directory's tokenizer.json, or None where it has none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    entry = info.get(JUDGE_KEY)
    if entry is None:
        return None
    d = Path(directory)
    refit = f"re-fit it with `tmt tokenize image fit-judge --tokenizer {d} --manifest TRAIN`"
    if not isinstance(entry, dict) or entry.get("tokenizer_fingerprint") != info["fingerprint"]:
        raise TokenizerError(f"{d / 'tokenizer.json'}: its caption judge was fitted for another tokenizer; {refit}")
    try:
        card = from_dict(JudgeCard, entry["card"])
        judge = CaptionJudge(card.model)
        judge.load_state_dict(load_file(str(d / entry["weights"])))
    except (TmtError, SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise TokenizerError(f"{d}: the caption judge cannot be loaded ({e}); {refit}") from None
    return judge.eval()


def per_caption(captions: Sequence[str], embed: Callable[[list[str]], torch.Tensor], batch: int) -> torch.Tensor:
    """(n, E) caption embeddings, computing each distinct caption once (a row's K candidates share one)."""
    unique = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    names = list(unique)
    table = torch.cat([embed(names[i:i + batch]) for i in range(0, len(names), batch)])
    return table[torch.tensor([unique[c] for c in captions], dtype=torch.long)]
