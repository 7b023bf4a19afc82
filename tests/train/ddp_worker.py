"""A small distributed fine-tune for ``test_distributed.py``: AGP pruning of a LeNet-300-100.

Run under ``torchrun --nproc_per_node=N ddp_worker.py OUT_DIR`` (or call :func:`run` in one
process). Every rank fine-tunes with gradual magnitude pruning, then tries to write its own
model file and checkpoint (only rank 0's may appear), and reports hashes of its final masks and
weights; the reports are gathered and rank 0 writes ``OUT_DIR/result.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

import torchshrink
from torchshrink.prune import PruneConfig, prune
from torchshrink.train import TrainConfig
from torchshrink.train import distributed as dist_util

EPOCHS, BATCH, RATIO = 3, 64, 0.8


def _digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(out_dir: Path) -> dict[str, Any]:
    """Fine-tune with AGP pruning; return this rank's report (all ranks' on rank 0)."""
    torch.set_num_threads(1)
    rank = dist_util.rank()
    data = torchshrink.load_data("digits")
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    if rank == 1:  # a different start on rank 1: training must begin from rank 0's weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
    finetune = TrainConfig(
        epochs=EPOCHS,
        batch_size=BATCH,
        lr=0.05,
        show_progress=False,
        checkpoint_dir=out_dir / f"ckpt-rank{rank}",
    )
    cfg = PruneConfig(ratio=RATIO, schedule="agp", agp_frequency=5, finetune=finetune)
    result = prune(model, cfg, example_inputs=data.example_inputs(1), data=data)
    torchshrink.save(model, out_dir / f"model-rank{rank}.safetensors")
    params = [p for _, p in sorted(model.named_parameters())]
    report = {
        "rank": rank,
        "world_size": dist_util.world_size(),
        "accuracy": result.accuracy,
        "sparsity": result.sparsity,
        "mask_hash": _digest([p != 0 for p in params]),
        "weight_hash": _digest(params),
    }
    reports = [report]
    if dist_util.is_distributed():
        reports = [None] * dist_util.world_size()
        torch.distributed.all_gather_object(reports, report)
    return {"ranks": reports}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    doc = run(out)
    if dist_util.is_main():
        (out / "result.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
