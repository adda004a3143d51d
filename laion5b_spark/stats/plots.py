"""The stats plots, as PNG bytes (written through the lake, so an s3:// lake gets them too).

matplotlib's object API on an Agg canvas: no pyplot, so nothing global changes (a notebook's inline backend
stays as it was) and no display is needed.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .columns import Histogram, Similarity, Sizes


def _figure(w: float = 7.0, h: float = 4.0):
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


_COLOURS = {"passed": "#2a9d8f", "below threshold": "#bbbbbb", "dataset": "#2a9d8f", "original width": "#457b9d"}


def _bars(ax, hist: Histogram) -> None:
    """Stacked bars of a streamed histogram (counts per bin, computed before: no values are held)."""
    widths, bottom = np.diff(hist.edges), np.zeros(len(hist.edges) - 1)
    for label, counts in hist.counts.items():
        ax.bar(hist.edges[:-1], counts, width=widths, bottom=bottom, align="edge",
               color=_COLOURS.get(label), label=f"{label} ({int(counts.sum()):,})")
        bottom = bottom + counts


def similarity_histogram(sim: Similarity) -> bytes:
    fig, ax = _figure()
    _bars(ax, sim.hist)
    for (label, t), style in zip(sim.thresholds.items(), ("-", "--", ":")):
        ax.axvline(t, color="#d62828", linestyle=style, label=f"{label} = {t:g}")
    ax.set_xlabel("CLIP similarity (image, text)")
    ax.set_ylabel("rows")
    ax.set_title(f"similarity of the {sim.table} rows")
    ax.legend(fontsize=8)
    return _png(fig)


def size_histogram(sizes: Sizes) -> bytes:
    fig = Figure(figsize=(9.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    _bars(left, sizes.original_width)
    left.set_title(f"original width ({sizes.original_width.total:,} images)")
    left.set_xlabel("pixels")
    left.set_ylabel("images")
    shown = sizes.stored[:12]
    if shown:
        right.barh([k for k, _ in shown][::-1], [n for _, n in shown][::-1], color="#457b9d")
    right.set_title("stored size (width x height)")
    right.set_xlabel("images")
    return _png(fig)


def bar_chart(ranked: list[tuple[str, int]], title: str, xlabel: str = "rows", top: int = 20) -> bytes:
    shown = ranked[:top]
    fig, ax = _figure(7.0, max(2.5, 0.3 * len(shown) + 1.2))
    ax.barh([k for k, _ in shown][::-1], [n for _, n in shown][::-1], color="#e76f51")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig)
