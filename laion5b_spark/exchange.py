"""Keyed exchanges of numpy blocks: a step turns the blocks one partition received into blocks addressed to the
partitions of the next step. The same steps run in this process (rules tests, small inputs) or on Spark, where an
exchange is a Python RDD partitioned by the address itself, so a multi-pass algorithm is written once.

A *block* is a tuple whose first item is a tag (``"edge"``, ``"rep"``, ...) and whose other items are arrays of
one length. Data is a sequence of ``(partition, block)``; a partition below 0 marks a statistic for the driver
(``stats``), never routed to a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

Block = tuple
Step = Callable[[int, list], Iterable[tuple[int, Block]]]
STATS = -1


def split(dest: np.ndarray, tag: str, *arrays: np.ndarray) -> Iterator[tuple[int, Block]]:
    """One block per destination partition, of the rows addressed to it."""
    if not len(dest):
        return
    order = np.argsort(dest, kind="stable")
    d = dest[order]
    cuts = np.flatnonzero(np.diff(d)) + 1
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(d)]])):
        sel = order[lo:hi]
        yield int(d[lo]), (tag, *(a[sel] for a in arrays))


def runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal values in a sorted array: the groups a step reduces over."""
    if not len(sorted_keys):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    return starts, np.diff(np.concatenate([starts, [len(sorted_keys)]]))


def tagged(blocks: list, tag: str, width: int) -> list[np.ndarray]:
    """The arrays of every block with this tag, concatenated (``width`` arrays; empty ones when there is none)."""
    got = [b[1:] for b in blocks if b[0] == tag]
    if not got:
        return [np.zeros(0, np.int64) for _ in range(width)]
    return [np.concatenate([g[i] for g in got]) for i in range(width)]


class InProcess:
    """Every partition in turn, in this process."""

    def parts(self, n: int, fn: Callable[[int], Iterable[tuple[int, Block]]]) -> list:
        return [x for i in range(n) for x in fn(i)]

    def exchange(self, data: list, n: int, step: Step) -> list:
        got: list[list] = [[] for _ in range(n)]
        for p, block in data:
            if p >= 0:
                got[p].append(block)
        return [x for p in range(n) for x in step(p, got[p])]

    def union(self, *data: list) -> list:
        return [x for d in data for x in d]

    def only(self, data: list, *tags: str) -> list:
        return [(p, b) for p, b in data if p >= 0 and b[0] in tags]

    def keep(self, data: list) -> list:
        return data

    def drop(self, data: list) -> None:
        pass

    def stats(self, data: list) -> list:
        return [b for p, b in data if p < 0]


def identity_partition(p: int) -> int:
    return p  # a record's key is already its partition number


class OnSpark:
    """Each exchange is a shuffle of Python RDD blocks; ``keep`` persists data a later step reads again."""

    def __init__(self, sc, describe: str = ""):
        self.sc, self.describe = sc, describe

    def parts(self, n: int, fn):
        return self.sc.parallelize(range(n), max(1, n)).flatMap(fn)

    def exchange(self, data, n: int, step: Step):
        return (data.filter(lambda kv: kv[0] >= 0).partitionBy(n, identity_partition)
                .mapPartitionsWithIndex(lambda p, it: step(p, [b for _, b in it])))

    def union(self, *data):
        return self.sc.union(list(data))

    def only(self, data, *tags: str):
        return data.filter(lambda kv: kv[0] >= 0 and kv[1][0] in tags)

    def keep(self, data):
        from pyspark import StorageLevel

        return data.persist(StorageLevel.MEMORY_AND_DISK)

    def drop(self, data) -> None:
        data.unpersist()

    def stats(self, data) -> list:
        if self.describe:
            self.sc.setJobDescription(self.describe)
        return data.filter(lambda kv: kv[0] < 0).values().collect()
