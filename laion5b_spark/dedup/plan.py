"""The driver's plan for one dedup batch: which input files, in which order, cut into which tasks.

A row's *position* is ``rank << 32 | row``: ``rank`` orders the batch's input files by (crawl, source file key,
path) and ``row`` is the row's index in its file ordered by source offset. The survivor of a duplicate group is
the row with the lowest position, so it is the earliest crawl, then the lowest source file, then the lowest
offset - whatever the partitioning. Rows already in ``pairs_unique`` take position -1: they always win.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ..lake import FileEntry

from ..extract.inputs import crawl_of

KEY_BYTES = 16  # a key and a position: what the shuffle moves per row
MAX_ROWS_PER_FILE = 1 << 32


@dataclass(frozen=True)
class InputFile:
    rank: int
    path: str  # relative to its table, as the manifest lists it
    key: str  # the unit it came from (e.g. the WAT file)
    rows: int
    bytes: int


@dataclass(frozen=True)
class Task:
    """Contiguous input files read by one task, in both passes."""

    index: int
    files: tuple[InputFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


@dataclass
class Plan:
    mode: str
    inputs: list[InputFile]  # the batch's new input files (pairs), in rank order
    tasks: list[Task]  # new input files cut into tasks
    existing: list[Task]  # files already in pairs_unique: their keys only (rank -1)
    buckets: int  # key buckets: reduce tasks of the key shuffle
    batch_id: str  # names this batch's output units: the same inputs give the same names

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.inputs)

    @property
    def existing_rows(self) -> int:
        return sum(t.rows for t in self.existing)

    def task_of_rank(self) -> np.ndarray:
        out = np.empty(len(self.inputs), dtype=np.int32)
        for t in self.tasks:
            for f in t.files:
                out[f.rank] = t.index
        return out


def _order_key(entry: FileEntry) -> tuple:
    crawl = crawl_of(entry.key)
    return (crawl is None, crawl or "", entry.key, entry.path)


def _cut(files: list, rows_per_task: int) -> list[list]:
    tasks, cur, rows = [], [], 0
    for f in files:
        if cur and rows + f.rows > rows_per_task:
            tasks.append(cur)
            cur, rows = [], 0
        cur.append(f)
        rows += f.rows
    if cur:
        tasks.append(cur)
    return tasks


def make_plan(pairs_entries: list[FileEntry], consumed: set[str], unique_entries: list[FileEntry], cfg: dict,
              min_tasks: int = 1) -> Plan:
    """``min_tasks``: cut smaller tasks when the batch is small, so every core has work (speed only: the
    output does not depend on it)."""
    dcfg = cfg["dedup"]
    pending = sorted((e for e in pairs_entries if e.path not in consumed), key=_order_key)
    new_rows = sum(e.rows for e in pending)
    rows_per_task = max(1, min(int(dcfg["rows_per_task"]), math.ceil(new_rows / max(1, min_tasks))))
    inputs = []
    for rank, e in enumerate(pending):
        if e.rows >= MAX_ROWS_PER_FILE:
            raise ValueError(f"{e.path}: {e.rows} rows; dedup positions allow < 2^32 rows per file")
        inputs.append(InputFile(rank, e.path, e.key, e.rows, e.bytes))
    tasks = [Task(i, tuple(fs)) for i, fs in enumerate(_cut(inputs, rows_per_task))]
    old = [InputFile(-1, e.path, e.key, e.rows, e.bytes) for e in sorted(unique_entries, key=lambda e: e.path)]
    existing = [Task(i, tuple(fs)) for i, fs in enumerate(_cut(old, rows_per_task))]
    total = sum(f.rows for f in inputs) + sum(f.rows for f in old)
    buckets = max(1, math.ceil(total * KEY_BYTES / (float(dcfg["bucket_mb"]) * 2**20)))
    batch_id = hashlib.sha1("\n".join(f.path for f in inputs).encode()).hexdigest()[:12]
    return Plan(str(dcfg["key"]), inputs, tasks, existing, buckets, batch_id)


@dataclass(frozen=True)
class Layout:
    """Output files: each holds the survivors of a contiguous range of input files (``groups`` of ranks).

    A range closes once its survivors are estimated at ``dedup.file_mb`` of parquet, or its input at four times
    that (so a batch of mostly duplicates still spreads over many tasks). Only the batch's input decides the
    ranges - not Spark's partitioning - so any cluster writes the same files. With ``shuffle``, a file's rows are
    written in blocks of ``block_rows`` in a seeded random order (passes.block_shuffle) instead of a global
    ``orderBy(rand(seed))`` sort: a file gathers many input files, so a download shard of it mixes their hosts.
    """

    groups: list[tuple[int, int]]  # [first rank, last rank + 1) per output file
    shuffle: bool
    seed: int
    block_rows: int = 256

    def group_of_rank(self) -> np.ndarray:
        out = np.empty(self.groups[-1][1] if self.groups else 0, dtype=np.int32)
        for g, (lo, hi) in enumerate(self.groups):
            out[lo:hi] = g
        return out


def make_layout(plan: Plan, survivors_per_rank: np.ndarray, cfg: dict) -> Layout:
    dcfg = cfg["dedup"]
    target = float(dcfg["file_mb"]) * 2**20
    groups, start, out_bytes, in_bytes = [], 0, 0.0, 0
    for f, n in zip(plan.inputs, survivors_per_rank):
        out_bytes += int(n) * (f.bytes / f.rows if f.rows else 0)
        in_bytes += f.bytes
        if out_bytes >= target or in_bytes >= 4 * target:
            groups.append((start, f.rank + 1))
            start, out_bytes, in_bytes = f.rank + 1, 0.0, 0
    if start < len(plan.inputs):
        groups.append((start, len(plan.inputs)))
    return Layout(groups, bool(dcfg["shuffle"]), int(dcfg["seed"]), int(dcfg["shuffle_block_rows"]))
