"""One self-contained HTML report from a run's ``run.json`` (no network needed to view it).

The report reads ``run.json`` only and never computes a metric: it shows the before/after
table of every stage (accuracy, params, non-zeros, bytes on disk, MACs, latency, energy) and
an accuracy-versus-size chart, drawn with matplotlib (imported lazily) and embedded as a
base64 PNG.

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

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from torchshrink.core.errors import ConfigError

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
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
.small { color: #666; font-size: 0.9em; }
"""


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
    rows = [("baseline", run["baseline"], None)] + [
        (f"{s['index'] + 1}. {s.get('name', s.get('kind', '?'))}", s["metrics"], s.get("seconds"))
        for s in run["stages"]
    ]
    title = (run.get("recipe") or {}).get("name") or "torchshrink run"
    body = [
        f"<h1>{html.escape(str(title))}</h1>",
        _summary(run["baseline"], rows[-1][1]),
        "<h2>Before / after every stage</h2>",
        _table(rows),
        "<h2>Accuracy versus size</h2>",
        f'<img alt="accuracy versus size" src="data:image/png;base64,{_chart(rows)}">',
        "<h2>Environment</h2>",
        _env(run),
    ]
    doc = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(str(title))}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    out = Path(out_path) if out_path is not None else path.with_name("report.html")
    out.write_text(doc, encoding="utf-8")
    return out


def _fmt(metrics: dict[str, Any], key: str, fmt: Any) -> str:
    v = metrics.get(key)
    return "-" if v is None else fmt(v)


def _table(rows: list[tuple[str, dict[str, Any], float | None]]) -> str:
    head = "".join(f"<th>{t}</th>" for _, t, _ in _COLUMNS)
    lines = [f"<table><tr><th>stage</th>{head}<th>seconds</th></tr>"]
    for label, m, sec in rows:
        cells = "".join(f"<td>{_fmt(m, k, f)}</td>" for k, _, f in _COLUMNS)
        secs = "-" if sec is None else f"{sec:.2f}"
        lines.append(f"<tr><td>{html.escape(label)}</td>{cells}<td>{secs}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _summary(before: dict[str, Any], after: dict[str, Any]) -> str:
    parts = []
    if before.get("file_bytes") and after.get("file_bytes"):
        parts.append(f"file {before['file_bytes'] / after['file_bytes']:.2f}x smaller")
    if before.get("latency_ms_p50") and after.get("latency_ms_p50"):
        parts.append(f"latency {before['latency_ms_p50'] / after['latency_ms_p50']:.2f}x")
    if before.get("accuracy") is not None and after.get("accuracy") is not None:
        parts.append(
            f"accuracy {100 * before['accuracy']:.2f}% &rarr; {100 * after['accuracy']:.2f}%"
        )
    return f"<p>{'; '.join(parts)}</p>"


def _chart(rows: list[tuple[str, dict[str, Any], float | None]]) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display: render into memory only
    import matplotlib.pyplot as plt

    pts = [
        (label, m["file_bytes"] / 1024, 100 * m["accuracy"])
        for label, m, _ in rows
        if m.get("file_bytes") is not None and m.get("accuracy") is not None
    ]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    try:
        if pts:
            xs, ys = [p[1] for p in pts], [p[2] for p in pts]
            ax.plot(xs, ys, "o-")
            for label, x, y in pts:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("bytes on disk (KiB)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _env(run: dict[str, Any]) -> str:
    items = {**(run.get("versions") or {}), **(run.get("machine") or {})}
    if run.get("seconds") is not None:
        items["total seconds"] = f"{run['seconds']:.1f}"
    text = ", ".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in items.items())
    return f"<p class='small'>{text}</p>"
