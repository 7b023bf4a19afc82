"""The embedded default job: ``torchshrink compress demo`` (no download, a few minutes on 2 cores).

The built-in ``demo`` recipe trains a zoo ResNet-20 on scikit-learn's bundled digits, removes
half of its channels (physically) and fine-tunes, shares its weights in 64 clusters and writes a
Huffman-coded model file, measuring after every stage. The run folder holds the final model,
the compressed file, ``run.json`` and ``report.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEMO_RECIPE = "demo"


def run_demo(
    out: Path, *, epochs: int | None = None, seed: int = 0, overrides: list[str] | None = None
) -> Any:
    """Run the ``demo`` recipe into ``out``, print the summary and return the run record.

    Args:
        out: the run folder.
        epochs: training epochs of the model before compression (``None``: the recipe's).
        seed: seeds the data split, the initial weights and training.
        overrides: more ``key=value`` recipe overrides (as ``compress --set``).
    """
    from torchshrink.cli.compress_cmd import print_outputs
    from torchshrink.cli.render import print_run_summary
    from torchshrink.pipeline.recipe import load_recipe
    from torchshrink.pipeline.runner import run_recipe

    sets = [f"seed={seed}"] + ([f"train.epochs={epochs}"] if epochs is not None else [])
    recipe = load_recipe(DEMO_RECIPE, overrides=sets + list(overrides or []))
    record = run_recipe(recipe, out, show_progress=True)
    rows = [("baseline", record.baseline)] + [
        (f"{s.index + 1}. {s.name}", s.metrics) for s in record.stages
    ]
    print_run_summary(
        rows, paired=record.latency_vs_baseline, title="torchshrink demo (recipe 'demo')"
    )
    print_outputs(record)
    return record
