"""What every benchmark record says about the machine it ran on.

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this folder is on ``sys.path`` and
they import this module as ``_common``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

import torchshrink


def _cpu() -> tuple[str, list[str]]:
    """CPU model name and the vector / matrix extensions that matter for int8 and bf16."""
    name, flags = platform.processor() or "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                wanted = (
                    "avx512f",
                    "avx512_vnni",
                    "avx512_bf16",
                    "amx_tile",
                    "amx_int8",
                    "amx_bf16",
                )
                flags = [f for f in line.split(":", 1)[1].split() if f in wanted]
                break
    except OSError:
        pass
    return name, sorted(flags)


def machine_info(**extra: Any) -> dict[str, Any]:
    """Platform, CPU (with AMX / AVX-512 flags), cores, load, and library versions."""
    cpu, flags = _cpu()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_flags": flags,
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchshrink": torchshrink.__version__,
        "torch_threads": torch.get_num_threads(),
        **extra,
    }
