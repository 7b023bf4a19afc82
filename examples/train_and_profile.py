"""Train a zoo model on scikit-learn's digits, save it, load it back and profile it.

Run:  python examples/train_and_profile.py [--epochs N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import torchshrink


def main(epochs: int) -> dict:
    data = torchshrink.load_data("digits", seed=0)  # 8x8 images, 10 classes, no download
    torch.manual_seed(0)
    model = torchshrink.load_model(
        "zoo:lenet300", model_args={"input_size": 8, "num_classes": data.num_classes}
    )
    config = torchshrink.TrainConfig(epochs=epochs, lr=0.05, schedule="cosine", show_progress=False)
    result = torchshrink.train(model, data, config)  # trains `model` in place
    with tempfile.TemporaryDirectory() as tmp:
        path = torchshrink.save(model, Path(tmp) / "lenet300_digits.safetensors")
        restored = torchshrink.load(path)  # rebuilt from the file alone, no pickle
        prof = torchshrink.profile(restored, data.example_inputs(32), data=data, file_path=path)
    print(f"trained accuracy {result.final_accuracy:.3f}; reloaded accuracy {prof.accuracy:.3f}")
    print(
        f"{prof.params:,} params, {prof.macs:,} MACs per batch of 32, file {prof.file_bytes:,} bytes"
    )
    print(f"latency p50 {prof.latency_ms_p50:.3f} ms ({prof.throughput:,.0f} samples/s)")
    return prof.to_dict()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    main(parser.parse_args().epochs)
