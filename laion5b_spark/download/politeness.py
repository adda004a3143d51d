"""Politeness towards image hosts: a per-host connection cap and request rate, pauses a host asks for (429/503 with
Retry-After), exponential backoff for retries, and the X-Robots-Tag opt-out (img2dataset's rule)."""

from __future__ import annotations

import email.utils
import threading
import time
from contextlib import contextmanager

# img2dataset's defaults, plus "noml"
DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex", "noml")


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
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_s(attempt: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Wait before retry number ``attempt`` (0-based): base, 2x base, 4x base, ... capped."""
    return min(cap_s, base_s * (2 ** attempt))


def robots_denied(robots_tags: list[str], user_agent_token: str,
                  disallowed: tuple[str, ...] = DISALLOWED_DIRECTIVES) -> bool:
    """True when an X-Robots-Tag line forbids this use: ``noai`` for everyone, or ``<our token>: noai``.

    A line naming another crawler (``otherbot: noai``) does not apply to us."""
    token = user_agent_token.lower()
    for line in robots_tags:
        head, sep, rest = line.partition(":")
        ua = head.strip().lower() if sep and "," not in head else None
        directives = rest if ua is not None else line
        if ua not in (None, token, "*"):
            continue
        if any(d.strip().lower() in disallowed for d in directives.split(",")):
            return True
    return False
