"""SVG charts: scales and ticks, edge cases (one stage, zero / NaN latency, missing metrics, a
single layer, all-equal values), per-layer charts, sensitivity curves and the search section."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchshrink.prune.sensitivity import sensitivity
from torchshrink.report.charts import search_chart, sensitivity_chart, tradeoff_chart
from torchshrink.report.html import render_html, render_report
from torchshrink.report.layer_charts import histogram_charts, layer_chart
from torchshrink.report.svg import fmt_num, make_scale


def _marks(svg: str, tag: str = "") -> int:
    return len(re.findall(rf'<{tag or "[a-z]+"} class="mark"', svg))


def _numbers(svg: str) -> list[float]:
    return [float(v) for v in re.findall(r'(?:x|y|cx|cy|width|height)="(-?[\d.]+)"', svg)]


def test_scales_ticks_and_degenerate_domains() -> None:
    s = make_scale([0.2, 0.9], 0, 100)
    # padded out to whole 0.2 steps
    assert (s.lo, s.hi) == (0.2, 1.0) and s.ticks() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    flat = make_scale([5.0, 5.0, float("nan"), None], 0, 100)  # all equal: centred, no 0/0
    assert flat.lo < 5.0 < flat.hi and flat(5.0) == pytest.approx(50.0)
    empty = make_scale([], 0, 100)
    assert (empty.lo, empty.hi) == (0.0, 1.0)
    log = make_scale([5_000, 200_000], 0, 100, log=None)  # > 30x apart: log
    assert log.log and (log.lo, log.hi) == (1e3, 1e6) and 1e4 in log.ticks()
    assert [fmt_num(v) for v in (1500, 2e6, 0.25, 3e9)] == ["1.5k", "2M", "0.25", "3G"]


def test_tradeoff_one_stage_zero_nan_and_missing_values() -> None:
    base = {"accuracy": 0.9, "file_bytes": 4096, "latency_ms_p50": 0.0}
    stage = {"accuracy": 0.9, "file_bytes": 4096, "latency_ms_p50": float("nan")}
    svg = tradeoff_chart([("baseline", base), ("1. prune", stage)], "file_bytes")
    assert svg is not None and _marks(svg, "circle") == 2  # equal values: both drawn
    assert all(math.isfinite(v) for v in _numbers(svg))
    assert tradeoff_chart([("baseline", base), ("1. prune", stage)], "latency_ms_p50") is None
    assert tradeoff_chart([("baseline", {}), ("1", {"file_bytes": 10})], "file_bytes") is None
    page = render_html({"baseline": base, "stages": [{"index": 0, "metrics": stage}]})
    assert "no latency measured" in page and page.count("<svg") == 1
    assert "<td>-</td>" in page  # NaN latency in the table


def _layers(nonzeros: int, bits: int = 32, rank: int | None = None, scale: int = 1) -> list:
    return [
        {
            "name": "fc",
            "type": "Linear",
            "params": 100,
            "nonzeros": nonzeros,
            "sparsity": 1 - nonzeros / 100,
            "bits": bits,
            "rank": rank,
            "hist": [0, 10 * scale, 30 * scale, 0],
            "hist_range": [-1.0, 1.0],
        }
    ]


def test_layer_charts_single_layer_and_unchanged_quantities() -> None:
    snaps = [("baseline", _layers(100)), ("1. prune", _layers(40)), ("2. export", _layers(40))]
    svg = layer_chart(snaps, "sparsity")
    assert svg is not None and _marks(svg, "rect") == 2  # export repeats prune: not drawn again
    assert ">1. prune<" in svg and ">2. export<" not in svg
    heights = [float(h) for h in re.findall(r'<rect class="mark"[^>]*height="([\d.]+)"', svg)]
    assert heights[0] < 1.0 < heights[1]  # 0% (a hairline) against 60%
    assert layer_chart(snaps, "bits") is None  # every snapshot 32-bit
    assert layer_chart(snaps, "rank") is None  # nothing factorized
    quant = [*snaps, ("3. cluster", _layers(40, bits=5, rank=8))]
    assert _marks(layer_chart(quant, "bits") or "", "rect") == 2
    assert _marks(layer_chart(quant, "rank") or "", "rect") == 1
    [hist] = histogram_charts([snaps[0], ("1. prune", _layers(40, scale=2))])
    assert _marks(hist, "rect") == 4 and "after 1. prune" in hist


def test_sensitivity_curves_from_a_real_table() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    ds = TensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,)))
    table = sensitivity(m, ds, example_inputs=torch.zeros(1, 6), ratios=(0.25, 0.5, 0.75))
    svg = sensitivity_chart(table.to_dict())
    assert svg is not None
    assert _marks(svg, "polyline") == 1 + len(table.layers())  # baseline line + a curve each
    assert _marks(svg, "circle") == len(table.points) == 6
    for layer in table.layers():
        assert f">{layer}<" in svg
    assert sensitivity_chart({"points": []}) is None


_SEARCH = {
    "objective": "size",
    "budget": 30000.0,
    "trials": [
        {"number": 0, "accuracy": 0.95, "objective_value": 50000.0, "pareto": True, "params": {}},
        {"number": 1, "accuracy": 0.91, "objective_value": 20000.0, "pareto": True, "params": {}},
        {"number": 2, "accuracy": 0.80, "objective_value": 40000.0, "pareto": False, "params": {}},
        {"number": 3, "accuracy": float("nan"), "objective_value": 1.0, "pareto": False},
    ],
    "chosen": 1,
}


def test_search_section_from_a_hand_written_run_json(tmp_path: Path) -> None:
    run = {
        "recipe": {"name": "auto"},
        "baseline": {"accuracy": 0.96, "file_bytes": 200_000},
        "stages": [{"index": 0, "name": "prune", "metrics": {"accuracy": 0.91}}],
        "search": _SEARCH,
    }
    (tmp_path / "run.json").write_text(json.dumps(run))
    text = render_report(tmp_path).read_text()
    assert "<h2>Search</h2>" in text and "4 trials" in text
    assert "chosen trial 1: accuracy 91.00%" in text
    svg = text[text.index("<h2>Search</h2>") :]
    svg = svg[svg.index("<svg") : svg.index("</svg>")]
    # 1 other trial + 2 on the front + the chosen ring; the NaN trial is left out
    assert _marks(svg, "circle") == 4
    assert _marks(svg, "polyline") == 2  # the front and the budget line
    assert "Pareto front (2)" in svg and "budget 30k" in svg
    assert search_chart({"trials": []}) is None


def test_run_with_layers_gets_per_layer_and_histogram_sections() -> None:
    run = {
        "baseline": {"accuracy": 0.9},
        "baseline_layers": _layers(100),
        "stages": [{"index": 0, "name": "prune", "metrics": {}, "layers": _layers(40)}],
    }
    page = render_html(run)
    assert "<h2>Per layer</h2>" in page and "<h2>Weight histograms</h2>" in page
    assert "no layer was factorized" in page
    assert page.count("<svg") == 2  # sparsity and one histogram (no accuracy/size point)
