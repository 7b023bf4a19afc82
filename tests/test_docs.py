"""The user guides under docs/ run: every ```python block of a guide, in order, in one namespace.

A block preceded by the HTML comment ``<!-- skip-test -->`` is not run (for examples that need
something a test machine lacks). Each guide runs with one intra-op thread in a fresh temporary
working directory, so the files its examples write are thrown away.

Guides not run here:

- ``auto.md``: its Python blocks need a trained MNIST model file (``model.safetensors``,
  ``npz:mnist.npz``) and an optuna search of minutes; ``tests/auto`` covers that API.
- ``distributed.md``: it has no Python block (``torchrun`` commands only).
"""

from __future__ import annotations

import linecache
import re
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = ["pruning.md", "quantization.md", "compression.md", "deploy.md"]
NOT_RUN = {"auto.md", "distributed.md"}  # why: the module docstring
SKIP_MARK = "<!-- skip-test -->"
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


def code_blocks(text: str, language: str = "python") -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` of every fenced block in ``language``; line is 1-based."""
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group(1) != language:
            continue
        before = text[: match.start()].rstrip().splitlines()
        skipped = bool(before) and before[-1].strip() == SKIP_MARK
        line = text.count("\n", 0, match.start()) + 2  # the first line of code
        blocks.append((line, match.group(2), skipped))
    return blocks


def test_code_blocks_reads_fences_and_skip_marks() -> None:
    text = "# T\n\n```python\nx = 1\n```\n\n<!-- skip-test -->\n```python\ny = 2\n```\n```bash\nls\n```\n"
    assert code_blocks(text) == [(4, "x = 1\n", False), (9, "y = 2\n", True)]
    assert code_blocks(text, "bash") == [(12, "ls\n", False)]


def test_every_guide_is_run_or_excused() -> None:
    assert {p.name for p in DOCS.glob("*.md")} == set(GUIDES) | NOT_RUN


def test_cli_commands_in_guides_exist() -> None:
    from torchshrink.cli.app import app

    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    used = set()
    for guide in GUIDES:
        for _, code, _ in code_blocks((DOCS / guide).read_text(), "bash"):
            used |= set(re.findall(r"^\s*torchshrink ([a-z][a-z-]*)", code, re.M))
    assert used, "the guides show no torchshrink command"
    assert used <= names, f"unknown commands in the guides: {sorted(used - names)}"


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_examples_run(guide: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / guide).read_text()
    blocks = code_blocks(text)
    runnable = [(line, code) for line, code, skipped in blocks if not skipped]
    assert runnable, f"{guide} has no runnable python block"
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": f"docs_{guide.removesuffix('.md')}"}
    # Tracebacks then point at the guide's own lines (docs/GUIDE, line N) and show them.
    filename = f"docs/{guide}"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    try:
        for line, code in runnable:
            exec(compile("\n" * (line - 1) + code, filename, "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
