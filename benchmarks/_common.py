"""Shared helpers for benchmarks: table printing and json output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def print_table(rows: list[list[Any]], header: list[str], title: str = "") -> None:
    from tmt.cli._common import format_table

    if title:
        print(f"\n{title}")
    print(format_table(rows, header))


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data | {"machine": machine()}, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
