"""The index stage's plain functions, without Spark: exact search, recall, near-duplicate candidates, exact
check and grouping with its representative rule, the export's embedding matrix."""

import faiss
import numpy as np
import pyarrow as pa
import pytest

from laion5b_spark import schemas
from laion5b_spark.index import neardup
from laion5b_spark.index.build import Vectors, exact_top_k, recall
from laion5b_spark.index.export import embedding_matrix
from laion5b_spark.sample.embeddings import clustered, near_copy


def _parts(x: np.ndarray, sizes: list[int]) -> Vectors:
    cuts = np.cumsum([0] + sizes)
    return Vectors([x[a:b] for a, b in zip(cuts, cuts[1:])])


def test_exact_top_k_streams_blocks_and_equals_a_full_sort():
    rng = np.random.default_rng(1)
    x = clustered(3000, 24, rng)
    q = clustered(40, 24, rng)
    v = _parts(x, [1000, 0, 1500, 500])  # an empty part, as exports of parts with no passing rows
    s, i = exact_top_k(q, v, 7)
    full = q @ x.T
    expect = np.sort(full, axis=1)[:, ::-1][:, :7]
    assert np.allclose(s, expect, atol=1e-5)
    assert np.allclose(np.take_along_axis(full, i, axis=1), expect, atol=1e-5)
    assert np.array_equal(v.get(np.array([0, 999, 1000, 2999])), x[[0, 999, 1000, 2999]])


def test_recall_is_one_for_exact_search_and_low_for_a_bad_index():
    rng = np.random.default_rng(2)
    x = clustered(2000, 32, rng)
    v = _parts(x, [700, 1300])
    flat = faiss.IndexFlatIP(32)
    flat.add(x)
    assert recall(flat, v, 100, 10)["recall_at_k"] == 1.0

    class Shuffled:  # answers with random ids: what the metric must catch
        def search(self, q, k):
            return np.zeros((len(q), k), np.float32), rng.integers(0, len(x), (len(q), k))

    r = recall(Shuffled(), v, 100, 10)
    assert r["recall_at_k"] < 0.1 and r["recall_at_1"] < 0.1


def test_recall_counts_an_equally_near_duplicate_as_a_hit():
    x = np.eye(8, dtype=np.float32)
    x = np.concatenate([x, x[:1]])  # vector 8 is a copy of vector 0
    flat = faiss.IndexFlatIP(8)
    flat.add(x)
    r = recall(flat, Vectors([x]), 9, 2)
    # counting ids alone, query 0 (or 8) would miss when the index returns its copy first: 7/9 at k=1
    assert r["recall_at_k"] == 1.0 and r["recall_at_1"] == 1.0


def test_candidates_and_confirm_find_planted_copies_and_nothing_on_random_data():
    rng = np.random.default_rng(3)
    x = clustered(1500, 48, rng)
    flat = faiss.IndexFlatIP(48)
    flat.add(x)
    a, b = neardup.candidates(flat, x, 0, 16, 0.94)
    ea, eb, ec = neardup.confirm(a, b, x[a], x[b], 0.96)
    assert len(ea) == 0  # no false groups above the threshold on random (clustered) data
    planted = x.copy()
    for i in range(0, 60, 3):
        planted[i + 1] = near_copy(planted[i], rng)
        planted[i + 2] = near_copy(planted[i], rng)
    flat = faiss.IndexFlatIP(48)
    flat.add(planted)
    a, b = neardup.candidates(flat, planted[:750], 0, 16, 0.94)  # two blocks, as two parts
    a2, b2 = neardup.candidates(flat, planted[750:], 750, 16, 0.94)
    a, b = np.concatenate([a, a2]), np.concatenate([b, b2])
    ea, eb, ec = neardup.confirm(a, b, planted[a], planted[b], 0.96)
    expect = {(i, i + 1) for i in range(0, 60, 3)} | {(i, i + 2) for i in range(0, 60, 3)} | \
        {(i + 1, i + 2) for i in range(0, 60, 3)}
    assert set(zip(ea.tolist(), eb.tolist())) == expect  # each pair once, found from both ends
    assert (ec >= 0.96).all()


def test_groups_pick_the_highest_similarity_then_smallest_uid_and_count_exact_copies():
    uid = np.array([50, 40, 30, 20, 10, 60])
    sim = np.array([0.30, 0.35, 0.35, 0.20, 0.40, 0.33], dtype=np.float32)
    sha = ["s0", "s1", "s2", "s3", "s3", None]
    # near pairs: 0-1, 1-2 (a chain: one group); rows 3 and 4 share bytes; row 5 alone
    rows, ledger = neardup.groups(uid, sim, sha, np.array([0, 1]), np.array([1, 2]), np.array([0.97, 0.98], np.float32))
    schemas.check("dedup_images", rows)
    d = rows.to_pandas().set_index("uid")
    # 40 and 30 tie on similarity 0.35: the smaller uid (30) represents the chain
    assert d.loc[30, "duplicate"] == False and d.loc[40, "near_dup_of"] == 30 and d.loc[50, "near_dup_of"] == 30  # noqa: E712
    assert d.loc[10, "duplicate"] == False and d.loc[20, "exact_dup_of"] == 10 and d.loc[20, "near_dup_of"] == 10  # noqa: E712
    assert d.loc[60, "duplicate"] == False and d.loc[60, "group_size"] == 1 and np.isnan(d.loc[60, "nearest_similarity"])  # noqa: E712
    assert list(d.loc[[50, 40, 30], "group_size"]) == [3, 3, 3]
    assert d.loc[40, "nearest_similarity"] == pytest.approx(0.98)
    assert ledger.rows_in == 6 and ledger.rows_out == 3 and ledger.balanced()
    assert dict(ledger.dropped) == {"near_duplicate": 2, "exact_duplicate": 1}


def test_a_released_row_represents_its_group_before_a_better_scored_one():
    """index.source = "scored": a group may hold rows outside the release; the kept copy must be a released one."""
    uid = np.array([1, 2])
    rows, _ = neardup.groups(uid, np.array([0.27, 0.265]), ["s", "s"], np.zeros(0, np.int64), np.zeros(0, np.int64),
                             np.zeros(0, np.float32), passed=np.array([False, True]))
    d = rows.to_pandas().set_index("uid")
    assert not d.loc[2, "duplicate"] and d.loc[1, "exact_dup_of"] == 2


def test_embedding_matrix_refuses_mixed_dimensions():
    col = pa.array([[1.0, 2.0], [1.0, 2.0, 3.0, 4.0]], pa.list_(pa.float16()))
    with pytest.raises(ValueError, match="dimensions"):
        embedding_matrix(col)


def test_part_names_sort_as_numbers_past_a_million_parts():
    from laion5b_spark.index.layout import parts_of
    from laion5b_spark.lake import FileEntry

    parts = parts_of([FileEntry(unit=str(i), key="k", path=f"f{i:08d}", rows=1) for i in range(1_000_001)])
    names = [p.name for p in parts]
    assert sorted(names) == names and len(names[0]) == len("part-") + 7


def test_embedding_matrix_reads_fp16_lists_without_python_lists():
    x = np.random.default_rng(4).standard_normal((5, 6)).astype(np.float16)
    col = pa.chunked_array([pa.array([list(r) for r in x[:2]], pa.list_(pa.float16())),
                            pa.array([list(r) for r in x[2:]], pa.list_(pa.float16()))])
    m = embedding_matrix(col)
    assert m.dtype == np.float16 and np.array_equal(m, x)
