"""Helpers shared by the CLI tests (import as ``from cli_helpers import run, as_json``)."""

from __future__ import annotations

import json

import pytest

from torchshrink.cli.app import main


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run the CLI in-process; return its exit status, stdout and stderr."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(text: str) -> dict:
    """The JSON record a ``--json`` command printed (after any progress lines)."""
    return json.loads(text[text.index("{") :])
