"""One input file -> rows and ledgers, without Spark."""

import io
import os

import orjson
from warcio.warcwriter import WARCWriter

from conftest import shared_sample
from laion5b_spark import schemas
from laion5b_spark.accounting import ErrorSamples
from laion5b_spark.config import load_config
from laion5b_spark.extract.inputs import list_units
from laion5b_spark.extract.unit import extract_unit
from laion5b_spark.extract.settings import ExtractSettings
from laion5b_spark.job import Unit, UnitContext

COLS = ["uid", "url", "text", "page_url", "language", "license"]


def run(path_or_url, **overrides):
    cfg = load_config(None, [f"extract.{k}={v}" for k, v in overrides.items()])
    errors = ErrorSamples()
    unit = Unit(key=str(path_or_url), source=str(path_or_url))
    if os.path.exists(str(path_or_url)):
        [unit] = list_units([str(path_or_url)], "", {})  # as the job lists it (crawl id from the path)
    r = extract_unit(unit, UnitContext(None, ExtractSettings.from_config(cfg), errors))
    for ledger in r.ledgers.values():
        assert ledger.balanced(), ledger.describe()
    return r, errors


def rows(result):
    return sorted(map(orjson.dumps, result.rows.select(COLS).to_pylist()))


def test_warc_and_its_wat_give_the_same_pairs(sample_crawl):
    root = sample_crawl["root"]
    total = 0
    for warc, wat in zip(sample_crawl["warc"], sample_crawl["wat"]):
        a, _ = run(os.path.join(root, warc))
        b, _ = run(os.path.join(root, wat))
        assert rows(a) == rows(b)
        assert a.ledgers["img_tags"].to_dict() == b.ledgers["img_tags"].to_dict()
        total += a.rows.num_rows
    assert total > 300


def test_wat_with_varied_key_order_gives_the_same_pairs(tmp_path, sample_crawl):
    from laion5b_spark.sample.crawl import warc_to_wat

    warc = os.path.join(sample_crawl["root"], sample_crawl["warc"][0])
    wat = str(tmp_path / "varied.wat.gz")
    warc_to_wat(warc, wat, vary_key_order=True, seed=3)
    assert rows(run(warc)[0]) == rows(run(wat)[0])


def test_filters_each_counted(sample_crawl):
    r, _ = run(os.path.join(sample_crawl["root"], sample_crawl["wat"][0]))
    img = r.ledgers["img_tags"]
    for reason in ("no_alt", "alt_too_short", "bad_scheme", "excluded_extension", "url_too_long",
                   "duplicate_in_page"):
        assert img.dropped[reason] > 0, reason
    t = r.rows
    schemas.check("pairs", t)
    urls = t.column("url").to_pylist()
    texts = t.column("text").to_pylist()
    assert all(u.startswith(("http://", "https://")) and "#" not in u and len(u) <= 2000 for u in urls)
    assert not any(u.lower().endswith(".svg") for u in urls)
    assert all(len(x) >= 5 and x == " ".join(x.split()) and "&amp;" not in x for x in texts)
    pages = list(zip(t.column("page_url").to_pylist(), urls, texts))
    assert len(pages) == len(set(pages))  # no (url, text) twice on a page
    langs = set(t.column("language").to_pylist())
    assert {"en", "ru", "ja", "zh"} <= langs
    assert any(x for x in t.column("license").to_pylist())
    assert not any(t.column("width").to_pylist())  # Common Crawl's WAT does not carry img width/height ...
    warc, _ = run(os.path.join(sample_crawl["root"], sample_crawl["warc"][0]))
    assert any(warc.rows.column("width").to_pylist())  # ... the HTML does
    assert set(t.column("crawl").to_pylist()) == {"CC-MAIN-2099-01"}


def test_min_alt_length_is_configurable(sample_crawl):
    path = os.path.join(sample_crawl["root"], sample_crawl["wat"][0])
    a, _ = run(path)
    b, _ = run(path, min_alt_length=3)
    assert b.rows.num_rows > a.rows.num_rows  # "logo" (4 chars) now passes
    assert "logo" in b.rows.column("text").to_pylist() and "logo" not in a.rows.column("text").to_pylist()


def test_real_common_crawl_excerpt():
    r, errors = run(shared_sample("cc-excerpt.warc.gz"))
    t = r.rows.to_pylist()
    assert r.ledgers["records"].rows_in == 50 and len(t) == 24
    by_text = {row["text"]: row for row in t}
    assert by_text["Стратегия пожарной безопасности"]["url"] == "http://01spb.ru/logo.png"
    assert by_text["Стратегия пожарной безопасности"]["language"] == "ru"
    assert by_text["中国新闻网"]["language"] == "zh"
    assert not errors.samples


def _write_wat(path, payloads):
    with open(path, "wb") as out:
        w = WARCWriter(out, gzip=True)
        for i, p in enumerate(payloads):
            w.write_record(w.create_warc_record(f"http://p{i}.example/", "metadata", payload=io.BytesIO(p),
                                                warc_content_type="application/json"))


def test_bad_wat_records_are_counted_and_the_rest_kept(tmp_path):
    good = orjson.dumps({"Envelope": {"Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {
        "Links": [{"path": "IMG@/src", "url": "http://i.example/a.jpg", "alt": "A lovely red bicycle"}]}}}}})
    huge_alt = orjson.dumps({"Envelope": {"Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {
        "Links": [{"path": "IMG@/src", "url": "http://i.example/b.jpg", "alt": "word " * 200_000}]}}}}})
    path = tmp_path / "bad.wat.gz"
    # a record is only parsed as far as its image links need: broken JSON is caught where it holds images
    broken = good[: good.index(b"A lovely") + 4]
    _write_wat(path, [good, broken, huge_alt, good])
    r, errors = run(path)
    assert r.ledgers["records"].failed["invalid_json"] == 1
    assert r.rows.num_rows == 3  # good twice (two pages), and the huge alt cut to max_alt_chars and kept
    assert max(len(x) for x in r.rows.column("text").to_pylist()) <= 4096
    assert [e["reason"] for e in errors.samples] == ["invalid_json"]


def test_truncated_gzip_keeps_pairs_before_the_cut(tmp_path, sample_crawl):
    src = os.path.join(sample_crawl["root"], sample_crawl["wat"][1])
    full, _ = run(src)
    data = open(src, "rb").read()
    cut = tmp_path / "cut.wat.gz"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    r, errors = run(cut)
    assert r.ledgers["records"].failed["truncated_file"] == 1
    assert 0 < r.rows.num_rows < full.rows.num_rows
    assert set(rows(r)) <= set(rows(full))
    # the record the cut goes through is its own invalid_json (its JSON ends early), then the file's truncation
    assert [e["reason"] for e in errors.samples] in (["truncated_file"], ["invalid_json", "truncated_file"])


def test_shared_bad_files_never_raise():
    for name in ("example-trunc.warc", "example-bad.warc.gz.bad", "example-bad-non-chunked.warc.gz",
                 "example-wrong-chunks.warc.gz", "example-space-in-target-uri.warc.gz",
                 "example-wget-bad-target-uri.warc.gz", "example.arc.gz", "clipped.warc.gz", "README.md"):
        r, _ = run(shared_sample(name))
        assert r.failed_reason is None
    r, _ = run(shared_sample("example.arc.gz"))
    assert r.ledgers["records"].failed["unsupported_format"] == 1
    r, _ = run(shared_sample("clipped.warc.gz"))
    assert r.rows.num_rows == 6 and r.ledgers["records"].failed["truncated_file"] == 1


def test_http_input_and_unreachable_input(http_dir, sample_crawl):
    www, base = http_dir
    src = os.path.join(sample_crawl["root"], sample_crawl["wat"][0])
    (www / "a.wat.gz").write_bytes(open(src, "rb").read())
    a, _ = run(f"{base}/a.wat.gz")
    assert rows(a) == rows(run(src)[0])
    r, errors = run(f"{base}/missing.wat.gz", input_retries=1, input_retry_wait_s=0.01)
    assert r.failed_reason == "input_unreachable" and "missing.wat.gz" in r.failed_message
    assert errors.samples[0]["reason"] == "input_unreachable"
    r, _ = run("http://127.0.0.1:1/nothing-listens-here.wat.gz", input_retries=1, input_retry_wait_s=0.01)
    assert r.failed_reason == "input_unreachable"


def _rows_with_offsets(result):
    return sorted(zip(result.rows.column("source_offset").to_pylist(), map(orjson.dumps, result.rows.select(
        ["uid", "url", "text", "page_url"]).to_pylist())))


def test_too_large_content_length_loses_no_pair_and_moves_none_to_another_page(tmp_path, sample_crawl):
    # issue 16: Content-Length 20,000,000 on one response swallowed the records after it (39 of 78 pairs lost,
    # the rest attributed to the wrong page)
    import gzip

    from zlib_ng import zlib_ng as zlib

    src = os.path.join(sample_crawl["root"], sample_crawl["warc"][0])
    data = open(src, "rb").read()
    members = []
    while data:
        d = zlib.decompressobj(31)
        members.append(d.decompress(data))
        data = d.unused_data
    k = next(i for i, m in enumerate(members) if b"WARC-Type: response" in m[:300] and i > 3)
    head, sep, rest = members[k].partition(b"\r\n\r\n")
    members[k] = b"\r\n".join(b"Content-Length: 20000000" if line.startswith(b"Content-Length") else line
                              for line in head.split(b"\r\n")) + sep + rest
    bad = tmp_path / "bad-length.warc.gz"
    bad.write_bytes(b"".join(gzip.compress(m, mtime=0) for m in members))
    full, _ = run(src)
    got, errors = run(bad)
    assert rows(got) == rows(full) and full.rows.num_rows > 30
    assert got.ledgers["records"].failed == {"corrupt_record": 1}
    assert "Content-Length 20000000" in errors.samples[0]["message"]


def test_member_inflating_to_the_end_of_the_real_excerpt_hides_no_later_pair(tmp_path):
    # issue 16: 4,096 zero bytes over a member of the real excerpt; zlib inflated the rest of the file as its data
    data = shared_sample("cc-excerpt.warc.gz").read_bytes()
    at = 116_012
    bad = tmp_path / "zeros.warc.gz"
    bad.write_bytes(data[:at] + b"\x00" * 4096 + data[at + 4096:])
    full, _ = run(shared_sample("cc-excerpt.warc.gz"))
    got, _ = run(bad)
    damaged = (110_823, 124_647)  # the member the zeros land in, up to the next intact member
    want = [r for r in _rows_with_offsets(full) if not damaged[0] <= r[0] < damaged[1]]
    assert _rows_with_offsets(got) == want and any(r[0] >= damaged[1] for r in want)
    assert got.ledgers["records"].failed == {"corrupt_gzip": 1}


def test_members_split_anywhere_give_the_same_pairs_and_no_failed_record(tmp_path, sample_crawl):
    # review 16 #5: gzip members that do not line up with records (a boundary inside the CRLF CRLF after a block,
    # or anywhere else) are one valid stream: nothing may be cut or counted corrupt
    import gzip
    import random

    rng = random.Random(16)
    root = sample_crawl["root"]
    for name in (sample_crawl["warc"][0], sample_crawl["wat"][0]):
        src = os.path.join(root, name)
        stream = gzip.decompress(open(src, "rb").read())
        ends = [i + 4 for i in range(len(stream)) if stream.startswith(b"\r\n\r\nWARC/1.", i)] + [len(stream)]
        cuts = sorted(rng.sample(range(1, len(stream)), 40) + [e - rng.randint(0, 5) for e in ends])
        pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
        split = tmp_path / os.path.basename(name)
        split.write_bytes(b"".join(gzip.compress(p, mtime=0) for p in pieces))
        full, _ = run(src)
        got, errors = run(split)
        assert rows(got) == rows(full) and full.rows.num_rows > 30
        assert got.ledgers["records"].to_dict() == full.ledgers["records"].to_dict()
        assert not got.ledgers["records"].failed and not errors.samples
