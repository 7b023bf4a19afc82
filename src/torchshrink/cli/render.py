"""Human-readable tables for the terminal (rich). Reads measurement records only."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def human_bytes(n: float | None) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    if n is None:
        return "-"
    units = ["B", "KiB", "MiB", "GiB"]
    v = float(n)
    for u in units:
        if abs(v) < 1024 or u == units[-1]:
            return f"{v:.0f} {u}" if u == "B" else f"{v:.1f} {u}"
        v /= 1024
    return f"{v:.1f} GiB"


def human_count(n: float | None) -> str:
    """``2293000`` -> ``'2.29 M'``."""
    if n is None:
        return "-"
    v = float(n)
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}"
    return f"{v:.0f}"


def profile_tables(prof: dict[str, Any], *, title: str = "profile") -> list[Table]:
    """A per-layer table and a summary table from a ``ModelProfile.to_dict()`` record."""
    layers = Table(title=f"{title}: per layer", show_lines=False)
    for col in ("layer", "type", "params", "non-zero", "MACs", "output"):
        layers.add_column(col, justify="left" if col in ("layer", "type", "output") else "right")
    for row in prof.get("layers", []):
        layers.add_row(
            str(row.get("name", "")),
            str(row.get("type", "")),
            f"{row.get('params', 0):,}",
            f"{row.get('nonzero', row.get('nonzero_params', 0)):,}",
            human_count(row.get("macs")),
            str(row.get("output_shape", "") or ""),
        )
    summary = Table(title=f"{title}: summary")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    rows = [
        ("parameters", f"{prof.get('params', 0):,}"),
        ("non-zero parameters", f"{prof.get('nonzero_params', 0):,}"),
        ("dense fp32 bytes", human_bytes(prof.get("dense_bytes"))),
        ("model file bytes", human_bytes(prof.get("file_bytes"))),
        ("file after zstd", human_bytes(prof.get("zstd_bytes"))),
        ("MACs", human_count(prof.get("macs"))),
    ]
    if prof.get("latency_ms_p50") is not None:
        rows += [
            (
                "latency p50 / p90",
                f"{prof['latency_ms_p50']:.3f} / {prof['latency_ms_p90']:.3f} ms",
            ),
            ("throughput", f"{prof.get('throughput', 0):,.1f} samples/s"),
            ("batch size / threads", f"{prof.get('batch_size')} / {prof.get('threads')}"),
        ]
    if prof.get("peak_memory_bytes") is not None:
        rows.append(("peak memory", human_bytes(prof.get("peak_memory_bytes"))))
    if prof.get("energy_mj") is not None:
        rows.append(("energy estimate", f"{prof['energy_mj']:.4f} mJ"))
    if prof.get("accuracy") is not None:
        rows.append(("accuracy", f"{100 * prof['accuracy']:.2f} %"))
    for k, v in rows:
        summary.add_row(k, v)
    return [layers, summary]


def print_profile(
    prof: dict[str, Any], *, title: str = "profile", console: Console | None = None
) -> None:
    console = console or Console()
    for table in profile_tables(prof, title=title):
        console.print(table)
    for note in prof.get("notes", []) or []:
        console.print(f"[dim]note: {note}[/dim]")


def run_gains(baseline: dict[str, Any], final: dict[str, Any]) -> dict[str, float | None]:
    """Before/after ratios of a compression run: ``size_x``, ``latency_x`` and ``accuracy_delta``.

    ``size_x`` is baseline bytes on disk over the final bytes (the smallest file the run wrote),
    ``latency_x`` baseline latency over final latency, ``accuracy_delta`` final minus baseline
    accuracy in points. A ratio whose inputs are missing or zero is ``None``.

    Example:
        >>> run_gains({"file_bytes": 400, "latency_ms_p50": 2.0, "accuracy": 0.9},
        ...           {"file_bytes": 100, "latency_ms_p50": 1.0, "accuracy": 0.89})
        {'size_x': 4.0, 'latency_x': 2.0, 'accuracy_delta': -1.0}
    """

    def ratio(key: str) -> float | None:
        a, b = baseline.get(key), final.get(key)
        return a / b if a and b else None

    acc_a, acc_b = baseline.get("accuracy"), final.get("accuracy")
    delta = None if acc_a is None or acc_b is None else round(100 * (acc_b - acc_a), 4)
    return {"size_x": ratio("file_bytes"), "latency_x": ratio("latency_ms_p50"),
            "accuracy_delta": delta}  # fmt: skip


def print_run_summary(
    rows: list[tuple[str, dict[str, Any]]], *, title: str = "torchshrink compress",
    paired: dict[str, Any] | None = None, console: Console | None = None,
) -> dict[str, float | None]:  # fmt: skip
    """Print one row per stage (accuracy, params, non-zeros, bytes, latency) and the gains line.

    Returns the gains of the last row over the first (see :func:`run_gains`); with ``paired``
    (the runner's ``latency_vs_baseline``: baseline and final timed in turns) the speed-up is
    that measurement's, which a busy machine distorts far less than two separate profiles.
    """
    table = Table(title=title)
    for col in ("stage", "accuracy", "params", "non-zeros", "bytes on disk", "latency ms"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for label, m in rows:
        acc, lat = m.get("accuracy"), m.get("latency_ms_p50")
        table.add_row(
            label,
            "-" if acc is None else f"{100 * acc:.2f}%",
            f"{m.get('params', 0):,}",
            f"{m.get('nonzero_params', 0):,}",
            f"{m.get('file_bytes', 0):,}",
            "-" if lat is None else f"{lat:.4f}",
        )
    console = console or Console()
    console.print(table)
    gains = run_gains(rows[0][1], rows[-1][1])
    if paired and paired.get("speedup"):
        gains["latency_x"] = paired["speedup"]
    parts = []
    if gains["size_x"] is not None:
        parts.append(f"{gains['size_x']:.1f}x smaller on disk")
    if gains["latency_x"] is not None:
        how = " (timed in turns with the baseline)" if paired and paired.get("speedup") else ""
        parts.append(f"{gains['latency_x']:.2f}x the speed{how}")
    if gains["accuracy_delta"] is not None:
        parts.append(f"accuracy {gains['accuracy_delta']:+.2f} points")
    if parts:
        console.print(f"[bold]vs baseline:[/bold] {', '.join(parts)}")
    return gains
