"""Optional robots.txt support (RFC 9309) for the image download, cached per origin (scheme, host, port).

Image hosts that opt out of crawling in robots.txt should be left alone even though img2dataset only honours
X-Robots-Tag. One robots.txt fetch per origin serves every URL on it (``wellknown.OriginCache``: download threads
asking for the same origin at once wait for the one fetch in flight).

What a robots.txt answer means (RFC 9309 section 2.3.1):

* 2xx: the rules apply (parsed by ``urllib.robotparser``). The first 500 KiB are read, as the RFC allows; a line
  cut by that cap is dropped, never read half (``Disallow: /pri`` is not ``Disallow: /private/``);
* 4xx (401 and 403 too): no rules, everything is allowed; more than five redirects count the same (2.3.1.2);
* 5xx, 429 (Google's reading: a rate limit is not a missing file), any other status, and any failure to fetch
  it whole (a timeout, a reset, a head or body cut short, TLS, DNS, ...): the origin is unreachable, everything
  on it is disallowed, and that verdict is cached for at most 10 minutes so that the origin is asked again soon.

A 2xx is believed only when its body is whole: a body shorter than its Content-Length, or an empty body with no
Content-Length or Transfer-Encoding saying it is empty, is an answer cut short (a fetcher that took a truncated
head for an empty 200 once turned a slow robots.txt into "allow all") and counts as unreachable.

``urllib.robotparser`` keeps its own matching rules: the first matching Allow/Disallow line wins (not the
longest), ``*`` and ``$`` in paths are literal, and a group applies when its User-agent value is a substring of
our token, case-insensitively.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.robotparser import RobotFileParser

from .safe_fetch import Fetched, FetchError
from .wellknown import UNREACHABLE_TTL_S, Origin, OriginCache, file_url, origin_of

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB
# fetch failures that are the URL's, not robots.txt's: the image fetch meets them too and counts them as its own
NOT_ROBOTS_FAULTS = frozenset({"blocked_private_ip", "invalid_url", "bad_scheme", "dns_error"})


@dataclass(frozen=True)
class _Rules:
    parser: RobotFileParser | None  # None: ``refusal`` answers for every path
    refusal: str | None = None  # why everything is disallowed; None with no parser: everything is allowed


class RobotsCache:
    """``check(url)`` says whether robots.txt lets ``user_agent_token`` fetch ``url``. Thread-safe.

    ``fetch`` is the fetcher's ``fetch(url, *, max_bytes=, truncate=)`` and may raise ``FetchError`` (the job
    passes its safe fetcher: one request per origin a day does not need the per-host gate). At most
    ``max_origins`` origins are kept, least recently used evicted first.
    """

    def __init__(self, fetch: Callable[..., Fetched], user_agent_token: str, ttl_s: float = 86400,
                 max_origins: int = 100_000):
        self.fetch, self.token, self.ttl = fetch, user_agent_token, ttl_s
        self.origins: OriginCache[_Rules] = OriginCache(self._load, max_origins)
        self._denied = 0
        self._lock = threading.Lock()

    @property
    def stats(self) -> dict:
        return {**self.origins.stats, "denied": self._denied}

    def check(self, url: str) -> str | None:
        """None when ``url`` may be fetched, else a short message why not."""
        refused = self.verdict(url)
        return None if refused is None else refused[1]

    def verdict(self, url: str) -> tuple[str, str] | None:
        """None when ``url`` may be fetched, else (reason, message): ``robots_denied`` when the rules say no,
        ``robots_unreachable`` when robots.txt could not be had (a later try may pass: not a decision).

        A URL that cannot be parsed, or is not http(s), is allowed here: the fetcher refuses it with its own
        reason, and robots.txt should not take the blame.
        """
        found = origin_of(url)
        if found is None:
            return None
        origin, parts = found
        rules = self.origins.get(origin)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        reason = "robots_denied"
        if rules.parser is None:
            why = rules.refusal
            reason = "robots_unreachable"
        # the whole URL, not just target: robotparser would read a path "//a/b" as host "a"
        elif rules.parser.can_fetch(self.token, parts._replace(fragment="").geturl()):
            why = None
        else:
            why = f"robots.txt disallows {target[:100]} for {self.token}"
        if not why:
            return None
        with self._lock:
            self._denied += 1
        return reason, why

    def _load(self, origin: Origin) -> tuple[_Rules, float]:
        short = min(self.ttl, UNREACHABLE_TTL_S)
        try:
            # one byte past the cap tells a file of exactly 500 KiB (whole) from a longer one (cut)
            got = self.fetch(file_url(origin, "/robots.txt"), max_bytes=MAX_ROBOTS_BYTES + 1, truncate=True)
        except FetchError as exc:
            if exc.reason == "too_many_redirects":
                return _Rules(None), self.ttl
            if exc.reason in NOT_ROBOTS_FAULTS:  # the image fetch will meet the same refusal, under its own reason
                return _Rules(None), short
            return _Rules(None, f"robots.txt unreachable ({exc.reason})"), short
        if 400 <= got.status < 500 and got.status != 429:
            return _Rules(None), self.ttl
        if not 200 <= got.status < 300:
            return _Rules(None, f"robots.txt unreachable (HTTP {got.status})"), short
        cut = _cut_short(got)
        if cut:
            return _Rules(None, f"robots.txt unreachable ({cut})"), short
        body = got.body
        if len(body) > MAX_ROBOTS_BYTES:  # cut at the cap, which may fall inside a line: keep whole lines only
            body = body[:MAX_ROBOTS_BYTES].rpartition(b"\n")[0]
        parser = RobotFileParser()
        parser.parse(body.decode("utf-8", errors="replace").splitlines())
        return _Rules(parser), self.ttl


def _cut_short(got: Fetched) -> str | None:
    """Why a 2xx body is not the whole file, or None. Our own cut at MAX_ROBOTS_BYTES is not "short"."""
    length = got.headers.get("content-length", "").strip()
    encoded = got.headers.get("content-encoding", "identity").strip().lower() != "identity"  # length of the coded body
    if length.isascii() and length.isdigit() and not encoded and len(got.body) < min(int(length), MAX_ROBOTS_BYTES):
        return f"body cut short: {len(got.body)} of {int(length)} bytes"
    if not got.body and not length and "transfer-encoding" not in got.headers and got.status != 204:
        return "an empty answer without Content-Length"
    return None
