"""The stats plots, as PNG bytes (written through the lake, so an s3:// lake gets them too).

matplotlib's object API on an Agg canvas: no pyplot, so nothing global changes (a notebook's inline backend
stays as it was) and no display is needed.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .columns import Similarity, Sizes


def _figure(w: float = 7.0, h: float = 4.0):
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def similarity_histogram(sim: Similarity, bins: int = 50) -> bytes:
    fig, ax = _figure()
    lo, hi = (float(sim.values.min()), float(sim.values.max())) if len(sim.values) else (0.0, 1.0)
    edges = np.linspace(min(lo, *sim.thresholds.values(), hi), max(hi, *sim.thresholds.values(), lo) + 1e-6, bins + 1)
    if sim.passed is not None:
        ax.hist([sim.values[sim.passed], sim.values[~sim.passed]], bins=edges, stacked=True,
                label=[f"passed ({int(sim.passed.sum()):,})", f"below threshold ({int((~sim.passed).sum()):,})"],
                color=["#2a9d8f", "#bbbbbb"])
    else:
        ax.hist(sim.values, bins=edges, color="#2a9d8f", label=f"dataset ({len(sim.values):,})")
    for (label, t), style in zip(sim.thresholds.items(), ("-", "--", ":")):
        ax.axvline(t, color="#d62828", linestyle=style, label=f"{label} = {t:g}")
    ax.set_xlabel("CLIP similarity (image, text)")
    ax.set_ylabel("rows")
    ax.set_title(f"similarity of the {sim.table} rows")
    ax.legend(fontsize=8)
    return _png(fig)


def size_histogram(sizes: Sizes, bins: int = 40) -> bytes:
    fig = Figure(figsize=(9.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    orig = sizes.original_width[~np.isnan(sizes.original_width)]
    if len(orig):
        left.hist(orig, bins=bins, color="#457b9d")
    left.set_title(f"original width ({len(orig):,} images)")
    left.set_xlabel("pixels")
    left.set_ylabel("images")
    stored = np.stack([sizes.width, sizes.height], axis=1)
    stored = stored[~np.isnan(stored).any(axis=1)]
    if len(stored):
        labels, counts = np.unique([f"{int(w)}x{int(h)}" for w, h in stored], return_counts=True)
        order = np.argsort(-counts)[:12]
        right.barh(labels[order][::-1], counts[order][::-1], color="#457b9d")
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
