"""One shard of pairs -> one shard of images: every input row gives one output row (failures with null bytes).

Concurrency lives here, inside the task: a thread pool fetches, a ``HostGate`` caps connections and request rate
per host and holds a host back when it answers 429/503 with Retry-After. Retries are bounded per URL; what cannot
be fetched is a row with its reason, never an exception - an unexpected one included (``row_error``, naming its
type). Plain Python: no Spark here.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from ..accounting import ErrorSamples, Ledger
from ..config import DEFAULTS
from ..dedup.lists import DenyList
from ..schemas import IMAGES
from ..urls import host_of
from .image import ImageProcessor
from .politeness import HostGate, backoff_s, retry_after_s, robots_denied
from .robots import RobotsCache
from .safe_fetch import Fetcher, FetchError
from .tdmrep import TdmRep

RETRYABLE = frozenset({"timeout", "connect_error", "truncated_body"})
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# decisions; every other failure reason is bad input
DROPPED = frozenset({"denylisted", "robots_denied", "tdm_reserved"})


_DOWNLOAD = DEFAULTS["download"]  # the defaults live in config.DEFAULTS alone


@dataclass(frozen=True)
class ShardSettings:
    threads: int = _DOWNLOAD["threads"]
    max_per_host: int = _DOWNLOAD["max_per_host"]
    min_interval_s: float = _DOWNLOAD["min_interval_s"]
    retries: int = _DOWNLOAD["retries"]  # per URL, after the first try
    backoff_base_s: float = _DOWNLOAD["backoff_base_s"]
    max_retry_after_s: float = _DOWNLOAD["max_retry_after_s"]  # a host asking for a longer break is given up on (rate_limited)
    user_agent_token: str = _DOWNLOAD["user_agent_token"]
    respect_robots_tags: bool = _DOWNLOAD["respect_robots_tags"]
    decode_slots: int = _DOWNLOAD["decode_slots"]  # threads decoding at once: the rest keep fetching instead of fighting for the GIL


class Downloader:
    """What one Python worker keeps across its shards: keep-alive pools and DNS (in the fetcher), robots.txt
    rules, hash lists. ``shard`` downloads one shard; ``retry`` fetches a committed shard's failures again."""

    def __init__(self, fetcher: Fetcher, processor: ImageProcessor, settings: ShardSettings = ShardSettings(),
                 deny: DenyList | None = None, robots: RobotsCache | None = None, tdm: TdmRep | None = None):
        self.fetcher, self.processor, self.settings = fetcher, processor, settings
        self.deny, self.robots, self.tdm = deny, robots, tdm

    def shard(self, rows: pa.Table, errors: ErrorSamples, key_prefix: str, progress=None
              ) -> tuple[pa.Table, Ledger]:
        """``rows`` needs uid, url, text, language. Returns the images rows (same order) and the ledger.
        ``progress(rows_done, bytes_fetched)`` is called as URLs finish (the caller throttles it)."""
        s = self.settings
        gate = HostGate(s.max_per_host, s.min_interval_s)
        urls = rows.column("url").to_pylist()
        slots = threading.BoundedSemaphore(max(1, s.decode_slots))
        done = [0, 0]
        lock = threading.Lock()

        def one(url: str) -> dict:
            try:
                r = _fetch_one(url, self, gate, slots)
            except Exception as exc:  # noqa: BLE001 - one row never costs its shard: the row fails, with the type
                r = _failed("row_error", f"{type(exc).__name__}: {exc}")
            if progress is not None:
                with lock:
                    done[0] += 1
                    done[1] += len(r.get("jpg") or b"")
                    progress(done[0], done[1])
            return r

        with ThreadPoolExecutor(max(1, s.threads), thread_name_prefix="fetch") as pool:
            results = list(pool.map(one, urls))
        for url, r in zip(urls, results):
            if r["reason"] is not None:
                errors.add(r["reason"], r["error_message"] or r["reason"], source=url)
        n = len(urls)
        out = {
            "uid": rows.column("uid"), "url": rows.column("url"), "text": rows.column("text"),
            "language": rows.column("language"),
            "key": pa.array([f"{key_prefix}{i:06d}" for i in range(n)], pa.string()),
            "status": pa.array(["success" if r["reason"] is None else "failed" for r in results], pa.string()),
        }
        for name in ("reason", "error_message", "http_status", "width", "height", "original_width",
                     "original_height", "sha256", "mime", "jpg", "exif"):
            out[name] = pa.array([r.get(name) for r in results], IMAGES.field(name).type)
        table = pa.table(out, schema=IMAGES)
        return table, images_ledger(table)

    def retry(self, images: pa.Table, reasons: frozenset[str], errors: ErrorSamples
              ) -> tuple[pa.Table, Ledger, dict]:
        """Fetch again the rows of a committed shard that failed for one of ``reasons``; the rest stay as they are.

        Rows keep their place and ``key``. Returns the rewritten shard, its ledger and how many rows were
        retried and now succeed.
        """
        again = [i for i, r in enumerate(images.column("reason").to_pylist()) if r in reasons]
        if not again:
            return images, images_ledger(images), {"retried": 0, "recovered": 0}
        picked = images.take(again)
        fresh, _ = self.shard(picked.select(["uid", "url", "text", "language"]), errors, "")
        fresh = fresh.set_column(fresh.schema.get_field_index("key"), IMAGES.field("key"), picked.column("key"))
        # old rows, then the fresh ones; take() puts each fresh row where its old one was
        order = list(range(images.num_rows))
        for j, i in enumerate(again):
            order[i] = images.num_rows + j
        merged = pa.concat_tables([images.cast(IMAGES), fresh]).take(order)
        recovered = fresh.column("reason").null_count  # a null reason is a stored image
        return merged, images_ledger(merged), {"retried": len(again), "recovered": recovered}


def images_ledger(images: pa.Table) -> Ledger:
    """The ledger of an images table: rows in, stored, and each failure by reason."""
    ledger = Ledger("images", rows_in=images.num_rows)
    for reason in images.column("reason").to_pylist():
        if reason is None:
            ledger.rows_out += 1
        else:
            (ledger.drop if reason in DROPPED else ledger.fail)(reason)
    return ledger


def _fetch_one(url: str, d: Downloader, gate: HostGate, slots: threading.BoundedSemaphore) -> dict:
    s, fetcher, processor, deny = d.settings, d.fetcher, d.processor, d.deny
    host = host_of(url) or "?"
    if d.robots is not None:
        refusal = d.robots.verdict(url)
        if refusal:
            return _failed(*refusal)
    if d.tdm is not None:
        reserved = d.tdm.check(url)
        if reserved:
            return _failed("tdm_reserved", reserved)
    last: dict = {}
    for attempt in range(s.retries + 1):
        if attempt:
            time.sleep(max(backoff_s(attempt - 1, s.backoff_base_s), gate.waiting_s(host)))
        try:
            with gate.slot(host):
                got = fetcher.fetch(url)
        except FetchError as exc:
            last = _failed(exc.reason, str(exc), exc.http_status)
            if exc.reason in RETRYABLE:
                continue
            return last
        if got.status in RETRY_STATUS:
            wait = retry_after_s(got.headers.get("retry-after"))
            reason = "rate_limited" if got.status in (429, 503) else "http_error"
            last = _failed(reason, f"HTTP {got.status}", got.status)
            if wait is not None:
                if wait > s.max_retry_after_s:
                    return _failed("rate_limited", f"HTTP {got.status}, Retry-After {wait:.0f}s", got.status)
                gate.pause(host, wait)
            continue
        if got.status == 404:
            return _failed("http_404", "HTTP 404", 404)
        if got.status != 200:
            return _failed("http_error", f"HTTP {got.status}", got.status)
        if s.respect_robots_tags and robots_denied(got.robots_tags, s.user_agent_token):
            return _failed("robots_denied", f"X-Robots-Tag: {'; '.join(got.robots_tags)}", 200)
        if d.tdm is not None and (reserved := d.tdm.reserved_by(got.headers)):
            return _failed("tdm_reserved", reserved, 200)
        with slots:
            img = processor(got.body)
        if deny is not None and (img.sha256 in deny.image_sha256
                                 or (deny.image_md5 and hashlib.md5(got.body).hexdigest() in deny.image_md5)):
            return _failed("denylisted", "image hash on a denylist", 200)
        out = {"reason": img.reason, "error_message": img.message or None, "http_status": 200,
               "width": img.width, "height": img.height, "original_width": img.original_width,
               "original_height": img.original_height, "sha256": img.sha256, "mime": img.mime, "jpg": img.image,
               "exif": img.exif}
        return out
    return last


def _failed(reason: str, message: str, http_status: int | None = None) -> dict:
    return {"reason": reason, "error_message": message[:500], "http_status": http_status}
