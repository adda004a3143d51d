"""The download job: ``pairs_unique`` -> ``images``, one unit per shard of ``download.shard_rows`` rows.

Shards are cut from pairs_unique's committed files (file, first row, last row): deterministic, so a rerun skips
committed shards. Each task downloads its shard with threads (shard.py) and writes one parquet file; the driver
commits while the job runs (UnitJob), so there is no end-of-batch barrier and no straggler holds others back.
"""

from __future__ import annotations

import os
import tempfile
import threading

import pyarrow.compute as pc

from ..accounting import REASONS, ErrorSamples
from ..config import ConfigError
from ..dedup.lists import list_paths, load_denylists
from ..job import Unit, UnitJob, UnitResult
from ..lake import Lake, LakeError, Table
from .image import ImageProcessor, ImageSettings
from .robots import RobotsCache
from .safe_fetch import Fetcher, FetchPolicy
from .shard import Downloader, ShardSettings
from .webdataset import write_tar

_COLUMNS = ["uid", "url", "text", "language"]
_local = threading.local()  # per Python worker: keep-alive pools, DNS cache, lists


class DownloadJob(UnitJob):
    name = "download"
    input_table = "pairs_unique"
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

    def list_units(self, args, cfg, lake: Lake) -> list[Unit]:
        dcfg = cfg["download"]
        deny = load_denylists(list_paths(dcfg["denylist"], args.denylist))  # checked before any work
        dcfg["denylist"] = deny.files  # the tasks load them again, once per worker
        _settings(cfg)  # settings errors stop the job here, not in a task
        source = lake.table(self.input_table)
        entries = source.entries()
        if not entries:
            raise LakeError(f"{source.root} has no committed rows: run jobs/dedup.py on this lake first")
        n = int(dcfg["shard_rows"])
        if n < 1:
            raise ConfigError("download.shard_rows must be at least 1")
        units = []
        for e in entries:
            for start in range(0, e["rows"], n):
                stop = min(start + n, e["rows"])
                units.append(Unit(key=f"{e['path']}:{start}-{stop}", source=e["path"],
                                  meta=(("lake", lake.url), ("start", start), ("stop", stop))))
        if args.retry_failed:
            units += _retry_units(lake.table(self.output_table), lake, set(dcfg["retry_reasons"]))
        return units

    def process_unit(self, unit: Unit, cfg: dict, errors: ErrorSamples) -> UnitResult:
        downloader = _worker_downloader(cfg)
        lake = Lake(unit.get("lake"), cfg["lake"]["storage_options"])
        if unit.get("replaces"):
            old = lake.table(self.output_table).read_file(unit.source)
            out, ledger, info = downloader.retry(old, frozenset(cfg["download"]["retry_reasons"]), errors)
        else:
            rows = lake.table(self.input_table).read_rows(unit.source, unit.get("start"), unit.get("stop"), _COLUMNS)
            out, ledger = downloader.shard(rows, errors, unit.id[:10])
            info = {}
        stored = pc.binary_length(out.column("jpg"))
        retryable = sum(ledger.failed.get(r, 0) for r in cfg["download"]["retry_reasons"])
        info.update(images=out.num_rows - stored.null_count, image_bytes=pc.sum(stored).as_py() or 0,
                    retryable=retryable)
        extra = {}
        if cfg["download"]["webdataset"]:
            fd, extra["tar"] = tempfile.mkstemp(suffix=".tar", prefix="l5s-")
            os.close(fd)
            info["tar_samples"] = write_tar(out, extra["tar"], cfg["download"]["encode_format"])
        return UnitResult(out, {"images": ledger}, errors, info, extra=extra)

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


def _retry_units(images: Table, lake: Lake, reasons: set[str]) -> list[Unit]:
    """One unit per committed images shard with failures worth another try; it rewrites that shard's file."""
    units = []
    for e in images.entries():
        failed = (e.get("counts") or {}).get("images", {}).get("failed", {})
        if any(failed.get(r) for r in reasons):
            units.append(Unit(key=f"retry:{e['key']}", source=e["path"],
                              meta=(("lake", lake.url), ("replaces", (e["unit"], e["key"], e["path"])))))
    return units


def _settings(cfg: dict) -> tuple[FetchPolicy, ImageSettings, ShardSettings]:
    d = cfg["download"]
    try:
        policy = FetchPolicy(user_agent=d["user_agent"], allow=tuple(d["allow"]), max_bytes=int(d["max_bytes"]),
                             connect_timeout_s=d["connect_timeout_s"], read_timeout_s=d["read_timeout_s"],
                             deadline_s=d["deadline_s"], max_redirects=int(d["max_redirects"]),
                             connect_to=tuple(d["connect_to"]))
        Fetcher(policy)  # a bad network or connect_to string fails here, with its message
        image = ImageSettings(image_size=int(d["image_size"]), resize_mode=d["resize_mode"],
                              resize_only_if_bigger=d["resize_only_if_bigger"], encode_format=d["encode_format"],
                              encode_quality=int(d["encode_quality"]), skip_reencode=d["skip_reencode"],
                              min_bytes=int(d["min_bytes"]), min_image_size=int(d["min_image_size"]),
                              max_pixels=int(d["max_pixels"]),
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


def _worker_downloader(cfg: dict) -> Downloader:
    """One Downloader per Python worker (Spark reuses workers): pools, DNS and robots.txt caches outlive a shard."""
    key = repr(cfg["download"])
    state = getattr(_local, "state", None)
    if state is None or state[0] != key:
        d = cfg["download"]
        policy, image, shard = _settings(cfg)
        deny = load_denylists(d["denylist"]) if d["denylist"] else None
        fetcher = Fetcher(policy, per_host_connections=shard.max_per_host)
        robots = RobotsCache(fetcher.fetch, shard.user_agent_token) if d["robots_txt"] else None
        state = (key, Downloader(fetcher, ImageProcessor(image), shard, deny, robots))
        _local.state = state
    return state[1]
