"""Chart primitives drawn as inline SVG text: scales with readable ticks, and a figure.

The report embeds its charts as ``<svg>`` elements written here, with no plotting library:
they stay crisp at any zoom, need nothing fetched, and their labels are page text a reader
(or a test) can search. Every drawn data mark carries ``class="mark"``.

Example:
    >>> x = make_scale([1.0, 3.0], 40, 240)
    >>> y = make_scale([0.5, 0.5], 200, 20)  # all-equal values still get a range
    >>> fig = Figure("demo", x_label="size", y_label="accuracy", x=x, y=y)
    >>> fig.markers([(1.0, 0.5), (3.0, 0.5)], color=PALETTE[0])
    >>> svg = fig.render()
    >>> svg.startswith("<svg") and svg.count('class="mark"')
    2
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

# Colour-blind-safe categorical palette (Okabe-Ito), then greys.
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
    "#888888",
    "#444444",
)
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def esc(text: object) -> str:
    """Escape ``text`` for SVG / HTML content and attributes."""
    return html.escape(str(text), quote=True)


def is_num(v: object) -> TypeGuard[int | float]:
    """A finite int or float (bools, ``None``, NaN and infinities are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_num(v: float) -> str:
    """Compact tick label: ``1500 -> '1.5k'``, ``2e6 -> '2M'``, ``0.25 -> '0.25'``."""
    a = abs(v)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


@dataclass(frozen=True)
class Scale:
    """Maps data values in ``[lo, hi]`` (``lo < hi``) to pixels ``[a, b]``, linear or log10."""

    lo: float
    hi: float
    a: float
    b: float
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.a + t * (self.b - self.a)

    def ticks(self) -> list[float]:
        """Tick values inside the domain: 1-2-5 steps, or decades (and 2, 5) on a log scale."""
        if self.log:
            out = []
            for e in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1):
                mults = (1, 2, 5) if self.hi / self.lo <= 1e3 else (1,)
                out += [m * 10.0**e for m in mults if self.lo <= m * 10.0**e <= self.hi * 1.0001]
            return out
        step = _step(self.hi - self.lo)
        first = math.ceil(self.lo / step - 1e-9)
        return [round(k * step, 12) for k in range(first, math.floor(self.hi / step + 1e-9) + 1)]


def _step(span: float, n: int = 5) -> float:
    mag = 10.0 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (m * mag) <= n:
            return m * mag
    return 10 * mag


def make_scale(
    values: Sequence[object], a: float, b: float, *, log: bool | None = False, zero: bool = False
) -> Scale:
    """A scale over the finite ``values`` (others ignored), padded to round tick values.

    Args:
        values: data values; NaN, ``None`` and infinities are skipped.
        a: pixel of the low end.
        b: pixel of the high end.
        log: log10 scale; ``None`` picks log when the positive values span over 30x.
        zero: include 0 in the domain (bars).

    Example:
        >>> s = make_scale([3.0, 97.0], 0, 100)
        >>> (s.lo, s.hi), s.ticks()[:3]
        ((0.0, 100.0), [0.0, 20.0, 40.0])
    """
    nums = [float(v) for v in values if is_num(v)]  # type: ignore[arg-type]
    pos = [v for v in nums if v > 0]
    if log is None:
        log = bool(pos) and len(pos) == len(nums) and max(pos) / min(pos) > 30
    if log and pos:
        lo, hi = 10.0 ** math.floor(math.log10(min(pos))), 10.0 ** math.ceil(math.log10(max(pos)))
        return Scale(lo, hi if hi > lo else lo * 10, a, b, log=True)
    lo, hi = (min(nums), max(nums)) if nums else (0.0, 1.0)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):
        pad = abs(lo) * 0.1 or 1.0  # all-equal values: centre them in a small range
        lo, hi = lo - pad, hi + pad
    step = _step(hi - lo)
    lo2, hi2 = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    return Scale(lo2, hi2 if hi2 > lo2 else lo2 + step, a, b)


class Figure:
    """One chart: a frame with title, axes, ticks, grid, labels, legend and marks.

    Args:
        title: drawn at the top and used as the SVG's accessible name.
        x_label: x axis label.
        y_label: y axis label.
        x: x scale (pixels within ``[left, width - right]``); see :meth:`frame`.
        y: y scale (pixels within ``[top, height - bottom]``).
        width: pixels.
        height: pixels.
        x_fmt: tick label formatter for x.
        y_fmt: tick label formatter for y.
        x_ticks: ``[(value, label)]`` instead of numeric ticks (categories).

    Example:
        See the module docstring.
    """

    def __init__(
        self,
        title: str,
        *,
        x_label: str,
        y_label: str,
        x: Scale,
        y: Scale,
        width: int = 560,
        height: int = 320,
        x_fmt: Callable[[float], str] = fmt_num,
        y_fmt: Callable[[float], str] = fmt_num,
        x_ticks: Sequence[tuple[float, str]] | None = None,
    ) -> None:
        self.title, self.width, self.height = title, width, height
        self.x, self.y = x, y
        self.x_label, self.y_label = x_label, y_label
        self.x_fmt, self.y_fmt, self.x_ticks = x_fmt, y_fmt, x_ticks
        self.marks: list[str] = []
        self.legend: list[tuple[str, str, str]] = []  # (label, colour, kind)

    @staticmethod
    def frame(width: int = 560, height: int = 320, *, legend: bool = False, rotated: bool = False):
        """Pixel ranges ``((x_a, x_b), (y_a, y_b))`` of the plot area for a figure this size."""
        right = 150 if legend else 20
        bottom = 100 if rotated else 52
        return (64, width - right), (height - bottom, 40)

    def add_legend(self, label: str, color: str, kind: str = "marker") -> None:
        """A legend entry: ``kind`` is ``marker``, ``line``, ``dash`` or ``bar``."""
        self.legend.append((label, color, kind))

    def line(self, pts: Sequence[tuple[float, float]], *, color: str, dash: bool = False) -> None:
        """A polyline through ``pts`` (data units); fewer than two points draw nothing."""
        if len(pts) < 2:
            return
        d = " ".join(f"{self.x(px):.1f},{self.y(py):.1f}" for px, py in pts)
        extra = ' stroke-dasharray="5,4"' if dash else ""
        self.marks.append(
            f'<polyline class="mark" points="{d}" fill="none" stroke="{color}" '
            f'stroke-width="1.8"{extra}/>'
        )

    def markers(
        self,
        pts: Sequence[tuple[float, float]],
        *,
        color: str,
        r: float = 4.0,
        tips: Sequence[str] | None = None,
        hollow: bool = False,
    ) -> None:
        """Circles at ``pts`` with optional hover text."""
        for i, (px, py) in enumerate(pts):
            tip = f"<title>{esc(tips[i])}</title>" if tips else ""
            fill = "white" if hollow else color
            self.marks.append(
                f'<circle class="mark" cx="{self.x(px):.1f}" cy="{self.y(py):.1f}" r="{r}" '
                f'fill="{fill}" stroke="{color}" stroke-width="1.5">{tip}</circle>'
            )

    def bar(self, x0: float, x1: float, y0: float, y1: float, *, color: str, tip: str) -> None:
        """A rectangle between data coordinates ``x0..x1`` and ``y0..y1``."""
        left, right = sorted((self.x(x0), self.x(x1)))
        top, bottom = sorted((self.y(y0), self.y(y1)))
        self.marks.append(
            f'<rect class="mark" x="{left:.1f}" y="{top:.1f}" width="{max(right - left, 0.8):.1f}" '
            f'height="{max(bottom - top, 0.8):.1f}" fill="{color}" fill-opacity="0.8">'
            f"<title>{esc(tip)}</title></rect>"
        )

    def label(self, px: float, py: float, text: str, *, dx: float = 6, dy: float = -6) -> None:
        """A small text label next to a data point (to its left in the right half of the plot)."""
        x = self.x(px)
        anchor = "start"
        if x > (self.x.a + self.x.b) / 2:  # keep labels of right-hand points inside the frame
            x, anchor = x - dx, "end"
        else:
            x += dx
        self.marks.append(
            f'<text x="{x:.1f}" y="{self.y(py) + dy:.1f}" font-size="11" text-anchor="{anchor}" '
            f'fill="#333">{esc(text)}</text>'
        )

    def render(self) -> str:
        """The ``<svg>`` element as text."""
        W, H = self.width, self.height
        xa, xb, ya, yb = self.x.a, self.x.b, self.y.a, self.y.b
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{esc(self.title)}" style="{FONT}">',
            f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>',
            f'<text x="{W / 2:.0f}" y="22" text-anchor="middle" font-size="15" '
            f'font-weight="600">{esc(self.title)}</text>',
        ]
        for v in self.y.ticks():
            py = self.y(v)
            out.append(f'<line x1="{xa}" x2="{xb}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e6e6e6"/>')
            out.append(
                f'<text x="{xa - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11">'
                f"{esc(self.y_fmt(v))}</text>"
            )
        rotate = self.x_ticks is not None and len(self.x_ticks) > 6
        xt = (
            self.x_ticks
            if self.x_ticks is not None
            else [(v, self.x_fmt(v)) for v in self.x.ticks()]
        )
        for v, text in xt:
            px = self.x(v)
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{ya}" y2="{ya + 5}" stroke="#555"/>')
            if rotate:
                out.append(
                    f'<text transform="translate({px + 3:.1f},{ya + 10}) rotate(-45)" '
                    f'text-anchor="end" font-size="10">{esc(text[:24])}</text>'
                )
            else:
                out.append(
                    f'<text x="{px:.1f}" y="{ya + 18}" text-anchor="middle" font-size="11">'
                    f"{esc(text)}</text>"
                )
        out.append(f'<path d="M{xa},{yb} V{ya} H{xb}" fill="none" stroke="#555" stroke-width="1"/>')
        x_label_y = H - 8
        out.append(
            f'<text x="{(xa + xb) / 2:.0f}" y="{x_label_y}" text-anchor="middle" '
            f'font-size="12">{esc(self.x_label)}</text>'
        )
        out.append(
            f'<text transform="translate(16,{(ya + yb) / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle" font-size="12">{esc(self.y_label)}</text>'
        )
        out += self.marks
        out += self._legend(xb + 14, yb)
        out.append("</svg>")
        return "\n".join(out)

    def _legend(self, x: float, y: float) -> list[str]:
        out = []
        for i, (text, color, kind) in enumerate(self.legend):
            cy = y + 8 + 18 * i
            if kind == "bar":
                sym = f'<rect x="{x}" y="{cy - 5}" width="12" height="10" fill="{color}"/>'
            elif kind in ("line", "dash"):
                dash = ' stroke-dasharray="4,3"' if kind == "dash" else ""
                sym = (
                    f'<line x1="{x}" x2="{x + 14}" y1="{cy}" y2="{cy}" stroke="{color}" '
                    f'stroke-width="2"{dash}/>'
                )
            else:
                sym = f'<circle cx="{x + 6}" cy="{cy}" r="4" fill="{color}"/>'
            out.append(
                f'{sym}<text x="{x + 20}" y="{cy + 4}" font-size="11">{esc(text[:22])}</text>'
            )
        return out
