"""Non-uniform schemes: power-of-two / log levels, binary, ternary, k-means codebooks."""

from __future__ import annotations

import math

import pytest
import torch

from torchshrink.core.errors import ConfigError
from torchshrink.quantize import binarize, kmeans_quantize, log_quantize, pot_quantize, ternarize


def test_pot_levels_are_powers_of_two_and_count() -> None:
    w = torch.randn(8, 64)
    out = pot_quantize(w, 4, axis=0)
    nz = out[out != 0].abs()
    exps = torch.log2(nz)
    assert torch.equal(exps, exps.round())
    for row in out:  # at most 2 * (2^(4-1) - 1) + 1 = 15 distinct values per channel
        assert torch.unique(row).numel() <= 15
    # nearest level: never further than half the gap to the next power of two
    assert bool(((out - w).abs() <= w.abs() / 3 + 1e-6).all() | (out == 0).any())


def test_log_quantize_nearest_levels_and_base() -> None:
    x = torch.tensor([1.0, 0.74, 0.76, 0.2, 0.0, -3.0])
    assert pot_quantize(x, 4).tolist() == [1.0, 0.5, 1.0, 0.25, 0.0, -4.0]
    # top exponent is nearest max |x| = 3 -> 4; 3 bits = 3 exponents {4, 2, 1}, rest -> 0 or 1
    y = log_quantize(torch.tensor([3.0, 0.4, 0.6]), 3)
    assert y.tolist() == [4.0, 0.0, 1.0]
    s2 = log_quantize(torch.tensor([1.0, 1.4, 2.0]), 4, base=math.sqrt(2))
    assert torch.allclose(torch.log(s2) / math.log(math.sqrt(2)), torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize(
    "x", [torch.zeros(3, 4), torch.full((2, 2), 1e38), torch.tensor([[1e-40, 0.0]]), torch.ones(1)]
)
def test_edge_inputs_finite(x: torch.Tensor) -> None:
    for out in (
        pot_quantize(x, 4, axis=0 if x.dim() > 1 else None),
        binarize(x).dequantize(),
        ternarize(x).dequantize(),
        kmeans_quantize(x, 4).reconstruct(),
    ):
        assert bool(torch.isfinite(out).all()) and out.shape == x.shape


def test_binarize_values_and_per_channel_scale() -> None:
    w = torch.randn(6, 3, 3, 3)
    b = binarize(w)
    assert set(b.codes.unique().tolist()) <= {-1, 1}
    assert b.scale.shape == (6,) and b.codes.dtype == torch.int8
    assert torch.allclose(b.scale, w.abs().mean(dim=(1, 2, 3)))
    deq = b.dequantize()
    assert torch.equal(deq.sign(), torch.where(w >= 0, 1.0, -1.0))
    per_tensor = binarize(w, axis=None)
    assert per_tensor.scale.shape == ()


def test_ternarize_values_scale_and_sparsity() -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 4096)
    t = ternarize(w)
    assert set(t.codes.unique().tolist()) == {-1, 0, 1}
    assert t.scale.shape == (16,)
    sparsity = float((t.codes == 0).float().mean())
    # Gaussian: P(|w| <= 0.7 * E|w|) = erf(0.7 * sqrt(2/pi) / sqrt(2)) = 0.4235
    theory = math.erf(0.7 * math.sqrt(2 / math.pi) / math.sqrt(2))
    assert sparsity == pytest.approx(theory, abs=0.01)
    kept = t.codes != 0
    assert torch.allclose(t.scale, (w.abs() * kept).sum(1) / kept.sum(1))


def test_binary_ternary_all_zero_channel() -> None:
    w = torch.cat([torch.zeros(1, 8), torch.randn(2, 8)])
    t, b = ternarize(w), binarize(w)
    assert float(t.scale[0]) == 0.0 and float(b.scale[0]) == 0.0
    assert float(t.dequantize()[0].abs().sum()) == 0.0


def test_kmeans_quantize_exact_when_k_covers_distinct_values() -> None:
    w = torch.tensor([0.5, -1.0, 0.5, 2.0, -1.0, 0.25]).reshape(2, 3)
    res = kmeans_quantize(w, 4)
    assert torch.equal(res.reconstruct(), w) and res.mse == 0.0
    assert res.codebook.shape == (4,) and res.labels.shape == (2, 3)
    res8 = kmeans_quantize(w, 8)
    assert torch.equal(res8.reconstruct(), w) and res8.codebook.shape == (8,)


def test_kmeans_quantize_deterministic_and_reduces_error() -> None:
    w = torch.randn(64, 64)
    a, b = kmeans_quantize(w, 16), kmeans_quantize(w, 16)
    assert torch.equal(a.codebook, b.codebook) and torch.equal(a.labels, b.labels)
    assert a.mse < 0.015 and kmeans_quantize(w, 4).mse > a.mse  # Lloyd-Max optimum: 0.0095


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"fc\.weight contains NaN"):
        ternarize(torch.tensor([float("nan")]), name="fc.weight")
    with pytest.raises(ConfigError, match="w contains NaN"):
        kmeans_quantize(torch.tensor([float("nan")]), 2, name="w")
    with pytest.raises(ConfigError, match=r"bits must be 2\.\.8"):
        pot_quantize(torch.ones(2), 9)
    with pytest.raises(ConfigError, match="base must be > 1"):
        log_quantize(torch.ones(2), 4, base=1.0)
    with pytest.raises(ConfigError, match=r"axis=2 is out of range"):
        binarize(torch.ones(2, 2), axis=2)
