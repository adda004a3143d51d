"""URL list files: their format, their columns (checked on the driver), their units, and reading a unit's rows.

Formats are img2dataset's: parquet, csv, tsv, jsonl (csv/tsv/jsonl also gzipped). A parquet file is cut into row
ranges at row-group boundaries; a CSV/TSV/JSONL file is one unit (a row range of a text file has no offset to
seek to). Every row is numbered by its place in its file (0-based data row; a JSONL line number), which becomes
``source_offset``.
"""

from __future__ import annotations

import codecs
import csv
import io
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import fsspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..config import ConfigError
from ..extract.inputs import _opts as storage_options_for  # the options apply to object stores, not http(s)
from ..extract.inputs import list_units as list_input_files
from ..job import Unit
from ..lake import row_groups_for

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SNIFF_LINES = 1000  # JSONL lines whose keys name the file's columns on the driver
CSV_BLOCK_BYTES = 1 << 22  # pyarrow's CSV/TSV block: each must hold whole rows (a quoted field's newlines too)
_RECORD_BLOCKS = 16  # read row by row (a row over a block), a record may span this many blocks: 64 MiB


@dataclass(frozen=True)
class ListFile:
    url: str  # as the unit key and source_file name it: an absolute local path or a URL (s3://...)
    format: str
    size: int | None
    columns: tuple[str, ...]
    row_groups: tuple[int, ...] = ()  # parquet: rows per row group


def format_of(path: str, given: str | None) -> str | None:
    """The list format: ``given`` (--input-format) for every file, else from the extension (``.gz`` aside)."""
    if given:
        return given
    name = posixpath.basename(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return _EXTENSIONS.get(posixpath.splitext(name)[1])


def open_list(url: str, storage_options: dict):
    return fsspec.open(url, "rb", compression="infer", **storage_options_for(url, storage_options)).open()


def find_list_files(inputs: list[str], input_format: str | None, column_names: tuple[str, ...],
                    storage_options: dict) -> list[ListFile]:
    """Every list file the inputs name, with its format and columns (read from each file's header or footer)."""
    found = list_input_files(inputs, "", storage_options)  # files, folders, globs, s3:// (extract's expansion)
    todo = []
    for u in found:
        fmt = format_of(u.source, input_format)
        if fmt is None:
            raise ConfigError(f"cannot tell the format of {u.source} from its name: give --input-format "
                              f"({', '.join(FORMATS)})")
        todo.append((u.source, fmt, u.size))
    with ThreadPoolExecutor(min(16, len(todo))) as pool:
        return list(pool.map(lambda t: _describe(*t, column_names, storage_options), todo))


def _describe(url: str, fmt: str, size: int | None, column_names: tuple[str, ...], storage_options: dict) -> ListFile:
    try:
        if fmt == "parquet":
            with fsspec.open(url, "rb", **storage_options_for(url, storage_options)) as f:
                meta = pq.ParquetFile(f).metadata
                groups = tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
                return ListFile(url, fmt, size, tuple(meta.schema.to_arrow_schema().names), groups)
        with open_list(url, storage_options) as f:
            if fmt == "jsonl":
                return ListFile(url, fmt, size, _jsonl_keys(f))
            if column_names:
                return ListFile(url, fmt, size, column_names)
            # utf-8-sig: a byte order mark is not part of the first column's name (pyarrow drops it on workers)
            first = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline="").readline()
            header = next(csv.reader([first], delimiter="\t" if fmt == "tsv" else ",",
                                     quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL), [])
            return ListFile(url, fmt, size, tuple(header))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable or not the format it claims: stop before any work
        raise ConfigError(f"cannot read {url} as {fmt}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") \
            from None


def _jsonl_keys(f) -> tuple[str, ...]:
    keys: dict[str, None] = {}
    for i, line in enumerate(f):
        if i >= _SNIFF_LINES:
            break
        try:
            obj = orjson.loads(_no_bom(line, i)) if line.strip() else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            keys.update(dict.fromkeys(obj))
    return tuple(keys)


def _no_bom(line: bytes, number: int) -> bytes:
    """A JSONL file's first line without a UTF-8 byte order mark (orjson rejects it: the row would be lost)."""
    return line[3:] if number == 0 and line.startswith(codecs.BOM_UTF8) else line


def check_columns(files: list[ListFile], wanted: dict[str, str]) -> None:
    """Every file has every column an option names (``wanted``: option -> column); else one line naming the
    option, the file and the columns it has."""
    for lf in files:
        for option, col in wanted.items():
            if col not in lf.columns:
                have = ", ".join(lf.columns[:40]) + (" ..." if len(lf.columns) > 40 else "") or "none"
                hint = " (a headerless CSV/TSV such as CC12M's: name its columns with --column-names url,caption)" \
                    if lf.format in ("csv", "tsv") else ""
                raise ConfigError(f"{option} {col!r}: {lf.url} has no such column; its columns: {have}{hint}")


# -- units ----------------------------------------------------------------------------------------------------
def units_of(files: list[ListFile], covered: dict[str, list[tuple[int, int]]], unit_rows: int,
             list_name: str | None = None) -> list[Unit]:
    """The rows not yet covered by committed units, as units: parquet row ranges of about ``unit_rows`` rows at
    row-group boundaries; a whole text file (stop = -1: to its end). Each covers its rows under ``list_name``."""
    units = []
    for lf in files:
        done = sorted(covered.get(lf.url, []))
        base = (("format", lf.format),)
        if lf.format != "parquet":
            if not done:
                units.append(Unit(key=lf.url, source=lf.url, size=lf.size, meta=base + (("start", 0), ("stop", -1)),
                                  covers=(("file", lf.url), ("start", 0), ("stop", -1), ("bytes", lf.size),
                                          ("list", list_name))))
            continue
        bounds = np.concatenate([[0], np.cumsum(lf.row_groups, dtype=np.int64)]).tolist()
        total = bounds[-1]
        at = 0
        for lo, hi in done + [(total, total)]:
            start = at
            while start < min(lo, total):
                stop = next((b for b in bounds if b >= start + unit_rows), total)
                stop = min(stop, lo)
                units.append(Unit(key=f"{lf.url}:{start:012d}-{stop:012d}", source=lf.url, rows=stop - start,
                                  meta=base + (("start", start), ("stop", stop)),
                                  covers=(("file", lf.url), ("start", start), ("stop", stop), ("bytes", lf.size),
                                          ("list", list_name))))
                start = stop
            at = max(at, hi)
    return units


def covered_rows(entries, files: list[ListFile], list_name: str | None = None) -> dict[str, list[tuple[int, int]]]:
    """Row ranges of each list file that committed units cover. A file whose size changed since stops the run:
    its row numbers would no longer name the same rows; so does a file ingested under another list name (its
    rows' crawl column would say two names)."""
    sizes = {lf.url: lf.size for lf in files}
    out: dict[str, list[tuple[int, int]]] = {}
    for e in entries:
        c = e.covers
        url = c.get("file")
        if url not in sizes or "start" not in c:
            continue
        if c.get("bytes") is not None and sizes[url] is not None and c["bytes"] != sizes[url]:
            raise ConfigError(f"{url} is {sizes[url]:,} bytes, {c['bytes']:,} when it was ingested (run "
                              f"{e.run_id}): its rows are not the ones committed; ingest it into a new lake")
        if list_name is not None and c.get("list") is not None and c["list"] != list_name:
            raise ConfigError(f"--list-name {list_name!r}: {url} was ingested as list {c['list']!r} (run "
                              f"{e.run_id}); give --list-name {c['list']}")
        stop = int(c["stop"])
        out.setdefault(url, []).append((int(c["start"]), stop if stop >= 0 else 1 << 62))
    return out


# -- reading a unit -------------------------------------------------------------------------------------------
def read_batches(unit: Unit, columns: list[str], column_names: tuple[str, ...], batch_rows: int,
                 storage_options: dict, errors_out: list, csv_block_bytes: int = CSV_BLOCK_BYTES
                 ) -> Iterator[tuple[pa.Table, np.ndarray, int]]:
    """(rows with ``columns``, each row's number in its file, bytes read so far), batch by batch. Rows that do not
    parse are appended to ``errors_out`` as (row number or None, excerpt) and not yielded."""
    fmt, start, stop = unit.get("format"), unit.get("start"), unit.get("stop")
    if fmt == "parquet":
        yield from _parquet(unit.source, columns, start, stop, batch_rows, storage_options)
    elif fmt == "jsonl":
        yield from _jsonl(unit.source, columns, batch_rows, storage_options, errors_out)
    else:
        yield from _delimited(unit.source, fmt, columns, column_names, batch_rows, storage_options, errors_out,
                              csv_block_bytes)


def _parquet(url, columns, start, stop, batch_rows, storage_options):
    with fsspec.open(url, "rb", **storage_options_for(url, storage_options)) as f:
        pf = pq.ParquetFile(f)
        groups, first = row_groups_for(pf.metadata, start, stop)
        if not groups:
            return
        row = first
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns):
            lo, hi = max(start - row, 0), min(stop - row, batch.num_rows)
            if hi > lo:
                yield (pa.Table.from_batches([batch.slice(lo, hi - lo)]),
                       np.arange(row + lo, row + hi, dtype=np.int64), f.tell() if hasattr(f, "tell") else 0)
            row += batch.num_rows


def _jsonl(url, columns, batch_rows, storage_options, errors_out):
    values: dict[str, list] = {c: [] for c in columns}
    numbers: list[int] = []
    with open_list(url, storage_options) as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(_no_bom(line, n))
            except orjson.JSONDecodeError as exc:
                obj = exc
            if not isinstance(obj, dict):
                errors_out.append((n, line[:300]))
                continue
            numbers.append(n)
            for c in columns:
                v = obj.get(c)
                values[c].append(v if v is None or isinstance(v, str) else orjson.dumps(v).decode())
            if len(numbers) >= batch_rows:
                yield _text_table(values), np.array(numbers, dtype=np.int64), _tell(f)
                values, numbers = {c: [] for c in columns}, []
        if numbers:
            yield _text_table(values), np.array(numbers, dtype=np.int64), _tell(f)


def _text_table(values: dict[str, list]) -> pa.Table:
    return pa.table({c: pa.array(v, pa.string()) for c, v in values.items()})


class _Seen:
    """What a pass over a CSV/TSV file has handed on: a pass that starts again from the top skips as much."""

    def __init__(self):
        self.rows = 0  # rows yielded
        self.bad = 0  # malformed rows reported

    def report(self, bad_in_pass: int, excerpt: str, errors_out: list) -> None:
        if bad_in_pass > self.bad:
            errors_out.append((None, excerpt[:300]))
            self.bad += 1


def _delimited(url, fmt, columns, column_names, batch_rows, storage_options, errors_out, block_bytes):
    """pyarrow's reader, whose blocks must each hold whole rows. A row over ``block_bytes`` - a long quoted field,
    or an unclosed quote running on to some far-off quote - or any other parse error sends the file to Python's
    csv module, row by row (from the top again, past the rows already handed on), where a record spans at most
    ``_RECORD_BLOCKS`` blocks and quotes are strict: a bad quote is one malformed_row, never the file. (Not pyarrow
    again with larger blocks: an unclosed quote would then take every row up to the next quote into its field,
    unseen and uncounted.)"""
    seen = _Seen()
    try:
        with open_list(url, storage_options) as f:
            yield from _batched(_arrow_rows(f, fmt, columns, column_names, block_bytes, seen, errors_out), seen,
                                batch_rows, f)
        return
    except pa.ArrowInvalid:
        pass
    with open_list(url, storage_options) as f:
        rows = _python_rows(f, fmt, columns, column_names, block_bytes * _RECORD_BLOCKS, seen, errors_out)
        yield from _batched(rows, seen, batch_rows, f)


def _arrow_rows(f, fmt, columns, column_names, block_bytes, seen: _Seen, errors_out) -> Iterator[pa.RecordBatch]:
    bad = 0

    def on_invalid(row) -> str:  # a line with another number of fields: counted, skipped
        nonlocal bad
        bad += 1
        seen.report(bad, row.text or "", errors_out)
        return "skip"

    read = pacsv.ReadOptions(block_size=block_bytes, column_names=list(column_names) or None, use_threads=False)
    parse = pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", quote_char=False if fmt == "tsv" else '"',
                               newlines_in_values=fmt == "csv", invalid_row_handler=on_invalid)
    # every column as bytes: a type inferred from the first block may not hold for the next, and one bad UTF-8
    # byte must cost its row's text, not the file
    convert = pacsv.ConvertOptions(include_columns=columns, column_types={c: pa.binary() for c in columns},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    yield from pacsv.open_csv(f, read_options=read, parse_options=parse, convert_options=convert)


class _RecordTooLong(Exception):
    pass


class _Lines:
    """A text stream's lines for csv.reader, keeping the current record's lines: a record that turns out
    malformed is read again from its second line (an unclosed quote costs its own line, not the lines it ran
    over), and one that runs over ``limit`` characters stops there."""

    def __init__(self, text, limit: int):
        self.text, self.limit = text, limit
        self.back: list[str] = []  # lines to read again, last first
        self.record: list[str] = []
        self.chars = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.back.pop() if self.back else next(self.text)
        self.record.append(line)
        self.chars += len(line)
        if self.chars > self.limit and len(self.record) > 1:
            raise _RecordTooLong
        return line

    def start(self) -> None:
        self.record, self.chars = [], 0

    def again(self) -> str:
        """Drop the record's first line (returned) and read the rest again."""
        self.back.extend(reversed(self.record[1:]))
        return self.record[0] if self.record else ""


def _python_rows(f, fmt, columns, column_names, limit, seen: _Seen, errors_out,
                 rows_per_batch: int = 8192) -> Iterator[pa.RecordBatch]:
    """The rows of a file pyarrow gave up on, by Python's csv module: the same dialect, save strict quotes; rows
    numbered the same way (blank lines are not rows, malformed rows are not numbered); text decoded as as_text
    decodes it."""
    csv.field_size_limit(max(csv.field_size_limit(), limit))  # a field may be as long as a record may
    lines = _Lines(io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline=""), limit)
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else \
        {"delimiter": ",", "quotechar": '"', "strict": True}  # strict: a stray quote fails its row, not more rows
    reader = csv.reader(lines, **dialect)
    names = list(column_names) or None
    at = [names.index(c) for c in columns] if names else []
    bad = 0
    values: dict[str, list] = {c: [] for c in columns}
    while True:
        lines.start()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except (csv.Error, _RecordTooLong):
            fields = None
        if fields == []:  # a blank line
            continue
        if names is None:  # the header (the driver found every column in it)
            names = fields or []
            at = [names.index(c) for c in columns]
            continue
        if fields is None or len(fields) != len(names):
            bad += 1
            seen.report(bad, lines.again(), errors_out)
            continue
        for c, i in zip(columns, at):
            values[c].append(fields[i])
        if len(values[columns[0]]) >= rows_per_batch:
            yield pa.record_batch([pa.array(values[c], pa.string()) for c in columns], names=columns)
            values = {c: [] for c in columns}
    if values[columns[0]]:
        yield pa.record_batch([pa.array(values[c], pa.string()) for c in columns], names=columns)


def _batched(batches: Iterator, seen: _Seen, batch_rows: int, f):
    """Batches of about ``batch_rows`` rows, numbered; the rows an earlier pass yielded are skipped."""
    at, buf, held = 0, [], 0  # rows of this pass so far, and those held for the next batch
    for b in batches:
        skip = min(max(seen.rows + held - at, 0), b.num_rows)
        at += b.num_rows
        if skip < b.num_rows:
            buf.append(b.slice(skip))
            held += b.num_rows - skip
        if held >= batch_rows:
            t = pa.Table.from_batches(buf)
            yield _decoded(t), np.arange(seen.rows, seen.rows + t.num_rows, dtype=np.int64), _tell(f)
            seen.rows += t.num_rows
            buf, held = [], 0
    if buf:
        t = pa.Table.from_batches(buf)
        yield _decoded(t), np.arange(seen.rows, seen.rows + t.num_rows, dtype=np.int64), _tell(f)
        seen.rows += t.num_rows


def _decoded(t: pa.Table) -> pa.Table:
    return pa.table({c: as_text(t.column(c)) for c in t.column_names})


def as_text(col) -> pa.Array:
    """A column as strings: text as it is, bytes decoded as UTF-8 (invalid bytes as U+FFFD), other types cast."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_string(col.type):
        return col
    if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
        return col.cast(pa.string())
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or pa.types.is_fixed_size_binary(col.type):
        try:
            return col.cast(pa.string())  # validates UTF-8
        except pa.ArrowInvalid:
            return pa.array([None if v is None else v.decode("utf-8", "replace") for v in col.to_pylist()],
                            pa.string())
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())


def _tell(f) -> int:
    try:
        return int(f.tell())
    except Exception:  # noqa: BLE001 - a compressed stream may not say
        return 0
