"""fuse_qkv: BERT's Q, K, V Linears merged into one, exact on the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.quantize.fuse_qkv import FusedQKVSelfAttention, fuse_qkv
from torchshrink.quantize.smooth import SmoothConfig, fold_attention_scale, smooth

transformers = pytest.importorskip("transformers")


def _tiny_bert(layers: int = 2) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    return transformers.BertModel(cfg).eval()


def _inputs(vocab: int = 64, n: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (n, length))
    mask = torch.ones_like(ids)
    mask[:, length - 3 :] = 0  # a padded tail, as a tokenizer makes it
    return {"input_ids": ids, "attention_mask": mask}  # (B, L) each


def _hidden(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**x).last_hidden_state  # (B, L, D)


def test_packaged_minilm_is_unchanged_up_to_float_rounding() -> None:
    from torchshrink.core.hfmodel import load_hf_model

    try:
        bert = load_hf_model("all-MiniLM-L6-v2").eval()
    except Exception as exc:  # the packaged model is optional
        pytest.skip(f"packaged all-MiniLM-L6-v2 not available: {exc}")
    fused = fuse_qkv(bert)
    x = _inputs(vocab=bert.config.vocab_size, n=2, length=24)
    assert sum(isinstance(m, FusedQKVSelfAttention) for m in fused.modules()) == 6
    assert not any(isinstance(m, FusedQKVSelfAttention) for m in bert.modules())  # a copy
    qkv = fused.encoder.layer[0].attention.self.qkv
    assert isinstance(qkv, nn.Linear) and tuple(qkv.weight.shape) == (3 * 384, 384)
    diff = (_hidden(fused, x) - _hidden(bert, x)).abs().max()
    assert float(diff) < 1e-5
    # After the attention scale fold too (the order the lean ORT path uses).
    folded = fold_attention_scale(bert)
    diff = (_hidden(fuse_qkv(folded), x) - _hidden(folded, x)).abs().max()
    assert float(diff) < 1e-5


def test_merged_weight_rows_are_query_key_value_in_order() -> None:
    bert = _tiny_bert(1)
    attn = bert.encoder.layer[0].attention.self
    qkv = fuse_qkv(bert).encoder.layer[0].attention.self.qkv
    assert torch.equal(qkv.weight[:32], attn.query.weight)
    assert torch.equal(qkv.weight[32:64], attn.key.weight)
    assert torch.equal(qkv.weight[64:], attn.value.weight)
    assert torch.equal(qkv.bias[64:], attn.value.bias)


def test_eager_and_sdpa_attention_agree_after_merging() -> None:
    bert, x = _tiny_bert(), _inputs()
    ref = _hidden(bert, x)
    fused = fuse_qkv(bert)
    fused.set_attn_implementation("eager")
    assert float((_hidden(fused, x) - ref).abs().max()) < 1e-5
    fused.set_attn_implementation("sdpa")
    assert float((_hidden(fused, x) - ref).abs().max()) < 1e-5


def test_smoothed_qkv_keeps_its_shared_input_scale() -> None:
    from torchshrink.quantize.smooth import ScaledInputLinear

    bert = _tiny_bert()
    x = _inputs()
    # The embeddings' LayerNorm also feeds the residual: layer 0's Q/K/V get a Mul in front.
    smoothed, _ = smooth(bert, [x], config=SmoothConfig(alpha=0.5, fold=False))
    attn = smoothed.encoder.layer[0].attention.self
    assert isinstance(attn.query, ScaledInputLinear)
    fused = fuse_qkv(smoothed)
    qkv = fused.encoder.layer[0].attention.self.qkv
    assert isinstance(qkv, ScaledInputLinear) and qkv.inv_scale.shape == (32,)
    assert float((_hidden(fused, x) - _hidden(smoothed, x)).abs().max()) < 1e-5


def test_exports_one_weight_matmul_for_qkv_per_layer(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from torchshrink.deploy.backends import BuildContext
    from torchshrink.deploy.ort_backends import export_plain, weight_matmuls

    x = _inputs()
    counts = []
    for i, model in enumerate((_tiny_bert(), fuse_qkv(_tiny_bert()))):
        sub = tmp_path / str(i)
        sub.mkdir()
        path = export_plain(BuildContext(model, x, workdir=sub))
        counts.append(len(weight_matmuls(path)))
        assert onnx.load(str(path)).graph.output[0].name == "output"
    # Per layer: Q, K, V, attention output, FFN-in, FFN-out -> qkv and the other three.
    assert counts == [12, 8]


def test_leaves_other_modules_alone() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    out = fuse_qkv(net)
    assert not any(isinstance(m, FusedQKVSelfAttention) for m in out.modules())
    x = torch.randn(2, 4)
    assert torch.equal(out(x), net(x))
