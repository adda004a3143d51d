"""The download job: ``pairs_unique`` -> ``images``, one unit per shard of ``download.shard_rows`` rows.

Shards are cut from pairs_unique's committed files (file, first row, last row): deterministic, so a rerun skips
committed shards. Each task downloads its shard with threads (shard.py) and writes one parquet file; the driver
commits while the job runs (UnitJob), so there is no end-of-batch barrier and no straggler holds others back.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass

import pyarrow.compute as pc

from ..accounting import REASONS
from ..config import ConfigError
from ..dedup.lists import list_paths, load_denylists
from ..job import Unit, UnitContext, UnitJob, UnitResult
from ..lake import FileEntry, Lake, LakeError
from .image import ImageProcessor, ImageSettings
from .robots import RobotsCache
from .safe_fetch import Fetcher, FetchPolicy
from .shard import Downloader, ShardSettings
from .tdmrep import TdmRep
from .webdataset import write_tar

_COLUMNS = ["uid", "url", "text", "language"]
_local = threading.local()  # per Python worker: keep-alive pools, DNS cache, lists


class DownloadJob(UnitJob):
    name = "download"
    input_table = "pairs_unique"
    follows = "pairs_unique"  # download --follow beside a dedup run
    output_table = "images"
    row_group_size = 1000  # ~15 MB of images per row group
    description = (
        "pairs_unique -> images: polite, safe image download into parquet shards (one row per pair, failures too).\n\n"
        "One Spark task per shard of download.shard_rows rows; committed shards are skipped on rerun."
    )
    epilog = """examples:
  spark-submit --properties-file conf/spark/local.conf jobs/download.py --lake ./lake
  spark-submit jobs/download.py --lake s3://bucket/lake --denylist lists/image-sha256.txt \\
      --set download.image_size=384 --set download.resize_mode=center_crop --set download.webdataset=true
  spark-submit jobs/download.py --lake ./lake --retry-failed      # once more at the timeouts, 5xx and 429s

safety: only public addresses are fetched (private, loopback, link-local and metadata addresses are refused,
also after redirects); download.allow admits networks, e.g. --set 'download.allow=["10.0.0.0/8"]'.
"""

    def add_arguments(self, parser) -> None:
        parser.add_argument("--denylist", nargs="+", default=[], metavar="PATH",
                            help="image sha256/md5 lists, in the formats dedup reads (adds to download.denylist); their URL "
                                 "entries are applied by dedup")
        parser.add_argument("--retry-failed", action="store_true",
                            help="also fetch again the rows of committed shards that failed for a reason in "
                                 "download.retry_reasons (timeouts, resets, 5xx, 429, ...); each such shard's file is "
                                 "rewritten with the same rows and keys")

    def settings(self, args, cfg, lake: Lake) -> "DownloadSettings":
        return DownloadSettings.from_config(cfg, args.denylist)

    def recorded_settings(self, settings: "DownloadSettings") -> dict:
        return settings.table_settings()

    def list_units(self, args, settings: "DownloadSettings", lake: Lake) -> list[Unit]:
        source = lake.table(self.input_table)
        entries = source.entries()
        if not entries:
            raise LakeError(f"{source.root} has no committed rows: run jobs/dedup.py on this lake first")
        images = lake.table(self.output_table).all_entries()
        units = shards_to_fetch(entries, images, settings.shard_rows)
        if args.retry_failed:
            units += _retry_units(images, set(settings.retry_reasons))
        return units

    def process_unit(self, unit: Unit, ctx: UnitContext) -> UnitResult:
        s: DownloadSettings = ctx.settings
        downloader = _worker_downloader(s)
        if unit.replaces:
            old = ctx.lake.table(self.output_table).read_file(unit.replaces)
            out, ledger, info = downloader.retry(old, frozenset(s.retry_reasons), ctx.errors)
        else:
            rows = ctx.lake.table(self.input_table).read_rows(unit.source, unit.get("start"), unit.get("stop"),
                                                              _COLUMNS)
            out, ledger = downloader.shard(rows, ctx.errors, unit.id[:10], lambda n, b: ctx.progress(n, b))
            info = {}
        stored = pc.binary_length(out.column("jpg"))
        retryable = sum(ledger.failed.get(r, 0) for r in s.retry_reasons)
        info.update(images=out.num_rows - stored.null_count, image_bytes=pc.sum(stored).as_py() or 0,
                    retryable=retryable)
        extra = {}
        if s.webdataset:
            fd, extra["tar"] = tempfile.mkstemp(suffix=".tar", prefix="l5s-")
            os.close(fd)
            info["tar_samples"] = write_tar(out, extra["tar"], s.image.encode_format)
        return UnitResult(out, {"images": ledger}, ctx.errors, info, extra=extra)

    def describe_info(self, info: dict) -> list[str]:
        lines = []
        if info.get("images"):
            lines.append(f"{info['images']:,} images stored, {info['image_bytes'] / 1e6:,.1f} MB")
        if info.get("retried"):
            lines.append(f"--retry-failed: fetched {info['retried']:,} failed rows again, {info['recovered']:,} "
                         "now stored (counts above are of the rewritten shards, whole)")
        if info.get("retryable"):
            lines.append(f"{info['retryable']:,} rows failed for reasons that may pass later (download.retry_reasons):"
                         " rerun with --retry-failed to fetch just those")
        return lines


def shards_to_fetch(sources: list[FileEntry], images: list[FileEntry], shard_rows: int) -> list[Unit]:
    """Shards of the pairs_unique rows no committed images unit covers, ``shard_rows`` rows each.

    Resume is keyed by content: each images entry records the file and row range it covers, so a rerun with
    another ``download.shard_rows`` cuts only the rows not yet covered and no row is fetched twice."""
    covered: dict[str, list[tuple[int, int]]] = {}
    for e in images:
        c = e.covers or _covers_of_key(e.key)
        if c:
            covered.setdefault(c["file"], []).append((int(c["start"]), int(c["stop"])))
    units = []
    for e in sources:
        at = 0
        for lo, hi in sorted(covered.get(e.path, [])) + [(e.rows, e.rows)]:
            for start in range(at, min(lo, e.rows), shard_rows):
                stop = min(start + shard_rows, lo, e.rows)
                units.append(Unit(key=f"{e.path}:{start}-{stop}", source=e.path, rows=stop - start,
                                  meta=(("start", start), ("stop", stop)),
                                  covers=(("file", e.path), ("start", start), ("stop", stop))))
            at = max(at, hi)
    return units


def _covers_of_key(key: str) -> dict | None:
    """What a shard entry written before entries recorded ``covers`` covers: its key is ``path:start-stop``."""
    path, sep, span = key.rpartition(":")
    start, dash, stop = span.partition("-")
    if not sep or not dash or not start.isdigit() or not stop.isdigit():
        return None
    return {"file": path, "start": int(start), "stop": int(stop)}


def _retry_units(images: list[FileEntry], reasons: set[str]) -> list[Unit]:
    """One unit per committed images shard with failures worth another try; it rewrites that shard's file."""
    units = []
    for e in images:
        failed = e.counts.get("images", {}).get("failed", {})
        if e.path and any(failed.get(r) for r in reasons):
            units.append(Unit(key=e.key, source=e.path, rows=e.rows, ident=e.unit, replaces=e.path,
                              covers=tuple(e.covers.items())))
    return units


@dataclass(frozen=True)
class DownloadSettings:
    """The download stage's settings, typed and checked once on the driver."""

    policy: FetchPolicy
    image: ImageSettings
    shard: ShardSettings
    shard_rows: int
    denylist: tuple  # list files, loaded again once per worker
    retry_reasons: tuple
    webdataset: bool
    robots_txt: bool
    respect_tdmrep: bool

    @classmethod
    def from_config(cls, cfg: dict, more_denylists: list[str] = ()) -> "DownloadSettings":
        d = cfg["download"]
        deny = load_denylists(list_paths(d["denylist"], list(more_denylists)))  # checked before any work
        policy, image, shard = _settings(cfg)
        if int(d["shard_rows"]) < 1:
            raise ConfigError("download.shard_rows must be at least 1")
        return cls(policy, image, shard, int(d["shard_rows"]), tuple(deny.files), tuple(d["retry_reasons"]),
                   bool(d["webdataset"]), bool(d["robots_txt"]), bool(d["respect_tdmrep"]))

    def table_settings(self) -> dict:
        """What makes the images table one table: rows of another size or encoding are not mixed into it."""
        return {"download.image_size": self.image.image_size, "download.resize_mode": self.image.resize_mode,
                "download.encode_format": self.image.encode_format}


def _settings(cfg: dict) -> tuple[FetchPolicy, ImageSettings, ShardSettings]:
    d = cfg["download"]
    try:
        policy = FetchPolicy(user_agent=d["user_agent"], allow=tuple(d["allow"]), max_bytes=int(d["max_bytes"]),
                             max_header_bytes=int(d["max_header_bytes"]), connect_timeout_s=d["connect_timeout_s"],
                             read_timeout_s=d["read_timeout_s"],
                             deadline_s=d["deadline_s"], max_redirects=int(d["max_redirects"]),
                             connect_to=tuple(d["connect_to"]))
        Fetcher(policy)  # a bad network or connect_to string fails here, with its message
        image = ImageSettings(image_size=int(d["image_size"]), resize_mode=d["resize_mode"],
                              resize_only_if_bigger=d["resize_only_if_bigger"], encode_format=d["encode_format"],
                              encode_quality=int(d["encode_quality"]), skip_reencode=d["skip_reencode"],
                              min_bytes=int(d["min_bytes"]), min_image_size=int(d["min_image_size"]),
                              max_pixels=int(d["max_pixels"]), max_jpeg_scans=int(d["max_jpeg_scans"]),
                              max_exif_bytes=int(d["max_exif_bytes"]),
                              max_aspect_ratio=float(d["max_aspect_ratio"]) or float("inf"),
                              formats=tuple(d["formats"]), reduced_decode=d["reduced_decode"],
                              extract_exif=d["exif"])
        ImageProcessor(image)
    except ValueError as exc:
        raise ConfigError(f"download settings: {exc}") from exc
    unknown = sorted(set(d["retry_reasons"]) - set(REASONS))
    if unknown:
        raise ConfigError(f"download.retry_reasons: unknown reasons {unknown} (see laion5b_spark/accounting.py)")
    shard = ShardSettings(threads=int(d["threads"]), decode_slots=int(d["decode_slots"]),
                          max_per_host=int(d["max_per_host"]),
                          min_interval_s=d["min_interval_s"], retries=int(d["retries"]),
                          backoff_base_s=d["backoff_base_s"], max_retry_after_s=d["max_retry_after_s"],
                          user_agent_token=d["user_agent_token"], respect_robots_tags=d["respect_robots_tags"])
    return policy, image, shard


def _worker_downloader(s: DownloadSettings) -> Downloader:
    """One Downloader per Python worker (Spark reuses workers): pools, DNS and robots.txt caches outlive a shard."""
    state = getattr(_local, "state", None)
    if state is None or state[0] != s:
        deny = load_denylists(list(s.denylist)) if s.denylist else None
        fetcher = Fetcher(s.policy, per_host_connections=s.shard.max_per_host)
        robots = RobotsCache(fetcher.fetch, s.shard.user_agent_token) if s.robots_txt else None
        # the header is read on every image; tdmrep.json is fetched per origin only when robots checks are on
        tdm = TdmRep(fetcher.fetch if s.robots_txt else None) if s.respect_tdmrep else None
        state = (s, Downloader(fetcher, ImageProcessor(s.image), s.shard, deny, robots, tdm))
        _local.state = state
    return state[1]
