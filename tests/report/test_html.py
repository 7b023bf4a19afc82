"""report.html from a run.json: self-contained, key numbers present, charts as inline SVG."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from torchshrink.core.errors import ConfigError
from torchshrink.report.html import render_report


def _metrics(acc: float, params: int, file_bytes: int, lat: float) -> dict:
    return {
        "accuracy": acc,
        "params": params,
        "nonzero_params": params // 2,
        "file_bytes": file_bytes,
        "macs": params,
        "latency_ms_p50": lat,
        "energy_mj": 0.0123,
    }


def _run_json(tmp_path: Path) -> Path:
    run = {
        "recipe": {"name": "unit-run"},
        "baseline": _metrics(0.9721, 50_610, 203_928, 0.2),
        "stages": [
            {
                "index": 0,
                "kind": "prune",
                "name": "prune",
                "seconds": 1.5,
                "metrics": _metrics(0.9555, 17_810, 72_712, 0.1),
            },
            {
                "index": 1,
                "kind": "cluster",
                "name": "cluster<x>",
                "seconds": 0.25,
                "metrics": _metrics(0.9499, 17_810, 40_000, 0.1),
            },
        ],
        "versions": {"torch": "2.x"},
        "machine": {"cpu_count": 2},
        "seconds": 3.0,
    }
    p = tmp_path / "run.json"
    p.write_text(json.dumps(run))
    return p


def test_report_has_key_numbers_and_inline_svg(tmp_path: Path) -> None:
    out = render_report(_run_json(tmp_path))
    assert out == tmp_path / "report.html"
    text = out.read_text()
    for needle in ("97.21%", "95.55%", "94.99%", "50,610", "17,810", "203,928", "72,712", "40,000"):
        assert needle in text, needle
    assert "5.10x smaller" in text  # 203928 / 40000 bytes on disk
    assert "latency 2.00x" in text
    assert "cluster&lt;x&gt;" in text  # stage names are escaped
    # accuracy against size and against latency: two charts, three points each
    svgs = re.findall(r"<svg .*?</svg>", text, flags=re.S)
    assert [re.search(r'aria-label="([^"]+)"', s).group(1) for s in svgs] == [
        "Accuracy versus size",
        "Accuracy versus latency",
    ]
    assert all(s.count('<circle class="mark"') == 3 for s in svgs)
    # self-contained: nothing to fetch, no script, no image
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<script" not in text and "<img" not in text


def test_report_accepts_the_run_folder(tmp_path: Path) -> None:
    _run_json(tmp_path)
    assert render_report(tmp_path).stat().st_size > 5000


def test_missing_values_show_a_dash(tmp_path: Path) -> None:
    p = _run_json(tmp_path)
    run = json.loads(p.read_text())
    run["stages"][0]["metrics"]["latency_ms_p50"] = None
    p.write_text(json.dumps(run))
    text = render_report(p, tmp_path / "other.html").read_text()
    row = next(line for line in text.splitlines() if line.startswith("<tr><td>1. prune"))
    assert row.count("<td>-</td>") == 1


def test_not_a_run_record(tmp_path: Path) -> None:
    p = tmp_path / "run.json"
    p.write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match=r"run\.json' is not a run record"):
        render_report(p)
    with pytest.raises(ConfigError, match=r"cannot read run record .*missing\.json"):
        render_report(tmp_path / "missing.json")
