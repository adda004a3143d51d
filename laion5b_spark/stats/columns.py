"""Column scans behind the plots: a few narrow columns of the tables, read from the listed files only.

Each scan reads one to four columns (never image bytes or embeddings), so it stays cheap on a big lake:
parquet is columnar and the heavy columns are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..lake import Lake

# scheme://[user@]host[:port]/... -> host; hosts are lowercased and a leading "www." dropped
_HOST = r"^[a-zA-Z][a-zA-Z0-9+.\-]*://(?:[^/@?#]*@)?(?P<host>[^/:?#]+)"


@dataclass
class Similarity:
    values: np.ndarray  # float32, the scored rows' similarity
    passed: np.ndarray | None  # bool per value (None when only the dataset was read)
    table: str  # where they come from: scored, or dataset when scored is absent
    thresholds: dict[str, float]  # label -> threshold of the clip run that scored them


@dataclass
class Sizes:
    width: np.ndarray  # of the stored (resized) images
    height: np.ndarray
    original_width: np.ndarray  # as downloaded; NaN where unknown
    original_height: np.ndarray


def similarity(lake: Lake) -> Similarity | None:
    tables = set(lake.tables())
    if "scored" in tables:
        t = lake.table("scored").to_arrow(["status", "similarity", "passed"])
        t = t.filter(pc.and_(pc.equal(t.column("status"), "scored"), pc.is_valid(t.column("similarity"))))
        passed = pc.fill_null(t.column("passed"), False).to_numpy(zero_copy_only=False).astype(bool)
        return Similarity(_floats(t.column("similarity")), passed, "scored", thresholds(lake))
    if "dataset" in tables:
        t = lake.table("dataset").to_arrow(["similarity"])
        return Similarity(_floats(t.column("similarity")), None, "dataset", thresholds(lake))
    return None


def thresholds(lake: Lake) -> dict[str, float]:
    """The thresholds of the latest clip run that recorded its config (the multilingual one only when used)."""
    for r in reversed(lake.runs("clip")):
        c = (r.get("config") or {}).get("clip")
        if c and "threshold" in c:
            out = {f"threshold ({c.get('model', 'clip')})": float(c["threshold"])}
            if c.get("multilingual_model") and "multilingual_threshold" in c:
                out[f"multilingual ({c['multilingual_model']})"] = float(c["multilingual_threshold"])
            return out
    return {}


def sizes(lake: Lake) -> Sizes | None:
    if "images" not in lake.tables():
        return None
    images = lake.table("images")
    names = set(images.to_arrow().schema.names) if not images.files() else set(images.dataset().schema.names)
    cols = [c for c in ("status", "width", "height", "original_width", "original_height") if c in names]
    t = images.to_arrow(cols)
    t = t.filter(pc.equal(t.column("status"), "success"))
    get = (lambda c: _floats(t.column(c)) if c in cols else np.full(t.num_rows, np.nan, np.float32))
    return Sizes(get("width"), get("height"), get("original_width"), get("original_height"))


def languages(lake: Lake) -> tuple[str, list[tuple[str, int]]] | None:
    """(table, [(language, rows)] most first) of the furthest stage that has rows: the release if it exists."""
    for name in ("dataset", "images", "pairs_unique", "pairs"):
        if name in lake.tables() and lake.table(name).num_rows():
            counts = lake.table(name).to_arrow(["language"]).column("language").value_counts()
            return name, _ranked(counts)
    return None


def domains(lake: Lake, top: int = 20) -> tuple[str, list[tuple[str, int]], int] | None:
    """(table, the top image hosts [(host, rows)], how many distinct hosts) of the release's urls."""
    for name in ("dataset", "images", "pairs_unique"):
        if name in lake.tables() and lake.table(name).num_rows():
            urls = lake.table(name).to_arrow(["url"]).column("url")
            hosts = pc.struct_field(pc.extract_regex(urls, _HOST), "host")
            hosts = pc.replace_substring_regex(pc.utf8_lower(pc.fill_null(hosts, "(no host)")), r"^www\.", "")
            ranked = _ranked(hosts.value_counts())
            return name, ranked[:top], len(ranked)
    return None


def _ranked(value_counts: pa.Array) -> list[tuple[str, int]]:
    pairs = [(v if v is not None else "(null)", n) for v, n in
             zip(value_counts.field("values").to_pylist(), value_counts.field("counts").to_pylist())]
    return sorted(pairs, key=lambda kv: (-kv[1], kv[0]))


def _floats(col) -> np.ndarray:
    return pc.cast(col, pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)
