"""Every script under examples/ runs (with quick settings) and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUICK_ARGS = {"train_and_profile.py": ["--epochs", "2"]}


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *QUICK_ARGS.get(script, [])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accuracy" in proc.stdout


def test_every_example_has_quick_settings() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(QUICK_ARGS)
