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


def _order_key(entry: dict) -> tuple:
    crawl = crawl_of(entry.get("key", ""))
    return (crawl is None, crawl or "", entry.get("key", ""), entry["path"])


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


def make_plan(pairs_entries: list[dict], consumed: set[str], unique_entries: list[dict], cfg: dict) -> Plan:
    dcfg = cfg["dedup"]
    rows_per_task = max(1, int(dcfg["rows_per_task"]))
    pending = sorted((e for e in pairs_entries if e["path"] not in consumed), key=_order_key)
    inputs = []
    for rank, e in enumerate(pending):
        if e["rows"] >= MAX_ROWS_PER_FILE:
            raise ValueError(f"{e['path']}: {e['rows']} rows; dedup positions allow < 2^32 rows per file")
        inputs.append(InputFile(rank, e["path"], e.get("key", ""), int(e["rows"]), int(e.get("bytes", 0))))
    tasks = [Task(i, tuple(fs)) for i, fs in enumerate(_cut(inputs, rows_per_task))]
    old = [InputFile(-1, e["path"], e.get("key", ""), int(e["rows"]), int(e.get("bytes", 0)))
           for e in sorted(unique_entries, key=lambda e: e["path"])]
    existing = [Task(i, tuple(fs)) for i, fs in enumerate(_cut(old, rows_per_task))]
    total = sum(f.rows for f in inputs) + sum(f.rows for f in old)
    buckets = max(1, math.ceil(total * KEY_BYTES / (float(dcfg["bucket_mb"]) * 2**20)))
    batch_id = hashlib.sha1("\n".join(f.path for f in inputs).encode()).hexdigest()[:12]
    return Plan(str(dcfg["key"]), inputs, tasks, existing, buckets, batch_id)


@dataclass(frozen=True)
class Layout:
    """Where each surviving row goes: ``files`` output files of ``rows_per_file`` rows (the last one fewer).

    Without shuffle, rows keep their position order and fill files one after the other. With shuffle, a row's
    file and its place in it come from a seeded hash of its uid - a fixed pseudo-random permutation that
    needs no global sort (laion-prepro's ``orderBy(rand(seed))``, without the sort).
    """

    files: int
    rows_per_file: int
    offsets: np.ndarray  # per input rank: how many survivors come before that file
    shuffle: bool
    seed: int


def make_layout(plan: Plan, survivors_per_rank: np.ndarray, cfg: dict) -> Layout:
    dcfg = cfg["dedup"]
    total = int(survivors_per_rank.sum())
    est_bytes = sum(int(n) * (f.bytes / f.rows if f.rows else 0) for n, f in zip(survivors_per_rank, plan.inputs))
    files = max(1, math.ceil(est_bytes / (float(dcfg["file_mb"]) * 2**20))) if total else 0
    files = min(files, total) if total else 0
    rows_per_file = math.ceil(total / files) if files else 0
    offsets = np.concatenate([[0], np.cumsum(survivors_per_rank)[:-1]]).astype(np.int64)
    return Layout(files, rows_per_file, offsets, bool(dcfg["shuffle"]), int(dcfg["seed"]))
