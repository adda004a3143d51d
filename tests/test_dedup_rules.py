"""Dedup without Spark: removal lists, row classification, keys, survivor choice and output layout."""

import hashlib

import numpy as np

from laion5b_spark.lake import FileEntry
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laion5b_spark.dedup.lists import DomainOptOut, ListError, load_denylists, load_opt_out
from laion5b_spark.dedup.passes import gather_positions, key_blobs, min_per_key, mix64, survivor_blobs
from laion5b_spark.dedup.plan import InputFile, Task, make_layout, make_plan
from laion5b_spark.dedup.rows import CODES, RowRules, classify, file_order, hosts, keys_of, opted_out
from laion5b_spark.config import load_config
from laion5b_spark.keys import pair_uid, url_key


def test_text_denylist_kinds_comments_and_directive(tmp_path):
    sha = hashlib.sha256(b"http://a.example/x.jpg").hexdigest()
    p = tmp_path / "deny.txt"
    p.write_text(
        "# removal requests, 2026-11\n"
        "HTTP://Bad.Example:80/img.jpg#frag\n"
        f"url_sha256:{sha.upper()}\n"
        "\n"
        "#kind=image_md5\n"
        f"{'ab' * 16}   # from the hotline\n"
        f"sha256:{'cd' * 32}\n")
    d = load_denylists([str(p)])
    assert d.urls == {"http://bad.example/img.jpg"}  # normalized, so any spelling of it matches
    assert d.url_sha256 == {sha}
    assert d.image_md5 == {"ab" * 16}
    assert d.image_sha256 == {"cd" * 32}


def test_csv_and_parquet_denylists(tmp_path):
    c = tmp_path / "l.csv"
    c.write_text("URL,url_md5\nhttp://x.example/1.jpg,\n,%s\n" % ("0f" * 16))
    pq.write_table(pa.table({"sha256": ["aa" * 32, None], "note": ["x", "y"]}), tmp_path / "l.parquet")
    d = load_denylists([str(c), str(tmp_path / "l.parquet")])
    assert d.urls == {"http://x.example/1.jpg"} and d.url_md5 == {"0f" * 16} and d.image_sha256 == {"aa" * 32}


@pytest.mark.parametrize("content,where", [
    ("http://ok.example/a.jpg\nurl_sha256:1234\n", ":2"),  # wrong length
    ("# no kind given\n" + "ab" * 32 + "\n", ":2"),  # a bare hash needs #kind=
    ("nonsense:abcd\n", ":1"),
    ("#kind=colour\n", ":1"),
])
def test_malformed_text_denylist_names_file_and_line(tmp_path, content, where):
    p = tmp_path / "bad.txt"
    p.write_text(content)
    with pytest.raises(ListError) as e:
        load_denylists([str(p)])
    assert f"{p}{where}" in str(e.value)


def test_malformed_csv_and_parquet_denylists(tmp_path):
    c = tmp_path / "bad.csv"
    c.write_text("url_sha256\n%s\nnot-hex\n" % ("ab" * 32))
    with pytest.raises(ListError, match=f"{c}:3"):
        load_denylists([str(c)])
    c.write_text("link,comment\nhttp://x/,y\n")
    with pytest.raises(ListError, match=f"{c}:1: no usable column"):
        load_denylists([str(c)])
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ListError, match="not a readable parquet"):
        load_denylists([str(p)])
    with pytest.raises(ListError, match="no such list file"):
        load_denylists([str(tmp_path / "missing.txt")])


def test_opt_out_list(tmp_path):
    p = tmp_path / "optout.txt"
    p.write_text("Exact.Example.com\n.suffix.org   # all of it\n*.star.net\n\n")
    rules = load_opt_out([str(p)])
    assert rules.exact == {"exact.example.com"} and rules.suffixes == {"suffix.org", "star.net"}
    assert rules.matches("exact.example.com") and not rules.matches("a.exact.example.com")
    assert rules.matches("suffix.org") and rules.matches("a.b.suffix.org") and not rules.matches("notsuffix.org")
    p.write_text("ok.example\nhttp://a.example/x\n")
    with pytest.raises(ListError, match=f"{p}:2: .* is a URL"):
        load_opt_out([str(p)])


_label = st.sampled_from(["a", "b", "ex", "example", "co", "uk", "xn--bcher-kva", "com"])
_host = st.lists(_label, min_size=1, max_size=5).map(".".join)


@settings(max_examples=200, deadline=None)
@given(hosts_=st.lists(_host, min_size=1, max_size=20), exact=st.sets(_host, max_size=4),
       suffixes=st.sets(_host, max_size=4))
def test_vectorized_opt_out_equals_plain_rule(hosts_, exact, suffixes):
    rules = DomainOptOut(exact=exact, suffixes=suffixes)
    got = opted_out(pa.array(hosts_), rules)
    assert got.tolist() == [rules.matches(h) for h in hosts_]


def test_hosts_are_extracted_like_a_url_parser():
    urls = ["http://User@Example.COM.:8080/x", "https://[::1]/a", "https://a.b/c?d#e", "nonsense", None]
    assert hosts(pa.array(urls)).to_pylist() == ["example.com", "[::1]", "a.b", "", ""]


def _rows(urls, texts, uids=None):
    uids = uids if uids is not None else [pair_uid(u, t) if u and t else 1 for u, t in zip(urls, texts)]
    return pa.table({"uid": pa.array(uids, pa.int64()), "url": pa.array(urls, pa.string()),
                     "text": pa.array(texts, pa.string())})


def test_classify_codes_and_precedence(tmp_path):
    (tmp_path / "d.txt").write_text("http://listed.example/a.jpg\nurl_md5:%s\n"
                                    % hashlib.md5(b"http://hashed.example/b.jpg").hexdigest())
    (tmp_path / "o.txt").write_text(".optout.example\n")
    rules = RowRules("url_text", 20, load_denylists([str(tmp_path / "d.txt")]),
                     load_opt_out([str(tmp_path / "o.txt")]))
    t = _rows(
        ["http://ok.example/1.jpg", None, "", "http://ok.example/2.jpg", "ftp://files.example/3.jpg",
         "http://ok.example/4.jpg", "http://ok.example/5.jpg", "http://cdn.optout.example/6.jpg",
         "HTTP://LISTED.example:80/a.jpg", "http://hashed.example/b.jpg", None],
        ["fine", "x", "x", "   ", "x", "x", "y" * 21, "x", "x", "x", None],
        uids=[1, 2, 3, 4, 5, None, 7, 8, 9, 10, 11])
    names = [CODES[c] or "ok" for c in classify(t, rules)]
    assert names == ["ok", "missing_url", "missing_url", "missing_text", "invalid_url", "missing_uid",
                     "text_too_long", "domain_opt_out", "denylisted", "denylisted", "missing_url"]


def test_url_key_follows_the_documented_normal_form():
    same = ["HTTP://Example.COM:80/a%7eb?q=%c3%a9#frag", "http://example.com/a~b?q=%C3%A9"]
    assert len({url_key(u) for u in same}) == 1
    assert url_key("http://example.com/a") != url_key("http://example.com/a/")  # trailing slash kept
    assert url_key("http://example.com/?a=1&b=2") != url_key("http://example.com/?b=2&a=1")  # order kept
    t = _rows(same + ["http://example.com/other"], ["x", "y", "x"])
    k = keys_of(t, "url")
    assert k[0] == k[1] != k[2]
    assert keys_of(t, "url_text").tolist() == [pair_uid(u, x) for u, x in zip(same + ["http://example.com/other"],
                                                                              ["x", "y", "x"])]


def test_file_order_is_stable_by_offset():
    assert file_order(pa.array([1, 2, 2, 5])) is None
    assert file_order(pa.array([5, 1, 5, 1])).tolist() == [1, 3, 0, 2]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(-1, 50)), max_size=60))
def test_min_per_key_keeps_the_lowest_position(pairs):
    keys = np.array([k for k, _ in pairs], dtype=np.int64)
    pos = np.array([p for _, p in pairs], dtype=np.int64)
    k, p = min_per_key(keys, pos)
    expected: dict[int, int] = {}
    for a, b in pairs:
        expected[a] = min(b, expected.get(a, b))
    assert dict(zip(k.tolist(), p.tolist())) == expected
    assert k.tolist() == sorted(expected)


def test_key_and_survivor_passes_choose_the_earliest_row():
    """Three files; duplicates within and across them, and one key already in the table (-1)."""
    def file(urls, texts):
        t = _rows(urls, texts)
        return t.append_column("source_offset", pa.array(range(len(urls)), pa.int64()))

    files = {"f0": file(["http://a/1", "http://a/2", "http://a/1"], ["x", "y", "x"]),
             "f1": file(["http://a/2", "http://a/3"], ["y", "z"]),
             "f2": file(["http://a/3", "http://a/4"], ["z", "old"])}
    existing = {"u0": _rows(["http://a/4"], ["old"])}
    read = lambda path, cols: (files | existing)[path].select(cols)  # noqa: E731
    rules = RowRules()
    tasks = [Task(0, (InputFile(0, "f0", "k0", 3, 1), InputFile(1, "f1", "k1", 2, 1))),
             Task(1, (InputFile(2, "f2", "k2", 2, 1),))]
    blobs = [b for t in tasks for b in key_blobs(t, False, read, rules, 3)]
    blobs += list(key_blobs(Task(0, (InputFile(-1, "u0", "", 1, 1),)), True, read, rules, 3))
    by_bucket: dict[int, list] = {}
    for bucket, blob in blobs:
        by_bucket.setdefault(bucket, []).append(blob)
    task_of_rank = np.array([0, 0, 1], dtype=np.int32)
    routed: dict[int, list] = {}
    for blobs_ in by_bucket.values():
        for task, blob in survivor_blobs(blobs_, task_of_rank):
            routed.setdefault(task, []).append(blob)
    got = {t: [(int(p >> 32), int(p & 0xFFFFFFFF)) for p in gather_positions(b)] for t, b in routed.items()}
    # f0 row 0 (a/1), f0 row 1 (a/2), f1 row 1 (a/3); a/4 "old" is already in the table
    assert got == {0: [(0, 0), (0, 1), (1, 1)]}


def _plan(rows_per_file, shuffle=False, file_mb=1.0):
    """Input files of ~1000 bytes per row."""
    cfg = load_config(None, [f"dedup.shuffle={'true' if shuffle else 'false'}", f"dedup.file_mb={file_mb}",
                             "dedup.rows_per_task=250"])
    entries = [FileEntry(unit=f"u{i}", key=f"crawl-data/CC-MAIN-2024-{10 + i % 2}/x{i}", path=f"data/{i}.parquet",
                         rows=n, bytes=n * 1000) for i, n in enumerate(rows_per_file)]
    return make_plan(entries, set(), [], cfg), cfg


def test_plan_orders_by_crawl_then_key_and_cuts_tasks():
    plan, _ = _plan([100, 200, 300, 400])
    assert plan.buckets == 1 and len(plan.batch_id) == 12
    assert [f.key for f in plan.inputs] == ["crawl-data/CC-MAIN-2024-10/x0", "crawl-data/CC-MAIN-2024-10/x2",
                                            "crawl-data/CC-MAIN-2024-11/x1", "crawl-data/CC-MAIN-2024-11/x3"]
    assert [[f.rank for f in t.files] for t in plan.tasks] == [[0], [1], [2], [3]]
    assert plan.task_of_rank().tolist() == [0, 1, 2, 3]


def test_layout_cuts_contiguous_input_ranges_by_estimated_output_size():
    plan, cfg = _plan([1000] * 6, file_mb=1.0)  # 1000 B per row
    survivors = np.array([900, 500, 700, 0, 0, 100])
    lay = make_layout(plan, survivors, cfg)
    # 0.9 MB, then 0.9+0.5 >= 1 MiB closes; 0.7 + (0 + 0: input 4 MB cap not reached) + 0.1 -> one more
    assert lay.groups == [(0, 2), (2, 6)]
    assert lay.group_of_rank().tolist() == [0, 0, 1, 1, 1, 1]
    # a run of duplicates-only files still closes at 4x file_mb of input, so no task reads the whole batch
    plan, cfg = _plan([2000] * 6, file_mb=1.0)
    assert make_layout(plan, np.zeros(6, dtype=np.int64), cfg).groups == [(0, 3), (3, 6)]
    a = mix64(np.arange(10, dtype=np.uint64))
    assert len(set(a.tolist())) == 10 and a.tolist() == mix64(np.arange(10, dtype=np.uint64)).tolist()


_urls = st.builds(
    lambda scheme, user, host, port, rest: f"{scheme}://{user}{host}{port}{rest}",
    st.sampled_from(["http", "https", "HTTP"]), st.sampled_from(["", "user@", "u:p@"]),
    st.sampled_from(["Example.COM", "a.b.c", "[::1]", "host.", "xn--bcher-kva.de"]),
    st.sampled_from(["", ":8080", ":443"]), st.sampled_from(["", "/", "/x/y?q=1", "?q", "#f", "/a:b@c"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_urls, min_size=1, max_size=10))
def test_vectorized_hosts_equal_the_url_parser(urls):
    from laion5b_spark.urls import host_of

    expected = [f"[{h}]" if ":" in h else h for h in (host_of(u).lower() for u in urls)]
    assert hosts(pa.array(urls)).to_pylist() == expected


def test_key_pass_of_a_task_with_no_eligible_row_sends_nothing():
    t = _rows([None, "ftp://x/y"], ["a", "b"]).append_column("source_offset", pa.array([0, 1], pa.int64()))
    task = Task(0, (InputFile(0, "f", "k", 2, 1),))
    assert list(key_blobs(task, False, lambda p, c: t.select(c), RowRules(), 4)) == []
