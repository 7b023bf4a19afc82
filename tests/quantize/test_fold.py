"""BatchNorm folding: outputs unchanged (atol 1e-5), BatchNorms gone, what cannot fold stays."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.zoo import create_zoo_model
from torchshrink.quantize.fold import find_bn_pairs, fold_bn, fold_bn_weights


def _randomize_bn(model: nn.Module) -> nn.Module:
    # Fresh BatchNorms are identities; give them real statistics so folding is exercised.
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_conv_bn_net_folds_exactly() -> None:
    net = _randomize_bn(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 4, 3, groups=4),
            nn.BatchNorm2d(4),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 5),
            nn.BatchNorm1d(5),
        )
    )
    x = torch.randn(4, 3, 8, 8)
    folded = fold_bn(net)
    assert _n_bn(folded) == 0
    assert _n_bn(net) == 3  # not in place by default
    assert torch.allclose(folded(x), net(x), atol=1e-5)
    assert folded[0].bias is not None and folded[0].bias.shape == (8,)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_zoo_resnet20_folds_exactly(shortcut: str) -> None:
    net = _randomize_bn(create_zoo_model("resnet20", input_size=16, shortcut=shortcut))
    x = torch.randn(2, 3, 16, 16)
    expected = net(x)
    folded = fold_bn(net, inplace=True)
    assert folded is net
    # stem + 18 block BNs, plus 2 projection BNs with shortcut B
    assert _n_bn(folded) == 0
    assert len(find_bn_pairs(create_zoo_model("resnet20", shortcut=shortcut))) == (
        19 if shortcut == "A" else 21
    )
    assert torch.allclose(folded(x), expected, atol=1e-5)


def test_fold_bn_weights_is_pure_and_matches_formula() -> None:
    conv, bn = nn.Conv2d(2, 3, 1), _randomize_bn(nn.BatchNorm2d(3))
    before = conv.weight.detach().clone()
    w, b = fold_bn_weights(conv, bn)
    assert torch.equal(conv.weight, before)
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(w, before * factor.reshape(3, 1, 1, 1), atol=1e-6)
    assert torch.allclose(b, (conv.bias - bn.running_mean) * factor + bn.bias, atol=1e-6)


class _SharedOutput(nn.Module):
    """The conv output feeds the BN and a second branch: folding would change that branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_conv_output_used_twice_is_not_folded() -> None:
    net = _randomize_bn(_SharedOutput())
    assert find_bn_pairs(net) == []
    x = torch.randn(1, 2, 4, 4)
    assert torch.allclose(fold_bn(net)(x), net(x))


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, the Sequential fallback folds."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.body(x)
        return self.body(-x)


def test_untraceable_model_uses_sequential_fallback() -> None:
    net = _randomize_bn(_Untraceable())
    assert find_bn_pairs(net) == [("body.0", "body.1")]
    x = torch.randn(2, 1, 6, 6)
    folded = fold_bn(net)
    assert isinstance(folded.body[1], nn.Identity)
    assert torch.allclose(folded(x), net(x), atol=1e-5)
