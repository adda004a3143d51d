"""Which rows of each export unit dedup_images marks duplicate, without any machine holding every uid.

A join on uid written as two keyed exchanges (``laion5b_spark.exchange``): each unit's dataset uids and each
dedup_images file's duplicate rows go to the join partition ``uid % P``; a partition matches them and sends each
match to the partition of its unit, which writes one small parquet per unit (``uid``, ``exact``) that the unit's
task reads. Only duplicate rows of dedup_images travel (~10% of a release): at 5B, ~0.6B duplicate and ~6B
dataset uids, 16 bytes each, over P partitions of ``export.join_rows_per_task`` uids.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from ..exchange import STATS, split, tagged
from ..lake import LakeRef
from .release import duplicate_kinds

SCHEMA = pa.schema([pa.field("uid", pa.int64(), nullable=False), pa.field("exact", pa.bool_(), nullable=False)])


def partitions(rows: int, units: int, rows_per_task: int) -> int:
    return max(1, min(max(units, 1), math.ceil(rows / max(1, rows_per_task))))


def mark(engine, lake_ref: LakeRef, units: list[tuple[str, str]], dedup_paths: list[str], out_dir: str,
         n_parts: int) -> int:
    """Write ``out_dir/<unit id>.parquet`` for every unit of ``units`` (unit id, its dataset file or "" for none):
    the uids of its rows that dedup_images (files ``dedup_paths``) marks duplicate. Returns the matches."""
    n_units = len(units)

    def sources(i: int):
        lake = lake_ref.open()
        if i < n_units:
            path = units[i][1]
            if not path:
                return
            uid = lake.table("dataset").read_file(path, ["uid"]).column("uid").to_numpy()
            yield from split(uid % n_parts, "want", uid, np.full(len(uid), i, np.int64))
        else:
            dup = duplicate_kinds(lake.table("dedup_images").read_file(
                dedup_paths[i - n_units], ["uid", "duplicate", "exact_dup_of"]))
            uid = dup.column("uid").to_numpy()
            exact = dup.column("exact").to_numpy(zero_copy_only=False).astype(np.int64)
            yield from split(uid % n_parts, "dup", uid, exact)

    def join(p: int, blocks: list):
        want_uid, want_unit = tagged(blocks, "want", 2)
        dup_uid, dup_exact = tagged(blocks, "dup", 2)
        if not len(want_uid) or not len(dup_uid):
            return
        order = np.argsort(dup_uid, kind="stable")
        sorted_uid = dup_uid[order]
        at = np.minimum(np.searchsorted(sorted_uid, want_uid), len(sorted_uid) - 1)
        hit = sorted_uid[at] == want_uid
        exact = dup_exact[order][at[hit]]
        yield from split(want_unit[hit] % n_parts, "drop", want_unit[hit], want_uid[hit], exact)

    def write(p: int, blocks: list):
        unit, uid, exact = tagged(blocks, "drop", 3)
        lake = lake_ref.open()
        for u in range(p, n_units, n_parts):
            mine = unit == u
            table = pa.table({"uid": uid[mine].astype(np.int64), "exact": exact[mine].astype(bool)}, schema=SCHEMA)
            lake.write_parquet(f"{out_dir}/{units[u][0]}.parquet", table)
        yield STATS, ("drop", np.array([len(uid)], np.int64))

    data = engine.parts(n_units + len(dedup_paths), sources)
    data = engine.exchange(data, n_parts, join)
    data = engine.exchange(data, n_parts, write)  # every partition runs, with or without matches: a file per unit
    return int(sum(int(b[1].sum()) for b in engine.stats(data)))
