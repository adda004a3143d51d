"""Fetch one URL safely: what a crawler inside a cloud VPC may and may not connect to, and how long it may take.

* only http and https; hosts go through IDNA (UTS 46) for DNS, the Host header and TLS SNI, so
  ``http://пример.test/`` is ``xn--e1afmkfd.test`` and ``http://ⓛocalhost/`` is ``localhost`` (then refused);
* the host is resolved here (cached), and every address that is not globally routable is refused before any
  connection (``addresses.py``: IANA's special-purpose registries, IPv6 forms that embed an IPv4 address judged by
  it), unless an allow-list entry (``10.0.0.0/8``, ``127.0.0.1:8080``) admits it;
* the connection goes to the address that was checked (the Host header and TLS SNI carry the name), so a second
  DNS answer cannot rebind it; redirects are followed here, one hop at a time, each hop checked the same way;
* the exchange itself (``http1.py``) is bounded as a whole: a total deadline, a cap on the head and on the
  number of 1xx responses, a byte cap on the body (Content-Length first, then counted, then the decoded size).

Failures are ``FetchError`` with an accounting reason; HTTP error statuses are results (the caller decides).
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

import idna

from ..config import DEFAULTS
from .addresses import AllowList, blocked
from .http1 import Connection, FetchError, StaleConnection, exchange, open_connection

__all__ = ["FetchError", "FetchPolicy", "Fetched", "Fetcher", "Resolver", "blocked", "request_host"]

_DEFAULT_PORT = {"http": 80, "https": 443}
_REDIRECTS = {301, 302, 303, 307, 308}
_Allow = AllowList  # the name tests and older code use

_DOWNLOAD = DEFAULTS["download"]  # the defaults live in config.DEFAULTS alone


@dataclass(frozen=True)
class FetchPolicy:
    user_agent: str = _DOWNLOAD["user_agent"]
    allow: tuple[str, ...] = tuple(_DOWNLOAD["allow"])  # networks or address:port admitted despite being private
    max_bytes: int = _DOWNLOAD["max_bytes"]
    max_header_bytes: int = _DOWNLOAD["max_header_bytes"]  # one response head: status line and headers
    connect_timeout_s: float = _DOWNLOAD["connect_timeout_s"]
    read_timeout_s: float = _DOWNLOAD["read_timeout_s"]
    deadline_s: float = _DOWNLOAD["deadline_s"]
    max_redirects: int = _DOWNLOAD["max_redirects"]
    dns_ttl_s: float = 300.0
    # "host=address:port" (host "*": every host), as curl's --connect-to: a mirror, or the demo's local image
    # server standing in for the sample crawl's hosts. The address is still checked against the allow-list.
    connect_to: tuple[str, ...] = tuple(_DOWNLOAD["connect_to"])


@dataclass
class Fetched:
    url: str  # the final URL, after redirects
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    ip: str
    robots_tags: list[str] = field(default_factory=list)  # each X-Robots-Tag header line
    redirects: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _connect_to(entries: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    import ipaddress

    out = {}
    for e in entries:
        host, sep, target = e.partition("=")
        addr, colon, port = target.rpartition(":")
        if not (sep and colon and port.isdigit() and host):
            raise ValueError(f"connect_to entry {e!r}: expected HOST=ADDRESS:PORT, e.g. *=127.0.0.1:8080")
        out[host.strip().lower()] = (str(ipaddress.ip_address(addr.strip("[]"))), int(port))
    return out


# what a DNS name or an IP literal may hold once IDNA has run (RFC 3986 reg-name without percent-encoding)
_HOST_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\]")
# WHATWG URL: bytes of a path / query that a browser percent-encodes before sending
_PATH_UNSAFE = re.compile(r'[^\x21-\x7e]|["<>`{}]')
_QUERY_UNSAFE = re.compile(r"""[^\x21-\x7e]|["<>']""")


def request_host(host: str) -> str:
    """The ASCII host for DNS, the Host header and SNI: IDNA (UTS 46, non-transitional) for non-ASCII names.
    Raises FetchError(invalid_url) for a name IDNA refuses or characters no host may hold."""
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as exc:
            raise FetchError("invalid_url", f"host {host[:80]!r} is not a valid internationalized name: {exc}"
                             ) from None
    host = host.lower()
    if not _HOST_CHARS.fullmatch(host if ":" not in host else f"[{host}]"):
        raise FetchError("invalid_url", f"host {host[:80]!r} holds characters no host name may hold")
    labels = host.rstrip(".").split(".") if ":" not in host else []
    if len(host) > 253 or any(not label or len(label) > 63 for label in labels):
        raise FetchError("invalid_url", f"host {host[:80]!r}: an empty label or one over 63 characters")
    return host


def request_target(path: str, query: str) -> str:
    """Path and query as a browser sends them: UTF-8 percent-encoding of what may not go on the wire as is."""
    if _PATH_UNSAFE.search(path):
        path = quote(path, safe="!$%&'()*+,/:;=@[\\]^|")
    if query and _QUERY_UNSAFE.search(query):
        query = quote(query, safe="!$%&()*+,/:;=?@[\\]^`{|}")
    return (path or "/") + (f"?{query}" if query else "")


class Resolver:
    """getaddrinfo with a cache: a shard's URLs repeat hosts, and per-request DNS is the slow part of crawling."""

    def __init__(self, ttl_s: float = 300.0, max_hosts: int = 100_000):
        self.ttl, self.max = ttl_s, max_hosts
        # a failure is kept as its message: one exception object raised again and again (and from several
        # threads at once) would grow its traceback without end
        self._cache: OrderedDict[tuple[str, int], tuple[float, list[str] | str]] = OrderedDict()
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((host, port))
        if hit and hit[0] > now:
            if isinstance(hit[1], str):
                raise FetchError("dns_error", hit[1])
            return hit[1]
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            value: list[str] | str = list(dict.fromkeys(i[4][0] for i in infos))
        except (OSError, UnicodeError, ValueError) as exc:  # gaierror; a name too long for DNS; a NUL
            value = f"{host[:100]}: {exc}"
        with self._lock:
            self._cache[(host, port)] = (now + self.ttl, value)
            self._cache.move_to_end((host, port))
            while len(self._cache) > self.max:
                self._cache.popitem(last=False)
        if isinstance(value, str):
            raise FetchError("dns_error", value)
        return value


class Fetcher:
    """Thread-safe; keeps idle keep-alive connections per (scheme, address, port, host)."""

    def __init__(self, policy: FetchPolicy = FetchPolicy(), resolver: Resolver | None = None, max_pools: int = 512,
                 per_host_connections: int = 4):
        self.policy = policy
        self.allow = AllowList(policy.allow)
        self.connect_to = _connect_to(policy.connect_to)
        self.resolver = resolver or Resolver(policy.dns_ttl_s)
        self.max_pools, self.per_host = max_pools, per_host_connections
        self._idle: OrderedDict[tuple, list[Connection]] = OrderedDict()
        self._lock = threading.Lock()
        self._tls = ssl.create_default_context()

    def _connection(self, key: tuple, deadline: float, fresh: bool = False) -> Connection:
        with self._lock:
            idle = self._idle.get(key)
            while idle and not fresh:
                conn = idle.pop()
                if conn.idle_and_open():
                    return conn
                conn.close()
        scheme, ip, port, host = key
        return open_connection(ip, port, tls_host=host if scheme == "https" else None,
                               connect_timeout=self.policy.connect_timeout_s, deadline=deadline, context=self._tls)

    def _release(self, key: tuple, conn: Connection, reusable: bool) -> None:
        if not reusable:
            conn.close()
            return
        with self._lock:
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if len(idle) < self.per_host:
                idle.append(conn)
                conn = None
            while len(self._idle) > self.max_pools:
                for old in self._idle.popitem(last=False)[1]:
                    old.close()
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            for idle in self._idle.values():
                for conn in idle:
                    conn.close()
            self._idle.clear()

    def target(self, url: str) -> tuple[str, str, int, str, int]:
        """(scheme, ASCII host, port, checked address, its port) or FetchError - before any connection."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchError("invalid_url", str(exc)) from exc
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORT:
            raise FetchError("bad_scheme", f"{scheme or 'no'} scheme: only http and https are fetched")
        if not parts.hostname:
            raise FetchError("invalid_url", "no host")
        host = request_host(parts.hostname)
        if port == 0:
            raise FetchError("invalid_url", "port 0")
        port = port or _DEFAULT_PORT[scheme]
        to = self.connect_to.get(host) or self.connect_to.get("*")
        if to is not None:
            ips, to_port = [to[0]], to[1]
        else:
            ips, to_port = self.resolver.resolve(host, port), port
        for ip in ips:
            if not blocked(ip, to_port, self.allow):
                return scheme, host, port, ip, to_port
        raise FetchError("blocked_private_ip", f"{host} resolves to {', '.join(ips)}: not a public address")

    def fetch(self, url: str, headers: dict[str, str] | None = None, *, max_bytes: int | None = None,
              truncate: bool = False) -> Fetched:
        """GET ``url``, following redirects. ``max_bytes`` overrides the policy's cap for this call; with
        ``truncate`` a longer body is cut there instead of failing (robots.txt: the first 500 KiB count)."""
        p = self.policy
        cap = p.max_bytes if max_bytes is None else max_bytes
        t0 = time.monotonic()
        deadline = t0 + p.deadline_s
        hops: list[str] = []
        for _ in range(p.max_redirects + 1):
            scheme, host, port, ip, ip_port = self.target(url)
            if time.monotonic() >= deadline:  # a slow DNS answer counts against the deadline too
                raise FetchError("timeout", f"total deadline of {p.deadline_s}s passed (DNS)")
            parts = urlsplit(url)
            host_header = f"[{host}]" if ":" in host else host
            if port != _DEFAULT_PORT[scheme]:
                host_header += f":{port}"
            send = {"Host": host_header, "User-Agent": p.user_agent, "Accept": "image/*,*/*;q=0.5",
                    "Accept-Encoding": "identity", **(headers or {})}
            request = _request(request_target(parts.path, parts.query), send)
            key = (scheme, ip, ip_port, host)
            resp = None
            for fresh_retry in (False, True):  # a kept-alive connection the server closed meanwhile: once more,
                conn = self._connection(key, deadline, fresh=fresh_retry)  # on a new connection
                try:
                    resp = exchange(conn, request, deadline=deadline, read_timeout=p.read_timeout_s,
                                    max_head_bytes=p.max_header_bytes, max_body_bytes=cap, truncate=truncate,
                                    wanted=_WANTED)
                except StaleConnection:
                    conn.close()
                    if fresh_retry:
                        raise FetchError("connect_error", "the server closed the connection without answering"
                                         ) from None
                    continue
                except BaseException:
                    conn.close()
                    raise
                self._release(key, conn, resp.reusable)
                break
            location = resp.headers.get("location")
            if resp.status in _REDIRECTS and location:
                hops.append(url)
                try:
                    url = urljoin(url, location.strip())
                except ValueError as exc:
                    raise FetchError("invalid_url", f"redirect to {location[:200]!r}: {exc}") from exc
                continue
            robots = resp.lines.get("x-robots-tag", [])
            return Fetched(url, resp.status, resp.headers, resp.body, ip, robots, hops, time.monotonic() - t0)
        raise FetchError("too_many_redirects", f"more than {p.max_redirects} redirects")


_WANTED = frozenset(range(200, 300))


def _request(target: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {target} HTTP/1.1"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r}: CR/LF in a request header")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
