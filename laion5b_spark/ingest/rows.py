"""From list rows to pair rows: extract's own URL resolution, caption cleanup and uid, each drop counted.

Each list row goes through extract's ``PairBuilder`` as an image on a page of its own, so a URL and a caption
give the same ``url``, ``text`` and ``uid`` here as on a crawled page (relative URLs have no page to resolve
against: ``bad_scheme``, as on a non-http page). What a list row has that a page does not - its language, width,
height, page URL and any kept columns - is taken from the list after. ``ListRows.table`` ends the unit: rows whose
uid an earlier row of the unit has are ``duplicate_in_list`` (across units, dedup drops them).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..accounting import ErrorSamples, Ledger
from ..extract.language import NOLANG, LanguageDetector
from ..extract.page import Image, Page
from ..extract.pairs import PairBuilder
from ..schemas import PAIRS
from .lists import as_text

# the side table of --keep-cols: the kept columns of each pairs row ingest wrote, by its place in its list
LIST_COLUMNS = pa.schema([
    pa.field("source_file", pa.string(), nullable=False),  # pairs.source_file: the list file
    pa.field("source_offset", pa.int64(), nullable=False),  # pairs.source_offset: the row in it
    pa.field("columns", pa.string(), nullable=False),  # JSON object: kept column -> the list's value
])
LEDGER = "list_rows"


class ListRows:
    """One unit's rows, batch by batch. ``s``: IngestSettings."""

    def __init__(self, s, *, source_file: str, crawl: str | None, detect: LanguageDetector | None,
                 errors: ErrorSamples | None = None):
        self.s = s
        self.errors = errors if errors is not None else ErrorSamples()
        self.source_file = source_file
        self.crawl = crawl
        self.detect = detect
        self.ledger = Ledger(LEDGER)
        self.builder_settings = SimpleNamespace(
            min_alt_length=s.min_text_length, max_url_length=s.max_url_length, max_alt_chars=s.max_alt_chars,
            exclude_extensions=s.exclude_extensions, language_detection=False, min_language_share=0.0)
        self.parts: list[pa.Table] = []
        self.side: list[pa.Table] = []
        self.languages: dict[str, int] = {}

    def fail(self, reason: str, n: int = 1) -> None:
        """Rows the reader could not parse (they are rows of the list all the same)."""
        self.ledger.rows_in += n
        self.ledger.fail(reason, n)

    def add(self, batch: pa.Table, numbers: np.ndarray) -> None:
        s, lg = self.s, self.ledger
        lg.rows_in += batch.num_rows
        url = as_text(batch.column(s.url_col))
        text = as_text(batch.column(s.caption_col))
        no_url = _blank(url)
        no_text = _blank(text) & ~no_url
        for reason, mask, other in (("missing_url", no_url, text), ("missing_text", no_text, url)):
            if mask.any():
                lg.fail(reason, int(mask.sum()))
                for i in np.flatnonzero(mask)[: self.errors.per_reason].tolist():  # samples: the first few
                    self.errors.add(reason, f"row {int(numbers[i])} of {self.source_file}", source=self.source_file,
                                    offset=int(numbers[i]), excerpt=other[i].as_py())
        keep = np.flatnonzero(~(no_url | no_text))
        if not len(keep):
            return
        pages = as_text(batch.column(s.page_url_col)).to_pylist() if s.page_url_col else None
        built = Ledger(LEDGER)
        builder = PairBuilder(self.builder_settings, source_file=self.source_file, crawl=self.crawl, ledger=built)
        urls, texts = url.to_pylist(), text.to_pylist()
        for i in keep.tolist():
            n = int(numbers[i])
            page = (pages[i] if pages and pages[i] else None) or f"{self.source_file}#row={n}"
            builder.add_page(Page(page, images=[Image(urls[i], texts[i])]), n)
        rows = builder.table()
        for reason, k in built.dropped.items():
            lg.drop(reason, k)
        if not rows.num_rows:
            return
        at = np.searchsorted(numbers, rows.column("source_offset").to_numpy())  # each pair's row in the batch
        take = pa.array(at)
        rows = self._language(rows, batch, take)
        for col, name in ((s.width_col, "width"), (s.height_col, "height")):
            if col:
                rows = rows.set_column(rows.schema.get_field_index(name), PAIRS.field(name),
                                       _dimensions(batch.column(col).take(take)))
        self.parts.append(rows)
        if s.keep_cols:
            self.side.append(_kept(batch, take, s.keep_cols, rows))

    def _language(self, rows: pa.Table, batch: pa.Table, take: pa.Array) -> pa.Table:
        s = self.s
        given = [None] * rows.num_rows
        if s.language_col:
            given = [v.strip() if v and v.strip() else None
                     for v in as_text(batch.column(s.language_col).take(take)).to_pylist()]
        langs, scores = [], []
        for lang, text in zip(given, rows.column("text").to_pylist()):
            if lang is not None:  # the list's own: kept as it is, no score of ours
                langs.append(lang)
                scores.append(float("nan"))
            elif self.detect is not None:
                code, share = self.detect(text)
                langs.append(code)
                scores.append(share)
            else:
                langs.append(NOLANG)
                scores.append(0.0)
        rows = rows.set_column(rows.schema.get_field_index("language"), PAIRS.field("language"),
                               pa.array(langs, pa.string()))
        return rows.set_column(rows.schema.get_field_index("language_score"), PAIRS.field("language_score"),
                               pa.array(scores, pa.float32()))

    def table(self) -> tuple[pa.Table, pa.Table | None]:
        """The unit's pair rows (each uid once: the first row wins) and its kept columns (None without
        --keep-cols)."""
        rows = pa.concat_tables(self.parts) if self.parts else PAIRS.empty_table()
        side = (pa.concat_tables(self.side) if self.side else LIST_COLUMNS.empty_table()) \
            if self.s.keep_cols else None
        if rows.num_rows:
            _, first = np.unique(rows.column("uid").to_numpy(), return_index=True)
            dups = rows.num_rows - len(first)
            if dups:
                self.ledger.drop("duplicate_in_list", dups)
                keep = pa.array(np.sort(first))
                rows = rows.take(keep)
                side = side.take(keep) if side is not None else None
        self.ledger.rows_out += rows.num_rows
        for r in pc.value_counts(rows.column("language")).to_pylist():
            self.languages[r["values"]] = r["counts"]
        return rows, side


def _blank(col: pa.Array) -> np.ndarray:
    """Null, empty or only whitespace."""
    return np.asarray(pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), True), dtype=bool)


def _dimensions(col) -> pa.Array:
    """Width / height as the list gives them: a positive integer (a float or numeric string too), else null."""
    values = []
    for v in col.to_pylist():
        try:
            n = int(float(v)) if v is not None and not isinstance(v, bytes) else None
        except (TypeError, ValueError, OverflowError):
            n = None
        values.append(n if n is not None and 0 < n < 2 ** 31 else None)
    return pa.array(values, pa.int32())


def _kept(batch: pa.Table, take: pa.Array, names: tuple[str, ...], rows: pa.Table) -> pa.Table:
    cols = {c: batch.column(c).take(take).to_pylist() for c in names}
    blobs = [orjson.dumps({c: cols[c][i] for c in names}, default=str,
                          option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()
             for i in range(rows.num_rows)]
    return pa.Table.from_arrays([rows.column("source_file"), rows.column("source_offset"),
                                 pa.array(blobs, pa.string())], schema=LIST_COLUMNS)
