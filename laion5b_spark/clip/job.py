"""The clip job: ``images`` -> ``scored`` (every row) and ``dataset`` (the rows that pass), one unit per images file.

Units run in an iterator Arrow UDF (UnitJob.arrow_udf): the models load once per Python worker on the GPU Spark
gave the task (device.py), a task reads its images file ``clip.read_rows`` rows at a time, and writes one scored
file and one dataset file, committed together by the driver (dataset first).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..accounting import Ledger
from ..config import ConfigError, typed
from ..job import Unit, UnitContext, UnitJob, UnitResult
from ..lake import Lake, LakeError
from ..resources import TaskResources
from ..compact.rule import OfferWriter, floor_of, margin_of
from ..schemas import DATASET, IMAGES, SCORED
from . import models
from .device import task_device
from .models import check_loadable
from .score import ClipSettings, Scorer

_COLUMNS = ["uid", "url", "text", "language", "width", "height", "status", "jpg"]
_local = threading.local()


class ClipJob(UnitJob):
    name = "clip"
    input_table = "images"
    output_table = "scored"
    side_tables = ("dataset",)
    arrow_udf = True
    follows = "images"  # clip --follow beside a download run
    config_sections = ("clip", "compact")
    row_group_size = 10_000
    description = ("images -> scored (CLIP similarity, embeddings, punsafe, pwatermark for every row) and dataset "
                   "(the rows whose similarity reaches their threshold: the release).\n\n"
                   "One Spark task per images file, in an Arrow UDF; on GPU executors each task uses the GPU Spark "
                   "assigned to it.")
    epilog = """examples:
  spark-submit --properties-file conf/spark/local.conf jobs/clip.py --lake ./lake \\
      --set clip.model=ViT-B-32 --set clip.pretrained=/models/vit-b-32.safetensors
  spark-submit --properties-file conf/spark/cluster-10n-gpu.conf jobs/clip.py --lake s3://bucket/lake \\
      --config conf/pipeline/laion5b.toml

weights: clip.pretrained takes an open_clip tag (fetched on a connected cluster), a local checkpoint, or "" for
random weights. Without clip.nsfw_head / clip.watermark_model, punsafe / pwatermark stay null (the run says so).
"""

    def settings(self, args, cfg, lake: Lake) -> "ClipJobSettings":
        settings = ClipJobSettings.from_config(cfg)
        check_loadable(settings.score)  # a model or checkpoint that cannot load stops the run here, in one line
        return settings

    def recorded_settings(self, settings: "ClipJobSettings") -> dict:
        return settings.table_settings()

    def list_units(self, args, settings: "ClipJobSettings", lake: Lake) -> list[Unit]:
        images = lake.table(self.input_table)
        entries = images.entries()
        if not entries:
            raise LakeError(f"{images.root} has no committed rows: run jobs/download.py first")
        scored = {e.unit: e for e in lake.table(self.output_table).all_entries()}
        units = []
        for e in entries:  # one unit per images unit; a rewritten images file (--retry-failed) is scored again
            old = scored.get(e.unit)
            covered = old.covers.get("images_path", old.key) if old is not None else None
            stale = old is not None and covered not in (e.path, e.compacted.get("from"))  # compaction keeps scores
            units.append(Unit(key=e.path, source=e.path, size=e.bytes, rows=e.rows, ident=e.unit,
                              covers=(("images_unit", e.unit), ("images_path", e.path)),
                              replaces=(old.path or "") if stale else None))
        return units

    def task_resources(self, settings: "ClipJobSettings") -> TaskResources | None:
        return settings.resources

    def process_unit(self, unit: Unit, ctx: UnitContext) -> UnitResult:
        settings: ClipJobSettings = ctx.settings
        errors = ctx.errors
        scorer, device = _worker_scorer(settings.score)
        images = ctx.lake.table(self.input_table)
        # whole row groups, read one chunk ahead in a thread while the scorer works
        offer = OfferWriter(IMAGES, settings.compact_floor) if settings.compact_floor is not None else None
        columns = None if offer is not None else _COLUMNS  # an offer is the whole images file, compacted
        chunks = images.iter_row_chunks(unit.source, settings.read_rows, columns, read_ahead=True)
        scored, dataset = [], []
        ledger = Ledger("clip", rows_in=unit.rows)
        done = 0
        earlier = _EarlierScores(ctx.lake.table(self.output_table), unit.replaces)
        for rows, s in scorer.score_tables(chunks):
            s = earlier.carry(rows, s)
            scored.append(s)
            if offer is not None:
                offer.add(rows, s.column("status"), s.column("similarity"), s.column("passed"))
            passed = pc.fill_null(s.column("passed"), False)
            keep = rows.filter(passed)
            ks = s.filter(passed)
            dataset.append(pa.table({
                "url": keep.column("url"), "text": keep.column("text"), "width": keep.column("width"),
                "height": keep.column("height"), "similarity": ks.column("similarity"),
                "punsafe": ks.column("punsafe"), "pwatermark": ks.column("pwatermark"),
                "language": keep.column("language"), "uid": keep.column("uid")}, schema=DATASET))
            for reason in ("no_image", "decode_error"):  # the status is the reason
                for uid in s.filter(pc.equal(s.column("status"), reason)).column("uid").to_pylist():
                    ledger.fail(reason)
                    errors.add(reason, f"uid {uid}", source=unit.source)
            below = pc.and_(pc.equal(s.column("status"), "scored"), pc.invert(passed))
            n_below = pc.sum(below.cast(pa.int64())).as_py() or 0
            if n_below:
                ledger.drop("below_threshold", n_below)
            ledger.rows_out += keep.num_rows
            done += rows.num_rows
            ctx.progress(done)
        if offer is not None:
            _publish(offer, images, ctx.run_id, unit)
        out = pa.concat_tables(scored) if scored else SCORED.empty_table()
        release = pa.concat_tables(dataset) if dataset else DATASET.empty_table()
        info = {"scored": int(pc.sum(pc.equal(out.column("status"), "scored").cast(pa.int64())).as_py() or 0),
                "passed": release.num_rows, "punsafe_null": out.column("punsafe").null_count,
                "rows_by_device": {device: out.num_rows}}
        return UnitResult(out, {"clip": ledger}, errors, info, side={"dataset": release})

    def describe_info(self, info: dict) -> list[str]:
        lines = []
        if info.get("scored"):
            lines.append(f"{info['scored']:,} images scored, {info.get('passed', 0):,} pass "
                         f"({100 * info.get('passed', 0) / info['scored']:.1f}%) -> dataset")
            if info.get("punsafe_null", 0) >= info["scored"]:
                lines.append("punsafe and pwatermark are null: no clip.nsfw_head / clip.watermark_model given")
        return lines


def _publish(offer: OfferWriter, images, run_id: str, unit: Unit) -> None:
    """The unit's compaction for jobs/compact.py; one that cannot be written is left out (compact then reads the
    file itself), never the unit's scores."""
    try:
        offer.publish(images, run_id, unit.id, unit.source)
    except Exception:  # noqa: BLE001 - an optional shortcut
        offer.discard()


class _EarlierScores:
    """A stored image whose bytes compaction dropped (a ``success`` row without ``jpg``) keeps the scores it had
    when its images file is scored again (download --retry-failed rewrote the file's failed rows): they come from
    the scored file this unit replaces. Without one, the row counts as ``no_image``."""

    def __init__(self, scored, path: str | None):
        self.scored, self.path, self.rows = scored, path, None

    def carry(self, rows: pa.Table, s: pa.Table) -> pa.Table:
        dropped = pc.and_(pc.equal(rows.column("status"), "success"), pc.is_null(rows.column("jpg")))
        if not self.path or not pc.any(dropped).as_py():
            return s
        if self.rows is None:
            self.rows = self.scored.read_file(self.path)
        at = pc.index_in(s.column("uid"), value_set=self.rows.column("uid").combine_chunks())
        take = pc.fill_null(pc.and_(dropped, pc.is_valid(at)), False)
        if not pc.any(take).as_py():
            return s
        return pa.table([pc.if_else(take, pc.take(self.rows.column(n).combine_chunks(), at), s.column(n))
                         for n in s.column_names], schema=s.schema)


@dataclass(frozen=True)
class ClipJobSettings:
    """The clip stage's settings, typed and checked once on the driver."""

    score: ClipSettings
    read_rows: int
    resources: TaskResources | None
    compact_floor: float | None = None  # compact.in_clip: the similarity below which an offer drops image bytes

    @classmethod
    def from_config(cls, cfg: dict) -> "ClipJobSettings":
        c = cfg["clip"]
        score = typed(ClipSettings, c)  # its fields are clip.* keys
        try:
            resources = TaskResources(cpus=int(c["task_cpus"]), gpus=float(c["task_gpus"])) or None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"clip.task_cpus / clip.task_gpus: {exc}") from exc
        floor = (floor_of([score.threshold, score.multilingual_threshold, score.nolang_threshold], margin_of(cfg))
                 if cfg["compact"]["in_clip"] else None)
        return cls(score, max(1, int(c["read_rows"])), resources, floor)

    def table_settings(self) -> dict:
        """What makes scored one table: scores of another model or threshold are not mixed into it."""
        s = self.score
        return {"clip.model": s.model, "clip.pretrained": s.pretrained, "clip.threshold": s.threshold,
                "clip.multilingual_model": s.multilingual_model,
                "clip.multilingual_pretrained": s.multilingual_pretrained,
                "clip.multilingual_kind": s.multilingual_kind,
                "clip.multilingual_threshold": s.multilingual_threshold,
                "clip.nolang_threshold": s.nolang_threshold, "clip.english": list(s.english)}


def _worker_scorer(settings: ClipSettings) -> tuple[Scorer, str]:
    """One Scorer per Python worker and device (Spark reuses workers: the model loads once). Another run's settings
    in the same worker free the models of the Scorer they replace before loading theirs."""
    device = task_device()
    key = (settings, device)
    state = getattr(_local, "state", None)
    if state is None or state[0] != key:
        if state is not None:
            _local.state = None
            state[1].close()
            del state
            models.evict(device)
        if device == "cpu":  # a CPU task owns spark.task.cpus cores, not the whole machine
            from pyspark import TaskContext

            ctx = TaskContext.get()
            torch.set_num_threads(max(1, ctx.cpus() if ctx else os.cpu_count() or 1))
        _local.state = (key, Scorer(settings, device))
    return _local.state[1], device
