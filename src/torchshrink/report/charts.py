"""Run-level charts as inline SVG: accuracy against size / latency, sensitivity, search trials.

Each function takes plain dicts from ``run.json`` and returns an ``<svg>`` string, or ``None``
when there is nothing to draw (the page then says so in words instead of showing an empty
frame). Values that are missing, ``None``, NaN or infinite are skipped.

Example:
    >>> m0 = {"accuracy": 0.97, "file_bytes": 200_000, "latency_ms_p50": 0.2}
    >>> m1 = {"accuracy": 0.95, "file_bytes": 40_000, "latency_ms_p50": 0.0}
    >>> svg = tradeoff_chart([("baseline", m0), ("1. prune", m1)], "file_bytes")
    >>> svg.count('<circle class="mark"'), tradeoff_chart([("b", m0), ("1", m1)], "macs")
    (2, None)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchshrink.report.svg import PALETTE, Figure, esc, fmt_num, is_num, make_scale

# metric key -> (axis label, divisor, chart title)
TRADEOFF_AXES: dict[str, tuple[str, float, str]] = {
    "file_bytes": ("bytes on disk (KiB)", 1024.0, "Accuracy versus size"),
    "latency_ms_p50": ("latency p50 (ms)", 1.0, "Accuracy versus latency"),
    "macs": ("MACs", 1.0, "Accuracy versus MACs"),
    "energy_mj": ("energy (mJ)", 1.0, "Accuracy versus energy"),
}
MAX_CURVES = 10


def _pct(v: float) -> str:
    return f"{v:.4g}%"


def tradeoff_chart(points: Sequence[tuple[str, dict[str, Any]]], key: str) -> str | None:
    """Accuracy (%) against one metric, one point per stage joined in stage order.

    Args:
        points: ``(stage label, metrics)`` for the baseline and every stage.
        key: the metric on x: ``file_bytes``, ``latency_ms_p50``, ``macs`` or ``energy_mj``.
            Zero values are skipped (a latency that was not measured is stored as 0).

    Returns:
        The ``<svg>`` text, or ``None`` without a single usable point.
    """
    x_label, div, title = TRADEOFF_AXES[key]
    pts = [
        (label, float(m[key]) / div, 100.0 * float(m["accuracy"]))
        for label, m in points
        if is_num(m.get(key)) and m[key] > 0 and is_num(m.get("accuracy"))
    ]
    if not pts:
        return None
    (xa, xb), (ya, yb) = Figure.frame()
    x = make_scale([p[1] for p in pts], xa + 12, xb - 12, log=None)
    y = make_scale([p[2] for p in pts], ya - 8, yb + 8)
    log_note = " (log scale)" if x.log else ""
    fig = Figure(title, x_label=x_label + log_note, y_label="accuracy (%)", x=x, y=y, y_fmt=_pct)
    xy = [(p[1], p[2]) for p in pts]
    fig.line(xy, color=PALETTE[0])
    tips = [f"{label}: {fmt_num(px)} {x_label}, accuracy {py:.2f}%" for label, px, py in pts]
    fig.markers(xy, color=PALETTE[0], tips=tips)
    for i, (label, px, py) in enumerate(pts):
        fig.label(px, py, label, dy=-7 if i % 2 == 0 else 15)  # alternate: close points overlap
    return fig.render()


def sensitivity_chart(table: dict[str, Any], *, title: str = "Sensitivity") -> str | None:
    """Accuracy (%) against pruning ratio, one curve per layer, baseline as a dashed line.

    Args:
        table: :meth:`torchshrink.prune.SensitivityTable.to_dict` output (``points`` of
            ``{layer, ratio, accuracy, ...}`` and ``baseline_accuracy``).
        title: chart title.

    Returns:
        The ``<svg>`` text, or ``None`` without points. With more than 10 layers only the 10
        that lose the most accuracy are drawn.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    for p in table.get("points") or []:
        if is_num(p.get("ratio")) and is_num(p.get("accuracy")):
            curves.setdefault(str(p.get("layer")), []).append(
                (100.0 * p["ratio"], 100.0 * p["accuracy"])
            )
    if not curves:
        return None
    if len(curves) > MAX_CURVES:
        worst = sorted(curves, key=lambda k: min(a for _, a in curves[k]))[:MAX_CURVES]
        curves = {k: curves[k] for k in curves if k in worst}
        title += f" ({MAX_CURVES} most sensitive layers)"
    base = table.get("baseline_accuracy")
    ys = [a for c in curves.values() for _, a in c] + ([100.0 * base] if is_num(base) else [])
    (xa, xb), (ya, yb) = Figure.frame(legend=True)
    x = make_scale([0.0, 100.0], xa, xb)
    y = make_scale(ys, ya, yb)
    fig = Figure(
        title, x_label="fraction of the layer pruned (%)", y_label="accuracy (%)", x=x, y=y
    )
    fig.y_fmt = _pct
    if is_num(base):
        fig.line([(0.0, 100.0 * base), (100.0, 100.0 * base)], color="#777", dash=True)
        fig.add_legend("unpruned", "#777", "dash")
    for i, (layer, pts) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        fig.line(pts, color=color)
        fig.markers(pts, color=color, r=3, tips=[f"{layer}: {r:.0f}% -> {a:.2f}%" for r, a in pts])
        fig.add_legend(layer, color, "line")
    return fig.render()


def search_chart(search: dict[str, Any]) -> str | None:
    """Accuracy (%) against the search objective for every trial, the Pareto front highlighted.

    Args:
        search: ``run["search"]``: ``objective``, ``budget``, ``trials`` (each with
            ``number``, ``accuracy``, ``objective_value``, ``pareto``) and ``chosen``.

    Returns:
        The ``<svg>`` text, or ``None`` without a usable trial.
    """
    trials = [
        t
        for t in search.get("trials") or []
        if is_num(t.get("accuracy")) and is_num(t.get("objective_value"))
    ]
    if not trials:
        return None
    objective = str(search.get("objective") or "objective")
    budget = search.get("budget")
    xs = [float(t["objective_value"]) for t in trials] + ([budget] if is_num(budget) else [])
    (xa, xb), (ya, yb) = Figure.frame(legend=True)
    x = make_scale(xs, xa + 8, xb - 8)
    y = make_scale([100.0 * t["accuracy"] for t in trials], ya - 8, yb + 8)
    fig = Figure(
        f"Search: accuracy versus {objective}",
        x_label=f"{objective} (objective value)",
        y_label="accuracy (%)",
        x=x,
        y=y,
        y_fmt=_pct,
    )

    def xy(t: dict[str, Any]) -> tuple[float, float]:
        return (float(t["objective_value"]), 100.0 * float(t["accuracy"]))

    def tip(t: dict[str, Any]) -> str:
        params = ", ".join(f"{k}={v}" for k, v in (t.get("params") or {}).items())
        return (
            f"trial {t.get('number')}: {objective} {fmt_num(t['objective_value'])}, "
            f"accuracy {100 * t['accuracy']:.2f}% {params}"
        )

    others = [t for t in trials if not t.get("pareto")]
    front = sorted((t for t in trials if t.get("pareto")), key=lambda t: t["objective_value"])
    fig.markers([xy(t) for t in others], color="#9a9a9a", r=3.5, tips=[tip(t) for t in others])
    fig.add_legend(f"trials ({len(trials)})", "#9a9a9a")
    if front:
        fig.line([xy(t) for t in front], color=PALETTE[1])
        fig.markers([xy(t) for t in front], color=PALETTE[1], tips=[tip(t) for t in front])
        fig.add_legend(f"Pareto front ({len(front)})", PALETTE[1])
    chosen = [t for t in trials if t.get("number") == search.get("chosen")]
    if chosen and search.get("chosen") is not None:
        fig.markers([xy(chosen[0])], color=PALETTE[2], r=8, hollow=True, tips=[tip(chosen[0])])
        fig.add_legend(f"chosen (trial {chosen[0].get('number')})", PALETTE[2])
    if is_num(budget):
        fig.line([(budget, y.lo), (budget, y.hi)], color=PALETTE[6], dash=True)
        fig.add_legend(f"budget {fmt_num(budget)}", PALETTE[6], "dash")
    return fig.render()


def note(text: str) -> str:
    """A one-line note shown where a chart has nothing to draw."""
    return f"<p class='note'>{esc(text)}</p>"
