"""The ingest job: an existing URL list -> ``pairs`` rows with extract's uids, languages and a ledger per unit.

Ingest writes ``pairs`` and the dedup job makes ``pairs_unique`` from it, as it does for crawled pairs: a list's
duplicates may sit in any two of its files (or in a list and a crawl), and dedup is the one stage that sees every
row before it commits, so "a uid appears at most once in pairs_unique" stays dedup's alone to keep. Within a unit
ingest already drops repeats (``duplicate_in_list``), so the ledger says what the list itself repeats.
"""

from __future__ import annotations

import posixpath
import time
import zlib
from dataclasses import dataclass

from ..config import ConfigError
from ..extract.language import LanguageDetector
from ..job import Unit, UnitContext, UnitJob, UnitResult, language_line
from .lists import CSV_BLOCK_BYTES, FORMATS, check_columns, covered_rows, find_list_files, read_batches, units_of
from .rows import LEDGER, ListRows

SIDE_TABLE = "list_columns"
# the settings that make a list's rows in pairs what they are, as the option or setting that gives each: a rerun
# for the same list (--list-name) with another value stops before any work (its rows would mix two readings)
RECORDED = {"url_col": "--url-col", "caption_col": "--caption-col", "language_col": "--language-col",
            "page_url_col": "--page-url-col", "width_col": "--width-col", "height_col": "--height-col",
            "column_names": "--column-names", "keep_cols": "--keep-cols", "min_text_length": "ingest.min_text_length",
            "exclude_extensions": "ingest.exclude_extensions", "language_detection": "ingest.language_detection"}


@dataclass(frozen=True)
class IngestSettings:
    url_col: str
    caption_col: str
    language_col: str | None
    page_url_col: str | None
    width_col: str | None
    height_col: str | None
    keep_cols: tuple
    column_names: tuple  # of a headerless CSV/TSV
    input_format: str | None
    list_name: str  # the crawl column of every row
    unit_rows: int
    batch_rows: int
    min_text_length: int
    exclude_extensions: tuple
    language_detection: bool
    min_language_share: float  # extract's: the same detector, the same rule
    max_url_length: int
    max_alt_chars: int
    storage_options: dict
    csv_block_bytes: int = CSV_BLOCK_BYTES  # pyarrow's block for CSV/TSV (a row over it is read another way)

    def columns(self) -> list[str]:
        """The list columns a unit reads."""
        named = [self.url_col, self.caption_col, self.language_col, self.page_url_col, self.width_col,
                 self.height_col, *self.keep_cols]
        return list(dict.fromkeys(c for c in named if c))

    def options(self) -> dict[str, str]:
        """option -> the column it names."""
        pairs = [("--url-col", self.url_col), ("--caption-col", self.caption_col),
                 ("--language-col", self.language_col), ("--page-url-col", self.page_url_col),
                 ("--width-col", self.width_col), ("--height-col", self.height_col)]
        pairs += [("--keep-cols", c) for c in self.keep_cols]
        return {f"{o} {c}" if o == "--keep-cols" else o: c for o, c in pairs if c}

    def recorded(self) -> dict:
        """RECORDED's settings, under keys of this list: several lists, each with its own columns, share pairs."""
        return {f"ingest.list.{self.list_name}.{name}": list(v) if isinstance(v, tuple) else v
                for name in RECORDED for v in [getattr(self, name)]}


class IngestJob(UnitJob):
    name = "ingest"
    output_table = "pairs"
    config_sections = ("ingest", "extract")  # extract's URL, caption and language rules apply as they are
    description = (
        "An existing URL list (LAION, DataComp, CC12M, ...: parquet, CSV/TSV, JSONL; local or s3://) -> `pairs`,\n"
        "with extract's URL normalization, caption cleanup and uid, a language per row and a ledger per unit.\n\n"
        "Then jobs/dedup.py makes pairs_unique (one row per uid across every list file), and download, clip,\n"
        "index and export run on it. One Spark task per unit (a text file, or a row range of a parquet file);\n"
        "committed units are skipped, so rerunning the same command resumes."
    )
    epilog = """examples:
  # LAION (parquet: URL, TEXT, WIDTH, HEIGHT, similarity, hash, punsafe, pwatermark, LANGUAGE)
  spark-submit jobs/ingest.py --lake ./lake --input s3://bucket/laion2B-multi/ --url-col URL --caption-col TEXT \\
      --language-col LANGUAGE --width-col WIDTH --height-col HEIGHT --keep-cols hash,punsafe,pwatermark,similarity
  # DataComp (parquet: uid, url, text, original_width, original_height, sha256)
  spark-submit jobs/ingest.py --lake ./lake --input ./datacomp/metadata/ --url-col url --caption-col text \\
      --keep-cols uid,sha256
  # CC12M (cc12m.tsv: no header, url<TAB>caption)
  spark-submit jobs/ingest.py --lake ./lake --input cc12m.tsv --column-names url,caption
  spark-submit jobs/dedup.py --lake ./lake        # then: pairs -> pairs_unique

output: LAKE/pairs (source_file = the list file, source_offset = the row's number in it, crawl = --list-name);
with --keep-cols, LAKE/list_columns (source_file, source_offset, columns as JSON). docs/INGEST.md has the rest.
"""

    def add_arguments(self, parser) -> None:
        parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                            help="list files, folders or globs; local or s3:// (options: ingest.input_storage_options)")
        parser.add_argument("--input-format", help=f"{', '.join(FORMATS)} (default: from each file's extension)")
        parser.add_argument("--url-col", default="url", help="the image URL column (default: url)")
        parser.add_argument("--caption-col", default="caption", help="the caption column (default: caption)")
        parser.add_argument("--language-col", help="a language column, kept where it has a value (else detected)")
        parser.add_argument("--page-url-col", help="a page URL column (default: page_url = list file#row=N)")
        parser.add_argument("--width-col", help="an image width column (LAION: WIDTH)")
        parser.add_argument("--height-col", help="an image height column (LAION: HEIGHT)")
        parser.add_argument("--keep-cols", action="append", default=[], metavar="COL[,COL...]",
                            help="other columns to keep, as JSON in LAKE/list_columns (like img2dataset's "
                                 "save_additional_columns)")
        parser.add_argument("--column-names", metavar="COL,COL...",
                            help="the columns of a headerless CSV/TSV, in order (CC12M: url,caption)")
        parser.add_argument("--list-name", help="the crawl column of every row (default: the name of the first "
                                                "input in sorted order)")

    def settings(self, args, cfg, lake) -> IngestSettings:
        i, e = cfg["ingest"], cfg["extract"]
        if args.input_format and args.input_format not in FORMATS:
            raise ConfigError(f"--input-format {args.input_format!r}: one of {', '.join(FORMATS)}")
        keep = tuple(dict.fromkeys(c.strip() for arg in args.keep_cols for c in arg.split(",") if c.strip()))
        names = tuple(c.strip() for c in args.column_names.split(",")) if args.column_names else ()
        s = IngestSettings(
            url_col=args.url_col, caption_col=args.caption_col, language_col=args.language_col,
            page_url_col=args.page_url_col, width_col=args.width_col, height_col=args.height_col, keep_cols=keep,
            column_names=names, input_format=args.input_format,
            list_name=args.list_name or _list_name(sorted(args.input)[0]), unit_rows=int(i["unit_rows"]),
            batch_rows=int(i["batch_rows"]), min_text_length=int(i["min_text_length"]),
            exclude_extensions=tuple(i["exclude_extensions"]), language_detection=bool(i["language_detection"]),
            min_language_share=float(e["min_language_share"]), max_url_length=int(e["max_url_length"]),
            max_alt_chars=int(e["max_alt_chars"]), storage_options=dict(i["input_storage_options"]),
            csv_block_bytes=int(i.get("csv_block_bytes", CSV_BLOCK_BYTES)))
        if s.unit_rows < 1 or s.batch_rows < 1 or s.min_text_length < 0 or s.csv_block_bytes < 1:
            raise ConfigError("ingest.unit_rows, ingest.batch_rows and ingest.csv_block_bytes must be >= 1, "
                              "ingest.min_text_length >= 0")
        if names and (len(set(names)) != len(names) or not all(names)):
            raise ConfigError(f"--column-names {args.column_names!r}: distinct, non-empty names")
        # a unit also writes the kept columns (committed just before its pairs rows)
        self.side_tables = (SIDE_TABLE,) if keep else ()
        _check_recorded(s, lake.table(self.output_table), lake)
        return s

    def recorded_settings(self, s: IngestSettings) -> dict:
        return s.recorded()

    def list_units(self, args, s: IngestSettings, lake) -> list[Unit]:
        files = find_list_files(args.input, s.input_format, s.column_names, s.storage_options)
        check_columns(files, s.options())
        covered = covered_rows(lake.table(self.output_table).all_entries(), files, s.list_name)
        return units_of(files, covered, s.unit_rows, s.list_name)

    def process_unit(self, unit: Unit, ctx: UnitContext) -> UnitResult:
        s: IngestSettings = ctx.settings
        detect = LanguageDetector(s.min_language_share) if s.language_detection else None
        rows = ListRows(s, source_file=unit.source, crawl=s.list_name, detect=detect, errors=ctx.errors)
        bad: list = []
        t0, read = time.time(), 0
        batches = read_batches(unit, s.columns(), s.column_names, s.batch_rows, s.storage_options, bad,
                               s.csv_block_bytes)
        while True:
            try:
                item = next(batches, None)
            # the file could not be read: missing, not parquet (pyarrow's errors are ValueErrors), a .gz cut short
            # or corrupt. A text file's parse errors are rows, not this (lists.read_batches)
            except (OSError, ValueError, EOFError, zlib.error) as exc:
                message = f"{unit.source}: {type(exc).__name__}: {exc}"
                ctx.errors.add("input_unreachable", message, source=unit.source)
                return UnitResult(None, {LEDGER: rows.ledger}, ctx.errors, failed_reason="input_unreachable",
                                  failed_message=message)
            if item is None:
                break
            batch, numbers, read = item
            rows.add(batch, numbers)
            ctx.progress(rows.ledger.rows_in, read)
        if bad:
            rows.fail("malformed_row", len(bad))
            for number, excerpt in bad:
                ctx.errors.add("malformed_row", "a row that does not parse", source=unit.source, offset=number,
                               excerpt=excerpt)
        table, side = rows.table()
        info = {"languages": rows.languages, "bytes": read, "seconds": round(time.time() - t0, 3)}
        return UnitResult(table, {LEDGER: rows.ledger}, ctx.errors, info,
                          side={SIDE_TABLE: side} if side is not None else {})

    def describe_info(self, info: dict) -> list[str]:
        lines = language_line("pairs", info.get("languages", {}))
        lines.append("next: jobs/dedup.py on this lake makes pairs_unique (one row per uid across every list file)")
        return lines


def _check_recorded(s: IngestSettings, table, lake) -> None:
    """Table.check_meta's rule in the words of ingest's options: one line naming the option and both values."""
    recorded = table.meta()
    for key, value in s.recorded().items():
        if key in recorded and recorded[key] != value:
            option, was = RECORDED[key.rsplit(".", 1)[1]], recorded[key]
            raise ConfigError(f"{option} {_shown(value)}: list {s.list_name!r} in {lake.url_of(table.root)} was "
                              f"ingested with {option} {_shown(was)}; give that (rows read two ways would mix), "
                              "another --list-name for another list, or a new lake")


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(value) or "(none)"
    return "(none)" if value is None else repr(value)


def _list_name(first_input: str) -> str:
    """``laion2B-en`` for ``s3://b/laion2B-en/`` or ``laion2B-en.parquet``: what the rows' crawl column says."""
    name = posixpath.basename(first_input.rstrip("/")) or first_input
    for ext in (".gz", ".parquet", ".csv", ".tsv", ".jsonl", ".ndjson"):
        name = name[: -len(ext)] if name.lower().endswith(ext) else name
    return name
