"""model_size: serialized bytes, zstd bytes, file on disk, fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from torchshrink.core.errors import ModelFileError
from torchshrink.core.modelspec import ModelSpec, attach_spec
from torchshrink.measure.size import model_size, state_dict_bytes, zstd_size


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_file_bytes_close_to_four_per_param() -> None:
    m = mlp()
    s = model_size(m)
    n = n_params(m)  # 34,186
    assert s.source == "safetensors"
    assert 4 * n < s.file_bytes < 4 * n * 1.02  # header is small
    assert "no ModelSpec" in s.note


def test_zstd_of_90_percent_zero_model_is_much_smaller() -> None:
    dense, sparse = mlp(), mlp()
    with torch.no_grad():
        for p in sparse.parameters():
            p.mul_((torch.rand_like(p) < 0.1).float())
    d, s = model_size(dense), model_size(sparse)
    assert d.file_bytes == s.file_bytes
    assert d.zstd_bytes > 0.85 * d.file_bytes  # random floats barely compress
    assert s.zstd_bytes < 0.3 * d.zstd_bytes
    assert d.zstd_level == 19


def test_file_path_reports_size_on_disk(tmp_path: Path) -> None:
    m = mlp()
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    s = model_size(m, file_path=path)
    assert s.source == "file"
    assert s.file_bytes == path.stat().st_size
    with pytest.raises(ModelFileError, match=r"absent\.safetensors"):
        model_size(m, file_path=tmp_path / "absent.safetensors")


def test_model_with_spec_is_serialized() -> None:
    m = mlp()
    attach_spec(m, ModelSpec(ref="zoo:none"))
    s = model_size(m)
    # the torchshrink file when core.modelfile exists, else the safetensors fallback
    assert s.source in ("modelfile", "safetensors")
    assert s.file_bytes > 4 * n_params(m)


def test_tied_weights_stored_once_and_zstd_levels() -> None:
    emb, head = nn.Embedding(100, 16), nn.Linear(16, 100, bias=False)
    head.weight = emb.weight
    data = state_dict_bytes(nn.ModuleList([emb, head]))
    assert 6400 < len(data) < 6400 + 512
    assert zstd_size(bytes(1 << 20), level=3)[1] == 3
    size, level = zstd_size(bytes(1 << 20))  # 1 MiB of zeros
    assert size < 1000 and level == 19
