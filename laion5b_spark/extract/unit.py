"""One input file -> pair rows, ledgers and error samples. Plain Python: no Spark here."""

from __future__ import annotations

import time
import traceback

import pyarrow.compute as pc

from fastwarc.warc import WarcRecord

from ..accounting import ErrorSamples, Ledger
from ..job import Unit, UnitContext, UnitResult
from .archive import FileEvent, RawRecord, iter_records
from .html import MAX_HTML_BYTES, RecordTooComplex, decode_body, page_from_html
from .inputs import InputMissing, InputUnreachable, open_input
from .page import Page
from .pairs import PairBuilder
from .wat import DEFAULT_STYLE, InvalidWat, page_from_wat, wat_style


class _DecodeFailure(ValueError):
    pass


def extract_unit(unit: Unit, ctx: UnitContext) -> UnitResult:
    s, errors = ctx.settings, ctx.errors
    retries, wait = s.input_retries, s.input_retry_wait_s
    last_error = ""
    for attempt in range(retries + 1):
        attempt_errors = ErrorSamples(errors.per_reason, errors.excerpt_bytes)
        try:
            result = _extract_once(unit, s, attempt_errors, ctx.progress)
        except InputUnreachable as exc:
            last_error = str(exc)
            if isinstance(exc, InputMissing):
                break
            if attempt < retries:
                time.sleep(wait * (2 ** attempt))
            continue
        errors.samples.extend(attempt_errors.samples)
        result.errors = errors
        return result
    errors.add("input_unreachable", last_error, source=unit.source)
    return UnitResult(None, {"records": Ledger("records"), "img_tags": Ledger("img_tags")}, errors,
                      failed_reason="input_unreachable", failed_message=last_error)


def _extract_once(unit: Unit, s, errors: ErrorSamples, progress=None) -> UnitResult:
    records, images = Ledger("records"), Ledger("img_tags")
    builder = PairBuilder(s, source_file=unit.key, crawl=unit.get("crawl"), ledger=images)
    info = {"html_pages": 0, "wat_records": 0, "warc_responses": 0}
    style = DEFAULT_STYLE  # a WAT file's warcinfo record says how its producer wrote attribute text
    t0 = time.time()
    with open_input(unit.source, s.input_storage_options) as f:
        for item in iter_records(f, s.max_record_bytes):
            records.rows_in += 1
            if progress is not None and records.rows_in % 256 == 0:
                progress(images.rows_out, f.bytes_read)
            if isinstance(item, FileEvent):
                records.fail(item.reason)
                errors.add(item.reason, item.message, source=unit.key, offset=item.offset, excerpt=item.excerpt)
                continue
            try:
                warc_type = item.warc_type
                if warc_type == "metadata" and "json" in item.content_type:  # (inline: this runs per record)
                    info["wat_records"] += 1
                    page = page_from_wat(item, style)
                elif warc_type == "response" and item.content_type.startswith("application/http"):
                    info["warc_responses"] += 1
                    page = _page_from_response(item)
                else:
                    if warc_type == "warcinfo":
                        style = wat_style(item)
                    page = None
                if page is not None and page.images:
                    builder.add_page(page, item.offset)
            except InvalidWat as exc:
                records.fail("invalid_json")
                errors.add("invalid_json", str(exc), source=unit.key, offset=item.offset, excerpt=item.payload)
                continue
            except _DecodeFailure as exc:
                records.fail("decode_error")
                errors.add("decode_error", str(exc), source=unit.key, offset=item.offset)
                continue
            except RecordTooComplex as exc:  # over the per-record budget: counted, not parsed
                records.drop("record_too_complex")
                errors.add("record_too_complex", str(exc), source=unit.key, offset=item.offset,
                           excerpt=item.payload[:300])
                continue
            except Exception as exc:  # noqa: BLE001 - one odd record must not cost the file
                records.fail("parse_error")
                errors.add("parse_error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}",
                           source=unit.key, offset=item.offset, excerpt=item.payload)
                continue
            if page is None:
                records.drop("not_html")
                continue
            info["html_pages"] += 1
            if not page.images:
                records.drop("no_images")
                continue
            records.rows_out += 1
        info["bytes"] = f.bytes_read
    rows = builder.table()
    info["seconds"] = round(time.time() - t0, 3)
    info["languages"] = {r["values"]: r["counts"] for r in pc.value_counts(rows.column("language")).to_pylist()}
    return UnitResult(rows, {"records": records, "img_tags": images}, errors, info)


def _page_from_response(rec: RawRecord) -> Page | None:
    payload = rec.payload
    # FastWARC's HTTP parser (chunked transfer, gzip/br content encodings) wants a whole WARC record
    block = b"WARC/1.0\r\nWARC-Type: response\r\nContent-Type: application/http; msgtype=response\r\n" \
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    wr = WarcRecord.from_bytes(block)
    try:
        wr.parse_http(auto_decode="all", quirks_mode=True)
    except Exception:  # noqa: BLE001 - bad chunking/compression: fall back to the raw body
        wr = WarcRecord.from_bytes(block)
        wr.parse_http(auto_decode="none", quirks_mode=True)
    ctype = (wr.http_content_type or "").lower()
    if "html" not in ctype:
        return None
    body = wr.reader.read(MAX_HTML_BYTES + 1)  # (a Content-Encoding may inflate a record ~1000x)
    if len(body) > MAX_HTML_BYTES:
        raise RecordTooComplex(f"HTML body over {MAX_HTML_BYTES:,} bytes once its Content-Encoding is undone")
    try:
        text, _, _ = decode_body(body, wr.http_charset)
    except Exception as exc:  # noqa: BLE001
        raise _DecodeFailure(f"{type(exc).__name__}: {exc}") from exc
    return page_from_html(text, rec.target_uri)
