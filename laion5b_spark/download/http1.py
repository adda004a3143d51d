"""HTTP/1.1 over one socket, with every byte and every second of the exchange under a budget.

A general-purpose client (urllib3 over http.client) checks its limits between body reads only: a server that
drips the status line, sends ``100 Continue`` forever, or never ends a redirect's body or a gzip header holds a
thread as long as it likes (issue 15 measured each). Here one exchange - request, any ``1xx`` responses, the
head, the body, its content decoding - is bounded by:

* the total deadline: every ``recv`` (and the TLS handshake) waits at most the read timeout and never past the
  deadline - CPython bounds one TLS call by the socket timeout as a whole, so a dripped TLS record ends too;
* bytes: each head (status line and headers) by ``max_head_bytes``, at most ``MAX_INTERIM`` ``1xx`` responses,
  the body by the caller's cap, counted as it arrives (Content-Length is checked first), and a decoded body by
  the same cap (we ask for ``identity``; a server that compresses anyway is decoded, bounded);
* bodies nobody needs (redirects, error statuses) are read only when they fit ``SMALL_BODY_BYTES`` and arrive
  within ``SMALL_BODY_WAIT_S``; otherwise the connection is closed rather than drained.

A head that ends early or breaks the grammar is a ``protocol_error``, never an empty 200. Framing follows RFC 9112
section 6.3 (Transfer-Encoding over Content-Length, conflicting lengths refused, else read until close).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import time
import zlib
from dataclasses import dataclass


class FetchError(Exception):
    def __init__(self, reason: str, message: str = "", http_status: int | None = None):
        super().__init__(message or reason)
        self.reason = reason  # accounting reason (laion5b_spark.accounting.REASONS)
        self.http_status = http_status


class StaleConnection(Exception):
    """A kept-alive connection the server had closed before answering: the request may be sent again."""


MAX_INTERIM = 5  # 1xx responses before the final one (103 Early Hints, 100 Continue); more is an attack
SMALL_BODY_BYTES = 64 * 1024  # a redirect's or an error's body is read only up to this, else the socket is closed
SMALL_BODY_WAIT_S = 1.0  # ... and only when it arrives within this long
_RECV = 65536
_STATUS = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?:[ \t][^\r\n]*)?\r?\n")
_LENGTH = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit takes '²'), and no 4,300-digit int()
_NO_BODY = frozenset({204, 304})


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    lines: dict[str, list[str]]  # each header line's value, by lower-case name
    body: bytes = b""
    reusable: bool = False  # the connection may carry another request


class Connection:
    """A socket (plain or TLS) with a read buffer; one exchange at a time."""

    __slots__ = ("sock", "buf", "used")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.used = 0  # exchanges completed on it

    def tls_pending(self) -> bool:
        """Bytes OpenSSL has decrypted and not handed out yet: invisible to poll, and out of step if any."""
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def idle_and_open(self) -> bool:
        """A kept-alive connection is only reused when the server has not closed it or sent anything since."""
        if self.buf or self.tls_pending():
            return False
        try:  # poll, not select: a worker's pooled sockets pass select's 1024 descriptor limit
            poller = select.poll()
            poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False


def open_connection(ip: str, port: int, *, tls_host: str | None, connect_timeout: float, deadline: float,
                    context: ssl.SSLContext | None) -> Connection:
    """TCP (then TLS to ``tls_host`` when given) to the checked address; bounded by the deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timeout", "total deadline passed before connecting")
    try:
        raw = socket.create_connection((ip, port), timeout=min(connect_timeout, left))
    except TimeoutError as exc:
        raise FetchError("timeout", f"connect to {ip}:{port}: {exc}") from exc
    except OSError as exc:
        raise FetchError("connect_error", f"connect to {ip}:{port}: {exc}") from exc
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls_host is None:
        return Connection(raw)
    try:
        raw.settimeout(max(0.001, min(connect_timeout, deadline - time.monotonic())))
        sock = context.wrap_socket(raw, server_hostname=tls_host)
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raw.close()
        raise FetchError("tls_error", f"{tls_host}: {exc}") from exc
    except TimeoutError as exc:
        raw.close()
        raise FetchError("timeout", f"TLS handshake with {tls_host}: {exc}") from exc
    except (UnicodeError, ValueError) as exc:  # a server name the idna codec refuses for SNI
        raw.close()
        raise FetchError("invalid_url", f"TLS server name {tls_host[:80]!r}: {exc}") from exc
    except OSError as exc:
        raw.close()
        raise FetchError("connect_error", f"TLS handshake with {tls_host}: {exc}") from exc
    return Connection(sock)


class _Exchange:
    """One request and its response on a connection, under the deadline and the byte caps."""

    def __init__(self, conn: Connection, deadline: float, read_timeout: float):
        self.conn, self.deadline, self.read_timeout = conn, deadline, read_timeout
        self.received = 0  # bytes from the socket in this exchange

    def _recv(self, n: int = _RECV) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise FetchError("timeout", "total deadline passed while reading")
        sock = self.conn.sock
        try:
            sock.settimeout(min(self.read_timeout, left))
            chunk = sock.recv(n)
        except TimeoutError as exc:
            past = time.monotonic() >= self.deadline
            raise FetchError("timeout", "total deadline passed while reading" if past
                             else f"read timeout ({self.read_timeout:g}s without a byte)") from exc
        except ssl.SSLError as exc:
            raise FetchError("tls_error", str(exc)) from exc
        except OSError as exc:
            if not self.received and self.conn.used:
                raise StaleConnection(str(exc)) from exc
            raise FetchError("connect_error", f"connection reset: {exc}") from exc
        self.received += len(chunk)
        return chunk

    def _fill(self) -> bool:
        chunk = self._recv()
        if not chunk:
            return False
        self.conn.buf += chunk
        return True

    def head(self, max_bytes: int) -> tuple[int, int, int, list[tuple[str, str]], int]:
        """(major, minor, status, header lines, head bytes) of the next head in the stream."""
        buf = self.conn.buf
        scanned = 0
        while True:
            end = _head_end(buf, scanned)
            if end >= 0:
                break
            if len(buf) > max_bytes:
                raise FetchError("protocol_error", f"response head over {max_bytes} bytes")
            scanned = max(0, len(buf) - 2)
            if not self._fill():
                if not buf:
                    if self.conn.used and not self.received:
                        raise StaleConnection("closed before answering")
                    raise FetchError("connect_error", "the server closed the connection without answering")
                raise FetchError("protocol_error", f"the connection closed inside the response head "
                                                   f"({len(buf)} bytes: {bytes(buf[:60])!r})")
            buf = self.conn.buf
        if end > max_bytes:
            raise FetchError("protocol_error", f"response head over {max_bytes} bytes")
        raw = bytes(buf[:end])
        del buf[:end]
        m = _STATUS.match(raw)
        if m is None:
            raise FetchError("protocol_error", f"not an HTTP/1.x status line: {raw[:60]!r}")
        return int(m.group(1)), int(m.group(2)), int(m.group(3)), _header_lines(raw[m.end():]), end

    def take(self, n: int) -> bytes | None:
        """Exactly n bytes, or None when the connection closes first."""
        buf = self.conn.buf
        if len(buf) >= n:
            out = bytes(buf[:n])
            del buf[:n]
            return out
        out = bytearray(n)
        view = memoryview(out)
        have = len(buf)
        view[:have] = buf
        buf.clear()
        sock = self.conn.sock
        while have < n:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise FetchError("timeout", "total deadline passed while reading")
            try:
                sock.settimeout(min(self.read_timeout, left))
                got = sock.recv_into(view[have:], min(n - have, 1 << 20))
            except TimeoutError as exc:
                raise FetchError("timeout", "total deadline passed while reading" if time.monotonic() >= self.deadline
                                 else f"read timeout ({self.read_timeout:g}s without a byte)") from exc
            except ssl.SSLError as exc:
                raise FetchError("tls_error", str(exc)) from exc
            except OSError as exc:
                raise FetchError("truncated_body", f"connection reset after {have} of {n} bytes: {exc}") from exc
            if not got:
                return None
            self.received += got
            have += got
        return bytes(out)

    def line(self, max_bytes: int, what: str) -> bytes:
        buf = self.conn.buf
        scanned = 0
        while True:
            i = buf.find(b"\n", scanned)
            if i >= 0:
                out = bytes(buf[:i + 1])
                del buf[:i + 1]
                return out
            if len(buf) > max_bytes:
                raise FetchError("protocol_error", f"{what} over {max_bytes} bytes")
            scanned = len(buf)
            if not self._fill():
                raise FetchError("truncated_body", f"the connection closed inside the {what}")

    def until_close(self, cap: int, truncate: bool) -> tuple[bytearray, bool]:
        """(body, complete): the body up to the server's close; over ``cap`` it is too_large, or cut.
        One growing buffer: a server sending a byte per segment must not cost an object per byte."""
        out = bytearray(self.conn.buf)
        self.conn.buf.clear()
        while len(out) <= cap:
            chunk = self._recv()
            if not chunk:
                return out, True
            out += chunk
        if truncate:
            return out, False
        raise FetchError("too_large", f"body passed {cap} bytes")

    def chunked(self, cap: int, max_head_bytes: int, truncate: bool) -> tuple[bytearray, bool]:
        out = bytearray()  # one buffer: a million 1-byte chunks must not be a million objects
        while True:
            line = self.line(1024, "chunk size line")
            size_field = line.split(b";", 1)[0].strip()
            if not size_field or len(size_field) > 16 or size_field.strip(b"0123456789abcdefABCDEF"):
                raise FetchError("protocol_error", f"bad chunk size line {line[:40]!r}")
            n = int(size_field, 16)
            if n == 0:
                break
            cut = len(out) + n > cap
            if cut and not truncate:
                raise FetchError("too_large", f"body passed {cap} bytes")
            data = self.take(cap - len(out) if cut else n)
            if data is None:
                raise FetchError("truncated_body", f"the connection closed inside a {n}-byte chunk")
            out += data
            if cut:
                return out, False
            if self.line(2, "chunk end") not in (b"\r\n", b"\n"):
                raise FetchError("protocol_error", "chunk data longer than its size line says")
        trailer = 0
        while True:  # trailer fields, ignored; bounded like a head
            line = self.line(max_head_bytes, "trailer")
            trailer += len(line)
            if trailer > max_head_bytes:
                raise FetchError("protocol_error", f"trailer over {max_head_bytes} bytes")
            if line in (b"\r\n", b"\n"):
                return out, True

    def body(self, length: int | None, chunked: bool, cap: int, truncate: bool, max_head_bytes: int,
             status: int) -> tuple[bytes, bool]:
        """(body, complete): complete is False when reading stopped at ``cap`` (truncate)."""
        if chunked:
            data, complete = self.chunked(cap, max_head_bytes, truncate)
        elif length is not None:
            n = min(length, cap)
            data = self.take(n)
            if data is None:
                raise FetchError("truncated_body", f"the server closed before the announced {length} bytes",
                                 status)
            complete = n == length
        else:
            data, complete = self.until_close(cap, truncate)
        return bytes(data[:cap]) if len(data) > cap or type(data) is not bytes else data, complete


def exchange(conn: Connection, request: bytes, *, deadline: float, read_timeout: float, max_head_bytes: int,
             max_body_bytes: int, truncate: bool = False, wanted: frozenset[int] = frozenset(range(200, 300))
             ) -> Response:
    """Send ``request`` and read the response. The body is read (up to ``max_body_bytes``: ``too_large`` beyond,
    or cut there with ``truncate``) for a status in ``wanted``; for others only a small body already at hand."""
    return _exchange(conn, request, deadline, read_timeout, max_head_bytes, max_body_bytes, truncate, wanted)


def _exchange(conn, request, deadline, read_timeout, max_head_bytes, max_body_bytes, truncate, wanted) -> Response:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timeout", "total deadline passed before sending")
    try:
        conn.sock.settimeout(min(read_timeout, left))
        conn.sock.sendall(request)
    except TimeoutError as exc:
        raise FetchError("timeout", f"sending the request: {exc}") from exc
    except ssl.SSLError as exc:
        raise FetchError("tls_error", str(exc)) from exc
    except OSError as exc:
        if conn.used:
            raise StaleConnection(str(exc)) from exc
        raise FetchError("connect_error", f"sending the request: {exc}") from exc
    x = _Exchange(conn, deadline, read_timeout)
    interim = []
    while True:
        major, minor, status, lines, _ = x.head(max_head_bytes)
        if status >= 200:
            break
        if status == 101:
            raise FetchError("protocol_error", "101 Switching Protocols to a plain GET")
        interim.append(status)
        if len(interim) > MAX_INTERIM:
            raise FetchError("protocol_error", f"more than {MAX_INTERIM} interim (1xx) responses")
        if status < 100:
            raise FetchError("protocol_error", f"status {status}")
    headers: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for name, value in lines:
        by_name.setdefault(name, []).append(value)
    for name, values in by_name.items():
        headers[name] = ", ".join(values)
    resp = Response(status, headers, by_name)
    keep = (major, minor) >= (1, 1) and "close" not in _tokens(headers.get("connection", ""))
    keep = keep or (major, minor) == (1, 0) and "keep-alive" in _tokens(headers.get("connection", ""))

    if status in _NO_BODY:
        resp.reusable = keep
        return _done(conn, resp)
    te = _tokens(headers.get("transfer-encoding", ""))
    if te and te != ["chunked"]:  # we send no TE header: a transfer coding other than chunked is not ours to undo
        raise FetchError("protocol_error", f"Transfer-Encoding {headers['transfer-encoding'][:40]!r}")
    chunked = bool(te)
    length = None
    if te and "content-length" in headers:
        keep = False  # RFC 9112 6.3: both framings given, the connection must not be reused
    elif "content-length" in headers:
        values = {v.strip() for v in headers["content-length"].split(",")}
        if len(values) != 1 or not _LENGTH.fullmatch(next(iter(values))):
            raise FetchError("protocol_error", f"Content-Length {headers['content-length'][:40]!r}")
        length = int(values.pop())
    if length is None and not chunked:
        keep = False  # the body ends when the server closes

    if status not in wanted:  # nobody needs this body: read it only when small (<= 64 KB) and prompt, else close
        small = length is not None and length <= SMALL_BODY_BYTES or chunked
        if small:
            x.deadline = min(deadline, time.monotonic() + SMALL_BODY_WAIT_S)
            try:
                resp.body, complete = x.body(length, chunked, SMALL_BODY_BYTES, False, max_head_bytes, status)
                resp.reusable = keep and complete
                return _done(conn, resp)
            except (FetchError, StaleConnection):
                pass
        conn.close()
        return resp

    if length is not None and length > max_body_bytes and not truncate:
        conn.close()
        raise FetchError("too_large", f"Content-Length {length} > {max_body_bytes} bytes", status)
    data, complete = x.body(length, chunked, max_body_bytes, truncate, max_head_bytes, status)
    enc = [c for c in _tokens(headers.get("content-encoding", "")) if c != "identity"]
    if enc:
        data = _decode(data, enc, max_body_bytes, truncate, complete)
    resp.body = data
    resp.reusable = keep and complete
    return _done(conn, resp)


def _done(conn: Connection, resp: Response) -> Response:
    if conn.buf or conn.tls_pending():  # bytes past the response: the stream is out of step, never reuse it
        resp.reusable = False
    conn.used += 1
    return resp


def _decode(data: bytes, codings: list[str], cap: int, truncate: bool, complete: bool) -> bytes:
    """Content-Encoding gzip / deflate (one coding: layers cost CPU the deadline cannot interrupt), the decoded
    size capped (a small body can inflate 1000x). A body cut at the cap (``truncate``) decodes as far as it goes."""
    if len(codings) > 1:
        raise FetchError("protocol_error", f"Content-Encoding {', '.join(codings)[:60]} (only identity was asked for)")
    for coding in codings:
        if coding in ("gzip", "x-gzip"):
            wbits = 31
        elif coding == "deflate":  # zlib-wrapped as the RFC says, or raw deflate as some servers send
            wbits = 15 if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0 else -15
        else:
            raise FetchError("protocol_error", f"Content-Encoding {coding!r} (only identity was asked for)")
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(data, cap + 1)
        except zlib.error as exc:
            raise FetchError("protocol_error", f"Content-Encoding {coding}: {exc}") from exc
        if len(out) > cap:
            if truncate:
                return out[:cap]
            raise FetchError("too_large", f"decoded body passed {cap} bytes")
        if not d.eof and complete:
            raise FetchError("truncated_body", f"Content-Encoding {coding}: the stream ends early")
        data = out
    return data


def _head_end(buf: bytearray, start: int) -> int:
    """Index just past the empty line that ends a head, or -1."""
    a = buf.find(b"\n\r\n", start)
    b = buf.find(b"\n\n", start)
    ends = [i + 3 for i in (a,) if i >= 0] + [i + 2 for i in (b,) if i >= 0]
    return min(ends) if ends else -1


def _header_lines(block: bytes) -> list[tuple[str, str]]:
    """Header fields of a head (status line removed). Obsolete line folding is joined; lines without a colon are
    ignored, as browsers do."""
    out: list[tuple[str, str]] = []
    for raw in block.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if out:
                out[-1] = (out[-1][0], f"{out[-1][1]} {line.strip().decode('latin-1')}")
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            continue
        out.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
    return out


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]
