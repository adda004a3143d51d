"""The export job: ``dataset`` minus the duplicates ``dedup_images`` marks -> ``release``, one unit per dataset unit.

A unit writes its release rows (``release/data/``, schemas.RELEASE) and, per bucket, a webdataset shard with its
``_stats.json`` and a LAION parquet file, named by the shard number the unit got at listing time: its place in
the dataset manifest (commit order, which never changes), so names are the same on every rerun and resume.
Before the units run, a join on uid (``duplicates.mark``) tells each unit which of its rows are duplicates.
After the run the driver writes the shard lists and the Hugging Face dataset card from the manifest, and with
``--push-to-hub`` uploads the folder.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..accounting import Ledger
from ..config import ConfigError
from ..exchange import OnSpark
from ..job import EXIT_OK, Unit, UnitContext, UnitJob, UnitResult, short
from ..lake import Lake, LakeError
from ..schemas import DATASET, IMAGES
from ..download.webdataset import write_tar
from . import duplicates, hub
from .release import (BUCKETS, CARD, LISTS, bucket_of, dataset_card, duplicate_flags, laion_file, laion_rows,
                      shard_lists, shard_name, stats_json)

_SCORES = ("similarity", "punsafe", "pwatermark")
_IMAGE_COLUMNS = ["uid", "url", "text", "language", "key", "status", "error_message", "width", "height",
                  "original_width", "original_height", "sha256", "exif", "jpg"]
_READ_ROWS = 2048  # images rows read at once (whole row groups): bounds a task's memory


@dataclass(frozen=True)
class ExportSettings:
    shard_digits: int
    join_rows_per_task: int
    english: tuple[str, ...]  # clip.english as the clip run that wrote dataset recorded it
    encode_format: str  # the images' format (download.encode_format): the samples' image extension
    dedup_version: str  # the dedup_images commit the release leaves duplicates out by
    push_to_hub: str | None
    private: bool


class ExportJob(UnitJob):
    name = "export"
    input_table = "dataset"
    output_table = "release"
    row_group_size = 64 * 1024
    description = ("dataset minus the duplicates dedup_images marks -> release: LAION-layout parquet, webdataset "
                   "shards ({00000..N}.tar per bucket, _stats.json, shard lists) and a Hugging Face dataset folder.\n\n"
                   "One Spark task per dataset unit; a rerun skips committed units and rewrites those whose "
                   "dataset file or dedup_images changed, under the same shard names.")
    epilog = """examples:
  spark-submit --properties-file conf/spark/local.conf jobs/export.py --lake ./lake
  python jobs/export.py --lake ./lake --push-to-hub my-org/my-release

the release is LAKE/release/: docs/EXPORT.md says how to load each format."""

    def add_arguments(self, parser) -> None:
        parser.add_argument("--push-to-hub", metavar="REPO", help="upload the release folder to this Hugging Face "
                            "dataset repository (user/name) after a complete export")
        parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")

    def settings(self, args, cfg, lake: Lake) -> ExportSettings:
        e = cfg["export"]
        try:
            digits, join_rows = int(e["shard_digits"]), int(e["join_rows_per_task"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"export.shard_digits / export.join_rows_per_task: {exc}") from None
        if not 1 <= digits <= 12 or join_rows < 1:
            raise ConfigError("export.shard_digits must be 1..12 and export.join_rows_per_task >= 1")
        if args.push_to_hub:
            hub.check_repo_id(args.push_to_hub)
            if not lake.is_local:
                raise ConfigError("--push-to-hub uploads a local folder: export to a local lake, or upload "
                                  f"{lake.url}/release with huggingface-cli from a machine that mounts it")
        dataset = lake.table(self.input_table)
        if not dataset.entries():
            raise LakeError(f"{dataset.root} has no committed rows: run jobs/clip.py first (then jobs/index.py, "
                            "whose dedup_images the export leaves duplicates out by)")
        dedup = lake.table("dedup_images")
        if not dedup.exists():
            raise LakeError(f"no dedup_images table in {lake.url}: run jobs/index.py first (the release leaves out "
                            "the near- and exact-duplicate images it marks)")
        runs = dedup.runs()
        scored_meta = lake.table("scored").meta()
        english = tuple(scored_meta.get("clip.english") or cfg["clip"]["english"])
        encode = lake.table("images").meta().get("download.encode_format") or cfg["download"]["encode_format"]
        return ExportSettings(digits, join_rows, english, str(encode), runs[-1] if runs else "",
                              args.push_to_hub, bool(args.private))

    def recorded_settings(self, s: ExportSettings) -> dict:
        return {"export.shard_digits": s.shard_digits, "clip.english": list(s.english)}

    def list_units(self, args, s: ExportSettings, lake: Lake) -> list[Unit]:
        entries = lake.table(self.input_table).all_entries()  # commit order: a unit's place never changes
        if len(entries) > 10 ** s.shard_digits:
            raise ConfigError(f"{len(entries):,} dataset units need more than export.shard_digits = "
                              f"{s.shard_digits} digits of shard numbers; set it before the first export")
        done = {e.unit: e for e in lake.table(self.output_table).all_entries()}
        images_files = lake.table("images").current_files()  # a compacted file holds the rows clip scored
        # a shard number, once given, is its unit's for good; a new unit takes its place in dataset's manifest
        # unless a unit exported earlier holds that number (dataset rebuilt in another order): then the next free one
        used = {int(e.covers["shard"]): e.unit for e in done.values() if "shard" in e.covers}
        next_free = max(used, default=-1) + 1
        units = []
        for n, e in enumerate(entries):
            old = done.get(e.unit)
            if old:
                shard = int(old.covers.get("shard", n))
            elif used.get(n, e.unit) == e.unit:
                shard = n
            else:
                shard, next_free = max(next_free, len(entries)), max(next_free, len(entries)) + 1
            if shard >= 10 ** s.shard_digits:
                raise ConfigError(f"shard {shard} needs more than export.shard_digits = {s.shard_digits} digits")
            used[shard] = e.unit
            path = e.path or ""
            stale = old is not None and (old.covers.get("dataset_path") != path
                                         or old.covers.get("dedup_images") != s.dedup_version)
            units.append(Unit(key=f"{shard_name(shard, s.shard_digits)} {path or e.key}", source=path, size=e.bytes,
                              rows=e.rows, ident=e.unit,
                              meta=(("shard", shard), ("images_path", images_files.get(e.covers.get("images_path", ""), ""))),
                              covers=(("dataset_unit", e.unit), ("dataset_path", path),
                                      ("dedup_images", s.dedup_version), ("shard", shard)),
                              replaces=(old.path or "") if stale else None))
        return units

    def _run_spark(self, spark, todo, ctx: UnitContext, cfg, table, run, state, log) -> None:
        """The duplicate join first (its files in the run's staging folder), then the units."""
        s: ExportSettings = ctx.settings
        lake = ctx.lake
        dedup = lake.table("dedup_images").entries()
        rows = sum(u.rows or 0 for u in todo) + sum(e.rows for e in dedup)
        parts = duplicates.partitions(rows, len(todo), s.join_rows_per_task)
        log(f"duplicates: joining {len(todo)} units' uids with dedup_images ({len(dedup)} files) in {parts} partitions")
        try:
            spark.sparkContext.setJobDescription("export: duplicate uids of each unit")
            n = duplicates.mark(OnSpark(spark.sparkContext), lake.ref, [(u.id, u.source) for u in todo],
                                [e.path for e in dedup], table.staged(ctx.run_id, "duplicates"), parts)
        except Exception as exc:  # noqa: BLE001 - the run stops, recorded; units wait for a rerun
            state.error = short(f"duplicate join: {type(exc).__name__}: {exc}")
            state.error_trace = traceback.format_exc()
            state.missing = list(todo)
            table.clean_staging(run.run_id)
            return
        log(f"duplicates: {n:,} rows of these units are marked duplicate")
        super()._run_spark(spark, todo, ctx, cfg, table, run, state, log)

    def process_unit(self, unit: Unit, ctx: UnitContext) -> UnitResult:
        s: ExportSettings = ctx.settings
        t0 = time.time()
        lake = ctx.lake
        shard = int(unit.get("shard"))
        dataset = lake.table(self.input_table).read_file(unit.source) if unit.source else DATASET.empty_table()
        uid = dataset.column("uid")
        if dataset.num_rows and not unit.get("images_path"):
            return UnitResult(None, {}, ctx.errors, failed_reason="input_unreachable", failed_message=(
                "the images file clip scored for this dataset file is no longer listed (download --retry-failed "
                "rewrote it): run jobs/clip.py, then export again"))
        dups = lake.read_parquet(lake.table(self.output_table).staged(ctx.run_id, f"duplicates/{unit.id}.parquet"))
        is_dup, is_exact = duplicate_flags(uid, dups)
        bucket = bucket_of(dataset.column("language"), s.english)
        images = _images_of(lake, unit.get("images_path"), uid.filter(pa.array(~is_dup)))
        at = pc.index_in(uid, value_set=images.column("uid").combine_chunks())
        has_image = pc.fill_null(pc.and_(pc.is_valid(pc.take(images.column("jpg"), at)),
                                         pc.equal(pc.take(images.column("status"), at), "success")), False)
        has_image = has_image.to_numpy(zero_copy_only=False)
        keep = ~is_dup & has_image
        ledgers = {}
        for k, b in enumerate(BUCKETS):
            mine = bucket == k
            ledgers[b] = lg = Ledger(b, rows_in=int(mine.sum()))
            _add(lg.drop, "exact_duplicate", int((mine & is_exact).sum()))
            _add(lg.drop, "near_duplicate", int((mine & is_dup & ~is_exact).sum()))
            _add(lg.fail, "no_image", int((mine & ~is_dup & ~has_image).sum()))  # bad input: counted, left out
        if (~is_dup & ~has_image).any():
            ctx.errors.add("no_image", f"{int((~is_dup & ~has_image).sum())} release rows without a stored image in "
                           f"{unit.get('images_path')}", source=unit.source)
        kept = dataset.filter(pa.array(keep))
        images = images.take(pc.filter(at, pa.array(keep)))
        rows = laion_rows(kept, images, bucket[keep], shard)
        for column in _SCORES:  # the sample's json carries its scores, as LAION's tars did
            images = images.append_column(column, kept.column(column))

        name, named = shard_name(shard, s.shard_digits), {}
        try:
            for k, b in enumerate(BUCKETS):
                mine = pa.array(bucket[keep] == k)
                tar = named[f"webdataset/{b}/{name}.tar"] = _temp(".tar")
                ledgers[b].rows_out = write_tar(images.filter(mine), tar, s.encode_format, _SCORES)
                stats = named[f"webdataset/{b}/{name}_stats.json"] = _temp(".json")
                with open(stats, "wb") as f:
                    f.write(stats_json(ledgers[b].rows_out, ledgers[b].failed.get("no_image", 0), t0, time.time()))
                parquet = named[f"laion/{b}/{name}.parquet"] = _temp(".parquet")
                pq.write_table(laion_file(rows.filter(mine)), parquet, compression="zstd")
        except BaseException:
            for path in named.values():
                if os.path.exists(path):
                    os.remove(path)
            raise
        info = {"samples": rows.num_rows, "exact_duplicate": int(is_exact.sum()),
                "near_duplicate": int((is_dup & ~is_exact).sum())}
        return UnitResult(rows, ledgers, ctx.errors, info, named=named)

    def run(self, args, cfg, lake, log, argv) -> int:
        code = super().run(args, cfg, lake, log, argv)
        if args.dry_run:
            return code
        release = lake.table(self.output_table)
        digits = int(release.meta().get("export.shard_digits", cfg["export"]["shard_digits"]))
        lists = shard_lists(release.all_entries(), digits, lake.url_of(release.root))
        encode = lake.table("images").meta().get("download.encode_format") or cfg["download"]["encode_format"]
        lake.write_json(release.path(LISTS), lists)
        lake.write_bytes(release.path(CARD), dataset_card(lists, encode, lake.url).encode())
        root = lake.url_of(release.root)
        for b, info in lists.items():
            where = info["url"] or (f"{info['shards']} shards, missing {info['missing'][:5]}: rerun to fill them"
                                    if info["missing"] else f"{info['shards']} empty shards")
            log(f"{b} ({info['laion_name']}): {info['samples']:,} samples; webdataset {where}")
        log(f"LAION parquet: {root}/laion/<bucket>/*.parquet; release table: {root}/data/; "
            f"Hugging Face dataset: {root} ({CARD}); shard lists: {root}/{LISTS}")
        if args.push_to_hub:
            if code != EXIT_OK:
                log(f"not pushed to {args.push_to_hub}: the export is not complete (exit {code}); rerun to finish it")
            else:
                log(f"pushed to the hub: {hub.upload(release.root, args.push_to_hub, args.private)}")
        return code

    def describe_info(self, info: dict) -> list[str]:
        if "samples" not in info:
            return []
        return [f"{info['samples']:,} release samples written; duplicates left out: "
                f"{info.get('exact_duplicate', 0):,} exact, {info.get('near_duplicate', 0):,} near"]


def _add(count, reason: str, n: int) -> None:
    if n:
        count(reason, n)


def _images_of(lake: Lake, path: str, uids) -> pa.Table:
    """The images rows of ``uids`` in one images file, read a few row groups at a time (image bytes of the other
    rows are dropped as soon as they are read)."""
    empty = pa.schema([IMAGES.field(n) for n in _IMAGE_COLUMNS]).empty_table()
    want = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    if not path or not len(want):
        return empty
    chunks = [c.filter(pc.is_in(c.column("uid"), value_set=want))
              for c in lake.table("images").iter_row_chunks(path, _READ_ROWS, _IMAGE_COLUMNS)]
    return pa.concat_tables([empty, *chunks]).combine_chunks()


def _temp(suffix: str) -> str:
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="l5s-export-")
    os.close(fd)
    return path
