"""Deep Compression in one call on real digits: stages, bytes, ratio, zeros, shared values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import torchshrink
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.pipeline import DeepCompressionConfig, deep_compression
from torchshrink.pipeline.deep_compression import _bits_map
from torchshrink.train.config import TrainConfig


@pytest.fixture(scope="module")
def trained(digits: DataBundle) -> nn.Module:
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    torchshrink.train(model, digits, TrainConfig.preset("digits", epochs=5, show_progress=False))
    return model


def test_pipeline_stages_bytes_and_ratio(
    tmp_path: Path, digits: DataBundle, trained: nn.Module
) -> None:
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    model.load_state_dict(trained.state_dict())
    ft = TrainConfig(epochs=1, lr=0.01, batch_size=64, show_progress=False)
    cfg = DeepCompressionConfig(
        layer_ratios={"fc1": 0.9, "fc2": 0.85, "fc3": 0.5},
        prune_steps=2,
        prune_finetune=ft,
        fc_bits=4,
        layer_bits={"fc3": 5},
        centroid_finetune=ft.model_copy(update={"lr": 1e-3}),
    )
    r = deep_compression(model, digits, config=cfg, path=tmp_path / "dc.safetensors")
    assert [s.stage for s in r.stages] == ["dense", "pruned", "clustered", "centroids", "huffman"]
    dense = r.stage("dense")
    assert dense.dense_bytes == 4 * 50610 and dense.nonzeros == 50610
    # The ratio counts the whole file, headers included.
    assert r.stage("huffman").file_bytes == (tmp_path / "dc.safetensors").stat().st_size
    assert r.ratio == pytest.approx(dense.dense_bytes / r.stage("huffman").file_bytes)
    assert r.ratio > 15 and r.stage("pruned").ratio < r.stage("clustered").ratio
    kept = {layer.name: layer.kept for layer in r.layers}
    assert kept == pytest.approx({"fc1": 0.1, "fc2": 0.15, "fc3": 0.5}, abs=0.002)
    assert {layer.name: layer.bits for layer in r.layers} == {"fc1": 4, "fc2": 4, "fc3": 5}
    assert all(layer.clusters <= 2**layer.bits for layer in r.layers)
    assert r.stage("pruned").nonzeros == r.stage("huffman").nonzeros < 0.15 * 50610
    # The file restores the in-memory model bit for bit, so the accuracy is the same.
    loaded = torchshrink.load(r.path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert r.stage("huffman").accuracy == r.stage("centroids").accuracy
    assert r.stage("huffman").accuracy > dense.accuracy - 0.05
    d = r.to_dict()
    assert d["ratio"] == r.ratio and sum(d["breakdown"].values()) == d["stages"][-1]["file_bytes"]


def test_bits_by_layer_type_and_overrides() -> None:
    m = torchshrink.load_model("zoo:lenet5")
    assert _bits_map(m, DeepCompressionConfig()) == {"conv1": 8, "conv2": 8, "fc1": 5, "fc2": 5}
    cfg = DeepCompressionConfig(layer_bits={"conv.*": 6}, ignore=("fc2",))
    assert _bits_map(m, cfg) == {"conv1": 6, "conv2": 6, "fc1": 5}
    with pytest.raises(ConfigError, match="no Linear / Conv layer to compress in Sequential"):
        _bits_map(nn.Sequential(nn.ReLU()), DeepCompressionConfig())


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValidationError, match="prune_ratio"):
        DeepCompressionConfig(prune_ratio=1.0)
    with pytest.raises(ValidationError, match=r"layer_bits\['fc1'\] must be in 1\.\.16"):
        DeepCompressionConfig(layer_bits={"fc1": 0})
    with pytest.raises(ValidationError, match=r"layer_ratios\['fc1'\] must be in \[0, 1\)"):
        DeepCompressionConfig(layer_ratios={"fc1": 1.5})
    with pytest.raises(ValidationError, match=r"Extra inputs are not permitted"):
        DeepCompressionConfig(bits=3)  # type: ignore[call-arg]


def test_agp_with_distillation_from_the_dense_model(
    tmp_path: Path, digits: DataBundle, trained: nn.Module
) -> None:
    from torchshrink.distill import DistillConfig

    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    model.load_state_dict(trained.state_dict())
    ft = TrainConfig(epochs=2, lr=0.01, batch_size=64, show_progress=False)
    cfg = DeepCompressionConfig(
        layer_ratios={"fc1": 0.9, "fc2": 0.85, "fc3": 0.5},
        prune_schedule="agp",
        prune_finetune=ft,
        fc_bits=4,
        centroid_finetune=ft.model_copy(update={"epochs": 1, "lr": 1e-3}),
        distill=DistillConfig(alpha=0.7, temperature=4.0),
    )
    r = deep_compression(model, digits, config=cfg, path=tmp_path / "agp.safetensors")
    # AGP ends exactly at the per-layer targets, and the soft targets did not break learning.
    kept = {layer.name: layer.kept for layer in r.layers}
    assert kept == pytest.approx({"fc1": 0.1, "fc2": 0.15, "fc3": 0.5}, abs=0.002)
    assert r.stage("huffman").accuracy > r.stage("dense").accuracy - 0.05
    assert r.to_dict()["config"]["distill"]["alpha"] == 0.7
    # The teacher's hooks are gone: the model is a plain LeNet-300 again.
    assert not model._forward_hooks and not model.fc1._forward_hooks


def test_agp_without_finetuning_is_refused() -> None:
    with pytest.raises(ValidationError, match="prune_schedule: 'agp' prunes during fine-tuning"):
        DeepCompressionConfig(prune_schedule="agp", prune_finetune=None)
