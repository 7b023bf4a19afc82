"""Per-layer charts as inline SVG: sparsity, bit-width and rank per layer, weight histograms.

They read the layer records the runner stores in ``run.json`` (``run["baseline_layers"]``
and ``stage["layers"]``, see :mod:`torchshrink.pipeline.layer_stats`). A *snapshot* is one
``(label, layers)`` pair: the baseline, then every stage that recorded layers.

Sparsity is taken against the layer's **baseline** parameter count, so weights that
structured pruning removed count the same as weights set to zero. A snapshot whose values
equal the previous drawn one for that quantity is not drawn again (an export stage does not
change the layers).

Example:
    >>> base = [{"name": "fc", "params": 10, "nonzeros": 10, "bits": 32, "rank": None}]
    >>> after = [{"name": "fc", "params": 10, "nonzeros": 4, "bits": 5, "rank": None}]
    >>> svg = layer_chart([("baseline", base), ("1. prune", after)], "sparsity")
    >>> svg.count('<rect class="mark"'), layer_chart([("baseline", base)], "rank")
    (2, None)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchshrink.report.svg import PALETTE, Figure, Scale, fmt_num, is_num, make_scale

Snapshot = tuple[str, list[dict[str, Any]]]
MAX_SERIES = 6
MAX_HISTOGRAMS = 6

_QUANTITY = {
    "sparsity": ("Sparsity per layer", "weights removed or zero (%)"),
    "bits": ("Bits per weight per layer", "bits per weight"),
    "rank": ("Rank per factorized layer", "rank (inner width)"),
}


def _values(snap: Snapshot, quantity: str, base_params: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in snap[1]:
        name = str(r.get("name"))
        if quantity == "sparsity":
            p0 = base_params.get(name) or r.get("params")
            if is_num(p0) and p0 > 0 and is_num(r.get("nonzeros")):
                out[name] = max(0.0, 100.0 * (1.0 - r["nonzeros"] / p0))
        elif is_num(r.get(quantity)):
            out[name] = float(r[quantity])
    return out


def layer_chart(snapshots: Sequence[Snapshot], quantity: str) -> str | None:
    """Grouped bars: one group per layer, one bar per snapshot that changed ``quantity``.

    Args:
        snapshots: ``(label, layer dicts)``, the baseline first.
        quantity: ``"sparsity"``, ``"bits"`` or ``"rank"``.

    Returns:
        The ``<svg>`` text, or ``None`` when there is nothing to compare: no values, or (bits,
        rank) every snapshot equal to the baseline.
    """
    title, y_label = _QUANTITY[quantity]
    base_params = (
        {str(r.get("name")): r.get("params") for r in snapshots[0][1]} if snapshots else {}
    )
    series: list[tuple[str, dict[str, float]]] = []
    for snap in snapshots:
        vals = _values(snap, quantity, base_params)
        if vals and (not series or vals != series[-1][1]):
            series.append((snap[0], vals))
    if not series or (quantity == "bits" and len(series) == 1):
        return None
    if len(series) > MAX_SERIES:
        series = [series[0], *series[-(MAX_SERIES - 1) :]]
    names = list(dict.fromkeys(n for _, vals in series for n in vals))
    all_vals = [v for _, vals in series for v in vals.values()]
    n, k = len(names), len(series)
    width = max(560, min(64 + 170 + n * max(10 * k, 28), 1600))
    height = 340 if n > 6 else 300
    (xa, xb), (ya, yb) = Figure.frame(width, height, legend=True, rotated=n > 6)
    x = Scale(-0.5, n - 0.5, xa, xb)  # categories: exactly one slot per layer
    top = 100.0 if quantity == "sparsity" else max(all_vals)
    y = make_scale([0.0, top], ya, yb, zero=True)
    fig = Figure(
        title,
        x_label="layer",
        y_label=y_label,
        x=x,
        y=y,
        width=width,
        height=height,
        x_ticks=[(float(i), name) for i, name in enumerate(names)],
    )
    slot = 0.8 / k
    for j, (label, vals) in enumerate(series):
        color = PALETTE[j % len(PALETTE)]
        for i, name in enumerate(names):
            if name in vals:
                x0 = i - 0.4 + j * slot
                tip = f"{label} / {name}: {fmt_num(vals[name])}"
                fig.bar(x0, x0 + slot * 0.92, 0.0, vals[name], color=color, tip=tip)
        fig.add_legend(label, color, "bar")
    return fig.render()


def histogram_charts(snapshots: Sequence[Snapshot]) -> list[str]:
    """Weight histograms of the largest layers: baseline against the last snapshot.

    Bins are the baseline's (the runner measures later models on the same ranges); counts
    are of the non-zero weights.

    Returns:
        Up to 6 ``<svg>`` texts, the largest layers first; empty without layer records.
    """
    if not snapshots:
        return []
    base = {str(r.get("name")): r for r in snapshots[0][1] if sum(r.get("hist") or []) > 0}
    last_label, last_layers = snapshots[-1]
    last = {str(r.get("name")): r for r in last_layers if r.get("hist")}
    order = sorted(base, key=lambda nm: -(base[nm].get("params") or 0))[:MAX_HISTOGRAMS]
    charts = []
    for name in order:
        series = [("baseline", base[name], PALETTE[0])]
        after = last.get(name)
        if (
            len(snapshots) > 1
            and after is not None
            and after["hist_range"] == base[name]["hist_range"]
        ):
            series.append((f"after {last_label}", after, PALETTE[1]))
        charts.append(_histogram(name, series))
    return charts


def _histogram(name: str, series: list[tuple[str, dict[str, Any], str]]) -> str:
    lo, hi = (float(v) for v in series[0][1]["hist_range"])
    counts = [c for _, r, _ in series for c in r["hist"]]
    (xa, xb), (ya, yb) = Figure.frame(480, 260, legend=True)
    x = Scale(lo, hi, xa, xb)  # exactly the bins' range: the bars fill the frame
    y = make_scale([0, *counts], ya, yb, zero=True)
    fig = Figure(
        f"Weights of {name}",
        x_label="weight value",
        y_label="non-zero weights",
        x=x,
        y=y,
        width=480,
        height=260,
    )
    for j, (label, rec, color) in enumerate(series):
        hist = rec["hist"]
        w = (hi - lo) / len(hist)
        # the later series drawn narrower on top, so both stay visible where they overlap
        inset = 0.0 if j == 0 else 0.2 * w
        for i, c in enumerate(hist):
            if c > 0:
                a = lo + i * w
                tip = f"{label}: {c} weights in [{a:.3g}, {a + w:.3g})"
                fig.bar(a + inset, a + w - inset, 0.0, c, color=color, tip=tip)
        fig.add_legend(label, color, "bar")
    return fig.render()
