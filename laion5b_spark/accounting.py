"""The accounting vocabulary and the ledgers every stage keeps.

A ledger balances one kind of row: ``rows_in == rows_out + sum(dropped) + sum(failed)``.
``dropped`` is a decision (a filter said no); ``failed`` is bad input we could not use.
Reasons come from REASONS only, so summaries across stages and runs line up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# reason -> what it means (shown in summaries and docs)
REASONS: dict[str, str] = {
    # extract: img candidates
    "no_alt": "img tag without an alt attribute (or an empty one)",
    "alt_too_short": "alt text shorter than extract.min_alt_length after cleanup",
    "url_too_long": "image URL longer than extract.max_url_length",
    "bad_scheme": "image URL is not http(s) (data:, javascript:, mailto:, ...)",
    "invalid_url": "image URL could not be parsed or resolved",
    "excluded_extension": "image URL ends with an excluded extension (extract.exclude_extensions, e.g. .svg)",
    "duplicate_in_page": "same (url, text) already emitted for this page",
    # extract: records and files
    "not_html": "record is not an HTML response (request, warcinfo, non-HTML payload, ...)",
    "no_images": "HTML page without any img tag",
    "invalid_json": "WAT record whose JSON payload does not parse",
    "corrupt_record": "WARC/WAT record that cannot be framed or parsed",
    "corrupt_gzip": "gzip member that fails to decompress; skipped to the next member",
    "truncated_file": "input ends in the middle of a record",
    "unsupported_format": "input is not a WARC/WAT file (e.g. legacy ARC)",
    "input_unreachable": "input file could not be opened or read after retries",
    "decode_error": "a page body in no candidate charset, or image bytes that do not decode",
    "record_too_complex": "record over the per-record parse limits (1 s of CPU, 1 GiB; an HTML body over 32 MiB): "
                          "shapes no real page has; counted, not parsed",
    "parse_error": "unexpected error while parsing one record (a bug; the sample tells which record)",
    "unit_error": "unexpected error processing a whole unit (a bug; the sample has the traceback); retried next run",
    # download: fetching (laion5b_spark/download/safe_fetch.py)
    "blocked_private_ip": "URL host resolves only to non-public addresses (private, loopback, link-local, metadata)",
    "dns_error": "URL host does not resolve",
    "connect_error": "connection refused, reset or closed",
    "tls_error": "TLS handshake or certificate failure",
    "timeout": "connect/read timeout or the total deadline per image passed",
    "too_many_redirects": "more redirects than download.max_redirects",
    "too_large": "body larger than download.max_bytes",
    "truncated_body": "the server closed before the announced Content-Length",
    "http_404": "the server answered 404 Not Found",
    "http_error": "an HTTP status other than 200 and 404 (after retries for 5xx)",
    "rate_limited": "429/503 after every retry, or a Retry-After longer than download.max_retry_after_s",
    "protocol_error": "the answer is not valid HTTP/1.x: a head cut short or over download.max_header_bytes, too "
                      "many 1xx responses, broken chunked framing or content encoding",
    "row_error": "unexpected exception while handling one row (a bug; the message names the exception type)",
    "robots_denied": "robots.txt, or X-Robots-Tag (noai, noimageai, noindex, noimageindex, noml, none), forbids this use",
    "robots_unreachable": "robots.txt could not be had (timeout, 5xx, 429, network): RFC 9309 says fetch nothing "
                          "from that origin for now; a later try may pass (download.retry_reasons)",
    "tdm_reserved": "TDM rights reserved (TDMRep): a tdm-reservation: 1 header, or /.well-known/tdmrep.json",
    # download: images (laion5b_spark/download/image.py)
    "not_an_image": "the bytes are not an accepted image format (sniffed, whatever the Content-Type said)",
    "image_too_small": "fewer bytes than download.min_bytes or a side under download.min_image_size",
    "decompression_bomb": "decoding would cost far more than the bytes, refused from the header before decoding: "
                          "more pixels than download.max_pixels (canvas or first frame), more JPEG scans than "
                          "download.max_jpeg_scans, more header segments/chunks/blocks than any encoder writes",
    "bad_aspect_ratio": "aspect ratio above download.max_aspect_ratio",
    # clip: images -> scored / dataset
    "no_image": "the images row has no stored image (its download failed)",
    "below_threshold": "CLIP similarity of image and text under the row's threshold (clip.threshold*)",
    # index: rows of scored that get no vector, near-duplicate images among the indexed rows
    "other_model": "scored by the other CLIP model of the run (index.model picks one: two models' embeddings are "
                   "in different spaces)",
    "stale_scored_file": "a scored file of an images file that download --retry-failed replaced (rerun clip)",
    "near_duplicate": "image embedding within index.near_dup_threshold cosine of a better row (dedup_images)",
    "exact_duplicate": "the same image bytes (sha256) as a better row (dedup_images)",
    # dedup: pairs
    "duplicate": "same dedup key (dedup.key) as an earlier row, or as a row already in pairs_unique",
    "denylisted": "URL, URL hash or image hash on a --denylist list",
    "domain_opt_out": "image host on a domain opt-out list (exact host, or a .suffix rule)",
    "text_too_long": "text longer than dedup.max_text_chars",
    "missing_url": "row without a URL (null or empty)",
    "missing_text": "row without a text (null, empty or only whitespace)",
    "missing_uid": "row without a uid (not written by extract; compute it with laion5b_spark.keys.pair_uid)",
    # ingest: rows of an existing URL list
    "malformed_row": "a row of a URL list that does not parse (a JSONL line that is not a JSON object, a CSV/TSV "
                     "line with another number of fields than the header, or a bad quote)",
    "duplicate_in_list": "same uid (normalized URL + cleaned text) as an earlier row of the same list unit; "
                         "duplicates across units are dropped by dedup",
}


def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise ValueError(f"unknown accounting reason {reason!r}; add it to laion5b_spark.accounting.REASONS")
    return reason


@dataclass
class Ledger:
    """Counts for one kind of row in one unit (or summed over many)."""

    name: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[check_reason(reason)] += n

    def fail(self, reason: str, n: int = 1) -> None:
        self.failed[check_reason(reason)] += n

    @property
    def unaccounted(self) -> int:
        return self.rows_in - self.rows_out - sum(self.dropped.values()) - sum(self.failed.values())

    def balanced(self) -> bool:
        return self.unaccounted == 0

    def add(self, other: "Ledger") -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.dropped.update(other.dropped)
        self.failed.update(other.failed)

    def to_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            "failed": dict(sorted(self.failed.items())),
        }

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "Ledger":
        return cls(name, d["rows_in"], d["rows_out"], Counter(d.get("dropped", {})), Counter(d.get("failed", {})))

    def describe(self) -> str:
        lines = [f"{self.name}: {self.rows_in:,} in -> {self.rows_out:,} out"]
        for kind, counter in (("dropped", self.dropped), ("failed", self.failed)):
            for reason, n in counter.most_common():
                pct = 100.0 * n / self.rows_in if self.rows_in else 0.0
                lines.append(f"  {kind:7} {reason:20} {n:>12,}  {pct:5.1f}%")
        if not self.balanced():
            lines.append(f"  UNACCOUNTED {self.unaccounted:,} rows (a bug: please report it)")
        return "\n".join(lines)


def ledgers_to_dict(ledgers: dict[str, Ledger]) -> dict:
    return {name: ledger.to_dict() for name, ledger in ledgers.items()}


def ledgers_from_dict(d: dict) -> dict[str, Ledger]:
    return {name: Ledger.from_dict(name, v) for name, v in d.items()}


def sum_ledgers(many: list[dict[str, Ledger]]) -> dict[str, Ledger]:
    total: dict[str, Ledger] = {}
    for ledgers in many:
        for name, ledger in ledgers.items():
            total.setdefault(name, Ledger(name)).add(ledger)
    return total


class ErrorSamples:
    """Keeps the first few examples of each failure reason for LAKE/<table>/_errors/."""

    def __init__(self, per_reason: int = 5, excerpt_bytes: int = 300):
        self.per_reason = per_reason
        self.excerpt_bytes = excerpt_bytes
        self.samples: list[dict] = []
        self._seen: Counter = Counter()

    def add(self, reason: str, message: str, *, source: str = "", offset: int | None = None,
            excerpt: bytes | str | None = None, limit: int = 1000) -> None:
        check_reason(reason)
        self._seen[reason] += 1
        if self._seen[reason] > self.per_reason:
            return
        if isinstance(excerpt, bytes):
            excerpt = excerpt[: self.excerpt_bytes].decode("utf-8", "backslashreplace")
        elif isinstance(excerpt, str):
            excerpt = excerpt[: self.excerpt_bytes]
        self.samples.append(
            {"reason": reason, "message": message[:limit], "source": source, "offset": offset, "excerpt": excerpt}
        )
