"""A generated ``pairs`` table with a realistic duplicate structure, for dedup tests and ``bench/dedup``.

Rows draw an *item* (an image and its caption): most items are new, some recur at random (the same image on
other pages and crawls), and a few heavy hitters recur a lot (logos, stock photos). A share of recurrences
carry another caption, so ``url`` mode removes more than ``url_text``. Built with numpy and Arrow compute.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..job import Unit
from ..keys import pair_uid
from ..lake import FileEntry, Lake
from ..schemas import PAIRS

_WORDS = np.array("red blue green old small large wooden stone bright quiet city river house garden tree dog cat "
                  "bridge market street tower boat mountain lake beach".split())
_LANGS = np.array(["en", "en", "en", "de", "fr", "es", "ru", "ja", "zh", "nolang"])


def _words(ids: np.ndarray, n: int) -> pa.Array:
    parts = [pa.array(_WORDS[(ids // (len(_WORDS) ** k)) % len(_WORDS)]) for k in range(n)]
    return pc.binary_join_element_wise(*parts, " ")


def generate_rows(rows: int, seed: int, unique_share: float = 0.7, heavy_share: float = 0.02,
                  recaption_share: float = 0.1, first_item: int = 0, item_space: int | None = None,
                  source_file: str = "f", crawl: str | None = None) -> pa.Table:
    """``rows`` pair rows in PAIRS' schema; item ids ``first_item..`` are new, repeats draw from ``item_space``."""
    rng = np.random.default_rng(seed)
    space = item_space or max(1, first_item + int(rows * unique_share))
    kind = rng.random(rows)
    items = np.where(kind < unique_share, first_item + np.arange(rows) % max(1, int(rows * unique_share)),
                     rng.integers(0, space, rows))
    heavy = kind > 1 - heavy_share
    items[heavy] = rng.zipf(1.6, int(heavy.sum())) % 500  # a few items on very many pages
    host = items % 997
    url = pc.binary_join_element_wise(
        "https://img", pc.cast(pa.array(host), pa.string()), ".example-cdn.com/p/",
        pc.cast(pa.array(items), pa.string()), ".jpg", "")
    caption = _words(items, 4)
    variant = (rng.random(rows) < recaption_share) & (kind >= unique_share)
    suffix = pa.array(np.array(["", " (1)", " (2)", " (3)"])[np.where(variant, rng.integers(1, 4, rows), 0)])
    text = pc.binary_join_element_wise(caption, suffix, "")
    uid = pa.array([pair_uid(u, t) for u, t in zip(url.to_pylist(), text.to_pylist())], pa.int64())
    page_id = rng.integers(0, rows * 4 + 1, rows)
    page = pc.binary_join_element_wise("https://site", pc.cast(pa.array(page_id % 5000), pa.string()),
                                       ".example.org/page/", pc.cast(pa.array(page_id), pa.string()), ".html", "")
    n = rows
    return pa.table({
        "uid": uid, "url": url, "text": text, "page_url": page,
        "language": pa.array(_LANGS[items % len(_LANGS)]),
        "language_score": pa.array(np.full(n, 0.99, dtype=np.float32)),
        "source_file": pa.array([source_file] * n, pa.string()),
        "source_offset": pa.array(np.sort(rng.integers(0, 1 << 30, n)).astype(np.int64)),
        "crawl": pa.array([crawl] * n, pa.string()),
        "license": pa.nulls(n, pa.string()),
        "width": pa.nulls(n, pa.int32()), "height": pa.nulls(n, pa.int32()),
    }, schema=PAIRS)


def write_pairs(lake: Lake, tables: dict[str, pa.Table], run_id: str = "generated", table: str = "pairs",
                ) -> list[FileEntry]:
    """Commit ``{unit key: rows}`` to the lake's pairs table as extract would (one file per unit). Returns the
    staged entries (a unit already listed is not listed again)."""
    t = lake.table(table)
    entries = [t.write_unit(run_id, Unit(key, key).id, key, rows) for key, rows in tables.items()]
    t.commit(entries, run_id)
    return entries


def make_pairs_lake(lake_url: str, files: int, rows_per_file: int, crawls: tuple[str, ...] = ("CC-MAIN-2024-10",),
                    seed: int = 0, **kw) -> dict[str, pa.Table]:
    """``files`` pairs files per crawl, items overlapping across files and crawls. Returns what was written."""
    lake = Lake(lake_url)
    out = {}
    space = int(files * len(crawls) * rows_per_file * kw.get("unique_share", 0.7))
    for c, crawl in enumerate(crawls):
        for i in range(files):
            n = c * files + i
            key = f"crawl-data/{crawl}/segments/0/wat/{crawl}-{i:05d}.warc.wat.gz"
            out[key] = generate_rows(rows_per_file, seed * 1000 + n, first_item=n * rows_per_file,
                                     item_space=space, source_file=key, crawl=crawl, **kw)
    write_pairs(lake, out)
    return out
