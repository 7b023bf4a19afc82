"""1-D k-means: Lloyd's with linear init, the exact DP solver, trivial cases, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshrink.core.errors import ConfigError, EmptyDataError
from torchshrink.core.kmeans import kmeans_1d


def test_exact_dp_never_worse_than_lloyd() -> None:
    # Linear init between min and max leaves Lloyd's stuck here (one far value).
    x = torch.cat([torch.randn(200), torch.tensor([12.0])])
    lloyd = kmeans_1d(x, 5)
    exact = kmeans_1d(x, 5, exact=True)
    assert exact.mse <= lloyd.mse
    assert exact.mse < lloyd.mse * 0.95  # strictly better on this input
    assert exact.iterations == 0 and lloyd.iterations > 1


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=40), st.integers(1, 6))
def test_property_exact_is_optimal_lower_bound(vals: list[float], k: int) -> None:
    x = torch.tensor(vals, dtype=torch.float64)
    exact, lloyd = kmeans_1d(x, k, exact=True), kmeans_1d(x, k)
    assert exact.mse <= lloyd.mse + 1e-9 * (1 + lloyd.mse)
    assert exact.codebook.shape == (k,)
    recon_mse = float(((exact.reconstruct().double() - x) ** 2).mean())
    assert recon_mse == pytest.approx(exact.mse, rel=1e-4, abs=1e-6)


def test_known_small_example() -> None:
    res = kmeans_1d(torch.tensor([1.0, 2.0, 3.0, 10.0, 11.0, 12.0]), 2, exact=True)
    assert res.codebook.tolist() == [2.0, 11.0]
    assert res.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert res.mse == pytest.approx(2 / 3)


def test_codebook_sorted_and_deterministic() -> None:
    x = torch.randn(5000)
    a, b = kmeans_1d(x, 8), kmeans_1d(x, 8)
    assert torch.equal(a.codebook, b.codebook)
    assert torch.equal(a.codebook, a.codebook.sort().values)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="k must be >= 1, got 0"):
        kmeans_1d(torch.ones(3), 0)
    with pytest.raises(EmptyDataError, match="empty"):
        kmeans_1d(torch.ones(0), 2)
    with pytest.raises(ConfigError, match="NaN or Inf"):
        kmeans_1d(torch.tensor([1.0, float("inf")]), 2)
    with pytest.raises(ConfigError, match="max_exact=10 distinct values, got 20"):
        kmeans_1d(torch.arange(20.0), 2, exact=True, max_exact=10)
