"""Optional robots.txt support (RFC 9309) for the image download, cached per origin (scheme, host, port).

Image hosts that opt out of crawling in robots.txt should be left alone even though img2dataset only honours
X-Robots-Tag. One robots.txt fetch per origin serves every URL on it: download threads asking for the same
origin at once wait for the one fetch in flight.

What a robots.txt answer means (RFC 9309 section 2.3.1):

* 2xx: the rules apply (parsed by ``urllib.robotparser``; the first 500 KiB are read, as the RFC allows);
* 4xx (401 and 403 too): no rules, everything is allowed; more than five redirects count the same (2.3.1.2);
* 5xx, 429, another status, or a network failure: the origin is unreachable, everything on it is disallowed,
  and that verdict is cached for at most 10 minutes so that the origin is asked again soon.

``urllib.robotparser`` keeps its own matching rules: the first matching Allow/Disallow line wins (not the
longest), ``*`` and ``$`` in paths are literal, and a group applies when its User-agent value is a substring of
our token, case-insensitively.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from .safe_fetch import Fetched, FetchError

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB
UNREACHABLE_TTL_S = 600.0  # an unreachable origin is asked again after this long at most
_DEFAULT_PORT = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Rules:
    expires: float  # time.monotonic() after which the origin is asked again
    parser: RobotFileParser | None  # None: ``refusal`` answers for every path
    refusal: str | None = None  # why everything is disallowed; None with no parser: everything is allowed


class RobotsCache:
    """``check(url)`` says whether robots.txt lets ``user_agent_token`` fetch ``url``. Thread-safe.

    ``fetch`` is ``url -> Fetched`` and may raise ``FetchError`` (the job passes its safe fetcher: one request
    per origin a day does not need the per-host gate). At most ``max_origins`` origins are kept, least recently used evicted first.
    """

    def __init__(self, fetch: Callable[[str], Fetched], user_agent_token: str, ttl_s: float = 86400,
                 max_origins: int = 100_000):
        self.fetch, self.token = fetch, user_agent_token
        self.ttl, self.max = ttl_s, max(1, max_origins)
        self._cache: OrderedDict[tuple[str, str, int], Future] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"fetched": 0, "cache_hits": 0, "denied": 0}

    def check(self, url: str) -> str | None:
        """None when ``url`` may be fetched, else a short message why not.

        A URL that cannot be parsed, or is not http(s), is allowed here: the fetcher refuses it with its own
        reason, and robots.txt should not take the blame.
        """
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
        except ValueError:
            return None
        if scheme not in _DEFAULT_PORT or not host:
            return None
        rules = self._rules((scheme, host, port or _DEFAULT_PORT[scheme]))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if rules.parser is None:
            why = rules.refusal
        # the whole URL, not just target: robotparser would read a path "//a/b" as host "a"
        elif rules.parser.can_fetch(self.token, parts._replace(fragment="").geturl()):
            why = None
        else:
            why = f"robots.txt disallows {target[:100]} for {self.token}"
        if why:
            with self._lock:
                self.stats["denied"] += 1
        return why

    def _rules(self, origin: tuple[str, str, int]) -> _Rules:
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
            return slot.result()
        try:
            rules = self._load(origin)
        except BaseException as exc:  # not a FetchError: a bug or an interrupt - the next caller tries again
            with self._lock:
                if self._cache.get(origin) is slot:
                    del self._cache[origin]
            slot.set_exception(exc)
            raise
        slot.set_result(rules)
        return rules

    def _load(self, origin: tuple[str, str, int]) -> _Rules:
        scheme, host, port = origin
        netloc = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORT[scheme]:
            netloc += f":{port}"
        now = time.monotonic()
        short = now + min(self.ttl, UNREACHABLE_TTL_S)
        try:
            got = self.fetch(f"{scheme}://{netloc}/robots.txt")
        except FetchError as exc:
            if exc.reason == "too_many_redirects":
                return _Rules(now + self.ttl, None)
            return _Rules(short, None, f"robots.txt unreachable ({exc.reason})")
        if 400 <= got.status < 500 and got.status != 429:
            return _Rules(now + self.ttl, None)
        if not 200 <= got.status < 300:
            return _Rules(short, None, f"robots.txt unreachable (HTTP {got.status})")
        body = got.body
        if len(body) > MAX_ROBOTS_BYTES:  # a line cut in half at the cap would be misread: drop it
            body = body[:MAX_ROBOTS_BYTES].rpartition(b"\n")[0]
        parser = RobotFileParser()
        parser.parse(body.decode("utf-8", errors="replace").splitlines())
        return _Rules(now + self.ttl, parser)
