"""A distributed run for ``test_input_check.py``: every rank refuses a model that misfits the data.

Run under ``torchrun --nproc_per_node=N ddp_shape_worker.py OUT_DIR``. Each rank first trains a
3-channel ResNet-20 on the 1-channel digits, which must raise a ShapeError on every rank by
itself (no rank waits on another), then trains a fitting MLP for one epoch (the collectives
still line up after the refusal). Each rank writes ``OUT_DIR/rank{R}.json`` with the error
message and a hash of its trained weights.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

import torchshrink
from torchshrink.core.errors import ShapeError
from torchshrink.train import TrainConfig, train
from torchshrink.train import distributed as dist_util


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    data = torchshrink.load_data("digits")
    config = TrainConfig(epochs=1, batch_size=64, show_progress=False, num_threads=1)
    bad = torchshrink.load_model("zoo:resnet20", model_args={"input_size": 8})
    message = ""
    try:
        train(bad, data, config)
    except ShapeError as exc:
        message = str(exc)
    torch.manual_seed(0)
    good = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    result = train(good, data, config)
    h = hashlib.sha256()
    for p in good.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    report = {
        "rank": dist_util.rank(),
        "world_size": dist_util.world_size(),
        "error": message,
        "accuracy": result.final_accuracy,
        "weight_hash": h.hexdigest(),
    }
    (out_dir / f"rank{report['rank']}.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
