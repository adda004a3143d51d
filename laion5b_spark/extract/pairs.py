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

import pyarrow as pa
import pyarrow.compute as pc

from ..accounting import Ledger
from ..keys import pair_uid
from ..schemas import PAIRS
from ..urls import BadUrl, resolve_link
from .language import LanguageDetector
from .page import Page
from .text import clean_caption

_DIM = re.compile(r"^\s*(\d{1,6})(?:\.\d+)?\s*(?:px)?\s*$", re.IGNORECASE)
# the same test as urls._plain_host_end: http(s)://plain-lower-case-host followed by / ? # or the end
_PLAIN_URL = r"^https?://[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*(?:[/?#]|$)"
_URL_SPACE = r"[ \t\n\r\f]"  # resolve_link strips or encodes these: such rows take the scalar path


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
        pages, url_l, text_l = t["page"].to_pylist(), urls.to_pylist(), texts.to_pylist()
        seen: set = set()
        first = []
        for key in zip(pages, url_l, text_l):
            first.append(key not in seen)
            seen.add(key)
        keep = pa.array(first, type=pa.bool_())
        self._drop("duplicate_in_page", len(first) - sum(first))
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

    def _resolve(self, t: pa.Table) -> pa.ChunkedArray:
        """Resolved URLs; null where the link was dropped (counted here under its BadUrl reason)."""
        src = t["src"]
        plain = pc.and_(pc.match_substring_regex(src, _PLAIN_URL),
                        pc.invert(pc.match_substring_regex(src, _URL_SPACE)))
        # plain absolute links resolve to themselves without the fragment (resolve_link's own shortcut)
        fast = pc.replace_substring_regex(src, "#.*$", "")
        out = fast.to_pylist()
        mask = plain.to_pylist()
        if not all(mask):
            srcs, pages = src.to_pylist(), t["page"].to_pylist()
            dropped: Counter = Counter()
            for i, is_plain in enumerate(mask):
                if is_plain:
                    continue
                try:
                    out[i] = resolve_link(srcs[i], self.bases[pages[i]])
                except BadUrl as exc:
                    out[i] = None
                    dropped[exc.reason] += 1
            for reason, n in dropped.items():
                self._drop(reason, n)
        return pa.chunked_array([pa.array(out, pa.string())])

    def _clean(self, t: pa.Table) -> pa.ChunkedArray:
        """clean_caption on every alt: ASCII text without entities by Arrow kernels, the rest row by row."""
        alt = pc.utf8_slice_codeunits(t["alt"], 0, self.max_alt_chars)
        simple = pc.and_(pc.string_is_ascii(alt),
                         pc.invert(pc.and_(t["raw"], pc.match_substring(alt, "&"))))
        # ASCII whitespace and control characters, exactly what clean_caption collapses in ASCII text
        fast = pc.utf8_trim(pc.replace_substring_regex(alt, r"[\x00-\x20\x7f]+", " "), " ")
        out = fast.to_pylist()
        mask = simple.to_pylist()
        if not all(mask):
            alts, raw = alt.to_pylist(), t["raw"].to_pylist()
            for i, is_simple in enumerate(mask):
                if not is_simple:
                    out[i] = clean_caption(alts[i], raw_html=raw[i], max_chars=self.max_alt_chars)
        return pa.chunked_array([pa.array(out, pa.string())])


def _count(mask) -> int:
    return pc.sum(mask, min_count=0).as_py()  # 0, not null, for an empty mask


def _dimensions(col: pa.ChunkedArray) -> pa.Array:
    if col.null_count == len(col):
        return pa.nulls(len(col), pa.int32())
    return pa.array([parse_dimension(v) if v else None for v in col.to_pylist()], pa.int32())
