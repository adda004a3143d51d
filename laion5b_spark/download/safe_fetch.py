"""Fetch one URL safely: what a crawler inside a cloud VPC may and may not connect to, and how long it may take.

* only http and https;
* the host is resolved here (cached), and every address that is not globally routable - private, loopback,
  link-local (the 169.254.169.254 metadata service), CGNAT, multicast, reserved, the fd00:ec2::254 metadata
  service - is refused before any connection, unless an allow-list entry (``10.0.0.0/8``, ``127.0.0.1:8080``)
  admits it;
* the connection goes to the address that was checked (the Host header and TLS SNI carry the name), so a second
  DNS answer cannot rebind it; redirects are followed here, one hop at a time, each hop checked the same way;
* a byte cap on the body (checked against Content-Length first), connect and read timeouts, and a total deadline
  (a server dripping one byte a second still ends on time).

Failures are ``FetchError`` with an accounting reason; HTTP error statuses are results (the caller decides).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import urllib3

from ..config import DEFAULTS

_DEFAULT_PORT = {"http": 80, "https": 443}
_REDIRECTS = {301, 302, 303, 307, 308}


class FetchError(Exception):
    def __init__(self, reason: str, message: str = "", http_status: int | None = None):
        super().__init__(message or reason)
        self.reason = reason  # accounting reason (laion5b_spark.accounting.REASONS)
        self.http_status = http_status


_DOWNLOAD = DEFAULTS["download"]  # the defaults live in config.DEFAULTS alone


@dataclass(frozen=True)
class FetchPolicy:
    user_agent: str = _DOWNLOAD["user_agent"]
    allow: tuple[str, ...] = tuple(_DOWNLOAD["allow"])  # networks or address:port admitted despite being private
    max_bytes: int = _DOWNLOAD["max_bytes"]
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


class _Allow:
    def __init__(self, entries: tuple[str, ...]):
        self.nets: list[tuple[ipaddress._BaseNetwork, int | None]] = []
        for e in entries:
            addr, port = e, None
            if e.count(":") == 1 or e.startswith("["):  # v4:port or [v6]:port
                addr, _, p = e.rpartition(":")
                addr, port = addr.strip("[]"), int(p)
            self.nets.append((ipaddress.ip_network(addr, strict=False), port))

    def admits(self, ip: ipaddress._BaseAddress, port: int) -> bool:
        return any(ip in net and (p is None or p == port) for net, p in self.nets)


def _connect_to(entries: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    out = {}
    for e in entries:
        host, sep, target = e.partition("=")
        addr, colon, port = target.rpartition(":")
        if not (sep and colon and port.isdigit() and host):
            raise ValueError(f"connect_to entry {e!r}: expected HOST=ADDRESS:PORT, e.g. *=127.0.0.1:8080")
        out[host.strip().lower()] = (str(ipaddress.ip_address(addr.strip("[]"))), int(port))
    return out


def blocked(ip: str, port: int, allow: _Allow) -> bool:
    """True when connecting to ip:port is refused."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    if allow.admits(addr, port):
        return False
    return not addr.is_global or addr.is_multicast


class Resolver:
    """getaddrinfo with a cache: a shard's URLs repeat hosts, and per-request DNS is the slow part of crawling."""

    def __init__(self, ttl_s: float = 300.0, max_hosts: int = 100_000):
        self.ttl, self.max = ttl_s, max_hosts
        self._cache: OrderedDict[tuple[str, int], tuple[float, list[str] | FetchError]] = OrderedDict()
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((host, port))
        if hit and hit[0] > now:
            if isinstance(hit[1], FetchError):
                raise hit[1]
            return hit[1]
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            value: list[str] | FetchError = list(dict.fromkeys(i[4][0] for i in infos))
        except (socket.gaierror, UnicodeError) as exc:
            value = FetchError("dns_error", f"{host}: {exc}")
        with self._lock:
            self._cache[(host, port)] = (now + self.ttl, value)
            self._cache.move_to_end((host, port))
            while len(self._cache) > self.max:
                self._cache.popitem(last=False)
        if isinstance(value, FetchError):
            raise value
        return value


class Fetcher:
    """Thread-safe; keeps one keep-alive pool per (scheme, address, port, host)."""

    def __init__(self, policy: FetchPolicy = FetchPolicy(), resolver: Resolver | None = None, max_pools: int = 512,
                 per_host_connections: int = 4):
        self.policy = policy
        self.allow = _Allow(policy.allow)
        self.connect_to = _connect_to(policy.connect_to)
        self.resolver = resolver or Resolver(policy.dns_ttl_s)
        self.max_pools, self.per_host = max_pools, per_host_connections
        self._pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def _pool(self, scheme: str, ip: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, ip, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                kw = dict(maxsize=self.per_host, block=False, retries=False)
                if scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(ip, port, server_hostname=host, assert_hostname=host, **kw)
                else:
                    pool = urllib3.HTTPConnectionPool(ip, port, **kw)
                self._pools[key] = pool
                while len(self._pools) > self.max_pools:
                    self._pools.popitem(last=False)[1].close()
            self._pools.move_to_end(key)
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    def target(self, url: str) -> tuple[str, str, int, str, int]:
        """(scheme, host, port, checked address, its port) or FetchError - before any connection."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchError("invalid_url", str(exc)) from exc
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORT:
            raise FetchError("bad_scheme", f"{scheme or 'no'} scheme: only http and https are fetched")
        host = parts.hostname
        if not host:
            raise FetchError("invalid_url", "no host")
        port = port or _DEFAULT_PORT[scheme]
        to = self.connect_to.get(host.lower()) or self.connect_to.get("*")
        if to is not None:
            ips, to_port = [to[0]], to[1]
        else:
            ips, to_port = self.resolver.resolve(host, port), port
        for ip in ips:
            if not blocked(ip, to_port, self.allow):
                return scheme, host, port, ip, to_port
        raise FetchError("blocked_private_ip", f"{host} resolves to {', '.join(ips)}: not a public address")

    def fetch(self, url: str, headers: dict[str, str] | None = None) -> Fetched:
        p = self.policy
        t0 = time.monotonic()
        deadline = t0 + p.deadline_s
        hops: list[str] = []
        for _ in range(p.max_redirects + 1):
            scheme, host, port, ip, ip_port = self.target(url)
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host_header = host if port == _DEFAULT_PORT[scheme] else f"{host}:{port}"
            if ":" in host and not host.startswith("["):
                host_header = f"[{host}]" + ("" if port == _DEFAULT_PORT[scheme] else f":{port}")
            send = {"Host": host_header, "User-Agent": p.user_agent, "Accept": "image/*,*/*;q=0.5",
                    **(headers or {})}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError("timeout", f"total deadline of {p.deadline_s}s passed")
            timeout = urllib3.Timeout(connect=min(p.connect_timeout_s, remaining), read=min(p.read_timeout_s, remaining))
            with _as_fetch_errors():
                resp = self._pool(scheme, ip, ip_port, host).urlopen(
                    "GET", path, headers=send, redirect=False, retries=False, preload_content=False,
                    timeout=timeout, assert_same_host=False)
            head = {k.lower(): ", ".join(resp.headers.getlist(k)) for k in resp.headers}
            if resp.status in _REDIRECTS and head.get("location"):
                resp.drain_conn()
                resp.release_conn()
                hops.append(url)
                url = urljoin(url, head["location"])
                continue
            body = self._read(resp, head, deadline)
            robots = list(resp.headers.getlist("x-robots-tag"))
            return Fetched(url, resp.status, head, body, ip, robots, hops, time.monotonic() - t0)
        raise FetchError("too_many_redirects", f"more than {p.max_redirects} redirects")

    def _read(self, resp, head: dict[str, str], deadline: float) -> bytes:
        cap = self.policy.max_bytes
        try:
            declared = int(head.get("content-length", "-1"))
        except ValueError:
            declared = -1
        if declared > cap:
            _discard(resp)
            raise FetchError("too_large", f"Content-Length {declared} > {cap} bytes")
        chunks, size, ok = [], 0, False
        try:
            with _as_fetch_errors():
                while chunk := resp.read1(65536):  # whatever one recv gives: the deadline is checked between them
                    size += len(chunk)
                    if size > cap:
                        raise FetchError("too_large", f"body passed {cap} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError("timeout", f"total deadline of {self.policy.deadline_s}s passed while reading")
                    chunks.append(chunk)
            ok = True
        finally:
            if ok:
                resp.release_conn()  # read to the end: the connection is reused (keep-alive)
            else:
                _discard(resp)
        return b"".join(chunks)


@contextmanager
def _as_fetch_errors():
    """urllib3's and the socket's exceptions -> FetchError with the accounting reason."""
    try:
        yield
    except urllib3.exceptions.NewConnectionError as exc:  # refused/unreachable: a subclass of ConnectTimeoutError
        raise FetchError("connect_error", str(exc)) from exc
    except urllib3.exceptions.ConnectTimeoutError as exc:
        raise FetchError("timeout", f"connect: {exc}") from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise FetchError("timeout", f"read: {exc}") from exc
    except urllib3.exceptions.SSLError as exc:
        raise FetchError("tls_error", str(exc)) from exc
    except urllib3.exceptions.ProtocolError as exc:  # closed before the announced length
        raise FetchError("truncated_body" if "IncompleteRead" in str(exc) or "ended prematurely" in str(exc)
                         else "connect_error", str(exc)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise FetchError("connect_error", str(exc)) from exc


def _discard(resp) -> None:
    """A connection with unread bytes must not go back to the pool: close it, then release the slot."""
    resp.close()
    resp.release_conn()
