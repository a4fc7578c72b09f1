"""The one place tmt unpickles a file: `load_pickled_torch`, behind an explicit `--trust-pickle`.

Pickles can run code, so every other load in tmt is `torch.load(weights_only=True)`
(`tmt.core.io.load_torch`) or safetensors. This module is kept apart so that a review
(and the project's checks) can see at a glance that nothing else takes this path.
Callers: the HuBERT checkpoint reader (fairseq checkpoints pickle their config) and the
fairseq vocoder import, both only when the user passes `--trust-pickle`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_pickled_torch(path: str | Path) -> Any:
    """Fully unpickle a torch file. Only for files the user vouched for with an explicit
    `--trust-pickle` (pickles can run code); everything else uses weights_only=True."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


__all__ = ["load_pickled_torch"]
