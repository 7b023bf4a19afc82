"""torchshrink.report: renders a run record (run.json) into a self-contained HTML file (L4).

Example:
    >>> from torchshrink.report import render_report
    >>> callable(render_report)
    True
"""

from __future__ import annotations

from torchshrink.report.html import render_html, render_report

__all__ = ["render_html", "render_report"]
