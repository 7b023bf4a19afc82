"""ORT int8 paths on a truncated all-MiniLM-L6-v2: int8 attention, smoothing, ORT fusions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.deploy.accelerate import AccelerateConfig, accelerate, backends

pytest.importorskip("onnxruntime")
transformers = pytest.importorskip("transformers")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell after the central bank raised rates.",
    "She planted tomatoes and basil behind the house.",
    "The train was delayed by a signal failure.",
]
CALIBRATION = [
    "The library opens at nine on weekdays.",
    "Heavy snow closed the mountain pass again.",
    "Astronomers found a planet near a red dwarf.",
    "Doctors recommend drinking water in hot weather.",
]
INT8 = ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention")


class _Pooled(nn.Module):
    """One-layer MiniLM -> mean pooling over the mask (B, D)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).float()  # (B, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1)  # (B, D)


@pytest.fixture(scope="module")
def minilm() -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    from torchshrink.core.hfmodel import load_hf_model, resolve_hf_dir

    try:
        bert = load_hf_model("all-MiniLM-L6-v2")
    except Exception as exc:  # the packaged model is optional
        pytest.skip(f"packaged all-MiniLM-L6-v2 not available: {exc}")
    bert.encoder.layer = bert.encoder.layer[:1]  # the first layer: real weights and outliers
    bert.config.num_hidden_layers = 1
    tok = transformers.AutoTokenizer.from_pretrained(str(resolve_hf_dir("all-MiniLM-L6-v2")))

    def enc(texts: list[str]) -> dict[str, torch.Tensor]:
        t = tok(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
        return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}  # (B, 16)

    inputs, calib = enc(SENTENCES), enc(CALIBRATION)
    # Keep only the embedding rows these tokens use (30522 -> ~60): each ONNX export and
    # quantization then handles ~2 MB instead of ~47 MB.
    used = torch.unique(torch.cat([inputs["input_ids"].flatten(), calib["input_ids"].flatten()]))
    emb = bert.embeddings.word_embeddings
    bert.embeddings.word_embeddings = nn.Embedding.from_pretrained(emb.weight[used].clone())
    for batch in (inputs, calib):
        batch["input_ids"] = torch.searchsorted(used, batch["input_ids"])  # (B, 16) new ids
    return _Pooled(bert).eval(), inputs, calib


def _tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    return _Pooled(transformers.BertModel(cfg).eval()).eval()


def test_tiny_bert_int8_attention_and_fused_census() -> None:
    model = _tiny_bert()
    x = {"input_ids": torch.randint(0, 64, (4, 12)), "attention_mask": torch.ones(4, 12).long()}
    x["attention_mask"][:, 9:] = 0  # padded tail, as a tokenizer makes it
    names = ["ort_int8_attn", "ort_int8_smooth_attn", "ort_fused_int8"]
    _, rep = accelerate(
        model, x, fidelity=0.99, candidates=names, threads=1,
        config=AccelerateConfig(rounds=1, warmup=0, settle_s=0),
    )  # fmt: skip
    by = {c.name: c for c in rep.candidates}
    for name in names:
        c = by[name]
        assert c.error is None, f"{name}: {c.error}"
        assert c.fidelity is not None and c.fidelity.cosine >= 0.99, name
    # 2 layers x (6 weight MatMuls + Q K^T + P V) in int8, no float MatMul left.
    for name in ("ort_int8_attn", "ort_int8_smooth_attn"):
        c = by[name]
        assert sum(c.low_precision.get(k, 0) for k in INT8) == 16, (name, c.low_precision)
        assert sum(c.float_ops.get(k, 0) for k in ("MatMul", "FusedMatMul")) == 0, name
    assert by["ort_fused_int8"].low_precision.get("QAttention") == 2


@pytest.mark.slow  # ~10 s on a quiet 2-core machine, over a minute when it is shared
def test_int8_paths_agree_with_fp32_and_report_their_int8_ops(
    minilm: tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]],
) -> None:
    model, inputs, calib = minilm
    names = ["ort_int8", "ort_int8_attn", "ort_int8_smooth_attn", "ort_fused_int8"]
    _, rep = accelerate(
        model, inputs, fidelity=0.995, candidates=names, threads=1, calibration=[calib],
        config=AccelerateConfig(rounds=1, warmup=0, settle_s=0),
    )  # fmt: skip
    by = {c.name: c for c in rep.candidates}
    for name in names:
        c = by[name]
        assert c.error is None, f"{name}: {c.error}"
        assert c.fidelity is not None and c.fidelity.cosine >= 0.98, name
        assert len(c.samples_ms) == 1 and c.samples_ms[0] > 0
    # Plain int8: the 6 weight MatMuls in int8, attention's 2 activation MatMuls in float.
    plain = by["ort_int8"]
    assert sum(plain.low_precision.get(k, 0) for k in INT8) == 6
    assert sum(plain.float_ops.get(k, 0) for k in ("MatMul", "FusedMatMul")) == 2
    # The int8-attention paths: those two in int8 as well, no float MatMul left.
    for name in ("ort_int8_attn", "ort_int8_smooth_attn"):
        c = by[name]
        assert sum(c.low_precision.get(k, 0) for k in INT8) == 8, (name, c.low_precision)
        assert sum(c.float_ops.get(k, 0) for k in ("MatMul", "FusedMatMul")) == 0, name
    smooth = by["ort_int8_smooth_attn"]
    assert smooth.note.startswith("alpha ")
    assert smooth.fidelity is not None and smooth.fidelity.cosine >= 0.99
    # ORT's transformer fusions: one QAttention (int8 Q/K/V projection) per layer.
    fused = by["ort_fused_int8"]
    assert fused.low_precision.get("QAttention") == 1, fused.low_precision
    assert fused.float_ops.get("Attention", 0) == 0


def test_backend_names_and_unknown_name() -> None:
    names = backends()
    assert {"ort_int8_attn", "ort_int8_smooth_attn", "ort_fused_int8", "fp32"} <= set(names)
    with pytest.raises(ConfigError, match=r"unknown candidate.*'ort_int4'.*ort_int8_smooth_attn"):
        accelerate(nn.Linear(4, 2), torch.randn(2, 4), candidates=["ort_int4"])


def _tiny_inputs() -> dict[str, torch.Tensor]:
    x = {"input_ids": torch.randint(0, 64, (4, 12)), "attention_mask": torch.ones(4, 12).long()}
    x["attention_mask"][:, 9:] = 0  # padded tail
    return x  # (B, L) each


def test_folded_attention_scale_drops_one_mul_per_layer_with_int8_attention(tmp_path) -> None:
    from torchshrink.deploy import ort_backends
    from torchshrink.deploy.backends import BuildContext
    from torchshrink.deploy.ort_session import OrtSession
    from torchshrink.quantize.smooth import fold_attention_scale

    model, x = _tiny_bert(), _tiny_inputs()
    # ORT fuses the scores' scale into a float MatMul but not into an integer one: with int8
    # attention the fold removes one Mul per layer from ORT's optimised graph.
    muls, outs = [], []
    for i, m in enumerate((model, fold_attention_scale(model))):
        sub = tmp_path / f"fold{i}"
        sub.mkdir()
        plain = ort_backends.export_plain(BuildContext(m, x, workdir=sub))
        path = ort_backends._quantize(plain, sub / "a.onnx", tuned=True, activations=True)
        sess = OrtSession(path, threads=1)
        muls.append(sess.op_report().ops.get("Mul", 0))
        outs.append(torch.from_numpy(sess.run_numpy(*(v.numpy() for v in x.values()))[0]))
    assert muls[0] - muls[1] == 2, muls
    assert torch.nn.functional.cosine_similarity(outs[0], outs[1], dim=1).min() > 0.99


@pytest.mark.slow  # ~10 s on a quiet 2-core machine (about 25 builds of the tiny model)
def test_tiny_bert_lean_path_mixes_weight_granularity(tmp_path) -> None:
    from torchshrink.deploy import ort_backends
    from torchshrink.deploy.backends import BuildContext

    model, x = _tiny_bert(), _tiny_inputs()
    with torch.no_grad():
        ref = model(**x)  # (B, D)
    ctx = BuildContext(model, x, workdir=tmp_path, reference=ref, fidelity=0.99)
    built = ort_backends.build("ort_int8_smooth_attn_lean", ctx)
    cos = torch.nn.functional.cosine_similarity(built.run(x), ref, dim=1).mean()
    assert float(cos) >= 0.99
    # 2 layers x (6 weight MatMuls + Q K^T + P V) in int8, no float MatMul left.
    assert sum(built.low_precision.get(k, 0) for k in INT8) == 16, built.low_precision
    assert sum(built.float_ops.get(k, 0) for k in ("MatMul", "FusedMatMul")) == 0
    assert "attention scale folded into the query" in built.note
    assert "per-tensor" in built.note or "every role per-channel" in built.note


def test_tiny_bert_merged_qkv_path_quantizes_fewer_matmuls(tmp_path) -> None:
    from torchshrink.deploy import ort_backends
    from torchshrink.deploy.backends import BuildContext

    model, x = _tiny_bert(), _tiny_inputs()
    with torch.no_grad():
        ref = model(**x)  # (B, D)
    # The unmerged exports the lean path leaves in a shared workdir are not reused.
    for sub in ["smooth_0.65", *(f"smooth_0.65_role{i}" for i in range(4))]:
        (tmp_path / sub).mkdir()
        ort_backends.export_plain(BuildContext(model, x, workdir=tmp_path / sub))
    ctx = BuildContext(model, x, workdir=tmp_path, reference=ref, fidelity=0.99)
    built = ort_backends.build("ort_int8_smooth_attn_qkv", ctx)
    cos = torch.nn.functional.cosine_similarity(built.run(x), ref, dim=1).mean()
    assert float(cos) >= 0.99
    # 2 layers x (4 weight MatMuls, Q/K/V now one, + Q K^T + P V) in int8, no float MatMul.
    assert sum(built.low_precision.get(k, 0) for k in INT8) == 12, built.low_precision
    assert sum(built.float_ops.get(k, 0) for k in ("MatMul", "FusedMatMul")) == 0
    assert "attention scale folded into the query" in built.note
    assert "ort_int8_smooth_attn_qkv" in backends()
