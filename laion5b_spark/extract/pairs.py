"""From pages to pair rows: LAION's filters, each drop counted under its own reason.

Pages are collected as they come (one Python append per image); the filters then run once per unit on
Arrow columns, because per-row Python cost was the extract stage's bottleneck (bench/extract). Rows that
need real parsing - relative or unusual URLs, captions with entities or non-ASCII text - go through the
scalar functions in ``laion5b_spark.urls`` and ``.text``, which remain the definition of every rule; the
vector expressions only take the shortcuts those functions take themselves.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urljoin

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..accounting import Ledger
from ..keys import pair_uid
from ..schemas import PAIRS
from ..urls import NEEDS_SERIALIZING, BadUrl, resolve_link
from .language import LanguageDetector
from .page import Page
from .text import clean_caption

_DIM = re.compile(r"^\s*(\d{1,6})(?:\.\d+)?\s*(?:px)?\s*$", re.IGNORECASE)
# the same test as urls._plain_host_end: http(s)://plain-lower-case-host followed by / ? # or the end
_PLAIN_URL = r"^https?://[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*(?:[/?#]|$)"


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
        self.img: dict[str, list] = {"page": [], "src": [], "alt": [], "raw": [], "width": [], "height": []}

    def add_page(self, page: Page, offset: int) -> None:
        base = page.url
        if page.base:
            try:
                base = urljoin(page.url, page.base.strip())
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
        img = self.img
        for im in page.images:
            img["page"].append(idx)
            img["src"].append(im.src)
            img["alt"].append(im.alt)
            img["raw"].append(im.alt_is_raw_html)
            img["width"].append(im.width)
            img["height"].append(im.height)
        self.ledger.rows_in += len(page.images)

    # -- the filters, once per unit ------------------------------------------------------------------------
    def table(self) -> pa.Table:
        lg = self.ledger
        t = pa.table({k: pa.array(v, type=pa.int32() if k == "page" else pa.bool_() if k == "raw" else pa.string())
                      for k, v in self.img.items()})
        if not t.num_rows:
            return PAIRS.empty_table()
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
        url_l, text_l = urls.to_pylist(), texts.to_pylist()

        n = len(url_l)
        lg.rows_out += n
        if self.detect:
            langs = [self.detect(x) for x in text_l]
        else:
            langs = [("nolang", 0.0)] * n
        page_idx = t["page"]
        pages_t = pa.table({"url": pa.array(self.pages["url"], pa.string()),
                            "license": pa.array(self.pages["license"], pa.string()),
                            "offset": pa.array(self.pages["offset"], pa.int64())}).take(page_idx)
        return pa.Table.from_arrays([
            pa.array([pair_uid(u, x) for u, x in zip(url_l, text_l)], pa.int64()),
            urls, texts, pages_t["url"],
            pa.array([lang for lang, _ in langs], pa.string()),
            pa.array([score for _, score in langs], pa.float32()),
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
        src = t["src"]
        plain = pc.and_(pc.match_substring_regex(src, _PLAIN_URL),
                        pc.invert(pc.match_substring_regex(src, NEEDS_SERIALIZING)))  # resolve_link's own test
        # plain absolute links resolve to themselves without the fragment (resolve_link's own shortcut)
        fast = pc.replace_substring_regex(src, "#.*$", "")
        scalar = pc.invert(plain)
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
        # raw attribute text with a reference or NUL needs decode_attribute (NUL becomes U+FFFD, not a space)
        simple = pc.and_(pc.string_is_ascii(alt),
                         pc.invert(pc.and_(t["raw"], pc.match_substring_regex(alt, "[&\\x00]"))))
        # ASCII whitespace and control characters, exactly what clean_caption collapses in ASCII text (a run that
        # is one space already is one: the pattern skips those, most of the matches)
        fast = pc.utf8_trim(pc.replace_substring_regex(alt, r"[\x00-\x1f\x7f][\x00-\x20\x7f]*| [\x00-\x20\x7f]+", " "),
                            " ")
        scalar = pc.invert(simple)
        idx = _indices(scalar)
        if idx is None:
            return fast
        m = self.max_alt_chars
        out = [clean_caption(a, raw_html=r, max_chars=m)
               for a, r in zip(pc.take(alt, idx).to_pylist(), pc.take(t["raw"], idx).to_pylist())]
        return _replace(fast, scalar, out)


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
