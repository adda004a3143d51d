"""Connected components of an edge list too big for one machine: alternating large-star and small-star rounds
(Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014), each a keyed exchange of edge
blocks (``exchange.py``), so the same rounds run on Spark or in process.

Node ids are integers and a component's label is its smallest id. Every round rewires edges towards smaller ids;
the rounds stop when the graph is a forest of stars (each node's only smaller neighbour is a root, roots have no
smaller neighbour), which is then the answer: one (node, root) edge per non-root node. The paper bounds the rounds
by O(log² n); in practice a handful.
"""

from __future__ import annotations

import numpy as np

from ..exchange import STATS, runs, split, tagged

MAX_ROUNDS = 200  # far above O(log² n) for any real n: reaching it means a bug, not a hard graph


class NotConverged(RuntimeError):
    pass


def both_ways(a: np.ndarray, b: np.ndarray, n: int):
    """Edge blocks addressed to both ends (a node's partition is ``node % n``): a large-star step sees every
    neighbour of its nodes."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    yield from split(np.concatenate([a, b]) % n, "edge", np.concatenate([a, b]), np.concatenate([b, a]))


def _unique_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by (u, v), each pair once, no self-loops."""
    keep = u != v
    u, v = u[keep], v[keep]
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    if len(u):
        first = np.concatenate([[True], (u[1:] != u[:-1]) | (v[1:] != v[:-1])])
        u, v = u[first], v[first]
    return u, v


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``u``'s whole neighbourhood (both directions of each edge): for every node u, m = min(Γ(u) ∪ {u}); every
    neighbour v > u is connected to m instead. Also: how many nodes are not yet star-shaped."""
    u, v = _unique_pairs(u, v)
    if not len(u):
        return u, v, 0
    starts, counts = runs(u)
    nodes = u[starts]
    m = np.repeat(np.minimum(np.minimum.reduceat(v, starts), nodes), counts)
    smaller = np.add.reduceat((v < u).astype(np.int64), starts)
    larger = counts - smaller
    not_star = int((((smaller > 0) & (larger > 0)) | (smaller > 1)).sum())
    out = v > u
    return v[out], m[out], not_star


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (u, v) with v < u, keyed by u: u and each of its smaller neighbours connect to the smallest of them."""
    u, v = _unique_pairs(u, v)
    if not len(u):
        return u, v
    starts, counts = runs(u)
    m = np.repeat(np.minimum.reduceat(v, starts), counts)
    a = np.concatenate([u[starts], v])  # u itself, then its smaller neighbours
    b = np.concatenate([m[starts], m])
    keep = a != b
    return a[keep], b[keep]


def components(engine, edges, n: int, log=None):
    """Star edges ``("edge", node, root)`` for every non-root node of the graph whose edge blocks are ``edges``
    (``("edge", a, b)`` blocks under any address). ``n``: partitions per round."""

    def large_step(p: int, blocks: list):
        u, v = tagged(blocks, "edge", 2)
        child, root, not_star = large_star(u, v)
        yield from split(child % n, "edge", child, root)  # to the larger end: small-star works on smaller neighbours
        yield STATS, ("not_star", not_star)

    def small_step(p: int, blocks: list):
        u, v = tagged(blocks, "edge", 2)
        yield from both_ways(*small_star(u, v), n)

    def start_step(p: int, blocks: list):
        a, b = tagged(blocks, "edge", 2)
        yield from both_ways(a, b, n)

    current, previous = engine.exchange(edges, n, start_step), None
    for rnd in range(1, MAX_ROUNDS + 1):
        stars = engine.keep(engine.exchange(current, n, large_step))
        not_star = sum(s[1] for s in engine.stats(stars))
        if previous is not None:  # only now: this round was computed from it
            engine.drop(previous)
        if log:
            log(f"connected components: round {rnd}, {not_star:,} nodes not yet in star shape")
        if not_star == 0:
            return stars
        current, previous = engine.exchange(stars, n, small_step), stars
    raise NotConverged(f"connected components did not converge in {MAX_ROUNDS} rounds")
