"""Column scans behind the plots: a few narrow columns of the tables, read from the listed files only.

Each scan reads one to three columns (never image bytes or embeddings) batch by batch, filtered in the scan,
and keeps only histogram counts or value counts: a driver's memory does not grow with the table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..lake import Lake

# scheme://[user@]host[:port]/... -> host; hosts are lowercased and a leading "www." dropped
_HOST = r"^[a-zA-Z][a-zA-Z0-9+.\-]*://(?:[^/@?#]*@)?(?P<host>[^/:?#]+)"


@dataclass
class Histogram:
    edges: np.ndarray  # bins + 1 edges
    counts: dict[str, np.ndarray]  # series label -> rows per bin

    @property
    def total(self) -> int:
        return int(sum(c.sum() for c in self.counts.values()))


@dataclass
class Similarity:
    hist: Histogram  # "passed" and "below threshold" (scored), or "dataset" when only the dataset exists
    table: str  # where the values come from: scored, or dataset when scored is absent
    thresholds: dict[str, float]  # label -> threshold of the clip run that scored them


@dataclass
class Sizes:
    original_width: Histogram  # as downloaded
    stored: list[tuple[str, int]]  # "WxH" of the stored (resized) images -> images, most first


def similarity(lake: Lake, bins: int = 50) -> Similarity | None:
    """The similarity histogram, streamed over the files in batches: memory stays flat on a 5B-row table."""
    tables, marks = set(lake.tables()), thresholds(lake)
    if "scored" in tables:
        t, cols = lake.table("scored"), ["similarity", "passed"]
        keep = (pc.field("status") == "scored") & pc.field("similarity").is_valid()
        split = lambda b: {"passed": _passed(b), "below threshold": ~_passed(b)}  # noqa: E731
    elif "dataset" in tables:
        t, cols, keep = lake.table("dataset"), ["similarity"], None
        split = lambda b: {"dataset": np.ones(b.num_rows, bool)}  # noqa: E731
    else:
        return None
    lo, hi = _range(t, "similarity", keep)
    if lo is None:
        return Similarity(Histogram(np.linspace(0, 1, bins + 1), {}), t.name, marks)
    lo, hi = min([lo, *marks.values()]), max([hi, *marks.values()])
    edges = np.linspace(lo, hi + 1e-6, bins + 1)
    counts: dict[str, np.ndarray] = {}
    for b in _batches(t, cols, keep):
        values = _floats(b.column("similarity"))
        for label, mask in split(b).items():
            got = np.histogram(values[mask], bins=edges)[0]
            counts[label] = counts.get(label, 0) + got
    return Similarity(Histogram(edges, counts), t.name, marks)


def thresholds(lake: Lake) -> dict[str, float]:
    """The thresholds of the latest clip run that recorded its config (the multilingual one only when used)."""
    for r in reversed(lake.runs("clip")):
        c = (r.get("config") or {}).get("clip")
        if c and "threshold" in c:
            out = {f"threshold ({c.get('model', 'clip')})": float(c["threshold"])}
            if c.get("multilingual_model") and "multilingual_threshold" in c:
                out[f"multilingual ({c['multilingual_model']})"] = float(c["multilingual_threshold"])
                if "nolang_threshold" in c and float(c["nolang_threshold"]) != float(c["multilingual_threshold"]):
                    out[f"nolang ({c['multilingual_model']})"] = float(c["nolang_threshold"])
            return out
    return {}


def sizes(lake: Lake, bins: int = 40) -> Sizes | None:
    if "images" not in lake.tables():
        return None
    t = lake.table("images")
    ok = pc.field("status") == "success"
    lo, hi = _range(t, "original_width", ok)
    edges = np.linspace(lo, hi + 1, bins + 1) if lo is not None else np.linspace(0, 1, bins + 1)
    orig, stored = np.zeros(bins, np.int64), {}
    for b in _batches(t, ["width", "height", "original_width"], ok):
        w = _floats(b.column("original_width"))
        orig += np.histogram(w[~np.isnan(w)], bins=edges)[0]
        wh = pc.binary_join_element_wise(pc.cast(b.column("width"), pa.string()), pc.cast(b.column("height"), pa.string()), "x")
        for k, n in _ranked(pc.drop_null(wh).value_counts()):
            stored[k] = stored.get(k, 0) + n
    return Sizes(Histogram(edges, {"original width": orig}), sorted(stored.items(), key=lambda kv: (-kv[1], kv[0])))


def languages(lake: Lake) -> tuple[str, list[tuple[str, int]]] | None:
    """(table, [(language, rows)] most first) of the furthest stage that has rows: the release if it exists."""
    name = _furthest(lake, ("dataset", "images", "pairs_unique", "pairs"))
    if name is None:
        return None
    counts: Counter = Counter()
    for b in _batches(lake.table(name), ["language"]):
        counts.update(dict(_ranked(b.column("language").value_counts())))
    return name, sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def domains(lake: Lake, top: int = 20) -> tuple[str, list[tuple[str, int]], int] | None:
    """(table, the top image hosts [(host, rows)], how many distinct hosts) of the release's urls."""
    name = _furthest(lake, ("dataset", "images", "pairs_unique"))
    if name is None:
        return None
    counts: Counter = Counter()
    for b in _batches(lake.table(name), ["url"]):
        hosts = pc.struct_field(pc.extract_regex(b.column("url"), _HOST), "host")
        hosts = pc.replace_substring_regex(pc.utf8_lower(pc.fill_null(hosts, "(no host)")), r"^www\.", "")
        counts.update(dict(_ranked(hosts.value_counts())))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return name, ranked[:top], len(ranked)


def _furthest(lake: Lake, names: tuple[str, ...]) -> str | None:
    tables = set(lake.tables())
    return next((n for n in names if n in tables and lake.table(n).num_rows()), None)


def _ranked(value_counts: pa.Array) -> list[tuple[str, int]]:
    pairs = [(v if v is not None else "(null)", n) for v, n in
             zip(value_counts.field("values").to_pylist(), value_counts.field("counts").to_pylist())]
    return sorted(pairs, key=lambda kv: (-kv[1], kv[0]))


def _batches(table, columns: list[str], keep=None):
    """The table's record batches (listed files only), only the given columns, filtered in the scan."""
    if not table.files():
        return
    yield from table.dataset().to_batches(columns=columns, filter=keep, batch_size=1 << 18)


def _range(table, column: str, keep=None) -> tuple[float | None, float | None]:
    """min and max of a column over the kept rows, in one streamed pass (histogram edges need them first)."""
    lo = hi = None
    for b in _batches(table, [column], keep):
        mm = pc.min_max(b.column(column)).as_py()
        if mm["min"] is not None:
            lo = mm["min"] if lo is None else min(lo, mm["min"])
            hi = mm["max"] if hi is None else max(hi, mm["max"])
    return (None, None) if lo is None else (float(lo), float(hi))


def _passed(batch) -> np.ndarray:
    return pc.fill_null(batch.column("passed"), False).to_numpy(zero_copy_only=False).astype(bool)


def _floats(col) -> np.ndarray:
    return pc.cast(col, pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)
