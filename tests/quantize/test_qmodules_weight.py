"""Quant layers expose ``weight`` / ``bias`` as float tensors, so code that reads them works.

The case that matters is PyTorch's fused ``nn.TransformerEncoderLayer`` inference path, which
reads ``linear1.weight`` etc. directly instead of calling the layers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from torchshrink.core.zoo import create_zoo_model
from torchshrink.quantize.codebook import quantize_codebook
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import quantize
from torchshrink.quantize.qmodules import QuantConv2d, QuantLinear
from torchshrink.quantize.spec import QuantSpec

_FUSED = "aten::_transformer_encoder_layer_fwd"


def _tiny_transformer() -> nn.Module:
    return create_zoo_model(
        "transformer", vocab_size=50, max_len=16, dim=32, depth=2, heads=2, num_classes=3
    ).eval()


def _run(model: nn.Module, x: torch.Tensor, *, fastpath: bool = True) -> tuple[torch.Tensor, bool]:
    """Output under no_grad, and whether the fused encoder-layer kernel ran."""
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            y = model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    return y, any(e.name == _FUSED for e in prof.events())


def test_weight_and_bias_are_the_dequantized_tensors() -> None:
    lin = nn.Linear(8, 4)
    q = QuantLinear(lin, QuantSpec.preset("int8c"), QuantSpec.preset("uint8"), mode="static")
    q.set_input_qparams(torch.tensor(0.05), torch.tensor(128))
    assert q.weight.shape == (4, 8) and q.weight.dtype == torch.float32
    assert torch.equal(q.weight, q.dequantized_weight())
    assert (
        float((q.weight - lin.weight.detach()).abs().max())
        <= float(q.weight_scale.max()) / 2 + 1e-7
    )
    assert not q.weight.requires_grad
    bias = q.bias
    assert bias is not None and torch.equal(bias, q.effective_bias())
    # static: the bias is the int32-rounded one the kernel adds, not the float one
    codes = bias.double() / q.bias_scale().double()
    assert float((codes - codes.round()).abs().max()) < 1e-3
    with pytest.raises(AttributeError):
        q.weight = torch.zeros(4, 8)  # type: ignore[misc]
    conv = QuantConv2d(nn.Conv2d(3, 5, 3, bias=False), QuantSpec.preset("int4c"))
    assert conv.weight.shape == (5, 3, 3, 3) and conv.bias is None


def test_codebook_layers_have_weight_too() -> None:
    net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    q = quantize_codebook(net, "ternary")
    levels = torch.unique(q[0].weight[0])
    assert q[0].weight.shape == (8, 16) and levels.numel() <= 3
    assert torch.equal(q[0].bias, net[0].bias.detach())


def test_quantized_transformer_runs_the_fused_path_in_eval() -> None:
    model = _tiny_transformer()
    x = model.example_inputs(4)  # (4, 16) token ids
    q = quantize(model, QuantConfig.preset("w8", strict=False))
    assert isinstance(q.layers[0].linear1, QuantLinear)
    fused, ran = _run(q, x)
    assert ran  # the fused kernel read the quant layers' .weight / .bias
    unfused, ran_plain = _run(q, x, fastpath=False)
    assert not ran_plain
    assert fused.shape == (4, 3)
    assert float((fused - unfused).abs().max()) < 1e-5
    with torch.no_grad():
        ref = model(x)
    assert float((fused - ref).abs().max()) < 0.02 * float(ref.abs().max()) + 1e-3


def test_activation_quantized_layers_keep_the_fused_path_away() -> None:
    # the fused kernel would skip the input quantizer of a static / dynamic layer
    model = _tiny_transformer()
    x = model.example_inputs(8)
    for cfg, calib in (
        (QuantConfig.preset("w8a8", strict=False, calibration_size=8), [x]),
        (QuantConfig.preset("w8a8_dynamic", strict=False), None),
    ):
        q = quantize(model, cfg, calibration=calib)
        y, ran = _run(q, x)
        unfused, _ = _run(q, x, fastpath=False)
        assert not ran
        assert torch.equal(y, unfused)
