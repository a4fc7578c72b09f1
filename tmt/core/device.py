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


def native_bf16(device_type: str) -> bool:
    """True where bf16 matrix work runs on hardware units: a CPU with AMX or AVX512-BF16, or a CUDA
    GPU with bf16 support (Ampere on). Elsewhere torch emulates bf16 in software, far slower than
    float32: on an AVX2-only CPU the image-aligned card's 20-minute fit made 273 steps in bf16
    against 2959 in float32 (docs/results.md, session 37)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    # torch has no public query for the CPU's bf16 units; these two read its cpuinfo (torch 2.1 on)
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_dtype(dtype: str, device_type: str) -> str:
    """A config's autocast `dtype` on `device_type`: `auto` is `bfloat16` where the device has bf16
    units (`native_bf16`) and `float32` elsewhere; `float32` and `bfloat16` stay as they are."""
    if dtype == "auto":
        return "bfloat16" if native_bf16(device_type) else "float32"
    return dtype


def autocast(device_type: str, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's autocast context for a config's `dtype`: `bfloat16` autocasts on
    `device_type` (`cpu` or `cuda`); anything else (`float32`) runs as is."""
    import torch

    if dtype == "bfloat16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
