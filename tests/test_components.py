"""Distributed connected components and near-duplicate grouping (keyed exchanges, run in process here), against
scipy's connected components and a whole-table reference of the grouping rule, on random graphs split into
random partitions and parts."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from laion5b_spark.exchange import InProcess
from laion5b_spark.index import components as cc
from laion5b_spark.index import neardup


def _run_components(a, b, n, log=None):
    data = [(0, ("edge", np.asarray(a, np.int64), np.asarray(b, np.int64)))]
    stars = cc.components(InProcess(), data, n, log)
    child = np.concatenate([blk[1] for p, blk in stars if p >= 0] or [np.zeros(0, np.int64)])
    root = np.concatenate([blk[2] for p, blk in stars if p >= 0] or [np.zeros(0, np.int64)])
    return child, root


def _labels(nodes: int, child, root) -> np.ndarray:
    label = np.arange(nodes)
    assert len(np.unique(child)) == len(child), "a node has two roots"
    label[child] = root
    return label


def _scipy_min_labels(nodes: int, a, b) -> np.ndarray:
    g = coo_matrix((np.ones(len(a)), (a, b)), shape=(nodes, nodes))
    _, comp = connected_components(g, directed=False)
    smallest = np.full(comp.max() + 1, nodes)
    np.minimum.at(smallest, comp, np.arange(nodes))
    return smallest[comp]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 60).flatmap(lambda nodes: st.tuples(
    st.just(nodes), st.lists(st.tuples(st.integers(0, nodes - 1), st.integers(0, nodes - 1)), max_size=120),
    st.integers(1, 9))))
def test_components_equal_scipy_on_random_graphs(case):
    nodes, edges, n = case
    a = np.array([e[0] for e in edges], np.int64)
    b = np.array([e[1] for e in edges], np.int64)
    child, root = _run_components(a, b, n)
    assert (root < child).all()
    assert np.array_equal(_labels(nodes, child, root), _scipy_min_labels(nodes, a, b))


def test_a_long_shuffled_chain_converges_in_few_rounds():
    """A path of 20,000 nodes in random id order: the worst shape for label propagation (20,000 rounds)."""
    rng = np.random.default_rng(3)
    order = rng.permutation(20_000)
    a, b = order[:-1], order[1:]
    rounds = []
    child, root = _run_components(a, b, 7, log=rounds.append)
    assert np.array_equal(_labels(20_000, child, root), np.zeros(20_000, np.int64))
    assert len(rounds) <= 40, rounds[-1]


def test_large_star_counts_nodes_not_in_star_shape():
    # a star around 0 plus a chain 5-6-7: nodes 6 (a smaller and a larger neighbour) is not star-shaped
    u = np.array([0, 1, 0, 2, 5, 6, 6, 7])
    v = np.array([1, 0, 2, 0, 6, 5, 7, 6])
    child, parent, not_star = cc.large_star(u, v)
    assert not_star == 1
    assert sorted(zip(child.tolist(), parent.tolist())) == [(1, 0), (2, 0), (6, 5), (7, 5)]


def _reference(uid, sim, sha, ea, eb, passed):
    """The grouping rule on the whole table at once (scipy): what the exchanges must reproduce."""
    n = len(uid)
    s = np.nan_to_num(sim, nan=-np.inf)
    rank = np.empty(n, np.int64)
    rank[np.lexsort((np.arange(n), uid, -s, ~passed))] = np.arange(n)
    a, b = list(ea), list(eb)
    by_sha = {}
    for i, h in enumerate(sha):
        if h is not None:
            by_sha.setdefault(h, []).append(i)
    exact = np.arange(n)
    for rows in by_sha.values():
        best = min(rows, key=lambda r: rank[r])
        for r in rows:
            exact[r] = best
            a.append(r), b.append(best)
    _, comp = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    rep = np.array([min(np.flatnonzero(comp == comp[i]), key=lambda r: rank[r]) for i in range(n)])
    return rep, exact, np.bincount(comp)[comp]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 5), min_size=n, max_size=n),  # uid: ties on purpose
    st.lists(st.sampled_from([0.2, 0.3, 0.3, float("nan")]), min_size=n, max_size=n),
    st.lists(st.sampled_from([None, "x", "y", "z"]), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=2 * n),
    st.lists(st.integers(1, 6), min_size=1, max_size=8))))
def test_groups_over_parts_equal_the_whole_table_rule(case):
    uid, sim, sha, passed, edges, cuts = case
    n = len(uid)
    uid, sim, passed = np.array(uid, np.int64), np.array(sim), np.array(passed)
    sizes, left = [], n
    for c in cuts:  # random part sizes that add up to n (the last part takes the rest)
        take = min(c, left)
        sizes.append(take)
        left -= take
    sizes[-1] += left
    pairs = [(x, y) for x, y in edges if x != y]
    ea = np.array([min(p) for p in pairs], np.int64)
    eb = np.array([max(p) for p in pairs], np.int64)
    cos = np.full(len(pairs), 0.97, np.float32)
    table, ledger = neardup.groups(uid, sim, sha, ea, eb, cos, passed=passed, part_rows=sizes)
    rep, exact, size = _reference(uid, sim, sha, ea, eb, passed)
    d = table.to_pydict()
    assert d["uid"] == uid.tolist()
    is_dup = rep != np.arange(n)
    assert d["duplicate"] == is_dup.tolist()
    assert d["near_dup_of"] == [int(uid[r]) if dup else None for r, dup in zip(rep, is_dup)]
    assert d["exact_dup_of"] == [int(uid[e]) if e != i else None for i, e in enumerate(exact)]
    assert d["group_size"] == size.tolist()
    assert d["sha256"] == list(sha)
    has_edge = np.zeros(n, bool)
    has_edge[ea], has_edge[eb] = True, True
    assert [x is not None for x in d["nearest_similarity"]] == has_edge.tolist()
    assert ledger.rows_in == n and ledger.balanced() and ledger.rows_out == int((~is_dup).sum())


def test_no_rows_and_no_edges():
    table, ledger = neardup.groups(np.zeros(0, np.int64), np.zeros(0), pa.array([], pa.string()),
                                   np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert table.num_rows == 0 and ledger.rows_in == 0
    child, root = _run_components([], [], 3)
    assert len(child) == 0


@pytest.mark.parametrize("n", [1, 4])
def test_exchange_split_keeps_every_row_once(n):
    from laion5b_spark.exchange import split

    dest = np.array([3, 0, 3, 1, 0]) % n
    got = list(split(dest, "t", np.arange(5)))
    assert sorted(x for _, blk in got for x in blk[1].tolist()) == list(range(5))
    assert all((dest[blk[1]] == p).all() for p, blk in got)


def test_sha_words_decode_hex_and_tell_other_strings_apart():
    import hashlib

    hexes = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
    arr = pa.array(["pad", *hexes, hexes[0].upper()]).slice(1)  # a sliced array, upper-case hex too
    w = neardup.sha_words(arr)
    assert w.shape == (6, 4)
    assert [w[i].tobytes() for i in range(5)] == [bytes.fromhex(h) for h in hexes]
    assert w[5].tobytes() == w[0].tobytes()
    odd = neardup.sha_words(pa.array(["x", "y", "x"]))  # not hex digests: hashed, still equal when equal
    assert odd[0].tobytes() == odd[2].tobytes() != odd[1].tobytes()
