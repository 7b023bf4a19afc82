"""The factorized layers compute exactly what the reconstructed low-rank weight computes.

Covers what the per-method files leave out: truncated (not full-rank) SVD of 1x1 convolutions
with stride and padding, truncated Tucker-2 across conv geometries (non-square kernels,
dilation, reflect padding, no bias), and whole models: ``zoo:lenet5`` factorized at 2x (SVD for
the Linears, Tucker-2 for the convolutions) equals the dense model holding the reconstructed
weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.lowrank import FactorizeConfig, factorize, svd_factorize, tucker2_factorize
from torchshrink.lowrank.factorize import reconstructed_weight


def with_weight(layer: nn.Module, weight: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` (same geometry, padding mode and bias) holding ``weight``."""
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.copy_(weight)
    return twin


@pytest.mark.parametrize(
    ("conv", "rank"),
    [
        (nn.Conv2d(12, 20, 1, stride=2, padding=1), 5),
        (nn.Conv2d(16, 8, 1, bias=False), 3),
        (nn.Conv2d(10, 10, 1, padding=2, padding_mode="replicate"), 4),
    ],
)
def test_truncated_svd_of_1x1_conv_equals_reconstructed_weight(conv: nn.Conv2d, rank: int) -> None:
    torch.manual_seed(0)
    low = svd_factorize(conv, rank)
    w_hat = reconstructed_weight(low)  # (O, I, 1, 1)
    assert w_hat.shape == conv.weight.shape
    assert torch.linalg.matrix_rank(w_hat.detach().flatten(1)).item() == rank
    x = torch.randn(2, conv.in_channels, 9, 9)
    with torch.no_grad():
        y, ref = low(x), with_weight(conv, w_hat)(x)
    assert y.shape == ref.shape == conv(x).shape
    assert torch.allclose(y, ref, atol=1e-5)
    # The truncation really changed the layer: it is not the full-rank identity.
    assert not torch.allclose(y, conv(x), atol=1e-3)


@pytest.mark.parametrize(
    ("conv", "ranks"),
    [
        (nn.Conv2d(8, 12, 3, padding=1), (3, 5)),
        (nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=False), (2, 4)),
        (nn.Conv2d(5, 7, (3, 5), padding=(1, 2), dilation=(2, 1)), (3, 3)),
        (nn.Conv2d(6, 9, 3, padding=1, padding_mode="reflect"), (4, 2)),
        (nn.Conv2d(4, 6, 5, stride=(1, 2), padding=2, padding_mode="circular"), (2, 3)),
    ],
)
def test_truncated_tucker2_equals_reconstructed_weight(
    conv: nn.Conv2d, ranks: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    low = tucker2_factorize(conv, ranks, als_iters=1)
    assert [m.weight.shape[0] for m in low] == [ranks[0], ranks[1], conv.out_channels]
    w_hat = reconstructed_weight(low)  # (O, I, kh, kw)
    assert w_hat.shape == conv.weight.shape
    x = torch.randn(2, conv.in_channels, 13, 11)
    with torch.no_grad():
        y, ref = low(x), with_weight(conv, w_hat)(x)
    assert y.shape == ref.shape == conv(x).shape
    assert torch.allclose(y, ref, atol=1e-5)
    assert not torch.allclose(y, conv(x), atol=1e-3)


def test_lenet5_svd_and_tucker_at_2x_equal_the_model_with_reconstructed_weights() -> None:
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet5")
    reference = copy.deepcopy(model)
    x = torch.randn(8, 1, 28, 28)
    report = factorize(model, FactorizeConfig(ratio=2.0, max_latency_ratio=None), example_inputs=x)
    kinds = {r.name: r.kind for r in report.applied}
    assert kinds == {"conv1": "tucker2", "conv2": "tucker2", "fc1": "svd", "fc2": "svd"}
    assert report.layers[0].rank == (1, 5)  # one input channel: only the output mode shrinks
    assert report.ratio >= 2.0
    for name in kinds:
        w_hat = reconstructed_weight(model.get_submodule(name))
        with torch.no_grad():
            reference.get_submodule(name).weight.copy_(w_hat)
    model.eval()
    reference.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-4)
