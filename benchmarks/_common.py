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


#: The held-out validation split the benchmarks choose settings on (5,000 training images).
VAL_SIZE = 5000
SPLIT_SEED = 1234


def split_validation(data: Any) -> tuple[Any, Any]:
    """``(55k train / 5k validation, 55k train / test)``: the 5k are held out of training.

    The same fixed split (``SPLIT_SEED``) in every benchmark that selects on validation.
    """
    from dataclasses import replace

    from torch.utils.data import TensorDataset

    x, y = data.train.tensors
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = min(VAL_SIZE, len(y) // 5)  # smaller only for --limit smoke runs
    val, tr = idx[:n_val], idx[n_val:]
    train_ds = TensorDataset(x[tr], y[tr])
    meta = {**data.meta, "validation": f"{n_val} held out, split seed {SPLIT_SEED}"}
    select = replace(data, train=train_ds, test=TensorDataset(x[val], y[val]), meta=meta)
    return select, replace(data, train=train_ds, meta=meta)


class MeanLogits(torch.nn.Module):
    """Mean logits of several models: an ensemble teacher, evaluated as one model."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)  # (B, K)
