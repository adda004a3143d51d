"""The stats plots, as PNG bytes (written through the lake, so an s3:// lake gets them too).

matplotlib's object API on an Agg canvas: no pyplot, so nothing global changes (a notebook's inline backend
stays as it was) and no display is needed. Bars of categories carry their counts; a histogram whose bins span
two orders of magnitude or more gets a log count axis (and says so), so a long tail stays visible.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .columns import ASPECT_LIMIT, RELEASE_LABEL, Histogram, Safety, Similarity, Sizes

LOG_SPAN = 100  # largest / smallest non-zero count from which a count axis is logarithmic


def _figure(w: float = 7.0, h: float = 4.0, rows: int = 1, cols: int = 1):
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


_COLOURS = {RELEASE_LABEL: "#2a9d8f", "duplicate (not released)": "#e9c46a", "below threshold": "#bbbbbb",
            "original width": "#457b9d", "original height": "#457b9d", "aspect ratio": "#457b9d",
            "punsafe": "#e76f51", "pwatermark": "#8d6cab"}


def skewed(counts) -> bool:
    nonzero = np.asarray(counts)[np.asarray(counts) > 0]
    return len(nonzero) > 1 and nonzero.max() >= LOG_SPAN * nonzero.min()


def _bars(ax, hist: Histogram, ylabel: str, log_x: bool = False) -> None:
    """Stacked bars of a streamed histogram (counts per bin, computed before: no values are held)."""
    widths, bottom = np.diff(hist.edges), np.zeros(len(hist.edges) - 1)
    for label, counts in hist.counts.items():
        ax.bar(hist.edges[:-1], counts, width=widths, bottom=bottom, align="edge",
               color=_COLOURS.get(label), label=f"{label} ({int(counts.sum()):,})")
        bottom = bottom + counts
    if log_x:
        ax.set_xscale("log")
    if skewed(bottom):
        ax.set_yscale("log")
        ylabel += " (log scale)"
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25 of a row
    ax.set_ylabel(ylabel)


def _labelled_barh(ax, ranked: list[tuple[str, int]], colour: str) -> None:
    """Horizontal bars, most first from the top, each with its count; a log axis when the counts are skewed."""
    keys, counts = [k for k, _ in ranked][::-1], [n for _, n in ranked][::-1]
    bars = ax.barh(keys, counts, color=colour)
    ax.bar_label(bars, labels=[f"{n:,}" for n in counts], padding=2, fontsize=8)
    if skewed(counts):
        ax.set_xscale("log")
        ax.set_xlim(right=max(counts) * 4)  # room for the labels
    else:
        ax.set_xlim(right=max(counts) * 1.15)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def similarity_histogram(sim: Similarity) -> bytes:
    fig, (ax,) = _figure()
    _bars(ax, sim.hist, "rows")
    for (label, t), style in zip(sim.thresholds.items(), ("-", "--", ":")):
        ax.axvline(t, color="#d62828", linestyle=style, label=f"{label} = {t:g}")
    ax.set_xlabel("CLIP similarity (image, text)")
    release = int(sim.hist.counts.get(RELEASE_LABEL, np.zeros(1)).sum())
    if sim.table == "scored":
        ax.set_title(f"similarity of the scored rows; the release: {release:,} (passed, minus duplicates)", fontsize=10)
    else:
        ax.set_title(f"similarity of the release ({release:,} rows)", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def size_histogram(sizes: Sizes) -> bytes:
    """Original width, height and aspect ratio of the images, and their stored sizes: four panels."""
    fig, (width, height, aspect, stored) = _figure(10.0, 7.0, 2, 2)
    whose = "the release's images" if sizes.of == RELEASE_LABEL else "downloaded images"
    for ax, hist, what in ((width, sizes.original_width, "width"), (height, sizes.original_height, "height")):
        _bars(ax, hist, "images")
        ax.set_title(f"original {what} of {whose} ({hist.total:,})", fontsize=10)
        ax.set_xlabel("pixels")
    _bars(aspect, sizes.aspect, "images", log_x=True)
    ticks = [t for t in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8) if t <= ASPECT_LIMIT]
    aspect.set_xticks(ticks, [f"{t:g}" if t >= 1 else f"1/{1 / t:g}" for t in ticks])
    aspect.minorticks_off()
    aspect.set_title(f"aspect ratio (width / height) of {whose} ({sizes.aspect.total:,})", fontsize=10)
    aspect.set_xlabel(f"width / height (beyond 1/{ASPECT_LIMIT:g} .. {ASPECT_LIMIT:g}: in the end bins)")
    shown = sizes.stored[:12]
    if shown:
        _labelled_barh(stored, shown, "#457b9d")
    stored.set_title(f"stored size (width x height) of {whose}", fontsize=10)
    stored.set_xlabel("images")
    return _png(fig)


def safety_histogram(safety: Safety) -> bytes | None:
    """punsafe / pwatermark histograms of the release, one panel per column that has values (None: neither)."""
    present = {k: h for k, h in safety.hists.items() if h is not None}
    if not present:
        return None
    fig, axes = _figure(5.0 * len(present), 3.6, 1, len(present))
    for ax, (column, hist) in zip(axes, present.items()):
        _bars(ax, hist, "rows")
        ax.set_title(f"{column} of the release ({hist.total:,} of {safety.rows:,} rows have one)", fontsize=10)
        ax.set_xlabel(column)
    return _png(fig)


def bar_chart(ranked: list[tuple[str, int]], title: str, xlabel: str = "rows", top: int = 20) -> bytes:
    shown = ranked[:top]
    fig, (ax,) = _figure(7.0, max(2.8, 0.3 * len(shown) + 1.5))
    if shown:
        _labelled_barh(ax, shown, "#e76f51")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel + (" (log scale)" if shown and skewed([n for _, n in shown]) else ""))
    return _png(fig)
