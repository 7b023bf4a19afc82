"""fold_attention_scale: attention's 1/sqrt(d) moved into the query projection, same function."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.quantize.smooth import fold_attention_scale

transformers = pytest.importorskip("transformers")


def _tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    return transformers.BertModel(cfg).eval()


def test_bert_scale_folded_into_query_same_output() -> None:
    bert = _tiny_bert()
    ids = torch.randint(0, 64, (3, 10))  # (B, L)
    mask = torch.ones(3, 10).long()
    mask[:, 7:] = 0  # padded tail
    folded = fold_attention_scale(bert)
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
        out = folded(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, D)
    assert out.shape == (3, 10, 32)
    assert torch.allclose(out, ref, atol=1e-5)
    head_dim = 32 // 4
    for orig, new in zip(bert.encoder.layer, folded.encoder.layer, strict=True):
        a, b = orig.attention.self, new.attention.self
        assert b.scaling == 1.0
        assert a.scaling == pytest.approx(head_dim**-0.5)  # the original is left alone
        assert torch.allclose(b.query.weight, a.query.weight * head_dim**-0.5)
        assert torch.allclose(b.query.bias, a.query.bias * head_dim**-0.5)
        assert torch.equal(b.key.weight, a.key.weight)  # only the query moves


def test_models_without_bert_attention_are_unchanged() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    out = fold_attention_scale(net)
    assert out is not net
    for p, q in zip(net.parameters(), out.parameters(), strict=True):
        assert torch.equal(p, q)
