"""smooth: activation outliers moved into the weights, the fp32 function unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.errors import EmptyDataError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.quantize.smooth import (
    ScaledInputLinear,
    SmoothConfig,
    activation_absmax,
    smooth,
)


def _fake_int8(x: torch.Tensor) -> torch.Tensor:
    """Per-tensor symmetric int8 round trip, as dynamic activation quantization does."""
    scale = x.abs().max().clamp(min=1e-12) / 127
    return (x / scale).round().clamp(-127, 127) * scale


def _int8_error(model: nn.Module, x: torch.Tensor, layers: list[str]) -> float:
    """Mean relative error of the named Linears' outputs with int8-rounded inputs."""
    errors = []
    modules = dict(model.named_modules())
    for name in layers:
        m = modules[name]
        lin = m.linear if isinstance(m, ScaledInputLinear) else m
        seen: list[torch.Tensor] = []
        h = m.register_forward_pre_hook(lambda _m, a, s=seen: s.append(a[0]) and None)
        with torch.no_grad():
            model(x)
        h.remove()
        inp = seen[0] * m.inv_scale if isinstance(m, ScaledInputLinear) else seen[0]  # (B, L, D)
        with torch.no_grad():
            exact = lin(inp)
            approx = lin(_fake_int8(inp))
        errors.append(float((approx - exact).norm() / exact.norm()))
    return sum(errors) / len(errors)


def _tiny_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    model = transformers.BertModel(cfg).eval()
    with torch.no_grad():  # outlier channels, as trained transformers have in LayerNorm gains
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight[:2] *= 20.0
    return model


def test_transformer_fp32_unchanged_layernorm_folded_and_int8_error_drops() -> None:
    torch.manual_seed(0)
    m = create_zoo_model(
        "transformer", vocab_size=64, max_len=16, dim=32, depth=2, heads=2, num_classes=5
    ).eval()
    with torch.no_grad():
        for i in range(2):  # an outlier channel into each FFN input
            m.layers[i].norm2.weight[3] *= 30.0
    x = torch.randint(0, 64, (8, 16))  # (B, L)
    out, rep = smooth(m, [x[:4], x[4:]], config=SmoothConfig(alpha=0.5))
    with torch.no_grad():
        assert (out(x) - m(x)).abs().max() < 1e-5
    folded = {g.layers: g.folded_into for g in rep.groups}
    # Pre-norm blocks: norm2 feeds only linear1, so 1/s folds into it exactly.
    assert folded[("layers.0.linear1",)] == "layers.0.norm2"
    assert folded[("layers.1.linear1",)] == "layers.1.norm2"
    # linear2 is read by the encoder layer's fused fast path (its .weight): left alone.
    assert set(rep.skipped) == {"layers.0.linear2", "layers.1.linear2"}
    assert type(out.layers[0].linear2) is nn.Linear
    g0 = next(g for g in rep.groups if g.layers == ("layers.0.linear1",))
    assert g0.ratio_after < g0.ratio_before
    layers = ["layers.0.linear1", "layers.1.linear1"]
    assert _int8_error(out, x, layers) < 0.7 * _int8_error(m, x, layers)
    assert m.layers[0].norm2.weight[3] > 10  # the original is not changed


def test_bert_like_post_norm_uses_shared_mul_and_keeps_fp32() -> None:
    bert = _tiny_bert()
    ids = torch.randint(0, 64, (6, 12))  # (B, L)
    out, rep = smooth(bert, [{"input_ids": ids[:3]}, {"input_ids": ids[3:]}])
    with torch.no_grad():
        diff = out(input_ids=ids).last_hidden_state - bert(input_ids=ids).last_hidden_state
    assert diff.abs().max() < 1e-4
    # Post-norm: every LayerNorm also feeds a residual sum, so none absorbs 1/s; the output
    # projection's folds into the value projection's rows (attention is linear in V).
    into = {g.layers: g.folded_into for g in rep.groups}
    assert not any(t and "LayerNorm" in t for t in into.values())
    for i in range(2):
        p = f"encoder.layer.{i}.attention"
        assert into[(f"{p}.output.dense",)] == f"{p}.self.value"
        assert into[(f"encoder.layer.{i}.output.dense",)] is None  # after GELU: a Mul
    # Q, K and V read one tensor and share one inverse scale (one Mul after export).
    qkv = tuple(f"encoder.layer.0.attention.self.{p}" for p in ("query", "key", "value"))
    assert qkv in [g.layers for g in rep.groups]
    attn = out.encoder.layer[0].attention.self
    assert isinstance(attn.query, ScaledInputLinear)
    assert attn.query.inv_scale is attn.key.inv_scale is attn.value.inv_scale
    assert not rep.skipped
    layers = [*qkv, "encoder.layer.0.intermediate.dense", "encoder.layer.1.attention.self.query"]
    assert _int8_error(out, ids, layers) < 0.7 * _int8_error(bert, ids, layers)


def test_activation_absmax_and_errors() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    x = torch.tensor([[1.0, -4.0, 2.0], [-3.0, 0.5, 0.0]])
    stats = activation_absmax(net, [x[:1], x[1:]], ["0"])
    assert stats["0"].tolist() == [3.0, 4.0, 2.0]
    with pytest.raises(EmptyDataError, match="'calibration' holds no batch"):
        smooth(net, [])
    with pytest.raises(ValueError, match="alpha"):
        SmoothConfig(alpha=1.5)
