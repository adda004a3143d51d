"""The four steps of a dedup batch, as plain functions over numpy/Arrow (Spark only moves their blobs).

1. ``key_blobs``: a task reads the key columns of its files and emits (bucket, keys+positions) blobs - 16 bytes a
   row, already reduced to one position per key within the task;
2. ``survivor_blobs``: a bucket's reducer keeps the lowest position per key, drops keys already in the table,
   and sends each survivor's position back to the task that owns its file;
3. (the driver counts survivors per input file and cuts the output files: plan.make_layout; positions move to
   the task of their output file)
4. ``select_rows``: that task reads its input files whole, takes the survivors, accounts for every other row,
   and returns the output file's rows in their final order, which the job writes.

Only keys and positions cross Spark's shuffles; rows are read once and written once, by the same task.
"""

from __future__ import annotations

import resource
from collections import Counter
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..accounting import Ledger
from ..exchange import runs
from ..schemas import PAIRS_UNIQUE
from .plan import InputFile, Layout, Task
from .rows import CODES, FAILED_CODES, RowRules, classify, file_order, hosts, keys_of

_ROW_MASK = np.int64(0xFFFFFFFF)
TOP_DOMAINS_PER_TASK = 1000


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a fixed, well-spread permutation of 64-bit values."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _bucket(keys: np.ndarray, buckets: int) -> np.ndarray:
    return (mix64(keys.view(np.uint64)) % np.uint64(buckets)).astype(np.int64)


def _pack(keys: np.ndarray, pos: np.ndarray) -> bytes:
    return keys.astype(np.int64).tobytes() + pos.astype(np.int64).tobytes()


def _unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    a = np.frombuffer(blob, dtype=np.int64)
    n = len(a) // 2
    return a[:n], a[n:]


def min_per_key(keys: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct key once, with its lowest position (sorted by key)."""
    if len(keys) == 0:
        return keys, pos
    order = np.argsort(keys)  # one sort, then a segmented min: 2x faster than lexsort on (key, pos)
    k = keys[order]
    starts, _ = runs(k)
    return k[starts], np.minimum.reduceat(pos[order], starts)


def key_blobs(task: Task, existing: bool, read, rules: RowRules, buckets: int) -> Iterator[tuple[int, bytes]]:
    """Step 1. ``read(path, columns)`` opens a file of the task's table."""
    all_keys, all_pos = [], []
    for f in task.files:
        if existing:  # rows already in pairs_unique are eligible by construction; -1 makes them win
            cols = ["uid"] if rules.mode == "url_text" else ["url"]
            t = read(f.path, cols)
            all_keys.append(keys_of(t, rules.mode))
            all_pos.append(np.full(t.num_rows, -1, dtype=np.int64))
            continue
        t = read(f.path, list(RowRules.KEY_COLUMNS))
        order = file_order(t.column("source_offset"))
        if order is not None:
            t = t.take(order)
        eligible = np.flatnonzero(classify(t, rules) == 0)
        keys = keys_of(t.take(eligible) if len(eligible) < t.num_rows else t, rules.mode)
        all_keys.append(keys)
        all_pos.append((np.int64(f.rank) << np.int64(32)) | eligible.astype(np.int64))
    if not all_keys:
        return
    keys, pos = min_per_key(np.concatenate(all_keys), np.concatenate(all_pos))
    if len(keys) == 0:  # every row of the task was left out
        return
    b = _bucket(keys, buckets)
    order = np.argsort(b, kind="stable")
    keys, pos, b = keys[order], pos[order], b[order]
    for label, lo, hi in _segments(b):
        yield label, _pack(keys[lo:hi], pos[lo:hi])


def _segments(labels: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(label, start, end) of each run of equal values in a sorted array."""
    cuts = np.flatnonzero(np.diff(labels)) + 1
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(labels)]])):
        yield int(labels[lo]), int(lo), int(hi)


def route_positions(pos: np.ndarray, owner_of_rank: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """(owner, sorted positions) blobs: each position goes to the task that owns its input file."""
    if len(pos) == 0:
        return
    owner = owner_of_rank[pos >> np.int64(32)]
    order = np.argsort(owner, kind="stable")
    pos, owner = pos[order], owner[order]
    for label, lo, hi in _segments(owner):
        yield label, pos[lo:hi].tobytes()


def survivor_blobs(blobs: Iterable[bytes], task_of_rank: np.ndarray) -> Iterator[tuple[int, bytes]]:
    """Step 2: one bucket's blobs -> (task, sorted survivor positions)."""
    parts = [_unpack(b) for b in blobs]
    if not parts:
        return
    _, pos = min_per_key(np.concatenate([k for k, _ in parts]), np.concatenate([p for _, p in parts]))
    yield from route_positions(np.sort(pos[pos >= 0]), task_of_rank)


def gather_positions(blobs: Iterable[bytes]) -> np.ndarray:
    parts = [np.frombuffer(b, dtype=np.int64) for b in blobs]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def survivors_per_rank(task: Task, positions: np.ndarray) -> np.ndarray:
    first = task.files[0].rank
    return np.bincount((positions >> np.int64(32)) - first, minlength=len(task.files)).astype(np.int64)


def select_rows(files: tuple[InputFile, ...], positions: np.ndarray, read, rules: RowRules, layout: Layout,
                ) -> tuple[pa.Table | None, dict, dict]:
    """Step 4: one output file's rows (in their final order), each input file's ledger, and stats."""
    ranks = positions >> np.int64(32)
    rows_of = positions & _ROW_MASK
    ledgers: dict[str, dict] = {}
    langs: Counter = Counter()
    dup_hosts: Counter = Counter()
    parts = []
    for f in files:
        t = read(f.path, None)
        order = file_order(t.column("source_offset"))
        if order is not None:
            t = t.take(order)
        codes = classify(t, rules)
        lo, hi = np.searchsorted(ranks, [f.rank, f.rank + 1])
        keep = rows_of[lo:hi]
        if len(keep) and np.any(codes[keep] != 0):
            raise AssertionError(f"{f.path}: a survivor is not eligible (key and row passes disagree)")
        ledgers[f.path] = _file_ledger(codes, len(keep)).to_dict()
        dup = codes == 0
        dup[keep] = False
        if dup.any():
            for d in pc.value_counts(hosts(t.column("url").take(np.flatnonzero(dup)))).to_pylist():
                dup_hosts[d["values"]] += d["counts"]
        if len(keep):
            parts.append(t.take(keep).select(PAIRS_UNIQUE.names).cast(PAIRS_UNIQUE))
    info = {"languages": {}, "dup_domains": dict(dup_hosts.most_common(TOP_DOMAINS_PER_TASK))}
    rows = pa.concat_tables(parts) if parts else None
    if rows is not None:
        for d in pc.value_counts(rows.column("language")).to_pylist():
            langs[d["values"]] += d["counts"]
        info["languages"] = dict(langs)
        if layout.shuffle:
            rows = block_shuffle(rows, layout.block_rows, np.random.default_rng([layout.seed, files[0].rank]))
    info["peak_rss_mb"] = _peak_rss_mb()
    return rows, ledgers, info


def block_shuffle(rows: pa.Table, block_rows: int, rng: np.random.Generator) -> pa.Table:
    """Blocks of ``block_rows`` consecutive rows in a seeded random order: zero-copy slices, no gather.

    A download shard (10,000 rows) then draws ~40 blocks from all over the file, so its hosts are mixed; a
    row-level permutation costs a random gather of every string (~1 s per million rows) for no gain there."""
    starts = np.arange(0, rows.num_rows, max(1, block_rows))
    return pa.concat_tables([rows.slice(int(starts[i]), block_rows) for i in rng.permutation(len(starts))])


def _file_ledger(codes: np.ndarray, kept: int) -> Ledger:
    led = Ledger("pairs", rows_in=len(codes), rows_out=kept)
    counts = np.bincount(codes.astype(np.int64), minlength=len(CODES))
    for code in range(1, len(CODES)):
        if counts[code]:
            (led.fail if code in FAILED_CODES else led.drop)(CODES[code], int(counts[code]))
    if counts[0] - kept:
        led.drop("duplicate", int(counts[0] - kept))
    return led


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
