"""Which image bytes compaction drops, and the compacted file clip's tasks offer so compact need not read again.

One rule for both places: a row loses its ``jpg`` when clip scored it (``status = 'scored'``), it did not pass, and
its similarity is below ``floor`` = the lowest of the clip thresholds minus ``compact.margin``.

An **offer** is an images file rewritten by the rule, written by the clip task that scored it (it holds every
row's bytes already) into ``images/_staging/<clip run>/compact/``: the compact job takes it in place of reading
the file whole again. An offer names the file it was made from; one for another file, another floor or other rows
is ignored (compact then reads the file itself).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import ConfigError
from ..lake import Table

OFFERS = "compact"  # under a clip run's staging folder of images
ROW_GROUP = 1_000  # rows per row group of a compacted file, as download writes images


def floor_of(thresholds: list[float], margin: float) -> float:
    return min(thresholds) - margin


def margin_of(cfg: dict) -> float:
    """compact.margin, checked."""
    margin = cfg["compact"]["margin"]
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0 <= margin < 1:
        raise ConfigError(f"compact.margin must be a number in [0, 1), got {margin!r}")
    return float(margin)


def bytes_to_drop(rows: pa.Table, status, similarity, passed, floor: float) -> pa.ChunkedArray | pa.Array:
    """Rows of ``rows`` (images) whose stored bytes the rule drops; ``status`` / ``similarity`` / ``passed`` are
    their scored values, aligned with ``rows`` (null where unscored: kept)."""
    below = pc.and_(pc.and_(pc.equal(status, "scored"), pc.invert(pc.fill_null(passed, False))),
                    pc.less(similarity, floor))
    return pc.and_(pc.fill_null(below, False), pc.is_valid(rows.column("jpg")))


def without_bytes(rows: pa.Table, drop) -> pa.Table:
    jpg = rows.column("jpg")
    return rows.set_column(rows.schema.get_field_index("jpg"), rows.schema.field("jpg"),
                           pc.if_else(drop, pa.scalar(None, jpg.type), jpg))


def offer_name(unit: str, source: str) -> str:
    """An offer's file name without extension: the unit and the file it was made from."""
    return f"{unit}-{hashlib.sha1(source.encode()).hexdigest()[:12]}"


def offers(images: Table) -> dict[str, str]:
    """Offer name -> the offer's parquet path under images' root, for every offer in any run's staging."""
    images.lake.fs.invalidate_cache(images.path("_staging"))
    found = {}
    for p in images.lake.glob(images.path(f"_staging/*/{OFFERS}/*.json")):
        name = posixpath.basename(p)[:-len(".json")]
        found[name] = posixpath.relpath(p[:-len(".json")] + ".parquet", images.root)
    return found


class OfferWriter:
    """Rows of one images file, compacted chunk by chunk as clip scores them, into a local parquet file; ``publish``
    puts it (and what it is) into the clip run's staging folder of images."""

    def __init__(self, schema: pa.Schema, floor: float):
        fd, self.local = tempfile.mkstemp(suffix=".parquet", prefix="l5s-offer-")
        os.close(fd)
        self.floor, self.rows, self.dropped, self.before, self.after = floor, 0, 0, 0, 0
        self.writer = pq.ParquetWriter(self.local, schema, compression="zstd")

    def add(self, rows: pa.Table, status, similarity, passed) -> None:
        drop = bytes_to_drop(rows, status, similarity, passed, self.floor)
        out = without_bytes(rows, drop)
        self.writer.write_table(out.cast(self.writer.schema), row_group_size=ROW_GROUP)
        self.rows += rows.num_rows
        self.dropped += pc.sum(drop.cast(pa.int64())).as_py() or 0
        self.before += pc.sum(pc.binary_length(rows.column("jpg"))).as_py() or 0
        self.after += pc.sum(pc.binary_length(out.column("jpg"))).as_py() or 0

    def publish(self, images: Table, run_id: str, unit: str, source: str) -> None:
        self.writer.close()
        try:
            name = offer_name(unit, source)
            images.lake.upload(self.local, images.staged(run_id, f"{OFFERS}/{name}.parquet"))
            images.lake.write_json(images.staged(run_id, f"{OFFERS}/{name}.json"), {
                "unit": unit, "from": source, "rows": self.rows, "floor": self.floor, "rows_without_bytes": self.dropped,
                "image_bytes_before": self.before, "image_bytes_after": self.after})
        finally:
            self.discard()

    def discard(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - already closed
            pass
        if os.path.exists(self.local):
            os.remove(self.local)


def take_offer(images: Table, rel: str, source: str, rows: int, floor: float) -> tuple[pa.Table, dict] | None:
    """The offered compaction of ``source`` (rows as compact would write them, and what the offer says), or None
    when it does not fit: made from another file, by another floor, with other rows. The offer is removed once read."""
    info = images.lake.read_json(images.path(rel[:-len(".parquet")] + ".json"))
    if not info or info.get("from") != source or info.get("rows") != rows or abs(info.get("floor", 9) - floor) > 1e-9:
        return None
    try:
        offered = images.read_file(rel)
    except (FileNotFoundError, OSError):
        return None
    if not offered.column("uid").equals(images.read_file(source, ["uid"]).column("uid")):
        return None  # the same rows in the same order, or nothing
    images.remove_files([rel, rel[:-len(".parquet")] + ".json"])
    return offered, info
