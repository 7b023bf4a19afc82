"""`torchshrink compress` under `torchrun --nproc_per_node=2`: one run folder, written by rank 0,
with the same result as a one-process run of the same recipe (the shards of each step together are
the one-process batch, and pruning masks and cluster assignments come from rank 0)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchrun_helper import run_torchrun, torchrun_env

RECIPE = """
name: ddp
model: zoo:lenet300
model_args: {input_size: 8}
data: digits
data_limit: 400
profile_repeats: 0
train: {epochs: 2, lr: 0.05, batch_size: 32, show_progress: false}
stages:
  - kind: prune
    config:
      granularity: unstructured
      ratio: 0.8
      finetune: {epochs: 1, lr: 0.01, batch_size: 32, show_progress: false}
  - kind: cluster
    bits: 4
    finetune: {epochs: 1, lr: 0.001, batch_size: 32, show_progress: false}
  - kind: export
    format: huffman
"""


@pytest.mark.integration
def test_compress_under_torchrun_matches_one_process_and_only_rank0_writes(
    tmp_path: Path,
) -> None:
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(RECIPE)
    one, two = tmp_path / "one", tmp_path / "two"
    cmd = [sys.executable, "-m", "torchshrink", "compress", str(recipe), "--json", "--out"]
    single = subprocess.run([*cmd, str(one)], env=torchrun_env(), capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    run = ["-m", "torchshrink", "compress", str(recipe), "--json", "--out", str(two)]
    ddp = run_torchrun(run, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    a = json.loads((one / "run.json").read_text())
    b = json.loads((two / "run.json").read_text())
    assert [s["kind"] for s in b["stages"]] == ["prune", "cluster", "export"]
    # same recipe, same global batches: the same model up to float summation order
    assert b["final"]["accuracy"] == pytest.approx(a["final"]["accuracy"], abs=0.01)
    assert b["final"]["nonzero_params"] == pytest.approx(a["final"]["nonzero_params"], rel=0.01)
    assert b["final"]["file_bytes"] == pytest.approx(a["final"]["file_bytes"], rel=0.05)
    # one writer: the run folder holds exactly what a one-process run writes
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in (two / "stages").iterdir()) == sorted(
        p.name for p in (one / "stages").iterdir()
    )
    assert not list(two.glob("*.tmp")) and not list((two / "stages").glob("*.tmp"))
