"""Which modules ``ptq.quantize`` quantizes, keeps float, or refuses (``strict``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.errors import UnsupportedLayerError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import get_quant_report, quantize
from torchshrink.quantize.qmodules import QuantLinear


class _Tokens(nn.Module):
    """A container that owns a parameter itself (a class token) beside its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.proj = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.proj(x)], dim=1)  # (B, 1+T, 6)
        return self.head(h[:, 0])  # (B, 2)


def _transformer() -> nn.Module:
    return create_zoo_model(
        "transformer", vocab_size=50, max_len=16, dim=32, depth=1, heads=2, num_classes=3
    ).eval()


def test_a_containers_own_parameter_stays_float() -> None:
    torch.manual_seed(0)
    net = _Tokens().eval()
    x = torch.randn(4, 3, 6)
    q = quantize(net, QuantConfig.preset("w8a8", calibration_size=4), calibration=[x])
    assert isinstance(q.proj, QuantLinear) and isinstance(q.head, QuantLinear)
    assert torch.equal(q.cls, net.cls)
    report = get_quant_report(q)
    assert report is not None and report.num_quantized == 2
    assert report.float_layers == ["cls"]
    assert report.layers[0].reason == "parameter of a container"
    with torch.no_grad():
        assert float((q(x) - net(x)).abs().max()) < 0.05


def test_zoo_transformer_root_parameter_is_not_an_error() -> None:
    model = _transformer()
    # strict (the default): the real unsupported layers are named, the root is not
    with pytest.raises(UnsupportedLayerError, match="cannot quantize 2 layer") as err:
        quantize(model, QuantConfig.preset("w8"))
    assert "embed (Embedding), layers.0.self_attn (MultiheadAttention)" in str(err.value)
    assert "<root>" not in str(err.value) and "pos_embed" not in str(err.value)
    cfg = QuantConfig.preset("w8", ignore=("embed", r"layers\.\d+\.self_attn"))
    q = quantize(model, cfg)
    report = get_quant_report(q)
    assert report is not None
    assert report.num_quantized == 3  # linear1, linear2, head
    assert report.float_layers == ["pos_embed", "embed", "layers.0.self_attn"]
    x = model.example_inputs(2)
    with torch.no_grad():
        assert q(x).shape == (2, 3)


def test_strict_false_keeps_unsupported_layers_float_and_says_so() -> None:
    model = _transformer()
    q = quantize(model, QuantConfig.preset("w4", strict=False))
    report = get_quant_report(q)
    assert report is not None
    reasons = {r.name: r.reason for r in report.layers if r.kind == "float"}
    assert reasons == {
        "pos_embed": "parameter of a container",
        "embed": "unsupported layer type",
        "layers.0.self_attn": "unsupported layer type",
    }
    assert type(q.embed) is nn.Embedding and type(q.layers[0].self_attn) is nn.MultiheadAttention
    # a leaf layer of a type we do not quantize (Conv1d) is a real unsupported layer
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(UnsupportedLayerError, match=r"0 \(Conv1d\)"):
        quantize(net, QuantConfig.preset("w8"))
    lenient = quantize(net, QuantConfig.preset("w8", strict=False))
    assert type(lenient[0]) is nn.Conv1d and isinstance(lenient[2], QuantLinear)
    assert lenient(torch.randn(3, 1, 6)).shape == (3, 2)


def test_strict_round_trips_in_config_json() -> None:
    cfg = QuantConfig.preset("w8", strict=False)
    again = QuantConfig.model_validate_json(cfg.model_dump_json())
    assert again.strict is False and QuantConfig().strict is True
