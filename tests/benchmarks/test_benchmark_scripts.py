"""Benchmark scripts are not run by the test suite (they take minutes), but they must import
and parse their arguments, and their shared machine record must carry the facts a reader needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("[a-z]*.py")))
def test_benchmark_script_imports_and_shows_help(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "usage:" in proc.stdout


def test_machine_record_names_cpu_threads_and_versions() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from _common import machine_info
    finally:
        sys.path.remove(str(BENCH))
    rec = machine_info(extra_key="x")
    assert rec["cpu_count"] >= 1 and rec["torch_threads"] >= 1
    assert rec["torch"].startswith("2.") and rec["extra_key"] == "x"
    assert len(rec["loadavg_start"]) == 3
    assert all(f.startswith(("avx", "amx")) for f in rec["cpu_flags"])
