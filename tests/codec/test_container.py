"""The compact container (codec version 3), and version 1 / 2 files that must still load."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import torchshrink
from torchshrink.codec import inspect_compressed, save_compressed
from torchshrink.core.errors import ModelFileError
from torchshrink.core.modelfile import (
    DOC_TENSOR,
    META_KEY,
    from_bytes,
    read_header,
    to_bytes,
)
from torchshrink.core.modulestate import record_modules

DATA = Path(__file__).parent / "data"


def _clustered_lenet300() -> nn.Module:
    torch.manual_seed(0)
    m = torchshrink.load_model("zoo:lenet300")
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.copy_(torch.round(p * 32) / 32 * (torch.rand_like(p) < 0.05))
    return m


def test_version_1_file_still_loads_bit_exactly() -> None:
    old = DATA / "v1_lenet300_small.ts"  # written by codec version 1 (one blob per tensor)
    assert read_header(old)["compression"]["codec_version"] == 1
    model = torchshrink.load(old)
    plain = torchshrink.load(DATA / "v1_lenet300_small_plain.safetensors")
    assert list(model.state_dict()) == list(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    report = inspect_compressed(old)
    assert sum(report.breakdown().values()) == report.file_bytes == old.stat().st_size
    assert {t.key: t.mode for t in report.tensors}["fc1.weight"] == "sparse"


def test_version_2_file_still_loads_bit_exactly() -> None:
    old = DATA / "v2_lenet300_small.ts"  # the v1 file's model, written by codec version 2
    assert read_header(old)["compression"]["codec_version"] == 2
    model = torchshrink.load(old)
    plain = torchshrink.load(DATA / "v1_lenet300_small_plain.safetensors")
    for key, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    report = inspect_compressed(old)
    assert sum(report.breakdown().values()) == report.file_bytes == old.stat().st_size


def test_compact_file_header_and_round_trip(tmp_path: Path) -> None:
    model = _clustered_lenet300()
    report = save_compressed(model, tmp_path / "c.ts")
    doc = read_header(report.path)
    assert doc["version"] == 2 and doc["modules"] == "spec"
    assert doc["compression"]["codec_version"] == 3
    with safe_open(str(report.path), framework="pt") as f:
        assert sorted(f.keys()) == [DOC_TENSOR, "extra/huffman"]  # no per-tensor entries
    assert report.header_bytes < 700  # was ~2.7 KB with a verbose JSON header
    assert report.plain_bytes == 4 * (300 + 100 + 10)  # the biases, raw in the blob
    back = torchshrink.load(report.path)
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    plain = torchshrink.save(model, tmp_path / "plain.safetensors")
    assert read_header(plain)["version"] == 1  # plain files keep the version 1 layout


def _assert_same_model(back: nn.Module, model: nn.Module) -> None:
    assert record_modules(back) == record_modules(model)
    assert list(back.state_dict()) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_changed_architecture_records_only_the_changed_modules(tmp_path: Path) -> None:
    model = _clustered_lenet300()
    model.fc3 = nn.Sequential(nn.Linear(100, 4), nn.Linear(4, 10))  # factorized: not the spec's
    report = save_compressed(model, tmp_path / "c.ts")
    doc = read_header(report.path)
    assert doc["version"] == 3 and doc["modules"] == "spec+delta"
    delta = doc["module_delta"]
    assert list(delta["changed"]) == ["fc3", "fc3.0", "fc3.1"] and delta["removed"] == []
    assert delta["changed"]["fc3.0"]["attrs"]["out_features"] == 4
    back = torchshrink.load(report.path)
    assert isinstance(back.fc3, nn.Sequential)
    _assert_same_model(back, model)


def _shrunk_lenet5() -> nn.Module:
    # fc1 keeps 60 of its 500 neurons, as structured pruning or fold_dead_channels leave it
    torch.manual_seed(0)
    m = torchshrink.load_model("zoo:lenet5")
    fc1, fc2 = nn.Linear(800, 60), nn.Linear(60, 10)
    with torch.no_grad():
        fc1.weight.copy_(m.fc1.weight[:60])
        fc1.bias.copy_(m.fc1.bias[:60])
        fc2.weight.copy_(m.fc2.weight[:, :60])
        fc2.bias.copy_(m.fc2.bias)
        m.fc1, m.fc2 = fc1, fc2
        for p in m.parameters():
            p.copy_(torch.round(p * 16) / 16)
    return m


def test_shrunk_zoo_model_header_is_small(tmp_path: Path) -> None:
    model = _shrunk_lenet5()
    report = save_compressed(model, tmp_path / "c.ts")
    delta = read_header(report.path)["module_delta"]
    assert list(delta["changed"]) == ["fc1", "fc2"]  # conv1 .. pool2, flatten, relu1: as built
    # the same types as built: only the changed attributes are stored
    assert delta["changed"]["fc1"] == {"attrs": {"out_features": 60}}
    assert delta["changed"]["fc2"] == {"attrs": {"in_features": 60}}
    _assert_same_model(torchshrink.load(report.path), model)
    with safe_open(str(report.path), framework="pt") as f:
        stored = f.get_tensor(DOC_TENSOR).numpy().tobytes()
    doc = json.loads(zlib.decompress(stored))
    del doc["module_delta"]
    doc["modules"] = record_modules(model)  # the same document with the full record
    full = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 9)
    assert len(full) - len(stored) > 150  # measured: about 730 vs 540 bytes


def test_removed_module_is_replayed(tmp_path: Path) -> None:
    model = torchshrink.load_model("zoo:resnet20")
    model.layer2._modules.pop("2")  # a residual block taken out (as depth pruning does)
    model.eval()
    path = torchshrink.save(model, tmp_path / "r.safetensors", compact=True)
    delta = read_header(path)["module_delta"]
    assert delta["changed"] == {} and delta["removed"][0] == "layer2.2"
    back = torchshrink.load(path)
    assert "2" not in back.layer2._modules
    _assert_same_model(back, model)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back(x), model(x))
    assert torch.equal(from_bytes(to_bytes(model, compact=True))(x), model(x))


def test_malformed_module_delta_raises(tmp_path: Path) -> None:
    report = save_compressed(_shrunk_lenet5(), tmp_path / "c.ts")
    with safe_open(str(report.path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(zlib.decompress(tensors[DOC_TENSOR].numpy().tobytes()))
    for bad in ({"changed": {"fc1": 3}, "removed": []}, {"changed": {}}, [1, 2]):
        doc["module_delta"] = bad
        raw = bytearray(zlib.compress(json.dumps(doc).encode()))
        blob = torch.frombuffer(raw, dtype=torch.uint8)
        save_file({**tensors, DOC_TENSOR: blob}, str(tmp_path / "bad.ts"), metadata=meta)
        with pytest.raises(ModelFileError, match="module_delta must hold"):
            torchshrink.load(tmp_path / "bad.ts")
    doc["module_delta"] = {"changed": {"fc9": {"attrs": {"out_features": 3}}}, "removed": []}
    raw = bytearray(zlib.compress(json.dumps(doc).encode()))
    save_file(
        {**tensors, DOC_TENSOR: torch.frombuffer(raw, dtype=torch.uint8)},
        str(tmp_path / "bad.ts"),
        metadata=meta,
    )
    with pytest.raises(ModelFileError, match=r"module 'fc9'.*does not build"):
        torchshrink.load(tmp_path / "bad.ts")


def test_compact_bytes_round_trip() -> None:
    model = _clustered_lenet300()
    data = to_bytes(model, compact=True)
    assert len(data) < len(to_bytes(model))  # the deflated document is smaller
    assert torch.equal(from_bytes(data).fc2.weight, model.fc2.weight)


def test_corrupt_document_raises(tmp_path: Path) -> None:
    report = save_compressed(_clustered_lenet300(), tmp_path / "c.ts")
    with safe_open(str(report.path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    doc = tensors[DOC_TENSOR].clone()
    doc[len(doc) // 2] ^= 0xFF
    save_file({**tensors, DOC_TENSOR: doc}, str(tmp_path / "bad.ts"), metadata=meta)
    with pytest.raises(ModelFileError, match="document is corrupt"):
        torchshrink.load(tmp_path / "bad.ts")
    pointer = json.loads(meta[META_KEY])
    save_file(
        tensors,
        str(tmp_path / "nodoc.ts"),
        metadata={META_KEY: json.dumps({**pointer, "doc": "missing"})},
    )
    with pytest.raises(ModelFileError, match="has no document tensor"):
        read_header(tmp_path / "nodoc.ts")
