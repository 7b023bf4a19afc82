"""Batch-split ONNX Runtime candidates: same outputs as one session, reuse of the base build."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.deploy import ort_backends
from torchshrink.deploy.accelerate import AccelerateConfig, accelerate
from torchshrink.deploy.backends import BuildContext
from torchshrink.deploy.ort_split import SplitSessions, build_split

pytest.importorskip("onnxruntime")


def _ctx(model: torch.nn.Module, x: torch.Tensor, threads: int = 2) -> BuildContext:
    return BuildContext(model.eval(), x, threads=threads, workdir=Path(tempfile.mkdtemp()))


def test_split_fp32_matches_the_single_session_and_reuses_its_file() -> None:
    torch.manual_seed(0)
    model = create_zoo_model("transformer", vocab_size=50, num_classes=3, max_len=16)
    x = torch.randint(0, 50, (7, 16))  # 7 sequences: slices of 4 and 3
    ctx = _ctx(model, x)
    split = build_split("ort_fp32+split", ctx)
    base = ort_backends.build("ort_fp32", ctx)  # cached: the file the split twin runs
    assert isinstance(split.run, SplitSessions) and len(split.run.sessions) == 2
    assert str(base.run.session.path) == str(split.run.sessions[0].path)
    with torch.inference_mode():
        ref = model(x)
    out = split.run(x)
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) < 1e-4
    assert float((out - base.run(x)).abs().max()) < 1e-5
    assert split.note == "batch split across 2 single-thread sessions"
    one = split.run(x[:1])  # one sample: no split, first session
    assert float((one - ref[:1]).abs().max()) < 1e-4


def test_accelerate_measures_split_twins_and_reports_their_fidelity() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)
    ).eval()
    x = torch.randn(16, 32)
    _, rep = accelerate(
        model,
        x,
        candidates=["ort_int8", "ort_int8+split"],
        threads=2,
        fidelity=0.99,
        config=AccelerateConfig(rounds=2, settle_s=0),
    )
    by_name = {c.name: c for c in rep.candidates}
    split = by_name["ort_int8+split"]
    assert split.error is None and split.median_ms > 0
    assert split.fidelity is not None and split.fidelity.cosine > 0.99
    assert split.low_precision == by_name["ort_int8"].low_precision  # same int8 graph
    assert "batch split across 2" in split.note


def test_bad_split_names_are_refused() -> None:
    ctx = _ctx(torch.nn.Linear(4, 2), torch.randn(2, 4))
    with pytest.raises(ConfigError, match="not an ONNX Runtime backend name followed by"):
        build_split("bf16+split", ctx)
    with pytest.raises(ConfigError, match="not an ONNX Runtime backend name followed by"):
        build_split("ort_int8", ctx)
