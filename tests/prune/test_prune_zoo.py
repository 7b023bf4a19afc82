"""Structured channel pruning at 50% on every zoo model: forward, output shape, save / load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchshrink
from torchshrink.core.forward import call_model
from torchshrink.core.zoo import zoo_names
from torchshrink.prune import PruneConfig, prune

SMALL = {
    "lenet300": {},
    "lenet5": {},
    "resnet20": {"input_size": 8},
    "resnet56": {"input_size": 8},  # slow here (28 groups): run with -m slow
    "vgg11_bn": {"input_size": 8},
    "mobilenetv2": {"width_mult": 0.35, "input_size": 8},
    "vit": {"dim": 48, "depth": 2, "heads": 3, "input_size": 16},
    "mlp_mixer": {"dim": 32, "depth": 2, "input_size": 16, "channel_hidden": 64},
    "transformer": {"vocab_size": 50, "max_len": 12, "dim": 32, "heads": 4},
}


def test_the_list_covers_the_whole_zoo() -> None:
    assert sorted(SMALL) == zoo_names()


NAMES = [pytest.param(n, marks=pytest.mark.slow) if n == "resnet56" else n for n in sorted(SMALL)]


@pytest.mark.parametrize("name", NAMES)
def test_half_of_the_channels_go_and_the_model_still_works(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchshrink.load_model(f"zoo:{name}", model_args=SMALL[name]).eval()
    x = model.example_inputs(2)  # type: ignore[operator]
    with torch.no_grad():
        shape = call_model(model, x).shape
    r = prune(model, PruneConfig(granularity="channel", ratio=0.5), example_inputs=x)
    assert r.params_after < 0.75 * r.params_before
    assert r.changes and all(a <= -(-b // 2) for b, a in r.changes.values())
    with torch.no_grad():
        y = call_model(model, x)
    assert y.shape == shape and bool(torch.isfinite(y).all())
    back = torchshrink.load(torchshrink.save(model, tmp_path / f"{name}.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(call_model(back, x), y)
    assert sum(p.numel() for p in back.parameters()) == r.params_after


def test_unstructured_masks_are_baked_into_the_saved_file(tmp_path: Path) -> None:
    model = torchshrink.load_model("zoo:lenet300")
    x = model.example_inputs(1)  # type: ignore[operator]
    r = prune(model, PruneConfig(ratio=0.9, global_=True), example_inputs=x)
    back = torchshrink.load(torchshrink.save(model, tmp_path / "l300.safetensors"))
    nz = sum(int((p != 0).sum()) for p in back.parameters())
    assert nz == r.nonzero_after and r.sparsity > 0.85


def test_head_pruned_transformer_loads_in_a_fresh_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    model = torchshrink.load_model("zoo:transformer")
    x = model.example_inputs(2)  # type: ignore[operator]
    prune(model, PruneConfig(granularity="head", ratio=0.5), example_inputs=x)
    with torch.no_grad():
        y = model(x)
    torchshrink.save(model, tmp_path / "t.safetensors")
    torch.save({"x": x, "y": y}, tmp_path / "io.pt")
    code = (
        "import torch, torchshrink; "
        f"m = torchshrink.load(r'{tmp_path / 't.safetensors'}'); "
        f"io = torch.load(r'{tmp_path / 'io.pt'}', weights_only=True); "
        "torch.testing.assert_close(m(io['x']), io['y']); "
        "print(type(m.layers[0].self_attn).__name__, m.layers[0].self_attn.num_heads)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.split() == ["PrunedMultiheadAttention", "2"]
