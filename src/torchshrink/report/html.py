"""One self-contained HTML report from a run's ``run.json`` (no network needed to view it).

The report reads ``run.json`` only and never computes a metric. It shows:

* the before/after table of every stage (accuracy, params, non-zeros, bytes on disk, MACs,
  latency, energy);
* accuracy against size and against latency;
* per layer: sparsity, bits per weight and rank, and weight histograms before and after
  (from ``run["baseline_layers"]`` and ``stage["layers"]``, when the run recorded them);
* sensitivity curves of every stage whose ``details["sensitivity"]`` holds a
  :class:`~torchshrink.prune.SensitivityTable` dict;
* the search trials with their Pareto front, when ``run["search"]`` is present.

Charts are inline SVG (:mod:`torchshrink.report.svg`): nothing is fetched, no script runs,
and every number on a chart is page text.

Example:
    >>> import json, pathlib
    >>> p = pathlib.Path("/tmp/report_doc/run.json"); p.parent.mkdir(exist_ok=True)
    >>> m = {"accuracy": 0.9, "params": 100, "nonzero_params": 50, "file_bytes": 400,
    ...      "macs": 100, "latency_ms_p50": 0.1, "energy_mj": 0.01}
    >>> _ = p.write_text(json.dumps({"recipe": {"name": "x"}, "baseline": m,
    ...     "stages": [{"index": 0, "name": "prune", "seconds": 1.0, "metrics": m}]}))
    >>> render_report(p).name
    'report.html'
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from torchshrink.core.errors import ConfigError
from torchshrink.report.charts import note, search_chart, sensitivity_chart, tradeoff_chart
from torchshrink.report.layer_charts import histogram_charts, layer_chart
from torchshrink.report.svg import is_num

# (key in the metrics dict, column title, formatter)
_COLUMNS: list[tuple[str, str, Any]] = [
    ("accuracy", "accuracy", lambda v: f"{100 * v:.2f}%"),
    ("params", "params", lambda v: f"{v:,}"),
    ("nonzero_params", "non-zeros", lambda v: f"{v:,}"),
    ("file_bytes", "bytes on disk", lambda v: f"{v:,}"),
    ("macs", "MACs", lambda v: f"{v:,}"),
    ("latency_ms_p50", "latency p50 (ms)", lambda v: f"{v:.4f}"),
    ("energy_mj", "energy (mJ)", lambda v: f"{v:.5f}"),
]

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 2em;
       color: #222; max-width: 1500px; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
.small { color: #666; font-size: 0.9em; }
.note { color: #666; font-style: italic; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.scroll { overflow-x: auto; max-width: 100%; }
svg.chart { border: 1px solid #e3e3e3; border-radius: 4px; }
"""

Row = tuple[str, dict[str, Any], Any]


def render_report(run_json_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Render ``run.json`` into ``report.html`` beside it (or ``out_path``) and return the path.

    Args:
        run_json_path: a ``run.json`` written by :func:`torchshrink.pipeline.runner.run_recipe`
            (or the folder holding it).
        out_path: where to write the HTML; default ``report.html`` beside ``run.json``.

    Raises:
        ConfigError: the file is missing or not a run record.

    Example:
        See the module docstring.
    """
    path = Path(run_json_path)
    if path.is_dir():
        path = path / "run.json"
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"report: cannot read run record '{path}' ({exc})") from None
    if not isinstance(run, dict) or "baseline" not in run or "stages" not in run:
        raise ConfigError(f"report: '{path}' is not a run record (needs 'baseline' and 'stages')")
    out = Path(out_path) if out_path is not None else path.with_name("report.html")
    out.write_text(render_html(run), encoding="utf-8")
    return out


def _label(stage: dict[str, Any]) -> str:
    return f"{stage.get('index', 0) + 1}. {stage.get('name') or stage.get('kind') or '?'}"


def render_html(run: dict[str, Any]) -> str:
    """The report page of a run record (the parsed ``run.json``) as one HTML string.

    Example:
        >>> page = render_html({"baseline": {"accuracy": 0.5}, "stages": []})
        >>> "50.00%" in page and "<script" not in page
        True
    """
    rows: list[Row] = [("baseline", run.get("baseline") or {}, None)] + [
        (_label(s), s.get("metrics") or {}, s.get("seconds")) for s in run.get("stages") or []
    ]
    title = (run.get("recipe") or {}).get("name") or "torchshrink run"
    points = [(label, m) for label, m, _ in rows]
    body = [
        f"<h1>{html.escape(str(title))}</h1>",
        _summary(rows[0][1], rows[-1][1], run.get("latency_vs_baseline")),
        "<h2>Before / after every stage</h2>",
        _table(rows),
        "<h2>Accuracy versus size and latency</h2>",
        _charts(
            [
                tradeoff_chart(points, "file_bytes") or note("no accuracy / size measured"),
                tradeoff_chart(points, "latency_ms_p50") or note("no latency measured"),
            ]
        ),
        *_layer_sections(run),
        *_sensitivity_sections(run),
        *_search_sections(run),
        "<h2>Environment</h2>",
        _env(run),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(str(title))}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _charts(items: list[str]) -> str:
    return "<div class='charts'>" + "\n".join(items) + "</div>"


def _layer_sections(run: dict[str, Any]) -> list[str]:
    snaps = [("baseline", run["baseline_layers"])] if run.get("baseline_layers") else []
    if not snaps:
        return []
    snaps += [(_label(s), s["layers"]) for s in run.get("stages") or [] if s.get("layers")]
    charts = [
        layer_chart(snaps, "sparsity") or note("no per-layer parameter counts recorded"),
        layer_chart(snaps, "bits") or note("every layer keeps its baseline bits per weight"),
        layer_chart(snaps, "rank") or note("no layer was factorized"),
    ]
    out = ["<h2>Per layer</h2>", _charts([f"<div class='scroll'>{c}</div>" for c in charts])]
    hists = histogram_charts(snaps)
    if hists:
        out += [
            "<h2>Weight histograms</h2>",
            "<p class='small'>Non-zero weights of the largest layers, before and after, on the "
            "same bins (zeros are counted as sparsity above).</p>",
            _charts(hists),
        ]
    return out


def _sensitivity_sections(run: dict[str, Any]) -> list[str]:
    out = []
    for s in run.get("stages") or []:
        table = (s.get("details") or {}).get("sensitivity")
        if isinstance(table, dict):
            what = f"{table.get('granularity', '?')}, {table.get('method', '?')}"
            chart = sensitivity_chart(table, title=f"Sensitivity before {_label(s)} ({what})")
            out.append(chart or note(f"{_label(s)}: the sensitivity table has no points"))
    return ["<h2>Sensitivity</h2>", _charts(out)] if out else []


def _search_sections(run: dict[str, Any]) -> list[str]:
    search = run.get("search")
    if not isinstance(search, dict):
        return []
    trials = search.get("trials") or []
    chosen = next((t for t in trials if t.get("number") == search.get("chosen")), None)
    parts = [f"objective {search.get('objective', '?')}"]
    if is_num(search.get("budget")):
        parts.append(f"budget {search['budget']:g}")
    parts.append(f"{len(trials)} trials")
    if chosen is not None and is_num(chosen.get("accuracy")):
        parts.append(
            f"chosen trial {chosen.get('number')}: accuracy {100 * chosen['accuracy']:.2f}%, "
            f"{search.get('objective', 'objective')} {chosen.get('objective_value')}"
        )
    return [
        "<h2>Search</h2>",
        f"<p>{html.escape('; '.join(parts))}</p>",
        search_chart(search) or note("no trial finished with an accuracy and objective value"),
    ]


def _fmt(metrics: dict[str, Any], key: str, fmt: Any) -> str:
    v = metrics.get(key)
    return fmt(v) if is_num(v) else "-"


def _table(rows: list[Row]) -> str:
    head = "".join(f"<th>{t}</th>" for _, t, _ in _COLUMNS)
    lines = [f"<table><tr><th>stage</th>{head}<th>seconds</th></tr>"]
    for label, m, sec in rows:
        cells = "".join(f"<td>{_fmt(m, k, f)}</td>" for k, _, f in _COLUMNS)
        secs = f"{sec:.2f}" if is_num(sec) else "-"
        lines.append(f"<tr><td>{html.escape(label)}</td>{cells}<td>{secs}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _summary(
    before: dict[str, Any], after: dict[str, Any], paired: dict[str, Any] | None = None
) -> str:
    parts = []
    if is_num(before.get("file_bytes")) and is_num(after.get("file_bytes")) and after["file_bytes"]:
        parts.append(f"file {before['file_bytes'] / after['file_bytes']:.2f}x smaller")
    b_lat, a_lat = before.get("latency_ms_p50"), after.get("latency_ms_p50")
    if paired and is_num(paired.get("speedup")):
        parts.append(
            f"{paired['speedup']:.2f}x the speed (baseline and final timed in turns: "
            f"{paired['baseline_ms']:.3f} &rarr; {paired['final_ms']:.3f} ms, "
            f"batch {paired.get('batch')}, {paired.get('threads')} thread(s))"
        )
    elif is_num(b_lat) and is_num(a_lat) and b_lat > 0 and a_lat > 0:
        parts.append(f"latency {b_lat / a_lat:.2f}x")
    if is_num(before.get("accuracy")) and is_num(after.get("accuracy")):
        parts.append(
            f"accuracy {100 * before['accuracy']:.2f}% &rarr; {100 * after['accuracy']:.2f}%"
        )
    return f"<p>{'; '.join(parts)}</p>"


def _env(run: dict[str, Any]) -> str:
    items = {**(run.get("versions") or {}), **(run.get("machine") or {})}
    if is_num(run.get("seconds")):
        items["total seconds"] = f"{run['seconds']:.1f}"
    text = ", ".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in items.items())
    return f"<p class='small'>{text}</p>"
