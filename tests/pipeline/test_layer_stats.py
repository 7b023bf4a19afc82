"""Per-layer records: counts, sparsity, bits (float, quantized, weight-shared), rank, histograms."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from torchshrink.cluster.kmeans_share import cluster_weights
from torchshrink.core.errors import ConfigError
from torchshrink.lowrank.separable import separable_factorize
from torchshrink.lowrank.svd import svd_factorize
from torchshrink.lowrank.tucker import tucker2_factorize
from torchshrink.pipeline.layer_stats import hist_ranges, layer_stats
from torchshrink.quantize.qmodules import QuantLinear
from torchshrink.quantize.spec import QuantSpec


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def test_plain_layers_counts_and_json_round_trip() -> None:
    m = _mlp()
    with torch.no_grad():
        m[0].weight[:, :8] = 0.0  # half the first layer's weights
    rows = layer_stats(m, bins=10)
    assert [(r.name, r.type, r.params, r.bits, r.rank) for r in rows] == [
        ("0", "Linear", 16 * 32 + 32, 32, None),
        ("2", "Linear", 32 * 4 + 4, 32, None),
    ]
    assert rows[0].nonzeros == 16 * 32 // 2 + 32
    assert rows[0].sparsity == pytest.approx(256 / 544)
    assert len(rows[0].hist) == 10 and sum(rows[0].hist) == 256  # non-zero weights only
    assert all(isinstance(c, int) for c in rows[0].hist)
    lo, hi = rows[0].hist_range
    assert lo == -hi and hi == pytest.approx(float(m[0].weight.detach().abs().max()))
    doc = json.loads(json.dumps([r.to_dict() for r in rows]))
    assert doc[1]["hist"] == rows[1].hist


def test_shared_ranges_keep_bins_and_clamp_outliers() -> None:
    m = _mlp()
    base = layer_stats(m, bins=8)
    with torch.no_grad():
        m[2].weight.mul_(3.0)  # now beyond the baseline range
    after = layer_stats(m, ranges=hist_ranges(base), bins=8)
    assert after[1].hist_range == base[1].hist_range
    assert sum(after[1].hist) == 128  # every weight still counted, in the end bins
    assert after[1].hist[0] + after[1].hist[-1] > base[1].hist[0] + base[1].hist[-1]


def test_quantized_and_weight_shared_bits() -> None:
    m = _mlp()
    m[0] = QuantLinear(m[0], QuantSpec(bits=4, granularity="per_channel"))
    cluster_weights(m, bits=3)  # clusters the float Linear "2" (and the QuantLinear's child)
    rows = {r.name: r for r in layer_stats(m)}
    assert set(rows) == {"0", "2"}  # the quantized child is not listed again
    assert (rows["0"].type, rows["0"].bits) == ("QuantLinear", 4)
    assert rows["0"].params == 16 * 32 + 32
    assert rows["2"].bits == 3  # at most 8 shared values: a 3-bit codebook index


def test_low_rank_replacements_report_their_rank() -> None:
    m = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(64, 10))
    m[0] = separable_factorize(m[0], multiplier=2)
    m[1] = tucker2_factorize(m[1], (4, 6))
    m[3] = svd_factorize(m[3], rank=5)
    rows = layer_stats(m)
    assert [(r.name, r.type, r.rank) for r in rows] == [
        ("0", "Factorized(Conv2d)", 2),
        ("1", "Factorized(Conv2d)", 4),
        ("3", "Factorized(Linear)", 5),
    ]
    assert rows[2].params == 5 * 64 + 10 * 5 + 10


def test_cap_keeps_largest_layers_in_model_order_and_bad_args() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 50), nn.Linear(50, 2), nn.Linear(2, 3))
    assert [r.name for r in layer_stats(m, max_layers=2)] == ["1", "2"]
    with pytest.raises(ConfigError, match=r"bins: must be in 2\.\.40, got 41"):
        layer_stats(m, bins=41)
    with pytest.raises(ConfigError, match="max_layers: must be at least 1, got 0"):
        layer_stats(m, max_layers=0)


def test_all_zero_layer_has_empty_histogram_and_full_sparsity() -> None:
    m = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        m.weight.zero_()
    [r] = layer_stats(m)
    assert (r.nonzeros, r.sparsity, sum(r.hist), r.hist_range) == (0, 1.0, 0, [-1.0, 1.0])
