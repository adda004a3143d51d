"""A per-origin cache of site-wide files (``/robots.txt``, ``/.well-known/tdmrep.json``): each is fetched once per
origin (scheme, host, port) and kept until it expires.

Download threads asking for the same origin at once wait for the one fetch in flight. At most ``max_origins``
origins are kept, least recently used evicted first. What a loader makes of the answer (and how long it holds) is
the loader's business: ``robots.py`` and ``tdmrep.py`` each read their file as their standard says.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import SplitResult, urlsplit

T = TypeVar("T")
Origin = tuple[str, str, int]  # (scheme, lower-case host, port)
UNREACHABLE_TTL_S = 600.0  # an answer that says nothing about the file (5xx, a timeout) holds at most this long
_DEFAULT_PORT = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[Origin, SplitResult] | None:
    """The origin of an http(s) URL and its parts, or None for a URL that cannot be parsed or is not http(s): the
    fetcher refuses those with its own reason, and no site-wide file should take the blame."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORT or not host:
        return None
    return (scheme, host, port or _DEFAULT_PORT[scheme]), parts


def file_url(origin: Origin, path: str) -> str:
    """``path`` (starting with /) on ``origin``: the default port left out, an IPv6 host in brackets."""
    scheme, host, port = origin
    netloc = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORT[scheme]:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{path}"


@dataclass(frozen=True)
class Loaded(Generic[T]):
    value: T
    expires: float  # time.monotonic() after which the origin is asked again


class OriginCache(Generic[T]):
    """``get(origin)`` gives ``load(origin)``'s value, loading it at most once per origin until it expires.
    Thread-safe. ``load`` returns ``(value, seconds it holds)``; an exception from it is not cached (the next
    caller tries again) and reaches every thread that waited for that load."""

    def __init__(self, load: Callable[[Origin], tuple[T, float]], max_origins: int = 100_000):
        self.load, self.max = load, max(1, max_origins)
        self._cache: OrderedDict[Origin, Future] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"fetched": 0, "cache_hits": 0}

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, origin: Origin) -> T:
        now = time.monotonic()
        with self._lock:
            slot = self._cache.get(origin)
            fresh = slot is not None and (not slot.done() or slot.exception() is None and slot.result().expires > now)
            if fresh:
                self._cache.move_to_end(origin)
                self.stats["cache_hits"] += 1  # waiting for another thread's fetch counts as a hit too
            else:
                slot = self._cache[origin] = Future()
                self._cache.move_to_end(origin)
                while len(self._cache) > self.max:
                    self._cache.popitem(last=False)  # threads waiting on an evicted fetch keep their Future
                self.stats["fetched"] += 1
        if fresh:
            return slot.result().value
        try:
            value, ttl = self.load(origin)
        except BaseException as exc:  # a bug or an interrupt, not an answer: the next caller tries again
            with self._lock:
                if self._cache.get(origin) is slot:
                    del self._cache[origin]
            slot.set_exception(exc)
            raise
        slot.set_result(Loaded(value, time.monotonic() + ttl))
        return value
