"""The compact job: ``images`` files rewritten without the image bytes of rows CLIP left below every threshold.

At LAION-5B's scale ~90% of the downloaded candidates fall below the CLIP thresholds, so once a shard is scored
most of its bytes are dead weight. A unit is one images file whose scores are committed: it is rewritten with
every row, in the same order, every column as it was (status, reason, sizes, sha256, exif) except ``jpg``, which
becomes null where the row's similarity is below ``min(thresholds) - compact.margin``. The images ledger in the
manifest entry stays the download's (a compacted row is still a stored image: accounting and
``--retry-failed`` work as before); ``compacted`` in the entry names the file it replaced, so clip, index and
export keep using the scores and rows recorded against that file. A webdataset tar beside the file is rewritten
with the samples that keep their bytes.

A separate job, not a step of clip's commit: ``images`` has one writer at a time (download), and clip runs beside
download with ``--follow``; compact runs once download has ended (``--follow`` takes scored files as clip commits
them). It need not read the files again: with ``compact.in_clip`` (the default) each clip task, which holds every
row's bytes while scoring, writes its file's compaction into images' staging (rule.py, "offers"), and compact
takes that (~the kept bytes) instead; a file without a fitting offer is read whole and rewritten here.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..accounting import Ledger
from ..download.webdataset import write_tar
from ..job import Unit, UnitContext, UnitJob, UnitResult
from ..lake import Lake, LakeError
from .rule import bytes_to_drop, floor_of, margin_of, offer_name, offers, take_offer, without_bytes

_THRESHOLDS = ("clip.threshold", "clip.multilingual_threshold", "clip.nolang_threshold")


@dataclass(frozen=True)
class CompactSettings:
    floor: float  # image bytes of scored rows below this similarity are dropped
    thresholds: dict  # the clip thresholds scored was built with (scored's manifest)
    margin: float
    encode_format: str  # the images' format: a rewritten tar's member extension


class CompactJob(UnitJob):
    name = "compact"
    input_table = "scored"
    output_table = "images"
    follows = "scored"  # compact --follow beside a clip run (once download has ended)
    grows_tables = False  # it rewrites listed images files: clip --follow does not wait for it
    row_group_size = 1_000  # as download writes images: a reader holds a few row groups of image bytes at once
    config_sections = ("compact", "clip")
    description = ("images -> images without the image bytes of rows below every CLIP threshold: a release-sized "
                   "lake.\n\nOne Spark task per scored images file. Every row, its metadata and sha256 stay; only "
                   "jpg becomes null (and the row leaves the shard's webdataset tar). Runs when no download run "
                   "is writing images.")
    epilog = """examples:
  spark-submit --properties-file conf/spark/local.conf jobs/compact.py --lake ./lake
  spark-submit jobs/compact.py --lake ./lake --set compact.margin=0.02   # keep bytes down to threshold - 0.02
  spark-submit jobs/compact.py --lake ./lake --follow                   # while clip --follow still scores

what it keeps: bytes of every row whose similarity reaches min(clip thresholds) - compact.margin, of rows that
passed, of rows clip did not score (decode errors keep what was stored), and of every file clip has not scored
yet (or scored before download --retry-failed rewrote it).
"""

    def settings(self, args, cfg, lake: Lake) -> CompactSettings:
        margin = margin_of(cfg)
        scored = lake.table(self.input_table)
        if not scored.exists():
            raise LakeError(f"no scored table in {lake.url}: run jobs/clip.py first (compact drops the bytes of "
                            "rows clip scored below every threshold)")
        meta = scored.meta()
        missing = [k for k in _THRESHOLDS if not isinstance(meta.get(k), (int, float))]
        if missing:
            raise LakeError(f"{scored.root} does not record {', '.join(missing)}: rerun jobs/clip.py with this "
                            "version so compaction knows the thresholds the scores were judged by")
        thresholds = {k: float(meta[k]) for k in _THRESHOLDS}
        encode = lake.table(self.output_table).meta().get("download.encode_format") or cfg["download"]["encode_format"]
        return CompactSettings(floor_of(list(thresholds.values()), float(margin)), thresholds, float(margin),
                               str(encode))

    def list_units(self, args, s: CompactSettings, lake: Lake) -> list[Unit]:
        scored = {e.unit: e for e in lake.table(self.input_table).entries()}
        if not scored:
            raise LakeError(f"{lake.table(self.input_table).root} has no committed rows: run jobs/clip.py first")
        images = lake.table(self.output_table)
        offered = offers(images)
        units = []
        for e in images.entries():
            sc = scored.get(e.unit)
            covered = sc.covers.get("images_path", sc.key) if sc is not None else None
            if e.compacted or covered != e.path:  # done; or not scored yet / scored before --retry-failed rewrote it
                continue
            units.append(Unit(key=e.path, source=e.path, size=e.bytes, rows=e.rows, ident=e.unit,
                              replaces=e.path, covers=tuple(sorted(e.covers.items())),
                              meta=(("scored_path", sc.path), ("offer", offered.get(offer_name(e.unit, e.path), "")),
                                    ("entry", json.dumps({"counts": e.counts, "bytes": e.bytes,
                                                          "tar": "tar" in e.extra})))))
        return units

    def process_unit(self, unit: Unit, ctx: UnitContext) -> UnitResult:
        s: CompactSettings = ctx.settings
        old = json.loads(unit.get("entry"))
        images = ctx.lake.table(self.output_table)
        offer = take_offer(images, unit.get("offer"), unit.source, unit.rows, s.floor) if unit.get("offer") else None
        if offer is not None:  # clip's task compacted it while scoring: ~the kept bytes read, not the whole file
            out, o = offer
            n_drop, before, after = o["rows_without_bytes"], o["image_bytes_before"], o["image_bytes_after"]
        else:
            rows = images.read_file(unit.source)
            scores = ctx.lake.table(self.input_table).read_file(unit.get("scored_path"),
                                                                 ["uid", "status", "similarity", "passed"])
            at = pc.index_in(rows.column("uid"), value_set=scores.column("uid").combine_chunks())
            col = {n: pc.take(scores.column(n).combine_chunks(), at) for n in ("status", "similarity", "passed")}
            drop = bytes_to_drop(rows, col["status"], col["similarity"], col["passed"], s.floor)
            out = without_bytes(rows, drop)
            n_drop = pc.sum(drop.cast(pa.int64())).as_py() or 0
            before = pc.sum(pc.binary_length(rows.column("jpg"))).as_py() or 0
            after = pc.sum(pc.binary_length(out.column("jpg"))).as_py() or 0
        ledger = Ledger("compact", rows_in=out.num_rows, rows_out=out.num_rows)  # every row stays
        extra = {}
        if old["tar"]:
            fd, extra["tar"] = tempfile.mkstemp(suffix=".tar", prefix="l5s-compact-")
            os.close(fd)
            write_tar(out, extra["tar"], s.encode_format)
        compacted = {"from": unit.source, "rows": n_drop, "image_bytes_before": before, "image_bytes_after": after,
                     "file_bytes_before": old["bytes"], "floor": round(s.floor, 6), "run_id": ctx.run_id,
                     "by": "clip" if offer is not None else "compact"}
        info = {"files": 1, "from_clip": int(offer is not None), "rows_without_bytes": n_drop,
                "image_bytes_before": before, "image_bytes_after": after, "file_bytes_before": old["bytes"]}
        return UnitResult(out, {"compact": ledger}, ctx.errors, info, extra=extra,
                          entry_fields={"counts": old["counts"], "compacted": compacted})

    def describe_info(self, info: dict) -> list[str]:
        lines = []
        if info.get("files"):
            before, after = info.get("image_bytes_before", 0), info.get("image_bytes_after", 0)
            lines.append(f"{info['files']:,} images files compacted ({info.get('from_clip', 0):,} as clip's tasks "
                         f"wrote them, the rest read again): {info.get('rows_without_bytes', 0):,} rows lost their "
                         f"bytes; image bytes {before / 1e6:,.1f} MB -> {after / 1e6:,.1f} MB"
                         + (f" ({100 * after / before:.1f}% kept)" if before else ""))
        return lines
