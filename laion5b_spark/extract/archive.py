"""Streaming WARC/WAT record framing that survives bad input.

Common Crawl (and warcio, wget) write one gzip member per record. We decompress member by member ourselves,
then frame records from the decompressed stream, instead of handing the file to a library, because that is
what lets us

* detect a truncated file (the last member never ends) and keep what the cut member holds - a library
  iterator just stops quietly, and the file looks complete;
* skip a corrupt member and resync at the next one, losing one record instead of the rest of the file;
* report each record's offset in the *compressed* file (its gzip member), what a range request needs.

Records may span members and members may hold several records (``gzip`` of a whole file, "wrong chunks"):
the framer reads the decompressed stream as one. Uncompressed files go through the same framer in plain
chunks. Only WARC header blocks are parsed here; payloads are handed on as bytes. Legacy ARC files are
reported as unsupported. (FastWARC frames ~1.5x faster, but stops quietly on truncated gzip and gives up
the rest of a file at the first corrupt member; bench/extract reports both floors.)

A record's Content-Length is checked, not trusted, so that one bad header or one damaged member costs only
its own record:

* a gzip member whose data starts a WARC record is a known record start: a pending record never extends past
  its member when the next member starts a record (a too-large Content-Length ends with its member);
* a record must be followed by another header (or by the end of the data): when it is not, a header inside its
  declared block ends it there - one right after a CRLF CRLF and parsing as a whole header block; one elsewhere
  in a line only when the declared end lands in something that is no header. Where the data ends inside a record
  (a truncated file) only the first kind counts, and a record that starts the gzip member the file ends in is
  kept as cut: what its block holds (an archived .warc.gz, say) is its own, not records;
* a block ending in CR/LF with a short or split CRLF CRLF after it reads the same as a Content-Length 1-3 bytes
  too large: the WARC-Block-Digest decides when there is one, else the Content-Length is trusted; a record that
  ends where its gzip member ends waits for the next member, which may hold the rest of its CRLF CRLF;
* a member that zlib keeps inflating past where its data stops looking like WARC (damaged data need not raise:
  it can inflate, without a CRC check, to the end of the file) is cut at the next member that starts a record;
  the whole records it inflated to before that (each followed by its CRLF CRLF) are kept;
* junk before a header, or before the first record of a file, is skipped to the next header that parses.

Each such repair is one ``corrupt_record`` / ``corrupt_gzip`` event; a record repaired from its member or the next
header is still yielded. Scans are linear: a quarter GiB of CR/LF padding takes a fraction of a second; junk
dense with gzip magics (each one's header parsed here, at most 1 KiB of its data inflated) costs at most ~0.3 s
per MB to search; the compressed input held is a few MiB, however long a member or a search.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

# zlib-ng inflates ~1.5x faster than zlib (bench/extract); same API, same streams
from zlib_ng import zlib_ng as zlib

GZIP_MAGIC = b"\x1f\x8b\x08"
READ_SIZE = 1 << 20
MAX_HEADER = 256 * 1024
SNIFF_BYTES = 1 << 20  # how far into a file that does not start with a record we look for its first record
_VERSION_LINES = (b"WARC/1.0\r\n", b"WARC/1.1\r\n")  # what a header found by searching must start with



@dataclass(slots=True)
class RawRecord:
    offset: int  # of the record's gzip member (or of the record itself in an uncompressed file)
    warc_type: str
    target_uri: str
    content_type: str
    data: bytes  # holds the content block at data[payload_start:payload_end]
    payload_start: int
    payload_end: int

    @property
    def payload(self) -> bytes:
        if self.payload_start == 0 and self.payload_end == len(self.data):
            return self.data
        return self.data[self.payload_start:self.payload_end]


@dataclass(slots=True)
class FileEvent:
    """Something wrong with the file itself, at an offset; iteration goes on where it can."""

    reason: str  # an accounting reason
    offset: int
    message: str
    excerpt: bytes = b""


def iter_records(f: BinaryIO, max_record_bytes: int) -> Iterator[RawRecord | FileEvent]:
    head = _peek(f, 16)
    if not head:
        return
    if head.startswith(b"filedesc://"):
        yield FileEvent("unsupported_format", 0, f"legacy ARC file (starts with {head!r})", head)
    elif head[:3] == GZIP_MAGIC and _starts_record_member(_peek(f, _TRIAL), 0, _TRIAL, first=True):
        yield from _frame(_gzip_members(f, max_record_bytes), max_record_bytes, plain=False)
    elif head[:10] in _VERSION_LINES or head.startswith(b"WARC/0."):  # (0.17, 0.18: pre-ISO WARC)
        yield from _frame(_plain_chunks(f), max_record_bytes, plain=True)
    else:  # junk before the first record (a damaged start), or not a WARC at all
        window = _read_up_to(f, SNIFF_BYTES)  # (peek gives only what a reader buffers: 4 KB for some)
        f = _Prefixed(window, f)
        start, gz = _first_record(window)
        if start < 0 and head[:3] == GZIP_MAGIC:  # gzip, but not of a WARC record: the member layer says what
            yield from _frame(_gzip_members(f, max_record_bytes), max_record_bytes, plain=False)
        elif start < 0:
            yield FileEvent("unsupported_format", 0, f"not a WARC/WAT file (starts with {head!r}, no record in "
                                                     f"its first {len(window)} bytes)", head)
        elif gz:
            if start:  # (0: a first member whose header is longer than the reader peeked)
                yield FileEvent("corrupt_record", 0, f"{start} bytes before the first gzip member skipped",
                                window[:200])
            yield from _frame(_gzip_members(f, max_record_bytes, start), max_record_bytes, plain=False)
        else:  # the framer skips the junk as one corrupt_record
            yield from _frame(_plain_chunks(f), max_record_bytes, plain=True)


def _peek(f: BinaryIO, n: int) -> bytes:
    if hasattr(f, "peek"):  # buffered readers (what inputs.open_input returns)
        return f.peek(n)[:n]
    data = f.read(n)
    f.seek(-len(data), 1)
    return data


def _read_up_to(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n and (data := f.read(n - got)):
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class _Prefixed:
    """A reader that gives ``prefix`` (bytes already read from ``f``) before the rest of ``f``."""

    def __init__(self, prefix: bytes, f: BinaryIO):
        self.prefix, self.f = prefix, f

    def read(self, n: int = -1) -> bytes:
        if not self.prefix:
            return self.f.read(n)
        data, self.prefix = (self.prefix, b"") if n < 0 or n >= len(self.prefix) else \
            (self.prefix[:n], self.prefix[n:])
        return data


# A gzip magic found by searching is checked by parsing its header here and inflating at most _TRIAL_DEFLATE
# bytes of its data, so each costs O(1): junk dense with magics (1f 8b 08 every 3 bytes) is searched in linear
# time. (zlib walks a header's file name byte by byte: a trial inflate per magic was ~5 s per MB of such junk.)
_TRIAL = 65536  # the longest file name or comment accepted in the header of a file's first member
_MAX_NAME = 1024  # ... in a member found by searching (a writer that sets one names a file: < 256 bytes)
_TRIAL_DEFLATE = 1024  # deflate bytes a trial reads: a dynamic block header is < 300 bytes, then "WARC/1."
_PROBE = 12 + 0xFFFF + 2 * (_MAX_NAME + 1) + 2 + _TRIAL_DEFLATE  # compressed bytes a check of a found magic reads


def _member_data_start(buf, q: int, max_name: int) -> int:
    """Where the deflate data of the gzip member whose header starts at buf[q] begins; -1 when that is no gzip
    header (reserved flag bits set, a file name or comment over max_name bytes) or it does not end in buf."""
    n = len(buf)
    if q + 10 >= n:
        return -1
    flags = buf[q + 3]
    if flags & 0xE0:
        return -1
    h = q + 10
    if flags & 4:  # FEXTRA: a 2-byte length, then that many bytes
        if h + 2 > n:
            return -1
        h += 2 + (buf[h] | buf[h + 1] << 8)
    for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            z = buf.find(b"\0", h, h + max_name + 1)
            if z < 0:
                return -1
            h = z + 1
    if flags & 2:  # FHCRC
        h += 2
    return h if h < n else -1


def _starts_record_member(buf, q: int, max_name: int = _MAX_NAME, first: bool = False) -> bool:
    """Whether the gzip member at buf[q] starts a WARC record (not magic bytes that happen to be in the data). The
    first member of a file may also be one that ends before "WARC/1." does (empty, or the start of a header that
    the next member goes on with)."""
    h = _member_data_start(buf, q, max_name)
    if h < 0:
        return False
    block_type = buf[h] >> 1 & 3
    if block_type == 3:  # reserved: zlib would fail at once
        return False
    if block_type == 0 and h + 5 <= len(buf):  # stored: LEN, NLEN, then the bytes themselves
        length = buf[h + 1] | buf[h + 2] << 8
        if length ^ (buf[h + 3] | buf[h + 4] << 8) != 0xFFFF:
            return False
        if length >= 7:
            return buf[h + 5:h + 12] == b"WARC/1."
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(buf[h:h + _TRIAL_DEFLATE], 7)
    except zlib.error:
        return False
    return out == b"WARC/1." or first and d.eof and b"WARC/1.".startswith(out)


def _first_record(window: bytes) -> tuple[int, bool]:
    """(offset, gzip?) of the first record start in window: a member starting a record, or a plain header."""
    k, member = 0, -1
    while (g := window.find(GZIP_MAGIC, k)) >= 0:
        if _starts_record_member(window, g, _TRIAL, first=True) if g == 0 else _starts_record_member(window, g):
            member = g
            break
        k = g + 1
    kind, h = _next_header(window, 0, len(window), len(window), final=True)
    if member >= 0 and (kind != "found" or member < h):
        return member, True
    return (h, False) if kind == "found" else (-1, False)


class _Input:
    """Compressed bytes of the file with a movable read position and bounded memory."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.buf = bytearray()  # (grown in place: += on bytes copied it all per read)
        self.start = 0  # file offset of buf[0]
        self.eof = False

    def fill(self, need_until: int) -> None:
        """Make sure buf covers file offsets up to need_until (or EOF)."""
        while not self.eof and self.start + len(self.buf) < need_until:
            chunk = self.f.read(READ_SIZE)
            if not chunk:
                self.eof = True
                break
            self.buf += chunk

    def drop_before(self, offset: int) -> None:
        cut = offset - self.start
        if cut > READ_SIZE:  # compact now and then, not per call
            del self.buf[:cut]
            self.start = offset

    def find_record_member(self, offset: int, before: int = -1) -> int:
        """File offset of the next gzip member that starts a WARC record, at or after ``offset`` (and before
        ``before``, a position inside what is buffered, when given); -1 if none. Without ``before`` it reads on
        to the end of the file, dropping what it has searched."""
        k = max(offset, self.start)
        while True:
            i = self.buf.find(GZIP_MAGIC, k - self.start, len(self.buf) if before < 0 else
                              before - self.start + len(GZIP_MAGIC) - 1)
            if i < 0:
                if before >= 0 or self.eof:
                    return -1
                k = max(k, self.start + len(self.buf) - len(GZIP_MAGIC) + 1)
                self.drop_before(k)
                self.fill(self.start + len(self.buf) + READ_SIZE)
                continue
            q = self.start + i
            if not self.eof and q + _PROBE > self.start + len(self.buf):
                self.fill(q + _PROBE)
            if _starts_record_member(self.buf, q - self.start):
                return q
            k = q + 1


# What the member layer hands the framer: ("data", member offset, bytes) for a whole member; ("part", ...),
# ("more", ...), ("end", ...) for the first, next and last pieces of a member too large to hold whole; ("gap",
# offset, FileEvent) after a corrupt member; ("cut", offset, bytes) for the readable start of a member the file
# ends in.
_Chunk = tuple[str, int, object]

# What an unfinished member's data looks like so far (checked only while a member has not ended: most end in
# the first inflate step and are never checked)
_HEAD, _EXPECT, _FINE, _SUSPECT = range(4)


def _inflate_step(d, src: _Input, p: int, step: int, limit: int) -> tuple[bytes, int] | None:
    """(inflated bytes, compressed bytes used) of one decompress call on up to step bytes of the input from p;
    None at the end of the input. zlib.error passes through."""
    src.fill(p + step)
    at = p - src.start
    if at >= len(src.buf):
        return None
    with memoryview(src.buf) as view, view[at:at + step] as chunk:  # (released: buf may grow)
        out = d.decompress(chunk, limit)
        return out, len(chunk) - len(d.unconsumed_tail)


def _gzip_members(f: BinaryIO, max_member_bytes: int, start: int = 0) -> Iterator[_Chunk]:
    src = _Input(f)
    pos = start
    avg = 4096  # adaptive feed size: ~2x a member, so zlib's copy of unused input stays small
    cap = max_member_bytes + MAX_HEADER  # decompressed bytes held before a member is handed on in pieces
    while True:
        # the member's first step (bounded: one huge member must not make later steps huge)
        step = min(max(4096, 2 * avg), READ_SIZE)
        d = zlib.decompressobj(31)
        error = None
        try:
            inflated = _inflate_step(d, src, pos, step, cap)
        except zlib.error as exc:
            error, failed_at = str(exc), min(pos + step, src.start + len(src.buf))
        else:
            if inflated is None:
                return
            out, used = inflated
        if d.eof and not (pos == start and out.startswith(b"filedesc://")):
            # the usual case, a whole member in one step: handed on here, without the bookkeeping below
            end = pos + used - len(d.unused_data)
            avg = (avg * 7 + (end - pos)) // 8
            yield "data", pos, out
            src.drop_before(end)
            pos = end
            continue
        piece = False  # True once part of this member was handed on
        parts: list[bytes] = []
        out_len = 0  # bytes in parts
        handed = 0  # bytes of this member handed on before parts
        p = pos
        if error is None:  # the first step's output, looked at by the loop's first round
            p += used
            parts.append(out)
            out_len = len(out)
        first = error is None
        state, expect = _HEAD, 0
        scanned = pos + 1  # compressed bytes of this member before here were searched for a record's member ...
        found = -1  # ... and the first one found there (a search runs before bytes not yet searched are dropped)
        resync = -1
        while error is None and not d.eof:
            if first:
                first = False
            else:
                step = min(max(4096, 2 * avg), READ_SIZE)
                try:
                    inflated = _inflate_step(d, src, p, step, cap - out_len)  # (out_len < cap: 0 means no limit)
                except zlib.error as exc:
                    error, failed_at = str(exc), min(p + step, src.start + len(src.buf))
                    break
                if inflated is None:
                    break  # EOF inside the member
                out, used = inflated
                p += used
                parts.append(out)
                out_len += len(out)
                if d.eof:
                    break
            if state != _FINE:  # a member that stops looking like WARC may be damaged data zlib inflates on
                if state != _SUSPECT:
                    state, expect = _member_state(parts, handed, out_len, state, expect)
                if state == _SUSPECT or p - scanned > _HOLD:
                    if found < 0:
                        found = src.find_record_member(scanned, p)
                    scanned = max(scanned, p - len(GZIP_MAGIC) + 1)
                    if state == _SUSPECT and found >= 0:
                        resync = found
                        break
            if state == _FINE:
                scanned = p  # a member of several records: a header follows its first record; never searched
            if d.unconsumed_tail or out_len >= cap:  # a huge member (a whole file in one): hand it on in pieces
                yield ("more" if piece else "part"), pos, b"".join(parts)
                handed += out_len
                parts, out_len, piece = [], 0, True
            src.drop_before(min(p, scanned))  # keep the compressed buffer bounded inside a long member too
        if pos == start and parts and parts[0].startswith(b"filedesc://"):
            yield "gap", pos, FileEvent("unsupported_format", pos, "legacy ARC file (gzip)", parts[0][:64])
            return
        if d.eof:
            end = p - len(d.unused_data)
            avg = (avg * 7 + (end - pos)) // 8
            yield ("end" if piece else "data"), pos, b"".join(parts)
            src.drop_before(end)
            pos = end
            continue
        src.fill(pos + 64)
        excerpt = bytes(src.buf[pos - src.start:pos - src.start + 64]) if pos >= src.start else b""
        # the whole records it holds before the damage are kept - not when its CRC or length is wrong: then its
        # data was altered somewhere and inflated on in step
        keep = not piece and not (error or "").endswith(("incorrect data check", "incorrect length check"))
        if keep and error is not None and pos >= src.start:  # zlib dropped what the failing step inflated
            parts = [_inflate_before_error(bytes(src.buf[pos - src.start:failed_at - src.start]), cap)]
        if resync >= 0:
            error = "its data stops looking like WARC and it runs on past the start of the next record's member"
        else:
            resync = found if found >= 0 else src.find_record_member(max(scanned, pos + 1))
            if error is None:  # input ended before the member did: a truncated file, or a damaged member
                if resync < 0:
                    yield "cut", pos, b"".join(parts)
                    return
                error = "it inflates without an error past the start of the next record's member, to the end of " \
                        "the file"
        if keep and parts:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if whole := _whole_records(data):
                yield "part", pos, data[:whole]
        msg = f"{error}; resynced at offset {resync}" if resync >= 0 else f"{error}; nothing readable after it"
        yield "gap", pos, FileEvent("corrupt_gzip", pos, msg, excerpt)
        if resync < 0:
            return
        src.drop_before(resync)
        pos = resync


_HOLD = 4 * READ_SIZE  # compressed bytes of an undecided member held unsearched at most


def _inflate_before_error(data: bytes, limit: int) -> bytes:
    """What the gzip member in data inflates to before the byte where zlib finds it corrupt (at most limit bytes).
    zlib drops what a failing call inflated: the input is bisected, each half tried on a copy of the state, so
    the member is inflated about twice in all."""
    d, out, got = zlib.decompressobj(31), [], 0
    lo, hi = 0, len(data)  # data[:lo] is inflated; data[lo:hi] holds the failing byte
    while lo < hi and got < limit:
        mid = (lo + hi + 1) // 2
        trial = d.copy()
        try:
            piece = trial.decompress(data[lo:mid], limit - got)
        except zlib.error:
            if mid == lo + 1:
                break
            hi = mid
            continue
        out.append(piece)
        got += len(piece)
        d, lo = trial, mid
        if trial.eof or trial.unconsumed_tail:
            break
    return b"".join(out)


def _whole_records(data: bytes) -> int:
    """Length of the run of whole records at the start of data, each followed by its CRLF CRLF and its block
    digest right where it has one: what is kept of a damaged member (what zlib inflated past the damage, or past
    the member's end, is not)."""
    i = 0
    while data[i:i + 10] in _VERSION_LINES:
        rec = _parse_header(data, i, 0)
        if type(rec) is not RawRecord or not data.startswith(b"\r\n\r\n", rec.payload_end) or \
                _digest_matches(data[i:rec.payload_start], data[rec.payload_start:rec.payload_end]) is False:
            break
        i = rec.payload_end + 4
    return i


def _member_state(parts: list[bytes], handed: int, out_len: int, state: int, expect: int) -> tuple[int, int]:
    """(state, where its first record's block ends) of a member that has not ended yet: _FINE once its first
    record is followed by another header (a member of several records), _SUSPECT when its data does not start
    with a header or its first record is followed by something else (a damaged member, or one record spanning
    several members: either way, a member starting a record inside it is where to go on)."""
    if state == _HEAD:
        if handed:  # a huge first piece with its header undecided: leave it to the framer
            return _FINE, 0
        head = parts[0] if len(parts) == 1 else b"".join(parts)
        if not head.startswith(b"WARC/"):
            return _SUSPECT, 0
        rec = _parse_header(head, 0, 0)
        if rec is None:
            return (_HEAD if len(head) < MAX_HEADER else _SUSPECT), 0
        if isinstance(rec, FileEvent):
            return _SUSPECT, 0
        state, expect = _EXPECT, rec.payload_end
    if handed + out_len < expect + 64:
        return state, expect
    if expect < handed:
        return _FINE, 0
    after = _slice(parts, expect - handed, 64).lstrip(b"\r\n")
    return (_FINE if not after or after.startswith(b"WARC/") else _SUSPECT), expect


def _slice(parts: list[bytes], at: int, n: int) -> bytes:
    """Bytes [at, at + n) of the concatenation of parts."""
    out = []
    for part in parts:
        if at >= len(part):
            at -= len(part)
            continue
        out.append(part[at:at + n])
        n -= len(out[-1])
        at = 0
        if n <= 0:
            break
    return b"".join(out)


def _plain_chunks(f: BinaryIO) -> Iterator[_Chunk]:
    pos = 0
    while True:
        data = f.read(READ_SIZE)
        if not data:
            return
        yield "data", pos, data
        pos += len(data)


def _skip_crlf(buf: bytes, i: int, n: int) -> int:
    """Index of the first byte at or after i that is not CR or LF (n if none)."""
    stop = min(n, i + 16)
    while i < stop and buf[i] in b"\r\n":  # the usual case: the CRLF CRLF between two records
        i += 1
    if i < stop:
        return i
    while i < n:  # a long run of padding: strip it a window at a time at C speed, not a byte at a time
        window = buf[i:i + 65536]
        k = len(window) - len(window.lstrip(b"\r\n"))
        i += k
        if k < len(window):
            break
    return min(i, n)


def _starts_record(data: bytes) -> bool:
    return data[:10] in _VERSION_LINES and isinstance(_parse_header(data, 0, 0), RawRecord)


def _frame(chunks: Iterator[_Chunk], max_record_bytes: int, plain: bool) -> Iterator[RawRecord | FileEvent]:
    """Records from the decompressed stream; a record's offset is its member's (gzip) or its own (plain)."""
    buf = b""
    marks: list[int] = []  # buf index where each chunk starts ...
    offs: list[int] = []  # ... and that chunk's file offset ...
    heads: list[bool] = []  # ... and whether it begins its gzip member
    last_off = -1  # the previous chunk's offset (gzip: pieces of one member share one)
    pending: list[bytes] = []  # chunks held back until a long record is complete (joined once, not per chunk)
    pending_len = 0
    want = 0  # buf length the record at buf[0] needs
    skip = 0  # bytes still to drop of a record too large to keep
    garbage = None  # [offset, length, excerpt, counted] of bytes skipped while looking for the next header
    cut = False
    member_end = False  # buf ends where a gzip member ends

    def offset_of(i: int) -> int:
        k = bisect.bisect_right(marks, i) - 1
        return offs[k] + (i - marks[k] if plain else 0)

    def starts_cut_member(i: int) -> bool:
        """Whether buf[i] is the first byte of the gzip member the file ends in."""
        k = bisect.bisect_right(marks, i) - 1
        return cut and not plain and marks[k] == i and heads[k] and offs[k] == offs[-1]

    def cut_record(rec: RawRecord, i: int, end: int, why: str):
        """The record at buf[i] ends at buf[end] (CRLF CRLF before it trimmed), not where its header says."""
        stop = end
        while stop > max(rec.payload_start, end - 4) and buf[stop - 1] in b"\r\n":
            stop -= 1
        yield RawRecord(rec.offset, rec.warc_type, rec.target_uri, rec.content_type, buf[i:stop],
                        rec.payload_start - i, stop - i)
        yield FileEvent("corrupt_record", rec.offset, f"Content-Length {rec.payload_end - rec.payload_start} "
                                                      f"{why}: the record ends there ({stop - rec.payload_start} "
                                                      f"bytes, kept)", buf[i:i + 200])

    def scan(final: bool):
        """Yield what buf holds; returns where framing stopped (the rest waits for more data, or is the tail)."""
        nonlocal want, skip, garbage
        n = len(buf)
        i = 0
        while True:
            i = _skip_crlf(buf, i, n)
            if i >= n:
                return i
            if not buf.startswith(b"WARC/", i):
                if not final and n - i < 5 and b"WARC/".startswith(buf[i:]):
                    return i  # a header may be starting at the very end: wait for more
                kind, stop = _next_header(buf, i, n, n, final)
                if stop > i:
                    if garbage is None:  # one event per unreadable stretch, however many chunks it spans
                        garbage = [offset_of(i), 0, buf[i:i + 200], True]
                    garbage[1] += stop - i
                i = stop
                if kind != "found":
                    return i
                continue
            if garbage:
                if garbage[3]:
                    yield _garbage_event(garbage)
                garbage = None
            rec = _parse_header(buf, i, offset_of(i))
            if rec is None:
                if final or n - i <= MAX_HEADER:
                    return i  # header not complete yet (or the file ends in it: the tail reports it)
                rec = FileEvent("corrupt_record", offset_of(i), "WARC header block too long", buf[i:i + 200])
            if isinstance(rec, FileEvent):
                yield rec
                garbage = [rec.offset, 0, b"", False]  # what follows up to the next header is part of this event
                i += 1
                continue
            start, end = rec.payload_start, rec.payload_end
            length = end - start
            if end > n or length > max_record_bytes:
                need = min(end, start + max_record_bytes + 1)  # the whole record, or proof that it is too large
                if need > n and not final:
                    want = need - i  # the rest of the record is in later chunks
                    return i
                # its declared end is out of reach (the data ends, or it is over the limit): a header inside it
                # (after a CRLF CRLF: records inside a block, e.g. an archived .warc.gz, are no evidence) means the
                # Content-Length is wrong. Not so for a record that starts the gzip member the file ends in: it
                # runs on past the cut, and what its block holds is its own
                kind, h = ("none", n) if final and starts_cut_member(i) else \
                    _next_header(buf, start, min(end, n), n, final, after_terminator=True)
                if kind == "wait":
                    want = n - i + 1
                    return i
                if kind == "found":
                    yield from cut_record(rec, i, h, "runs into the next record")
                    i = h
                    continue
                if length > max_record_bytes:
                    yield FileEvent("corrupt_record", rec.offset, f"record of {length} bytes exceeds "
                                                                  f"max_record_bytes={max_record_bytes}")
                    if end <= n:
                        i = end
                        continue
                    skip = end - n
                    return n
                return i  # the data ends inside this record: the tail keeps what it holds
            j = _skip_crlf(buf, end, n)
            if j == end + 4 and (j >= n or buf.startswith(b"WARC/", j)) and buf.startswith(b"\r\n\r\n", end):
                pass  # the usual case: CRLF CRLF, then the next header or the end of the data
            elif j >= n and not final:
                want = n - i + 1  # see what follows it (the next gzip member may go on with its CRLF CRLF)
                return i
            elif j < n and n - j < 5 and not final and b"WARC/".startswith(buf[j:]):
                want = n - i + 5  # a header may be starting at the very end
                return i
            else:
                # Not CRLF CRLF then a header: a header inside its block means the Content-Length is too large
                # (writers leave stray newlines after blocks: without a header inside, those are kept as they are):
                # one after a CRLF CRLF; one elsewhere in a line only when the declared end lands in something that
                # is no header, or the block digest says the declared block is wrong. A digest that says it is
                # right settles it
                kind, h = _next_header(buf, start, end, n, final, after_terminator=True)
                line_start = kind == "found"
                if kind == "none":
                    kind, h = _next_header(buf, start, end, n, final)
                if kind == "wait":
                    want = n - i + 1
                    return i
                if kind == "found":
                    digest = _digest_matches(buf[i:start], buf[start:end])
                    if digest is False or digest is None and (
                            line_start or j < n and not buf.startswith(b"WARC/", j)):
                        yield from cut_record(rec, i, h, "runs into the next record")
                        i = h
                        continue
                ends = buf.startswith(b"WARC/", j) if j < n else member_end  # a record starts at j, or none
                if j - end < 4 and ends and j - 4 >= start and buf.startswith(b"\r\n\r\n", j - 4) and \
                        _digest_matches(buf[i:start], buf[start:j - 4]) is True:
                    # a block that ends in CR/LF with a short CRLF CRLF after it, or a Content-Length a few bytes
                    # long that runs into the CRLF CRLF: the same bytes. The block digest says it is the second;
                    # without one the Content-Length is trusted
                    yield from cut_record(rec, i, j, "runs into the CRLF CRLF after the block")
                    i = j
                    continue
            if i == 0 and end + 4 >= n:
                yield rec  # the usual case: one record per member, no copy
            else:
                yield RawRecord(rec.offset, rec.warc_type, rec.target_uri, rec.content_type,
                                buf[i:end], start - i, end - i)
            i = j

    for kind, off, data in chunks:
        head = not plain and (kind in ("data", "part") or off != last_off)  # the chunk begins a gzip member
        last_off = off
        if kind == "gap":  # what buf holds ends here: whole records come out, a record cut short is counted
            if pending:
                buf = b"".join([buf, *pending])
            i = (yield from scan(final=True)) if buf else 0
            if garbage:
                if garbage[3]:
                    yield _garbage_event(garbage)
                garbage = None
            if buf[i:].strip(b"\r\n"):
                yield FileEvent("corrupt_record", offset_of(i), "record cut short by a corrupt gzip member",
                                buf[i:i + 200])
            buf, marks, offs, heads, pending, pending_len, want, skip = b"", [], [], [], [], 0, 0, 0
            yield data
            continue
        if kind == "data" and not plain and not buf and not want and not skip and garbage is None:
            # the usual case, Common Crawl's layout: a whole member holding one record, then CRLF CRLF
            rec = _parse_header(data, 0, off) if data.startswith(b"WARC/") else None
            if type(rec) is RawRecord and rec.payload_end + 4 == len(data) and data.endswith(b"\r\n\r\n") \
                    and rec.payload_end - rec.payload_start <= max_record_bytes:
                cut, member_end = False, True
                yield rec
                continue
        cut = kind == "cut"
        member_end = not plain and kind in ("data", "end")
        if not plain and kind in ("data", "part") and (want or skip) and _starts_record(data):
            # a member that starts a record ends whatever came before it
            if want:
                if pending:
                    buf = b"".join([buf, *pending])
                    pending, pending_len = [], 0
                rec = _parse_header(buf, 0, offset_of(0))
                if isinstance(rec, RawRecord) and rec.payload_end > len(buf):
                    yield from cut_record(rec, 0, len(buf), "runs past its gzip member")
                    buf, marks, offs, heads = b"", [], [], []
                want = 0
            skip = 0
        if skip:
            n = min(skip, len(data))
            skip -= n
            data = data[n:]
            off += n if plain else 0
            head = head and not n
        if want and len(buf) + pending_len + len(data) < want and not cut:
            marks.append(len(buf) + pending_len)
            offs.append(off)
            heads.append(head)
            pending.append(data)
            pending_len += len(data)
            continue
        marks.append(len(buf) + pending_len)
        offs.append(off)
        heads.append(head)
        if pending:
            buf = b"".join([buf, *pending, data])
            pending, pending_len = [], 0
        else:
            buf = buf + data if buf else data
        want = 0
        i = yield from scan(final=False)
        if i:
            k = bisect.bisect_right(marks, i) - 1
            offs = [offs[k] + (i - marks[k] if plain else 0)] + offs[k + 1:]
            heads = [heads[k] and marks[k] == i] + heads[k + 1:]
            marks = [0] + [m - i for m in marks[k + 1:]]
            buf = buf[i:]
    if pending:
        buf = b"".join([buf, *pending])
    i = yield from scan(final=True)
    if garbage:
        if garbage[3]:
            yield _garbage_event(garbage)
        garbage = None
    if i < len(buf):  # the file ends inside a record (its header at buf[i])
        rec = _parse_header(buf, i, offset_of(i))
        if isinstance(rec, RawRecord) and member_end:  # its gzip member ended whole: so did the record
            yield from cut_record(rec, i, len(buf), "runs past its gzip member, the last of the file")
            return
        if isinstance(rec, RawRecord):  # keep what a cut record holds: a clipped page keeps its first images
            yield RawRecord(rec.offset, rec.warc_type, rec.target_uri, rec.content_type, buf[i:],
                            rec.payload_start - i, len(buf) - i)
        yield FileEvent("truncated_file", offset_of(i),
                        "file ends inside a gzip member (truncated download?)" if cut
                        else "file ends inside a record", buf[i:i + 200])
    elif cut:
        yield FileEvent("truncated_file", offs[-1] if offs else 0, "file ends inside a gzip member")


def _garbage_event(g: list) -> FileEvent:
    return FileEvent("corrupt_record", g[0], f"{g[1]} bytes without a WARC header skipped", g[2])


def _next_header(buf: bytes, k: int, stop: int, n: int, final: bool,
                 after_terminator: bool = False) -> tuple[str, int]:
    """The next WARC header starting in buf[k:stop] (its block may run on to buf[n]): ("found", i) for a version
    line and a header block that parses with a valid Content-Length (and, if after_terminator, right after a CRLF
    CRLF); ("wait", i) for a candidate that needs more data; ("none", i): none, and i is where a header straddling
    the end of the data could still begin.
    Linear: a candidate whose block does not parse is skipped whole, and a stretch without a block end is searched
    once."""
    searched = -1  # no CRLF CRLF starts in buf[..searched)
    while True:
        c = buf.find(b"WARC/1.", k, min(n, stop + 6))
        if c < 0:
            return "none", (stop if final or stop < n else max(k, n - 6))
        if c >= stop:
            return "none", stop
        if after_terminator and (c < 4 or not buf.startswith(b"\r\n\r\n", c - 4)):
            k = c + 1
            continue
        if n - c < 10:
            if final:
                return "none", n
            return "wait", c
        if buf[c:c + 10] not in _VERSION_LINES:
            k = c + 1
            continue
        lo, hi = max(c + 8, searched), min(n, c + MAX_HEADER)
        end = buf.find(b"\r\n\r\n", lo, hi) if lo < hi else -1
        if end < 0:
            if not final and c + MAX_HEADER > n:
                return "wait", c
            searched = max(searched, hi - 3)
            k = c + 1
            continue
        inner = _version_line(buf, c + 8, end)
        if inner >= 0:  # a header cut short: the next candidate is the one inside it
            k = inner
            continue
        if isinstance(_parse_header(buf, c, 0, end), RawRecord):
            return "found", c
        k = end + 4


def _version_line(buf: bytes, lo: int, end: int) -> int:
    """Where a WARC version line starts in buf[lo:end], or -1. None can be inside one header block (a value
    cannot hold a CRLF), so one there means the header was cut short and the next record's starts there."""
    while (c := buf.find(b"WARC/1.", lo, end)) >= 0:
        if buf[c:c + 10] in _VERSION_LINES:
            return c
        lo = c + 1
    return -1


def _digest_matches(header: bytes, block: bytes) -> bool | None:
    """Whether the header block's WARC-Block-Digest (sha1:BASE32, as Common Crawl and warcio write it; other
    hashlib algorithms, base32 or hex) is that of block; None without one (or one that cannot be read)."""
    value = _header_value(header, header.lower(), b"\r\nwarc-block-digest:")
    algorithm, _, encoded = (value or b"").partition(b":")
    try:
        digest = hashlib.new(algorithm.decode("ascii").lower().replace("-", ""), block).digest()
        encoded = encoded.strip().decode("ascii")
        if len(encoded) == 2 * len(digest):
            return bytes.fromhex(encoded) == digest
        return base64.b32decode(encoded.upper() + "=" * (-len(encoded) % 8)) == digest
    except (ValueError, TypeError):  # (no digest, an unknown algorithm, not base32 or hex: no evidence)
        return None


def _header_value(h: bytes, hl: bytes, name: bytes) -> bytes | None:
    i = hl.find(name)
    if i < 0:
        return None
    i += len(name)
    j = h.find(b"\r\n", i)
    return h[i: j if j >= 0 else len(h)].strip()


def _parse_header(buf: bytes, i: int, offset: int, end: int = -1) -> RawRecord | FileEvent | None:
    """The record whose header starts at buf[i]; None when the header block is not complete yet. (Called once per
    record: _header_value's lookups are written out here, ~30% of this function's time.)"""
    if end < 0:
        end = buf.find(b"\r\n\r\n", i, i + MAX_HEADER)
        if end < 0:
            return None
    if _version_line(buf, i + 8, end) >= 0:
        return FileEvent("corrupt_record", offset, "WARC header cut short: the next record's header starts inside "
                                                   "it", buf[i:end])
    h = buf[i:end + 2]  # each header line ends in CRLF (so each value below ends at a CRLF)
    hl = h.lower()
    k = hl.find(b"\r\ncontent-length:")
    try:
        length = int(h[k + 17:h.find(b"\r\n", k + 17)].strip()) if k >= 0 else -1
    except ValueError:
        length = -1
    if length < 0:
        return FileEvent("corrupt_record", offset, "WARC record without a valid Content-Length", buf[i:end])
    k = hl.find(b"\r\nwarc-type:")
    warc_type = h[k + 12:h.find(b"\r\n", k + 12)].strip().decode("latin-1") if k >= 0 else ""
    k = hl.find(b"\r\nwarc-target-uri:")
    target = h[k + 18:h.find(b"\r\n", k + 18)].strip().decode("utf-8", "replace").strip("<>") if k >= 0 else ""
    k = hl.find(b"\r\ncontent-type:")
    ctype = h[k + 15:h.find(b"\r\n", k + 15)].strip().decode("latin-1") if k >= 0 else ""
    return RawRecord(offset, warc_type, target, ctype, buf, end + 4, end + 4 + length)
