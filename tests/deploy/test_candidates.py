"""build_variant backends: jit + optimize_for_inference, ONNX Runtime fp32, torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.zoo import create_zoo_model
from torchshrink.deploy.batch_split import BatchSplit
from torchshrink.deploy.candidates import InferenceModule, OrtModule, build_variant


def _resnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = create_zoo_model("resnet20").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding changes weights
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(4, 3, 16, 16)


@pytest.mark.parametrize(
    "options",
    [
        {"jit_optimize": True},
        {"jit_optimize": True, "channels_last": True},
        {"ort": True},
        {"ort": True, "split": True},
        {"jit": True, "channels_last": True, "split": True},
    ],
)
def test_backend_variants_match_eager(options: dict[str, bool]) -> None:
    model, x = _resnet()
    v = build_variant(model, x, threads=2, **options)
    with torch.inference_mode():
        ref = model(x)
        out = v(x)
    assert out.shape == (4, 10)
    assert (out - ref).abs().max().item() < 1e-4
    assert isinstance(v.inner, BatchSplit) == options.get("split", False)


def test_ort_module_opens_one_session_per_thread_count() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    x = torch.randn(3, 3, 8, 8)
    v = build_variant(net.eval(), x, ort=True, threads=1)
    assert isinstance(v.inner, OrtModule) and v.inner.path.suffix == ".onnx"
    with torch.inference_mode():
        ref = net(x)
        assert (v(x) - ref).abs().max().item() < 1e-5
        assert (v.with_threads(2)(x[:1]) - ref[:1]).abs().max().item() < 1e-5  # dynamic batch
    assert sorted(v.inner._sessions) == [1, 2]


def test_ort_module_returns_a_tuple_for_several_outputs() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a + b, a * b

    a, b = torch.randn(2, 3), torch.randn(2, 3)
    out = OrtModule.export(Two(), (a, b))(a, b)
    assert isinstance(out, tuple) and len(out) == 2
    assert torch.allclose(out[1], a * b)


def test_bad_backend_combinations_raise() -> None:
    net, x = nn.Linear(3, 2).eval(), torch.zeros(1, 3)
    with pytest.raises(ValueError, match="choose one of jit, compile, ort and direct"):
        build_variant(net, x, jit_optimize=True, ort=True)
    with pytest.raises(ValueError, match="choose one of jit, compile, ort and direct"):
        build_variant(net, x, jit=True, direct=True)
    for backend in ("ort", "direct"):
        with pytest.raises(ValueError, match="channels_last does not apply"):
            build_variant(net, torch.zeros(1, 3, 4, 4), channels_last=True, **{backend: True})
    with pytest.raises(ValueError, match="keyword \\(dict\\) inputs are not supported"):
        OrtModule.export(net, {"input": x})


@pytest.mark.slow
def test_compile_variant_matches_eager() -> None:
    model, x = _resnet()
    v = build_variant(model, x, compile=True, channels_last=True, threads=1)
    assert isinstance(v, InferenceModule)
    with torch.inference_mode():
        assert (v(x) - model(x)).abs().max().item() < 1e-4
