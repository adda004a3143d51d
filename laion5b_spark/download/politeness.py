"""Politeness towards image hosts: a per-host connection cap and request rate, pauses a host asks for (429/503 with
Retry-After), exponential backoff for retries, and the X-Robots-Tag opt-out.

X-Robots-Tag is read as Google's and Bing's documentation define it: a line is a comma-separated list of
directives, case-insensitive; ``name: directive`` starts a group for the crawler ``name`` that runs to the next
such name, and directives before any name are for every crawler. A ``name:`` is a crawler only when ``name`` is
not a directive that takes a value (``max-snippet:20``, ``max-image-preview:large``, ``max-video-preview:-1``,
``unavailable_after: <date>``); a date may hold commas and colons (``Wed, 21 Oct 2015 07:28:00 GMT``), so the
pieces after ``unavailable_after`` belong to its date until one reads as a directive again. ``none`` means
``noindex, nofollow``.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from contextlib import contextmanager

# img2dataset's defaults, plus "noml"
DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex", "noml")
# directives that take a value after a colon: "max-snippet:20" names no crawler
VALUE_DIRECTIVES = frozenset({"max-snippet", "max-image-preview", "max-video-preview", "unavailable_after"})
# directives without a value that Google, Bing and the AI opt-out conventions define: one ends a date
PLAIN_DIRECTIVES = frozenset({"all", "index", "follow", "noindex", "nofollow", "none", "noarchive", "nocache",
                              "nosnippet", "indexifembedded", "notranslate", "noimageindex", "noodp", "noydir",
                              "nositelinkssearchbox", "noai", "noimageai", "noml"})
SHORTHANDS = {"none": ("noindex", "nofollow")}
_CRAWLER_NAME = re.compile(r"[^\s:,]+")  # a product token: no spaces (a date's "21 Oct 2015 07" is not one)


class HostGate:
    """At most ``max_per_host`` requests in flight per host, ``min_interval_s`` between request starts, and no
    request to a host before the time it asked to be left alone until. Thread-safe; one per task."""

    def __init__(self, max_per_host: int = 4, min_interval_s: float = 0.0):
        self.max_per_host, self.min_interval = max(1, max_per_host), max(0.0, min_interval_s)
        self._cv = threading.Condition()
        self._active: dict[str, int] = {}
        self._next_start: dict[str, float] = {}  # monotonic time before which no request may start

    @contextmanager
    def slot(self, host: str):
        with self._cv:
            while True:
                wait = self._next_start.get(host, 0.0) - time.monotonic()
                if self._active.get(host, 0) < self.max_per_host and wait <= 0:
                    break
                self._cv.wait(timeout=wait if wait > 0 else None)
            self._active[host] = self._active.get(host, 0) + 1
            if self.min_interval:
                self._next_start[host] = time.monotonic() + self.min_interval
        try:
            yield
        finally:
            with self._cv:
                self._active[host] -= 1
                if not self._active[host]:
                    del self._active[host]
                self._cv.notify_all()

    def pause(self, host: str, seconds: float) -> None:
        """The host asked for a break (Retry-After): no new request to it for ``seconds``."""
        with self._cv:
            until = time.monotonic() + max(0.0, seconds)
            self._next_start[host] = max(self._next_start.get(host, 0.0), until)
            self._cv.notify_all()

    def waiting_s(self, host: str) -> float:
        with self._cv:
            return max(0.0, self._next_start.get(host, 0.0) - time.monotonic())


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes '²', which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a year of twenty digits
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_s(attempt: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Wait before retry number ``attempt`` (0-based): base, 2x base, 4x base, ... capped."""
    return min(cap_s, base_s * (2 ** attempt))


def robots_tag_directives(line: str) -> list[tuple[str | None, str]]:
    """(crawler or None for everyone, directive) for each directive of one X-Robots-Tag line, lower-case, values
    dropped and shorthands expanded: ``"max-image-preview:large, otherbot: none"`` ->
    ``[(None, "max-image-preview"), ("otherbot", "noindex"), ("otherbot", "nofollow")]``."""
    out: list[tuple[str | None, str]] = []
    crawler: str | None = None
    in_date = False
    for piece in line.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if in_date and not _starts_a_directive(piece):
            continue  # a comma inside unavailable_after's date
        name, colon, rest = piece.partition(":")
        name = name.strip().lower()
        if colon and name not in VALUE_DIRECTIVES and _CRAWLER_NAME.fullmatch(name):
            crawler = name
            name = rest.partition(":")[0].strip().lower()
        in_date = name == "unavailable_after"
        if name:
            out.extend((crawler, d) for d in SHORTHANDS.get(name, (name,)))
    return out


def _starts_a_directive(piece: str) -> bool:
    """Whether a comma-separated piece after ``unavailable_after`` starts a new directive (``noai``,
    ``max-snippet: 5``, ``otherbot: noai``) rather than going on with the date (`` 21 Oct 2015 07:28:00 GMT``)."""
    name, colon, rest = piece.partition(":")
    name = name.strip().lower()
    if name in PLAIN_DIRECTIVES or name in VALUE_DIRECTIVES:
        return True
    first = rest.partition(":")[0].strip().lower()
    return bool(colon) and bool(_CRAWLER_NAME.fullmatch(name)) and (first in PLAIN_DIRECTIVES
                                                                    or first in VALUE_DIRECTIVES)


def robots_denied(robots_tags: list[str], user_agent_token: str,
                  disallowed: tuple[str, ...] = DISALLOWED_DIRECTIVES) -> bool:
    """True when an X-Robots-Tag line forbids this use: ``noai`` (or another of ``disallowed``, ``none`` counting
    as ``noindex``) for everyone, for ``*`` or for our token. A group naming another crawler does not apply to us."""
    token = user_agent_token.lower()
    return any(crawler in (None, "*", token) and directive in disallowed
               for line in robots_tags for crawler, directive in robots_tag_directives(line))
