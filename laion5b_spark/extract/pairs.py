"""From pages to pair rows: LAION's filters, each drop counted under its own reason.

Pages are collected as they come (one Python append per image); the filters then run once per unit on
Arrow columns, because per-row Python cost was the extract stage's bottleneck (bench/extract). Rows that
need real parsing - relative or unusual URLs, captions with entities or non-ASCII text - go through the
scalar functions in ``laion5b_spark.urls`` and ``.text``, which remain the definition of every rule; the
vector expressions only take the shortcuts those functions take themselves.
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from contextlib import contextmanager
from itertools import repeat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..accounting import Ledger
from ..keys import pair_uids
from ..schemas import PAIRS
from ..urls import NEEDS_SERIALIZING, PLAIN_HOST, BadUrl, join, resolve_link
from .language import LanguageDetector
from .page import Page
from .text import clean_caption

_DIM = re.compile(r"^\s*(\d{1,6})(?:\.\d+)?\s*(?:px)?\s*$", re.IGNORECASE)
# resolve_link's own shortcut (urls._plain_host_end, NEEDS_SERIALIZING) as one pattern, for links without a
# fragment: http(s)://plain-lower-case-host, then the end or / ? and nothing that resolve_link changes or encodes.
# Such a link resolves to itself; the rest (relative links, fragments, ...) are resolved row by row.
_AS_IS_URL = "^" + PLAIN_HOST + "(?:[/?][^" + NEEDS_SERIALIZING[1:-1] + "#]*)?$"


def parse_dimension(value: str | None) -> int | None:
    if not value:
        return None
    m = _DIM.match(value)
    return int(m.group(1)) if m else None


class PairBuilder:
    def __init__(self, settings, *, source_file: str, crawl: str | None, ledger: Ledger):
        self.min_alt = settings.min_alt_length
        self.max_url = settings.max_url_length
        self.max_alt_chars = settings.max_alt_chars
        exts = [e.lower() for e in settings.exclude_extensions]
        # url.split("?", 1)[0].lower().endswith(ext), as one regex
        self.exclude_re = ("^[^?]*(?:" + "|".join(re.escape(e) for e in exts) + r")(?:\?|$)") if exts else None
        self.detect = LanguageDetector(settings.min_language_share) if settings.language_detection else None
        self.source_file = source_file
        self.crawl = crawl
        self.ledger = ledger
        self.pages: dict[str, list] = {"url": [], "license": [], "offset": []}
        self.bases: list[str] = []
        # the images' columns (Image's fields, then the index in self.bases of the image's page)
        self.img: tuple[list, ...] = ([], [], [], [], [], [])

    def add_page(self, page: Page, offset: int) -> None:
        base = page.url
        if page.base:
            try:
                base = join(page.url, page.base.strip())  # (urljoin, with its shortcuts for the usual links)
            except ValueError:
                pass
        license_url = None
        if page.license:
            try:
                license_url = resolve_link(page.license, base)
            except BadUrl:
                pass
        idx = len(self.bases)
        self.bases.append(base)
        self.pages["url"].append(page.url)
        self.pages["license"].append(license_url)
        self.pages["offset"].append(offset)
        n = len(page.images)
        if n:  # one zip per page, not an append per field and image (the tuples die here: no work for the GC)
            for column, values in zip(self.img, zip(*page.images)):
                column += values
            self.img[5].extend(repeat(idx, n))
        self.ledger.rows_in += n

    # -- the filters, once per unit ------------------------------------------------------------------------
    def table(self) -> pa.Table:
        with _no_cyclic_gc():
            return self._table()

    def _table(self) -> pa.Table:
        lg = self.ledger
        src, alt, width, height, raw, page = self.img
        if not src:
            return PAIRS.empty_table()
        t = pa.table({"page": pa.array(page, pa.int32()), "src": pa.array(src, pa.string()),
                      "alt": pa.array(alt, pa.string()), "raw": pa.array(raw, pa.bool_()),
                      "width": pa.array(width, pa.string()), "height": pa.array(height, pa.string())})
        has_alt = pc.fill_null(pc.greater(pc.binary_length(t["alt"]), 0), False)
        self._drop("no_alt", t.num_rows - _count(has_alt))
        t = t.filter(has_alt)

        urls = self._resolve(t)
        ok = pc.is_valid(urls)
        t, urls = t.filter(ok), urls.filter(ok)

        keep = pc.less_equal(pc.utf8_length(urls), self.max_url)
        self._drop("url_too_long", len(urls) - _count(keep))
        t, urls = t.filter(keep), urls.filter(keep)
        if self.exclude_re and len(urls):
            keep = pc.invert(pc.match_substring_regex(pc.utf8_lower(urls), self.exclude_re))
            self._drop("excluded_extension", len(urls) - _count(keep))
            t, urls = t.filter(keep), urls.filter(keep)

        texts = self._clean(t)
        keep = pc.greater_equal(pc.utf8_length(texts), self.min_alt)
        self._drop("alt_too_short", len(texts) - _count(keep))
        t, urls, texts = t.filter(keep), urls.filter(keep), texts.filter(keep)

        # the first (url, text) of each page wins
        n = len(texts)
        firsts = pa.table({"p": t["page"], "u": urls, "x": texts, "i": pa.array(np.arange(n, dtype=np.int64))}) \
            .group_by(["p", "u", "x"]).aggregate([("i", "min")])["i_min"]
        first = np.zeros(n, dtype=bool)
        first[firsts.to_numpy()] = True
        self._drop("duplicate_in_page", n - len(firsts))
        keep = pa.array(first)
        t, urls, texts = t.filter(keep), urls.filter(keep), texts.filter(keep)
        n = len(texts)
        lg.rows_out += n
        if self.detect:
            languages, scores = zip(*self.detect.many(texts.to_pylist())) if n else ((), ())
        else:
            languages, scores = ["nolang"] * n, [0.0] * n
        page_idx = t["page"]
        pages_t = pa.table({"url": pa.array(self.pages["url"], pa.string()),
                            "license": pa.array(self.pages["license"], pa.string()),
                            "offset": pa.array(self.pages["offset"], pa.int64())}).take(page_idx)
        return pa.Table.from_arrays([
            pair_uids(urls, texts),
            urls, texts, pages_t["url"],
            pa.array(languages, pa.string()), pa.array(scores, pa.float32()),
            pa.array([self.source_file] * n, pa.string()),
            pages_t["offset"],
            pa.array([self.crawl] * n, pa.string()),
            pages_t["license"],
            _dimensions(t["width"]), _dimensions(t["height"]),
        ], schema=PAIRS)

    def _drop(self, reason: str, n: int) -> None:
        if n:
            self.ledger.drop(reason, n)

    def _resolve(self, t: pa.Table) -> pa.Array | pa.ChunkedArray:
        """Resolved URLs; null where the link was dropped (counted here under its BadUrl reason)."""
        fast = src = t["src"]
        scalar = pc.invert(pc.match_substring_regex(src, _AS_IS_URL))
        idx = _indices(scalar)
        if idx is None:
            return fast
        bases = self.bases
        out = []
        dropped: Counter = Counter()
        for s, page in zip(pc.take(src, idx).to_pylist(), pc.take(t["page"], idx).to_pylist()):
            try:
                out.append(resolve_link(s, bases[page]))
            except BadUrl as exc:
                out.append(None)
                dropped[exc.reason] += 1
        for reason, n in dropped.items():
            self._drop(reason, n)
        return _replace(fast, scalar, out)

    def _clean(self, t: pa.Table) -> pa.Array | pa.ChunkedArray:
        """clean_caption on every alt: ASCII text without entities by Arrow kernels, the rest row by row."""
        alt = pc.utf8_slice_codeunits(t["alt"], 0, self.max_alt_chars)
        simple = pc.string_is_ascii(alt)
        if pc.any(t["raw"]).as_py():  # (only old-style WATs have raw attribute text)
            # raw attribute text with a reference or NUL needs decode_attribute (NUL becomes U+FFFD, not a space)
            simple = pc.and_(simple, pc.invert(pc.and_(t["raw"], pc.match_substring_regex(alt, "[&\\x00]"))))
        # ASCII whitespace and control characters, exactly what clean_caption collapses in ASCII text (a run that
        # is one space already is one: the pattern skips those, most of the matches)
        fast = pc.utf8_trim(pc.replace_substring_regex(alt, r"[\x00-\x1f\x7f][\x00-\x20\x7f]*| [\x00-\x20\x7f]+", " "),
                            " ")
        scalar = pc.invert(simple)
        idx = _indices(scalar)
        if idx is None:
            return fast
        m = self.max_alt_chars
        cleaned: tuple[dict, dict] = ({}, {})  # by raw_html, then alt: captions repeat within a unit
        out = []
        for a, r in zip(pc.take(alt, idx).to_pylist(), pc.take(t["raw"], idx).to_pylist()):
            seen = cleaned[r]
            text = seen.get(a)
            if text is None:
                text = seen[a] = clean_caption(a, raw_html=r, max_chars=m)
            out.append(text)
        return _replace(fast, scalar, out)


@contextmanager
def _no_cyclic_gc():
    """What the column pass allocates is freed by reference counting, but its ~10^5 container objects (language
    results, parsed URLs) set off ~140 cyclic collections per unit, which scan the whole heap: ~2% of extract's
    time (bench/extract)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _replace(fast, mask, values: list) -> pa.Array:
    """``fast`` with the rows where ``mask`` is true replaced, in order, by ``values`` (the scalar results)."""
    return pc.replace_with_mask(_array(fast), _array(mask), pa.array(values, pa.string()))


def _indices(mask) -> pa.Array | None:
    """Where a null-free mask is true; None when nowhere (pc.indices_nonzero crashes on an empty array)."""
    idx = np.flatnonzero(_array(mask).to_numpy(zero_copy_only=False))
    return pa.array(idx) if len(idx) else None


def _array(col) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _count(mask) -> int:
    return pc.sum(mask, min_count=0).as_py()  # 0, not null, for an empty mask


def _dimensions(col: pa.ChunkedArray) -> pa.Array:
    if col.null_count == len(col):
        return pa.nulls(len(col), pa.int32())
    return pa.array([parse_dimension(v) if v else None for v in col.to_pylist()], pa.int32())
