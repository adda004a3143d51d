"""Record framing on real WARC samples and on damaged copies of them."""

import gzip
import io

import pytest
from warcio.archiveiterator import ArchiveIterator as WarcioIterator

from conftest import shared_sample
from laion5b_spark.extract.archive import FileEvent, RawRecord, iter_records


def records(data: bytes):
    return list(iter_records(io.BytesIO(data), 1 << 25))


def summary(items):
    return [(i.offset, i.warc_type, i.target_uri, i.payload) if isinstance(i, RawRecord)
            else (i.offset, i.reason) for i in items]


def test_real_cc_excerpt_offsets_match_warcio():
    data = shared_sample("cc-excerpt.warc.gz").read_bytes()
    ours = [r for r in records(data) if isinstance(r, RawRecord)]
    it = WarcioIterator(io.BytesIO(data))
    theirs = []
    for rec in it:
        theirs.append((it.get_record_offset(), rec.rec_type, rec.rec_headers.get_header("WARC-Target-URI") or ""))
        rec.content_stream().read()
    assert [(r.offset, r.warc_type, r.target_uri) for r in ours] == theirs
    assert len(ours) == 50


@pytest.mark.parametrize("name", ["example.warc.gz", "example-resource.warc.gz",
                                  "example-wget-bad-target-uri.warc.gz", "example-space-in-target-uri.warc.gz",
                                  "example-bad-non-chunked.warc.gz"])
def test_payloads_match_warcio_on_valid_files(name):
    data = shared_sample(name).read_bytes()
    ours = [(r.warc_type, r.payload) for r in records(data)]
    theirs = []
    for rec in WarcioIterator(io.BytesIO(gzip.decompress(data)), no_record_parse=True):
        theirs.append((rec.rec_type, rec.raw_stream.read()))
    assert ours == theirs


def test_record_spanning_gzip_members_is_framed_whole():
    # "wrong chunks": gzip members do not line up with records; the stream is still one valid WARC
    items = records(shared_sample("example-wrong-chunks.warc.gz").read_bytes())
    recs = [i for i in items if isinstance(i, RawRecord)]
    assert [r.warc_type for r in recs] == ["response", "request"]
    assert len(recs[0].payload) == 1613
    assert not [i for i in items if isinstance(i, FileEvent)]


def test_truncated_file_keeps_records_before_the_cut():
    data = shared_sample("cc-excerpt.warc.gz").read_bytes()
    full = [r for r in records(data) if isinstance(r, RawRecord)]
    cut = data[: len(data) // 2]
    items = records(cut)
    events = [i for i in items if isinstance(i, FileEvent)]
    recs = [i for i in items if isinstance(i, RawRecord)]
    assert [e.reason for e in events] == ["truncated_file"]
    assert 10 < len(recs) < 50
    # every whole record before the cut is intact; the last one may be partial
    for got, want in zip(recs[:-1], full):
        assert got.payload == want.payload


def test_clipped_html_response_is_kept_and_reported():
    items = records(shared_sample("clipped.warc.gz").read_bytes())
    assert [type(i).__name__ for i in items] == ["RawRecord", "FileEvent"]
    assert items[0].warc_type == "response" and b"<img" in items[0].payload
    assert items[1].reason == "truncated_file"


def test_corrupt_member_is_skipped_and_the_rest_recovered():
    data = shared_sample("cc-excerpt.warc.gz").read_bytes()
    full = [r for r in records(data) if isinstance(r, RawRecord)]
    victim = full[20]
    bad = bytearray(data)
    bad[victim.offset + 40: victim.offset + 140] = b"\x00" * 100  # inside the 21st member's deflate stream
    items = records(bytes(bad))
    recs = [i for i in items if isinstance(i, RawRecord)]
    events = [i for i in items if isinstance(i, FileEvent)]
    assert [e.reason for e in events] == ["corrupt_gzip"]
    assert events[0].offset == victim.offset
    assert [r.offset for r in recs] == [r.offset for r in full if r.offset != victim.offset]


def test_not_warc_and_arc_are_unsupported():
    assert [i.reason for i in records(b"hello world, not a warc")] == ["unsupported_format"]
    assert [i.reason for i in records(shared_sample("example.arc.gz").read_bytes())] == ["unsupported_format"]
    assert records(b"") == []


def test_uncompressed_truncated_warc_resyncs():
    items = records(shared_sample("example-trunc.warc").read_bytes())
    assert [r.warc_type for r in items if isinstance(r, RawRecord)] == ["warcinfo", "warcinfo", "response",
                                                                          "request"]
    assert [e.reason for e in items if isinstance(e, FileEvent)] == ["corrupt_record"]


def test_uncompressed_matches_gzip():
    data = shared_sample("example.warc.gz").read_bytes()
    plain = gzip.decompress(data)  # multi-member gzip -> the plain WARC
    a = [(r.warc_type, r.target_uri, r.payload) for r in records(data) if isinstance(r, RawRecord)]
    b = [(r.warc_type, r.target_uri, r.payload) for r in records(plain) if isinstance(r, RawRecord)]
    assert a == b and len(a) == 6


def test_oversized_record_is_counted_not_read():
    data = shared_sample("cc-excerpt.warc.gz").read_bytes()
    items = list(iter_records(io.BytesIO(data), 2000))
    big = [i for i in items if isinstance(i, FileEvent)]
    assert big and all(e.reason in ("corrupt_record", "corrupt_gzip") for e in big)
    assert all(len(r.payload) <= 2000 for r in items if isinstance(r, RawRecord))


def _warc(n, size=300, bad_length_at=None):
    """n uncompressed WARC records (bytes each), one of them with a bogus Content-Length if asked."""
    out = []
    for i in range(n):
        body = (b"%06d " % i) * (size // 7)
        length = 10 ** 12 if i == bad_length_at else len(body)
        out.append(b"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Target-URI: http://x/%d\r\n"
                   b"Content-Length: %d\r\n\r\n%s\r\n\r\n" % (i, length, body))
    return out


def test_bogus_content_length_costs_no_other_record():
    recs = _warc(40, bad_length_at=1)
    data = b"".join(gzip.compress(r) for r in recs)
    items = records(data)
    got = [r.target_uri for r in items if isinstance(r, RawRecord)]
    assert got == [f"http://x/{i}" for i in range(40)]  # record 1 itself ends with its gzip member, kept
    assert [r.payload for r in items if isinstance(r, RawRecord)][1] == recs[1].split(b"\r\n\r\n")[1]
    assert [e.reason for e in items if isinstance(e, FileEvent)] == ["corrupt_record"]


def test_plain_offsets_exact_across_read_chunks():
    recs = _warc(12, size=250_000)  # > 1 MB read chunks: records straddle them
    items = records(b"".join(recs))
    offsets, pos = [], 0
    for r in recs:
        offsets.append(pos)
        pos += len(r)
    assert [r.offset for r in items] == offsets
    assert all(isinstance(r, RawRecord) for r in items)


def test_one_bad_header_is_one_event_and_the_rest_is_read():
    recs = _warc(5)
    recs[2] = recs[2].replace(b"Content-Length: ", b"Content-Length: x")
    for data in (b"".join(recs), b"".join(gzip.compress(r) for r in recs)):
        items = records(data)
        assert [i.reason for i in items if isinstance(i, FileEvent)] == ["corrupt_record"]
        assert [r.target_uri for r in items if isinstance(r, RawRecord)] == [f"http://x/{i}" for i in (0, 1, 3, 4)]


def test_whole_file_gzip_and_resync_across_chunk_boundary():
    recs = _warc(400, size=20_000)  # ~8 MB in ONE gzip member: framed in pieces
    whole = records(gzip.compress(b"".join(recs)))
    assert [r.target_uri for r in whole] == [f"http://x/{i}" for i in range(400)]
    assert {r.offset for r in whole} == {0}  # every record lives in the member at offset 0
    # garbage whose end lands just before a 1 MB read boundary: the next header straddles it
    first = b"".join(recs[:3])
    garbage = b"x" * ((1 << 20) - len(first) - 3) + b"\r\n"
    items = records(first + garbage + b"".join(recs[3:10]))
    assert [r.target_uri for r in items if isinstance(r, RawRecord)] == [f"http://x/{i}" for i in range(10)]
    assert [i.reason for i in items if isinstance(i, FileEvent)] == ["corrupt_record"]


# --- framing that never swallows records (issue 16, class 3) ---

def _pages_warc(n_pages: int, gz: bool = True) -> bytes:
    """A small crawl as warcio writes it: request + response per page (one gzip member per record)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = io.BytesIO()
    w = WARCWriter(out, gzip=gz)
    for k in range(n_pages):
        url = f"http://site{k}.example/page.html"
        w.write_record(w.create_warc_record(url, "request", payload=io.BytesIO(
            b"GET /page.html HTTP/1.1\r\nHost: site%d.example\r\n\r\n" % k),
            warc_headers_dict={"Content-Type": "application/http; msgtype=request"}))
        body = b"<html><body><img src='/a%d.jpg' alt='picture number %d of a page'></body></html>" % (k, k)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
    return out.getvalue()


def _members(data: bytes) -> list[bytes]:
    """The decompressed gzip members of a gzip-per-record file, in order."""
    from zlib_ng import zlib_ng as zlib

    out = []
    while data:
        d = zlib.decompressobj(31)
        out.append(d.decompress(data))
        data = d.unused_data
    return out


def _with_content_length(member: bytes, new: int) -> bytes:
    head, sep, rest = member.partition(b"\r\n\r\n")
    lines = [b"Content-Length: %d" % new if line.lower().startswith(b"content-length:") else line
             for line in head.split(b"\r\n")]
    return b"\r\n".join(lines) + sep + rest


def _recs(items):
    return [(r.warc_type, r.target_uri, r.payload) for r in items if isinstance(r, RawRecord)]


def test_too_large_content_length_ends_with_its_gzip_member():
    data = _pages_warc(6)
    members = _members(data)
    want = _recs(records(data))
    assert len(want) == 12
    members[3] = _with_content_length(members[3], 20_000_000)  # page 1's response, under max_record_bytes
    items = records(b"".join(gzip.compress(m) for m in members))
    assert _recs(items) == want  # nothing swallowed, the response itself kept whole, every URI its own
    assert [(e.reason, "Content-Length 20000000" in e.message) for e in items if isinstance(e, FileEvent)] == [
        ("corrupt_record", True)]


def test_ten_extra_content_length_bytes_on_a_request_keep_the_next_response():
    data = _pages_warc(4)
    want = _recs(records(data))
    members = _members(data)
    cl = len(members[2].partition(b"\r\n\r\n")[2]) - 4  # page 1's request: payload then CRLF CRLF
    members[2] = _with_content_length(members[2], cl + 10)
    for bad in (b"".join(gzip.compress(m) for m in members), b"".join(members)):  # gzip per record, and plain
        items = records(bad)
        assert _recs(items) == want
        assert [e.reason for e in items if isinstance(e, FileEvent)] == ["corrupt_record"]


def test_too_large_content_length_in_a_plain_file_ends_at_the_next_header():
    members = _members(_pages_warc(8))
    want = _recs(records(b"".join(members)))
    members[3] = _with_content_length(members[3], 20_000)  # swallows several records' worth of bytes
    items = records(b"".join(members))
    assert _recs(items) == want
    assert [e.reason for e in items if isinstance(e, FileEvent)] == ["corrupt_record"]


def test_declared_size_over_the_limit_keeps_a_small_member_whole():
    data = _pages_warc(3)
    members = _members(data)
    members[1] = _with_content_length(members[1], 10 ** 12)  # a bogus size, far over max_record_bytes
    items = records(b"".join(gzip.compress(m) for m in members))
    assert _recs(items) == _recs(records(data))
    assert [e.reason for e in items if isinstance(e, FileEvent)] == ["corrupt_record"]


def test_member_inflating_garbage_to_the_end_of_the_file_does_not_hide_later_records():
    # 4,096 zero bytes over the middle of the real Common Crawl excerpt: zlib inflates the damaged member
    # without an error to the end of the file (no member end, no CRC check): resync must not wait for an error
    data = shared_sample("cc-excerpt.warc.gz").read_bytes()
    full = [r for r in records(data) if isinstance(r, RawRecord)]
    at = 116_012
    bad = data[:at] + b"\x00" * 4096 + data[at + 4096:]
    ends = [r.offset for r in full[1:]] + [len(data)]
    intact = [(r.offset, r.target_uri, r.payload) for r, end in zip(full, ends) if end <= at or r.offset >= at + 4096]
    items = records(bad)
    got = [(r.offset, r.target_uri, r.payload) for r in items if isinstance(r, RawRecord)]
    assert got == intact and len(intact) == 47  # the 6 records after the damage are back
    assert [e.reason for e in items if isinstance(e, FileEvent)] == ["corrupt_gzip"]


def test_plain_junk_right_before_a_header_loses_no_record():
    plain = gzip.decompress(shared_sample("example.warc.gz").read_bytes())
    want = _recs(records(plain))
    starts = [i for i in range(len(plain)) if plain.startswith(b"WARC/1.", i)]
    for k in (1, 3, len(starts) - 1):
        bad = plain[:starts[k]] + b"junk without a newline" + plain[starts[k]:]
        items = records(bad)
        assert _recs(items) == want, k
        assert [e.reason for e in items if isinstance(e, FileEvent)] == ["corrupt_record"]


def test_junk_before_the_first_record_is_skipped_not_the_whole_file():
    gz = _pages_warc(2)
    want = _recs(records(gz))
    for bad in (b"\x00" * 4096 + gz, b"garbage\r\n" + gzip.decompress(gz)):
        items = records(bad)
        assert _recs(items) == want
        assert [(e.reason, e.offset) for e in items if isinstance(e, FileEvent)] == [("corrupt_record", 0)]


def test_a_quarter_gib_of_crlf_in_one_member_is_skipped_at_c_speed():
    from zlib_ng import zlib_ng as zlib
    import time

    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = b"\r\n" * (1 << 19)
    bomb = b"".join([c.compress(block) for _ in range(256)] + [c.flush()])  # 256 MiB of CRLF, ~1 MB of gzip
    data = _pages_warc(2)
    t0 = time.perf_counter()
    items = records(data + bomb + data)
    took = time.perf_counter() - t0
    assert _recs(items) == _recs(records(data)) * 2
    assert took < 4.0, took  # a byte-at-a-time loop took 11-13 s; this is ~0.5 s
