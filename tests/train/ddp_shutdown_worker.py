"""A distributed run for ``test_distributed.py``: the process group is really freed at shutdown.

Run under ``torchrun --nproc_per_node=N ddp_shutdown_worker.py OUT_DIR``. Each rank trains a
small MLP for one epoch (``train`` wraps it in ``DistributedDataParallel``, which imports
``torch._dynamo`` after the group exists), gathers a Python object from every rank (a collective
whose tensors Python created), and calls ``shutdown_distributed``. It then counts its threads
named by gloo (``pt_gloo_runloop``, ``gloo_tcp_loop``, from ``/proc/self/task``) and writes
``OUT_DIR/rank{R}.json``. A group still alive after shutdown keeps those threads, and they can
abort the process while the interpreter exits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

import torchshrink
from torchshrink.train import TrainConfig, train
from torchshrink.train import distributed as dist_util


def gloo_threads() -> list[str]:
    """Names of this process's threads that gloo started."""
    names = [(t / "comm").read_text().strip() for t in Path("/proc/self/task").iterdir()]
    return sorted(n for n in names if "gloo" in n)


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    data = torchshrink.load_data("digits")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    train(model, data, TrainConfig(epochs=1, batch_size=64, show_progress=False, num_threads=1))
    during = gloo_threads()
    ranks: list[object] = [None] * dist_util.world_size()
    torch.distributed.all_gather_object(ranks, dist_util.rank())
    rank = dist_util.rank()
    dist_util.shutdown_distributed(clean=True)
    doc = {"gathered": ranks, "gloo_threads_during": during, "gloo_threads_after": gloo_threads()}
    (out_dir / f"rank{rank}.json").write_text(json.dumps(doc), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
