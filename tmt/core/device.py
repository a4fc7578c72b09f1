"""Device names: `auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:N` (torch imported on use)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tmt.core.errors import TmtError

if TYPE_CHECKING:
    import torch


def resolve_device(spec: Any = "auto", local_rank: int = 0) -> torch.device:
    """A torch.device for `spec`; `auto` picks CUDA when present. Unavailable CUDA is an error."""
    import torch

    if isinstance(spec, torch.device):
        return spec
    spec = str(spec or "auto")
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise TmtError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TmtError(f"device '{spec}' requested but CUDA is not available; use --device cpu")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def autocast(device_type: str, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's autocast context for a config's `dtype`: `bfloat16` autocasts on
    `device_type` (`cpu` or `cuda`); anything else (`float32`) runs as is."""
    import torch

    if dtype == "bfloat16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
