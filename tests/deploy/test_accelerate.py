"""accelerate: every backend measured against fp32, the fastest within the bound chosen."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.deploy.accelerate import AccelerateConfig, accelerate, fidelity_of

pytest.importorskip("onnxruntime")

FAST = AccelerateConfig(rounds=2, warmup=0)
# Each backend's own agreement bound with fp32 (mean cosine of the primary output).
BOUNDS = {
    "fp32": 0.99999,
    "bf16": 0.99,
    "bf16_autocast": 0.99,
    "ort_fp32": 0.99999,
    "ort_fused_fp32": 0.99999,
    "torch_dynamic_int8": 0.97,
    "ort_dynamic_int8": 0.97,
    "ort_int8": 0.97,
    "ort_int8_mixed": 0.99,
    "ort_int8_smooth": 0.99,
}


@pytest.fixture(scope="module")
def text_model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    m = create_zoo_model(
        "transformer", vocab_size=64, max_len=16, dim=32, depth=1, heads=2, num_classes=5
    ).eval()
    return m, torch.randint(0, 64, (8, 16))  # (B, L) token ids


def test_transformer_every_candidate_within_its_bound_and_failures_reported(
    text_model: tuple[nn.Module, torch.Tensor],
) -> None:
    model, x = text_model
    names = ["bf16", "bf16_autocast", "ort_fp32", "ort_int8", "ort_int8_mixed", "ort_int8_smooth",
             "ort_static_int8"]  # fmt: skip
    fast, rep = accelerate(model, x, fidelity=0.99, candidates=names, threads=1, config=FAST)
    by_name = {c.name: c for c in rep.candidates}
    assert list(by_name) == ["fp32", *names]
    # No calibration: the static candidate fails and is reported, not raised.
    static = by_name.pop("ort_static_int8")
    assert static.error is not None and "calibration" in static.error
    assert static.meets_bound is False
    for name, c in by_name.items():
        assert c.error is None, name
        assert c.fidelity is not None and c.fidelity.cosine >= BOUNDS[name], name
        assert c.median_ms > 0 and c.speedup > 0
    assert by_name["ort_int8"].low_precision.get("DynamicQuantizeMatMul", 0) >= 2
    assert "Linear[bf16]" in by_name["bf16"].low_precision
    # Smoothed: every weight MatMul still int8, the alpha search reported in the note.
    smooth = by_name["ort_int8_smooth"]
    assert smooth.low_precision.get("DynamicQuantizeMatMul", 0) >= 2
    assert smooth.note.startswith("alpha ") and "cosine by alpha: 0.65:" in smooth.note
    chosen = by_name[rep.chosen]
    assert chosen.meets_bound and chosen.fidelity is not None and chosen.fidelity.cosine >= 0.99
    assert rep.chosen_ms == chosen.median_ms
    with torch.inference_mode():
        ref = model(x)
    assert fidelity_of(fast(x), ref).cosine >= 0.99
    assert torch.get_num_threads() == 1  # restored (the test session runs one thread)
    assert rep.chosen in rep.table()


def test_cnn_on_digits_top1_and_int8_ops(digits_cnn: nn.Module, digits: DataBundle) -> None:
    x = torch.stack([digits.test[i][0] for i in range(64)])  # (64, 1, 8, 8)
    names = ["torch_dynamic_int8", "ort_fp32", "ort_dynamic_int8"]
    _, rep = torchshrink.accelerate(
        digits_cnn, x, fidelity=0.999, candidates=names, threads=1,
        config=AccelerateConfig(rounds=2, warmup=0, min_top1=0.95),
    )  # fmt: skip
    by_name = {c.name: c for c in rep.candidates}
    for name, c in by_name.items():
        assert c.error is None, name
        assert c.fidelity is not None and c.fidelity.cosine >= BOUNDS[name], name
        assert c.fidelity.top1_agreement is not None and c.fidelity.top1_agreement >= 0.95
    assert by_name["torch_dynamic_int8"].low_precision == {"DynamicQuantizedLinear": 2}
    assert by_name["torch_dynamic_int8"].float_ops == {"Conv2d": 2}
    assert by_name["ort_dynamic_int8"].low_precision
    assert by_name["ort_fp32"].float_ops and not by_name["ort_fp32"].low_precision
    assert by_name[rep.chosen].meets_bound
    # convolutions with no calibration data: the report says how to get them into int8
    assert len(rep.hints) == 1 and "calibration=" in rep.hints[0]
    assert "hint: no calibration data" in rep.table()


def test_bound_nothing_meets_falls_back_to_fp32() -> None:
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    back_to_back = AccelerateConfig(rounds=2, warmup=0, settle_s=0)  # no pause between runs
    _, rep = accelerate(net, torch.randn(4, 16), fidelity=1.0, candidates=["bf16"],
                        threads=1, config=back_to_back)  # fmt: skip
    assert rep.chosen == "fp32"
    assert rep.speedup == pytest.approx(1.0)
    assert rep.hints == ()  # no convolution: nothing to say


def test_fidelity_numbers() -> None:
    ref = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    out = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    f = fidelity_of(out, ref)
    assert f.min_cosine == pytest.approx(2**-0.5)
    assert f.cosine == pytest.approx((2**-0.5 + 1) / 2)
    assert f.max_abs_diff == pytest.approx(1.0)
    assert f.top1_agreement == pytest.approx(1.0)


def test_bad_arguments_raise() -> None:
    net = nn.Linear(4, 2)
    with pytest.raises(ConfigError, match=r"unknown candidate.*'tpu_int4'"):
        accelerate(net, torch.randn(2, 4), candidates=["tpu_int4"])
    with pytest.raises(ConfigError, match="'fidelity' must be in"):
        accelerate(net, torch.randn(2, 4), fidelity=1.5, candidates=[])
    with pytest.raises(ValueError, match="settle_s"):
        AccelerateConfig(settle_s=-0.1)
    with pytest.raises(ConfigError, match="'threads' must be at least 1"):
        accelerate(net, torch.randn(2, 4), threads=0, candidates=[])
