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


_FT = TrainConfig(epochs=1, lr=0.01, batch_size=64, show_progress=False)


def _copy_of(trained: nn.Module) -> nn.Module:
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    model.load_state_dict(trained.state_dict())
    return model


def test_pipeline_stages_bytes_and_ratio(
    tmp_path: Path, digits: DataBundle, trained: nn.Module
) -> None:
    model = _copy_of(trained)
    cfg = DeepCompressionConfig(
        layer_ratios={"fc1": 0.9, "fc2": 0.85, "fc3": 0.5},
        prune_steps=2,
        prune_finetune=_FT,
        fc_bits=4,
        layer_bits={"fc3": 5},
        centroid_finetune=_FT.model_copy(update={"lr": 1e-3}),
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

    model = _copy_of(trained)
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


def _kd_setup(trained: nn.Module) -> tuple[nn.Module, DeepCompressionConfig]:
    from torchshrink.distill import DistillConfig

    model = _copy_of(trained)
    cfg = DeepCompressionConfig(
        prune_ratio=0.8,
        prune_steps=1,
        prune_finetune=_FT,
        fc_bits=4,
        centroid_finetune=_FT.model_copy(update={"lr": 1e-3}),
        distill=DistillConfig(alpha=0.7, temperature=4.0),
    )
    return model, cfg


def _weights_after(
    tmp_path: Path, digits: DataBundle, trained: nn.Module, name: str, **kwargs: object
) -> dict[str, torch.Tensor]:
    model, cfg = _kd_setup(trained)
    path = tmp_path / f"{name}.ts"
    deep_compression(model, digits, config=cfg, path=path, **kwargs)  # type: ignore[arg-type]
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_is_used_and_the_default_is_a_frozen_copy(
    tmp_path: Path, digits: DataBundle, trained: nn.Module
) -> None:
    torch.manual_seed(1)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # an untrained, different teacher
    before = {k: v.clone() for k, v in other.state_dict().items()}
    default = _weights_after(tmp_path, digits, trained, "default")
    # teacher=None distills from a frozen copy of the model as given: passing that copy is the same.
    copy_of_dense = _copy_of(trained)
    assert _same(default, _weights_after(tmp_path, digits, trained, "c", teacher=copy_of_dense))
    with_other = _weights_after(tmp_path, digits, trained, "other", teacher=other)
    assert not _same(default, with_other)
    diff = max((default[k] - with_other[k]).abs().max().item() for k in default)
    assert diff > 1e-4
    # An ensemble averages logits: two copies of one teacher are that teacher.
    assert _same(with_other, _weights_after(tmp_path, digits, trained, "e", teacher=[other, other]))
    # The teacher is never trained: same weights, no gradient, nothing changed on it.
    assert _same(before, other.state_dict())
    assert all(p.grad is None and p.requires_grad for p in other.parameters())
    assert not copy_of_dense.training and not other.training


def test_cached_teacher_logits_serve_every_batch(
    tmp_path: Path, digits: DataBundle, trained: nn.Module
) -> None:
    from torchshrink.distill import DistillConfig, Teacher

    model, cfg = _kd_setup(trained)
    cfg = cfg.model_copy(update={"distill": DistillConfig(alpha=0.7, cache=True)})
    t = Teacher(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), cache=True)
    r = deep_compression(model, digits, config=cfg, path=tmp_path / "cached.ts", teacher=t)
    assert t.cached_samples == 1438  # the digits training split
    # 1438 samples / 64 = 23 batches per epoch, one pruning + one centroid epoch, all cached.
    assert t.cache_hits == 46 and t.cache_misses == 0
    assert r.stage("huffman").accuracy > 0.5


def test_bad_teacher_is_refused_before_training(digits: DataBundle, trained: nn.Module) -> None:
    model, cfg = _kd_setup(trained)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(
        ConfigError, match=r"teacher: gives logits of shape \(1, 3\), the model gives \(1, 10\)"
    ):
        deep_compression(model, digits, config=cfg, path="/nonexistent/x.ts", teacher=three)
    with pytest.raises(
        ConfigError, match=r"teacher: does not run on the model's inputs \(1, 1, 8, 8\)"
    ):
        deep_compression(
            model, digits, config=cfg, path="/nonexistent/x.ts", teacher=nn.Linear(5, 10)
        )
    with pytest.raises(ConfigError, match=r"teacher 1: expected an nn\.Module, got str"):
        bad: list = [three, "t"]
        deep_compression(model, digits, config=cfg, path="/nonexistent/x.ts", teacher=bad)
    with pytest.raises(ConfigError, match="teacher 0: is the model being compressed"):
        deep_compression(model, digits, config=cfg, path="/nonexistent/x.ts", teacher=model)
    plain = cfg.model_copy(update={"distill": None})
    with pytest.raises(ConfigError, match=r"teacher: given but config\.distill is None"):
        deep_compression(model, digits, config=plain, path="/nonexistent/x.ts", teacher=three)
    assert _same(state, model.state_dict())


def test_fold_dead_removes_empty_neurons_after_the_centroids(
    tmp_path: Path, digits: DataBundle, trained: nn.Module
) -> None:
    model = _copy_of(trained)
    cfg = DeepCompressionConfig(
        layer_ratios={"fc1": 0.97, "fc2": 0.9, "fc3": 0.5},
        prune_steps=1,
        prune_finetune=_FT,
        fc_bits=4,
        centroid_finetune=None,
        fold_dead=True,
    )
    r = deep_compression(model, digits, config=cfg, path=tmp_path / "fold.ts")
    assert [s.stage for s in r.stages][-2:] == ["folded", "huffman"]
    fc1_rows = int((model.fc1.weight != 0).any(1).sum())  # the model given: pruned in place
    assert fc1_rows < 300 and r.model.fc1.out_features == fc1_rows  # dead neurons are gone
    assert r.stage("folded").params < r.stage("centroids").params
    # Exact up to float rounding: at most one of the 359 test images changes its prediction.
    assert abs(r.stage("folded").accuracy - r.stage("centroids").accuracy) <= 1 / 359 + 1e-9
    assert r.stage("folded").file_bytes < r.stage("centroids").file_bytes
    assert r.stage("huffman").dense_bytes == r.stage("dense").dense_bytes  # the original's
    loaded = torchshrink.load(r.path)
    x = digits.example_inputs(32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), r.model.eval()(x))
    kept = {layer.name: layer.kept for layer in r.layers}
    assert kept["fc1"] == pytest.approx(0.03, abs=0.002)  # of the original fc1's weights


def test_bias_bits_share_biases_and_shrink_the_file(
    tmp_path: Path, digits: DataBundle, trained: nn.Module
) -> None:
    files = {}
    for bias_bits in (None, 2):
        model = _copy_of(trained)
        cfg = DeepCompressionConfig(
            layer_ratios={"fc1": 0.95, "fc2": 0.9, "fc3": 0.5},
            prune_steps=1,
            prune_finetune=_FT,
            fc_bits=3,
            centroid_finetune=_FT.model_copy(update={"lr": 1e-3}),
            bias_bits=bias_bits,
        )
        r = deep_compression(model, digits, config=cfg, path=tmp_path / f"b{bias_bits}.ts")
        files[bias_bits] = r.stage("huffman").file_bytes
        biases = [m.bias for m in (model.fc1, model.fc2, model.fc3)]
        distinct = [int(torch.unique(b[b != 0]).numel()) for b in biases]
        assert all(d <= 4 for d in distinct) if bias_bits else distinct == [300, 100, 10]
        loaded = torchshrink.load(r.path)  # bit for bit, shared biases included
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    # 410 float32 biases (1,640 bytes) become 2-bit indices and three 4-value codebooks
    assert files[None] - files[2] > 1000
