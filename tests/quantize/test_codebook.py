"""Codebook layers (binary, ternary, power-of-two, k-means): values, selection, export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.errors import ConfigError, UnsupportedLayerError
from torchshrink.quantize.codebook import (
    CodebookConv2d,
    codebook_of,
    parse_codebook_scheme,
    quantize_codebook,
)
from torchshrink.quantize.nonuniform import binarize, kmeans_quantize, pot_quantize, ternarize
from torchshrink.quantize.ptq import get_quant_report


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    )


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [("binary", ("binary", 2)), ("ternary", ("ternary", 3)), ("pot3", ("pot", 7)),
     ("kmeans:16", ("kmeans", 16))],
)  # fmt: skip
def test_parse_scheme(scheme: str, expected: tuple[str, int]) -> None:
    assert parse_codebook_scheme(scheme) == expected


@pytest.mark.parametrize(
    ("scheme", "match"),
    [("pot9", "pot bits must be 2..4"), ("kmeans:32", "levels must be 2..16"),
     ("quaternary", "unknown codebook scheme")],
)  # fmt: skip
def test_bad_scheme(scheme: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_codebook_scheme(scheme)


def test_codebook_values_equal_the_nonuniform_primitives() -> None:
    w = torch.randn(6, 20)
    cases = {
        "binary": (2, binarize(w).dequantize()),
        "ternary": (3, ternarize(w).dequantize()),
        "pot": (15, pot_quantize(w, 4, axis=0)),
        "kmeans": (8, kmeans_quantize(w, 8).reconstruct()),
    }
    for kind, (levels, expected) in cases.items():
        book, idx = codebook_of(w, kind, levels)
        got = book.expand(6, -1).gather(1, idx.long())  # (6, 20)
        assert idx.dtype == torch.uint8 and int(idx.max()) < levels
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6, msg=kind)


def test_quantize_codebook_keeps_float_layers_and_reports_bits() -> None:
    q = quantize_codebook(_net(), "pot4", keep_float=["3"])
    assert isinstance(q[0], CodebookConv2d) and isinstance(q[3], nn.Linear)
    report = get_quant_report(q)
    assert report is not None
    assert {r.name: r.weight_bits for r in report.layers} == {"0": 4, "3": None}
    assert q(torch.randn(2, 1, 6, 6)).shape == (2, 5)


def test_unsupported_layer_is_named_unless_ignored() -> None:
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6, 3))
    with pytest.raises(UnsupportedLayerError, match=r"0 \(Conv1d\)"):
        quantize_codebook(net, "binary")
    q = quantize_codebook(net, "binary", ignore=["0"])
    assert isinstance(q[0], nn.Conv1d) and q[2].index_bits == 1


def test_nan_weight_is_named() -> None:
    net = _net()
    with torch.no_grad():
        net[3].weight[0, 0] = float("nan")
    with pytest.raises(ConfigError, match=r"3\.weight contains NaN"):
        quantize_codebook(net, "ternary")


def test_onnx_export_of_a_binary_model_matches_in_onnxruntime(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from torchshrink.deploy.onnx_export import export_onnx
    from torchshrink.deploy.ort_session import OrtSession

    q = quantize_codebook(_net(), "binary")
    x = torch.randn(4, 1, 6, 6)
    result = export_onnx(q, tmp_path / "b.onnx", example_inputs=x[:1])
    assert set(result.weight_only_layers) == {"0", "3"}
    got = OrtSession(result.path, threads=1).run(x)
    with torch.no_grad():
        assert float((got - q(x)).abs().max()) < 1e-4


@pytest.mark.parametrize("scheme", ["binary", "ternary"])
def test_ptq_binary_and_ternary_schemes_use_sign_codes_not_a_uniform_grid(scheme: str) -> None:
    from torchshrink.core.zoo import create_zoo_model
    from torchshrink.quantize.config import QuantConfig
    from torchshrink.quantize.ptq import quantize

    torch.manual_seed(0)
    m = create_zoo_model("lenet300", input_size=8)
    q = quantize(m, QuantConfig(scheme=scheme, overrides={"fc3": "float"}))
    assert type(q.fc1).__name__ == "CodebookLinear" and type(q.fc3).__name__ == "Linear"
    w = q.fc1.weight if hasattr(q.fc1, "weight") else q.fc1.dequantized_weight()
    levels = torch.unique(w[0].detach())  # one output channel: -s, (0,) +s
    assert len(levels) == (2 if scheme == "binary" else 3)
    assert torch.allclose(levels.abs().max(), -levels.min())
