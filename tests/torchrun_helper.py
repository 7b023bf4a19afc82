"""Launch a two-process ``torchrun`` from a test, retrying a known exit-time abort.

Sometimes a rank aborts while its process exits ("terminate called without an active
exception", SIGABRT: a C++ thread destroyed while still joinable), after the barrier of
``train.distributed.shutdown_distributed`` and after its work is done. Inside a full test run it
hit about one torchrun test in three (3 of 9 over three runs); standalone, 0 of 10. Its cause is
not found (a known issue in docs/distributed.md). Such a run is repeated, from an empty output
folder, up to ``RETRIES`` times, with a warning in the test report each time; any other failure,
or an abort on every attempt, fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

EXIT_ABORT = "terminate called without an active exception"
RETRIES = 4
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun_env() -> dict[str, str]:
    """This environment for a fresh torchrun: one thread per rank, no inherited rank variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    return env


def run_torchrun(
    args: list[str],
    *,
    out: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    recreate: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``torchrun --standalone --nproc_per_node=2 *args``.

    Before each retry ``out`` is removed (and made again, empty, when ``recreate``).
    """
    env = env or torchrun_env()
    proc = subprocess.run([*TORCHRUN, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    for attempt in range(1, RETRIES + 1):
        if proc.returncode == 0 or EXIT_ABORT not in proc.stderr:
            break
        warnings.warn(f"torchrun: a rank aborted at exit ({EXIT_ABORT!r}); retry {attempt} of "
                      f"{RETRIES}", stacklevel=2)  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
        if recreate:
            out.mkdir(parents=True)
        proc = subprocess.run([*TORCHRUN, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    return proc
