"""Launch a two-process ``torchrun`` from a test."""

from __future__ import annotations

import os
import subprocess
import sys

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun_env() -> dict[str, str]:
    """This environment for a fresh torchrun: one thread per rank, no inherited rank variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return env


def run_torchrun(
    args: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``torchrun --standalone --nproc_per_node=2 *args`` and capture its output."""
    return subprocess.run([*TORCHRUN, *args], env=env or torchrun_env(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
