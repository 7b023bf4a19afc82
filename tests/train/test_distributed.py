"""Distributed training under torchrun: sharding, rank-0-only writes, and a real 2-process run."""

from __future__ import annotations

import importlib.util
import io
import json
import os
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import TensorDataset

import torchshrink
from torchrun_helper import run_torchrun
from torchshrink.core.databundle import DataBundle
from torchshrink.train import distributed as D
from torchshrink.train.checkpoint import TrainingSnapshot, checkpoint_path, save_checkpoint
from torchshrink.train.config import TrainConfig
from torchshrink.train.progress import EpochProgress

WORKER = Path(__file__).with_name("ddp_worker.py")
SHUTDOWN_WORKER = Path(__file__).with_name("ddp_shutdown_worker.py")


@pytest.mark.parametrize(("n", "batch", "world"), [(40, 8, 2), (37, 8, 2), (50, 9, 3)])
def test_shards_together_are_the_single_process_batches(n: int, batch: int, world: int) -> None:
    ds = TensorDataset(torch.arange(n))
    bundle = DataBundle("toy", ds, ds, num_classes=2, input_shape=())
    for epoch in (0, 3):
        single = [b[0].tolist() for b in bundle.loader("train", batch_size=batch, seed=7 + epoch)]
        shards = [
            [
                b[0].tolist()
                for b in D.shard_loader(
                    ds, batch_size=batch, seed=7, epoch=epoch, num_replicas=world, replica=r
                )
            ]
            for r in range(world)
        ]
        assert {len(s) for s in shards} == {len(single)}  # same step count on every rank
        for k, full in enumerate(single):
            together = sorted(i for s in shards for i in s[k])
            if k < len(single) - 1 or n % batch == 0 or (n % batch) % world == 0:
                assert together == sorted(full)
            else:  # the last batch is padded to a multiple of the world size
                assert set(full) <= set(together) and len(together) % world == 0


def test_every_collective_is_the_identity_in_one_process() -> None:
    t, m = torch.arange(3.0), nn.Linear(2, 2)
    masks = {"w": torch.tensor([True, False])}
    assert (D.rank(), D.world_size(), D.is_main(), D.is_distributed()) == (0, 1, True, False)
    assert D.init_distributed("cpu") is False
    assert (
        D.sync_from_main(t) is t and D.sync_from_main(m) is m and D.sync_from_main(masks) is masks
    )
    assert D.all_reduce_mean([1.5, 2.0]) == [1.5, 2.0] and D.all_reduce_mean(0.25) == 0.25
    assert D.all_reduce_sum(t).tolist() == [0.0, 1.0, 2.0] and D.any_rank(True) is True
    assert D.wrap_ddp(m, torch.device("cpu")) is m and D.unwrap_ddp(m) is m
    with D.distributed_session() as on:
        assert on is False


def test_a_non_zero_rank_writes_no_model_file_or_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    snap = TrainingSnapshot({}, {}, {}, epochs_done=1, best_accuracy=0.5, best_epoch=0, history=[])
    monkeypatch.setenv("RANK", "1")
    assert D.is_main() is False
    assert torchshrink.save(model, tmp_path / "m.safetensors") == tmp_path / "m.safetensors"
    assert save_checkpoint(tmp_path / "ckpt", snap) == checkpoint_path(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path)) == []
    monkeypatch.setenv("RANK", "0")
    torchshrink.save(model, tmp_path / "m.safetensors")
    save_checkpoint(tmp_path / "ckpt", snap)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ckpt", "last.ckpt", "m.safetensors"]


def test_the_progress_bar_draws_on_rank_zero_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def bar() -> EpochProgress:
        console = Console(force_terminal=True, file=io.StringIO())
        return EpochProgress(TrainConfig(show_progress=True), 3, console=console)

    assert bar().enabled is True
    monkeypatch.setenv("RANK", "1")
    assert bar().enabled is False


def _run_in_process(out: Path) -> dict:
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    assert spec is not None and spec.loader is not None
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    return worker.run(out)


@pytest.mark.integration
def test_torchrun_two_processes_match_one_process_and_keep_ranks_identical(
    tmp_path: Path,
) -> None:
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir(), one.mkdir()
    proc = run_torchrun([str(WORKER), str(two)], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads((two / "result.json").read_text())["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world_size"] == 2
    # Masks and weights are bit-identical across ranks (rank 1 even started from other weights).
    assert ranks[0]["mask_hash"] == ranks[1]["mask_hash"]
    assert ranks[0]["weight_hash"] == ranks[1]["weight_hash"]
    assert ranks[0]["sparsity"] == pytest.approx(0.8, abs=0.01)
    # Only rank 0 wrote: its model file and checkpoint exist, rank 1's do not.
    assert sorted(p.name for p in two.iterdir()) == [
        "ckpt-rank0",
        "model-rank0.safetensors",
        "result.json",
    ]
    assert (two / "ckpt-rank0" / "last.ckpt").is_file()

    single = _run_in_process(one)["ranks"][0]
    # Same global batches (the shards of each step are the one-process batch), so only float
    # summation order differs: measured 0 accuracy difference and weights within 6e-8. The
    # bound allows 1 point (3.6 of 359 test images), well under the seed-to-seed spread.
    assert ranks[0]["accuracy"] == pytest.approx(single["accuracy"], abs=0.01)
    a = torchshrink.load(two / "model-rank0.safetensors")
    b = torchshrink.load(one / "model-rank0.safetensors")
    flips = sum(
        int(((p != 0) != (q != 0)).sum())
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    total = sum(p.numel() for p in a.parameters())
    assert flips / total <= 1e-3


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names come from /proc")
def test_shutdown_frees_the_group_after_ddp_training(tmp_path: Path) -> None:
    # DistributedDataParallel imports torch._dynamo, which imports torch.distributed.nn.functional;
    # imported after the group exists, its default arguments kept the group alive past
    # destroy_process_group, and its gloo threads ran on into interpreter exit, where they
    # sometimes aborted a rank (SIGABRT). Without the fix each rank here keeps 3 gloo threads.
    proc = run_torchrun([str(SHUTDOWN_WORKER), str(tmp_path)], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        doc = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert doc["gathered"] == [0, 1]
        assert doc["gloo_threads_during"], "the run never used gloo: the check would be empty"
        assert doc["gloo_threads_after"] == [], doc
