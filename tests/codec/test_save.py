"""Whole models: prune + cluster + save_compressed, load in a fresh process, sizes, corrupt files."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import torchshrink
from torchshrink.cluster import cluster_weights
from torchshrink.codec import inspect_compressed, save_compressed
from torchshrink.codec.tables import pack_lengths
from torchshrink.core.errors import ConfigError, ModelFileError
from torchshrink.core.modelfile import DOC_TENSOR, to_bytes
from torchshrink.measure.size import zstd_size


def _prune_(model: nn.Module, amount: float = 0.92) -> None:
    """Magnitude-prune every Linear / Conv weight to ``amount`` zeros (by hand, in place)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                w = m.weight
                threshold = w.abs().flatten().kthvalue(int(w.numel() * amount)).values
                w.mul_(w.abs() > threshold)


def _deep_compressed(name: str, bits: int | dict[str, int]) -> nn.Module:
    model = torchshrink.load_model(f"zoo:{name}")
    _prune_(model)
    cluster_weights(model, bits)
    return model


@pytest.fixture(scope="module")
def lenet300(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Any]:
    torch.manual_seed(0)
    model = _deep_compressed("lenet300", 5)
    path = tmp_path_factory.mktemp("codec") / "lenet300.safetensors"
    return model, path, save_compressed(model, path)


_FRESH = """
import sys, torch, torchshrink
from safetensors.torch import save_file
m = torchshrink.load(sys.argv[1])
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    out = {"logits": m(x)}
out.update({"w/" + k: v.contiguous() for k, v in m.state_dict().items()})
save_file(out, sys.argv[3])
"""


def test_fresh_process_load_is_bit_exact(lenet300: tuple[nn.Module, Path, Any]) -> None:
    model, path, _ = lenet300
    x = torch.rand(16, 1, 28, 28)
    torch.save(x, path.with_name("x.pt"))
    result = path.with_name("out.safetensors")
    subprocess.run(
        [sys.executable, "-c", _FRESH, str(path), str(path.with_name("x.pt")), str(result)],
        check=True,
        timeout=120,
    )
    out = load_file(str(result))
    state = model.state_dict()
    assert sorted(k[2:] for k in out if k.startswith("w/")) == sorted(state)
    for key, value in state.items():
        assert torch.equal(out["w/" + key], value), key
    model.eval()
    with torch.no_grad():
        assert torch.equal(out["logits"], model(x))


def test_size_breakdown_and_ratio(lenet300: tuple[nn.Module, Path, Any]) -> None:
    model, path, report = lenet300
    assert report.file_bytes == path.stat().st_size
    assert inspect_compressed(path) == report
    assert sum(report.breakdown().values()) == report.file_bytes
    assert report.dense_bytes == 4 * sum(p.numel() for p in model.parameters())  # 266,610 * 4
    assert report.plain_bytes == 4 * (300 + 100 + 10)  # the biases
    rows = {t.key: t for t in report.tensors}
    assert {rows[f"fc{i}.weight"].mode for i in (1, 2, 3)} == {"sparse"}
    assert rows["fc1.weight"].nonzeros == int((model.fc1.weight != 0).sum())
    assert rows["fc1.weight"].nonzeros == pytest.approx(0.08 * 235_200, abs=5)
    assert rows["fc1.weight"].clusters <= 32
    assert report.ratio > 30  # measured ~45x for untrained LeNet-300-100 (Deep Compression: 40x)
    # Huffman coding beats zstd of the same clustered model stored densely by 3x or more
    assert zstd_size(to_bytes(model))[0] > 3 * report.file_bytes


def test_model_is_unchanged_by_saving(lenet300: tuple[nn.Module, Path, Any]) -> None:
    model, path, _ = lenet300
    before = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    save_compressed(model, path.with_name("again.safetensors"))
    after = model.state_dict(keep_vars=True)
    assert all(after[k] is before[k] for k in before)  # the very same Parameter objects
    assert isinstance(model.fc1.weight, nn.Parameter) and model.fc1.weight.shape == (300, 784)


def test_lenet5_conv_8_bits_fc_5_bits(tmp_path: Path) -> None:
    model = _deep_compressed("lenet5", {"conv.*": 8, "fc.*": 5})
    report = save_compressed(model, tmp_path / "lenet5.safetensors")
    back = torchshrink.load(report.path)
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert report.ratio > 30  # measured ~46x (Deep Compression: 39x for trained LeNet-5)
    rows = {t.key: t for t in report.tensors}
    assert rows["conv2.weight"].clusters <= 256 and rows["fc1.weight"].clusters <= 32


def test_options(tmp_path: Path) -> None:
    model = _deep_compressed("lenet300", 4)
    report = save_compressed(
        model, tmp_path / "o.safetensors", index_bits={"fc1": 3}, ignore=["fc3"], metadata={"a": 1}
    )
    rows = {t.key: t for t in report.tensors}
    assert rows["fc1.weight"].index_bits == 3
    assert rows["fc3.weight"].mode == "plain"
    assert torchshrink.core.modelfile.read_header(report.path)["compression"]["a"] == 1
    assert torch.equal(torchshrink.load(report.path).fc3.weight, model.fc3.weight)
    with pytest.raises(ConfigError, match="may not use the keys"):
        save_compressed(model, tmp_path / "x.safetensors", metadata={"codec": "zip"})
    with pytest.raises(ConfigError, match="index_bits must be in"):
        save_compressed(model, tmp_path / "x.safetensors", index_bits=0)


def _rewrite(path: Path, change: Callable[[dict[str, Any], dict[str, torch.Tensor]], None]) -> None:
    """Rewrite a compact model file after ``change(compression, tensors)``, CRC recomputed."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(zlib.decompress(tensors[DOC_TENSOR].numpy().tobytes()))
    change(doc["compression"], tensors)
    if "extra/huffman" in tensors:
        doc["compression"]["crc32"] = zlib.crc32(tensors["extra/huffman"].numpy().tobytes())
    packed = zlib.compress(json.dumps(doc).encode())
    tensors[DOC_TENSOR] = torch.frombuffer(bytearray(packed), dtype=torch.uint8)
    save_file(tensors, str(path), metadata=meta)


def _span(comp: dict[str, Any], key: str, part: str) -> tuple[int, int]:
    """Where ``part`` of coded tensor ``key`` lies in the one blob."""
    at = 0
    for k, entry in comp["tensors"].items():
        for name, n in entry["parts"].items():
            if (k, name) == (key, part):
                return at, at + n
            at += n
    raise KeyError((key, part))


def _splice(
    comp: dict[str, Any], tensors: dict[str, torch.Tensor], key: str, part: str, new: torch.Tensor
) -> None:
    lo, hi = _span(comp, key, part)
    blob = tensors["extra/huffman"]
    tensors["extra/huffman"] = torch.cat([blob[:lo], new, blob[hi:]]).clone()
    comp["tensors"][key]["parts"][part] = new.numel()


def _truncate_positions(comp: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    lo, hi = _span(comp, "fc1.weight", "gaps")
    _splice(comp, tensors, "fc1.weight", "gaps", tensors["extra/huffman"][lo : hi - 3].clone())


def _bad_table(comp: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    ones = torch.from_numpy(pack_lengths(np.ones(3, dtype=np.int64)))  # Kraft sum 1.5 > 1
    _splice(comp, tensors, "fc2.weight", "index_table", ones)


def _drop_blob(comp: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    del tensors["extra/huffman"]


def _unknown_codec(comp: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    comp["codec"] = "os.system"


def _short_parts(comp: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    comp["tensors"]["fc3.bias"]["parts"]["values"] -= 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_truncate_positions, r"fc1\.weight.*Huffman stream"),
        (_bad_table, r"fc2\.weight.*Kraft sum"),
        (_drop_blob, r"has no blob tensor"),
        (_unknown_codec, r"codec 'os\.system'.*cannot decode"),
        (_short_parts, r"the entries total \d+ bytes, the blob has"),
    ],
)
def test_corrupt_files_raise(
    lenet300: tuple[nn.Module, Path, Any], tmp_path: Path, change: Any, message: str
) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(lenet300[1].read_bytes())
    _rewrite(path, change)
    with pytest.raises(ModelFileError, match=message):
        torchshrink.load(path)


def test_flipped_bit_and_truncated_file_raise(
    lenet300: tuple[nn.Module, Path, Any], tmp_path: Path
) -> None:
    data = bytearray(lenet300[1].read_bytes())
    data[-100] ^= 0x10  # inside the last coded blob
    (tmp_path / "flip.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        torchshrink.load(tmp_path / "flip.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(bytes(data[:-500]))
    with pytest.raises(ModelFileError, match=r"truncated|not in safetensors|cannot read"):
        torchshrink.load(tmp_path / "cut.safetensors")


def test_header_length_never_sniffs_as_pickle(tmp_path: Path) -> None:
    # A header length whose low byte is 0x80 (or "PK") must still read as safetensors, not be
    # refused as a pickle / zip. Sweep every low byte of the header length.
    from torchshrink.core.safeformat import read_head, sniff

    model = torchshrink.load_model(f"{Path(__file__).parents[1]}/core/assets/user_models.py:mlp")
    with torch.no_grad():
        model[0].weight.copy_(torch.round(model[0].weight * 4) / 4)
    low_bytes = set()
    # A compact file's header hardly varies, so vary a plain file's metadata for the sweep.
    for i in range(256):
        path = torchshrink.save(model, tmp_path / "m.safetensors", metadata={"n": "x" * i})
        head = read_head(path, 9)
        assert sniff(head) == "safetensors"
        low_bytes.add(head[0])
        if head[0] == 0x80:
            assert torch.equal(torchshrink.load(path)[0].weight, model[0].weight)
    assert 0x80 in low_bytes
    report = save_compressed(model, tmp_path / "c.safetensors")
    assert sniff(read_head(report.path, 9)) == "safetensors"
    assert torch.equal(torchshrink.load(report.path)[0].weight, model[0].weight)
