"""The TDM Reservation Protocol (TDMRep, W3C Community Group final report of 2024-05-10): the machine-readable way
for a rightsholder to reserve text and data mining rights, the opt-out of Article 4 of the EU DSM directive.

Two of its techniques reach an image download (the HTML and EPUB ones do not):

* the ``tdm-reservation`` response header: ``1`` reserves the image it comes with; ``tdm-policy`` may name the
  terms. Any value other than 0 or 1 is a protocol error, which the report says to read as "unset". A header
  sent twice (joined by the fetcher: ``0, 1``) reserves when either says 1.
* ``/.well-known/tdmrep.json`` on the image's origin, fetched once per origin (``wellknown.OriginCache``) when
  robots checks are on: an array of rules ``{"location": pattern, "tdm-reservation": 0|1, "tdm-policy": url}``.
  ``location`` is a robots.txt path pattern (``*`` any characters, a final ``$`` the end) matched against the
  URL's path and query, case-sensitively, after percent-encodings are made comparable (an encoded unreserved
  character is decoded, other ``%xx`` upper-cased, non-ASCII UTF-8 encoded; a literal ``$`` is written ``%24``).
  "The most specific match is the first in sequence": the first rule whose location matches decides, and a
  rule whose ``tdm-reservation`` is not 0 or 1 decides "unset".

Errors, as the report says: an origin that does not answer the GET of the file with a success (after redirects)
holding it "does not implement this protocol" that way, so a 4xx, a 5xx, a network failure, or a body that is
not a JSON array of rules reserves nothing by itself; the header of each image still counts. An answer that says
nothing about the file (5xx, 429, a timeout) is cached for 10 minutes only, so the origin is asked again soon.
Two leniencies lean towards the reservation: ``"1"`` as a string counts like ``1``, and a single rule object
instead of an array is read as a one-rule array.

Order: the report has the header override the file. The file is checked before the request and a reserved image
is never fetched, so a ``tdm-reservation: 0`` header cannot lift a reservation the file made - we err towards
the rightsholder's reservation there; a header ``1`` reserves whatever the file says.

Matching is linear in the path for each rule (``*``-only patterns are matched segment by segment, leftmost, no
backtracking), so a hostile file cannot make a URL cost more than its rules times its length.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .safe_fetch import Fetched, FetchError
from .wellknown import UNREACHABLE_TTL_S, Origin, OriginCache, file_url, origin_of

TDMREP_PATH = "/.well-known/tdmrep.json"
MAX_TDMREP_BYTES = 512 * 1024  # a larger file is not read (too_large): no reservation from it
MAX_RULES = 10_000  # rules read from one file; each URL on the origin is matched against them in order
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")  # RFC 3986 2.3
_HEX = frozenset(b"0123456789abcdefABCDEF")


def reservation_value(value) -> int | None:
    """A ``tdm-reservation`` value: 0, 1, or None for unset (absent, or a protocol error)."""
    if isinstance(value, bool):  # JSON true is not 1
        return None
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


def header_reservation(headers: Mapping[str, str]) -> str | None:
    """Why the ``tdm-reservation`` response header reserves this resource, or None. ``headers`` has lower-case
    names, a repeated header joined with ", " (the fetcher's ``Fetched.headers``)."""
    values = [reservation_value(v) for v in headers.get("tdm-reservation", "").split(",")]
    if 1 not in values:
        return None
    policy = headers.get("tdm-policy", "").strip()
    return "tdm-reservation: 1" + (f" (tdm-policy {policy[:300]})" if policy else "")


def _comparable(text: str, literal: bytes = b"") -> str:
    """``text`` spelled one way for comparison: ``%xx`` of an unreserved character decoded, other ``%xx``
    upper-cased, bytes outside printable ASCII and the ``literal`` characters percent-encoded (UTF-8)."""
    raw = text.encode("utf-8", "surrogatepass")
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            v = int(raw[i + 1:i + 3], 16)
            out.append(chr(v) if v in _UNRESERVED else f"%{v:02X}")
            i += 3
            continue
        out.append(f"%{b:02X}" if b >= 0x7F or b <= 0x20 or b in literal else chr(b))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Pattern:
    segments: tuple[str, ...]  # the literal pieces between the *s, comparable
    anchored: bool  # ended with $: the whole target must be matched

    @classmethod
    def of(cls, location: str) -> "_Pattern":
        anchored = location.endswith("$")
        body = location[:-1] if anchored else location
        return cls(tuple(_comparable(s, b"$") for s in body.split("*")), anchored)

    def matches(self, target: str) -> bool:
        """``target`` comparable. Leftmost matching of each piece is exact for ``*``-only patterns."""
        first, rest = self.segments[0], self.segments[1:]
        if not target.startswith(first):
            return False
        if not rest:
            return not self.anchored or len(target) == len(first)
        pos = len(first)
        for piece in rest[:-1] if self.anchored else rest:
            if piece:
                pos = target.find(piece, pos)
                if pos < 0:
                    return False
                pos += len(piece)
        if self.anchored:
            last = rest[-1]
            return len(target) - len(last) >= pos and target.endswith(last)
        return True


def _target(path_and_query: str) -> str:
    return _comparable(path_and_query, b"*$")  # in a URL, * and $ are characters: the pattern writes them %2A, %24


def location_matches(location: str, path_and_query: str) -> bool:
    return _Pattern.of(location).matches(_target(path_and_query))


@dataclass(frozen=True)
class TdmRule:
    location: str
    reservation: int | None  # 0, 1, or None: unset (a protocol error)
    policy: str | None
    pattern: _Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "pattern", _Pattern.of(self.location))


def parse_tdmrep(body: bytes) -> list[TdmRule] | None:
    """The rules of a tdmrep.json, in order, or None when ``body`` is not one (not UTF-8 JSON, not an array).
    Objects without a non-empty string ``location`` are no rules and are skipped."""
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return None
    rules = []
    for item in data[:MAX_RULES]:
        if not isinstance(item, dict):
            continue
        location, policy = item.get("location"), item.get("tdm-policy")
        if isinstance(location, str) and location:
            rules.append(TdmRule(location, reservation_value(item.get("tdm-reservation")),
                                 policy if isinstance(policy, str) else None))
    return rules


def rule_for(rules: list[TdmRule], path_and_query: str) -> TdmRule | None:
    """The rule that decides for this path (and query): the first whose location matches."""
    target = _target(path_and_query)
    return next((r for r in rules if r.pattern.matches(target)), None)


class TdmRep:
    """The TDMRep checks of one worker. ``check(url)`` (before the request) reads the origin's tdmrep.json when
    ``fetch`` is given (the fetcher's ``fetch``; None: header checks only); ``reserved_by(headers)`` reads the
    response. Each returns why the resource is reserved, or None. Thread-safe."""

    def __init__(self, fetch: Callable[..., Fetched] | None = None, ttl_s: float = 86400,
                 max_origins: int = 100_000):
        self.fetch, self.ttl = fetch, ttl_s
        self.origins: OriginCache[list[TdmRule]] = OriginCache(self._load, max_origins)
        self._reserved = 0
        self._lock = threading.Lock()

    @property
    def stats(self) -> dict:
        return {**self.origins.stats, "reserved": self._reserved}

    def check(self, url: str) -> str | None:
        if self.fetch is None:
            return None
        found = origin_of(url)
        if found is None:
            return None
        origin, parts = found
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        rule = rule_for(self.origins.get(origin), target)
        if rule is None or rule.reservation != 1:
            return None
        return self._count(f"tdmrep.json reserves TDM rights on {target[:100]}"
                           + (f" (tdm-policy {rule.policy[:300]})" if rule.policy else ""))

    def reserved_by(self, headers: Mapping[str, str]) -> str | None:
        why = header_reservation(headers)
        return self._count(why) if why else None

    def _count(self, why: str) -> str:
        with self._lock:
            self._reserved += 1
        return why

    def _load(self, origin: Origin) -> tuple[list[TdmRule], float]:
        short = min(self.ttl, UNREACHABLE_TTL_S)
        try:
            got = self.fetch(file_url(origin, TDMREP_PATH), max_bytes=MAX_TDMREP_BYTES)
        except FetchError:
            return [], short
        if 200 <= got.status < 300:
            return parse_tdmrep(got.body) or [], self.ttl
        if 400 <= got.status < 500 and got.status != 429:
            return [], self.ttl  # no file
        return [], short
