"""The ingest job: URL lists in LAION's, DataComp's and CC12M's layouts -> pairs (-> dedup -> download)."""

from __future__ import annotations

import gzip
import io

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fault_server import FaultServer
from laion5b_spark import schemas
from laion5b_spark.dedup.job import DedupJob
from laion5b_spark.describe import main as describe_main
from laion5b_spark.download.job import DownloadJob
from laion5b_spark.extract.text import clean_caption
from laion5b_spark.ingest.job import IngestJob
from laion5b_spark.ingest.rows import LIST_COLUMNS
from laion5b_spark.keys import pair_uid
from laion5b_spark.lake import Lake
from laion5b_spark.urls import resolve_link

pytestmark = pytest.mark.spark

QUICK = ["--set", "run.commit_interval_s=0.5", "--set", "run.progress_interval_s=2"]
# bad rows of every kind: (url, caption, the reason the row is counted under)
BAD = [
    (None, "a caption without a URL", "missing_url"),
    ("   ", "a blank URL", "missing_url"),
    ("javascript:alert(1)", "a script, not an image", "bad_scheme"),
    ("images/relative.jpg", "a relative URL has no page here", "bad_scheme"),
    ("http://exa mple.com/a.jpg", "a space in the host", "invalid_url"),
    ("http://example.com/" + "a" * 2100 + ".jpg", "too long a URL", "url_too_long"),
    ("http://example.com/no-caption.jpg", None, "missing_text"),
    ("http://example.com/blank-caption.jpg", " \t\n ", "missing_text"),
    ("http://example.com/junk.jpg", "\x01\x02\x7f", "alt_too_short"),  # only control characters
]


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64 + seed, 48), (seed * 37 % 255, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


def expected_uid(url: str, caption: str) -> int:
    """What extract gives for an <img src=url alt=caption> (resolve_link, clean_caption, pair_uid)."""
    return pair_uid(resolve_link(url, "http://page.example/"), clean_caption(caption, raw_html=False, max_chars=4096))


def laion_list(urls: list[str], seed: int = 0) -> pa.Table:
    """A list in LAION's published layout (laion2B-multi's columns and types)."""
    n = len(urls)
    rng = np.random.default_rng(seed)
    captions = [f"Photo número {i}: una casa grande junto al río en verano" if i % 3 == 0 else
                f"Picture {i} of a red house beside the river in summer" for i in range(n)]
    return pa.table({
        "URL": pa.array(urls, pa.string()), "TEXT": pa.array(captions, pa.string()),
        "WIDTH": pa.array(rng.integers(100, 2000, n), pa.int64()),
        "HEIGHT": pa.array(rng.integers(100, 2000, n), pa.int64()),
        "similarity": pa.array(rng.random(n), pa.float64()),
        "hash": pa.array(rng.integers(-2**62, 2**62, n), pa.int64()),
        "punsafe": pa.array(rng.random(n), pa.float32()), "pwatermark": pa.array(rng.random(n), pa.float32()),
        "LANGUAGE": pa.array(["es" if i % 3 == 0 else ("" if i % 5 == 0 else "en") for i in range(n)]),
    })


def ingest(lake, *args) -> int:
    return IngestJob().main(["--lake", str(lake), *args, *QUICK])


def ledger(lake) -> dict:
    run = sorted(Lake(str(lake)).runs("ingest"), key=lambda r: r["run_id"])[-1]
    return run["counts"]["list_rows"]


def test_laion_parquet_list_to_pairs_then_dedup_and_download(spark, tmp_path):
    """A LAION-layout parquet list in two files (with duplicates in a file and across files, bad rows) ->
    pairs with extract's uids -> rerun adds nothing -> dedup -> download from a local server."""
    with FaultServer() as srv:
        good = [srv.route(f"/img/{i}.jpg", body=jpeg(i)) for i in range(12)]
        a = laion_list(good[:8], 1)
        bad = pa.table({c: (pa.array([u for u, _, _ in BAD], pa.string()) if c == "URL" else
                            pa.array([t for _, t, _ in BAD], pa.string()) if c == "TEXT" else
                            a.column(c).take([0] * len(BAD))) for c in a.column_names})
        part0 = pa.concat_tables([a, a.slice(2, 1), bad])  # row 2 again: a duplicate within the file
        part1 = pa.concat_tables([laion_list(good[8:], 2), a.slice(5, 1)])  # a row of part0 again
        lists = tmp_path / "laion2B-multi"
        lists.mkdir()
        pq.write_table(part0, lists / "part-00000.parquet", row_group_size=6)
        pq.write_table(part1, lists / "part-00001.parquet", row_group_size=6)
        lake = tmp_path / "lake"
        args = ["--input", str(lists), "--url-col", "URL", "--caption-col", "TEXT", "--language-col", "LANGUAGE",
                "--width-col", "WIDTH", "--height-col", "HEIGHT", "--keep-cols", "hash,punsafe",
                "--keep-cols", "pwatermark", "--set", "ingest.unit_rows=10"]
        assert ingest(lake, *args) == 0
        L = Lake(str(lake))
        pairs = L.table("pairs").read_arrow()
        schemas.check("pairs", pairs)
        # 18 rows in row groups of 6, units of >= 10 rows at group boundaries: [0, 12) [12, 18); 5 rows: [0, 5)
        spans = sorted((e.covers["file"][-9:], e.covers["start"], e.covers["stop"])
                       for e in L.table("pairs").all_entries())
        assert spans == [("0.parquet", 0, 12), ("0.parquet", 12, 18), ("1.parquet", 0, 5)]
        lg = ledger(lake)
        assert lg["rows_in"] == part0.num_rows + part1.num_rows
        want = {}
        for _, _, reason in BAD:
            want[reason] = want.get(reason, 0) + 1
        assert {**lg["dropped"], **lg["failed"]} == {**want, "duplicate_in_list": 1}
        assert lg["rows_out"] == pairs.num_rows == 8 + 4 + 1  # the cross-file duplicate is dedup's to drop
        samples = {(e["reason"], e["offset"]) for e in L.table("pairs").error_samples()}
        assert {("missing_url", 9), ("missing_url", 10), ("missing_text", 15), ("missing_text", 16)} <= samples
        # extract's uids, the list's language where it has one (else detected), where each row came from
        rows = {r["source_offset"] + 1000 * r["source_file"].endswith("1.parquet"): r for r in pairs.to_pylist()}
        for i in range(8):
            r = rows[i]
            assert r["uid"] == expected_uid(good[i], a.column("TEXT")[i].as_py())
            assert r["width"] == a.column("WIDTH")[i].as_py() and r["height"] == a.column("HEIGHT")[i].as_py()
            assert r["source_file"] == str(lists / "part-00000.parquet") and r["crawl"] == "laion2B-multi"
            assert r["page_url"] == f"{lists / 'part-00000.parquet'}#row={i}"
            given = a.column("LANGUAGE")[i].as_py()
            assert r["language"] == (given or "en")  # "" in the list: detected (an English caption)
            assert np.isnan(r["language_score"]) == bool(given)
        # kept columns, by the row's place in its list
        side = L.table("list_columns").read_arrow()
        assert side.schema.equals(LIST_COLUMNS) and side.num_rows == pairs.num_rows
        kept = {(r["source_file"], r["source_offset"]): orjson.loads(r["columns"]) for r in side.to_pylist()}
        k = kept[(str(lists / "part-00000.parquet"), 3)]
        assert k == {"hash": a.column("hash")[3].as_py(), "punsafe": pytest.approx(a.column("punsafe")[3].as_py()),
                     "pwatermark": pytest.approx(a.column("pwatermark")[3].as_py())}

        # a rerun adds nothing, and so does one that cuts units differently (resume is keyed by rows covered)
        manifests = [(lake / t / "_manifest.json").read_bytes() for t in ("pairs", "list_columns")]
        assert ingest(lake, *args) == 0
        assert ingest(lake, *args[:-1], "ingest.unit_rows=100") == 0
        assert [(lake / t / "_manifest.json").read_bytes() for t in ("pairs", "list_columns")] == manifests

        assert DedupJob().main(["--lake", str(lake)]) == 0
        unique = L.table("pairs_unique").read_arrow(columns=["uid", "url"])
        assert unique.num_rows == 12 and len(set(unique.column("uid").to_pylist())) == 12
        assert describe_main([str(lake), "--check", "--rows", "0"]) == 0

        assert DownloadJob().main(["--lake", str(lake), "--set", f'download.allow=["127.0.0.1:{srv.port}"]',
                                   "--set", "download.threads=4", *QUICK]) == 0
        images = L.table("images").read_arrow(columns=["url", "status"])
        assert images.num_rows == 12 and set(images.column("status").to_pylist()) == {"success"}


def test_datacomp_csv_and_jsonl_and_cc12m_tsv(spark, tmp_path):
    """Other layouts: DataComp's names (url, text) as CSV and gzipped JSONL, with rows that do not parse;
    CC12M's headerless TSV. Bad UTF-8 bytes and junk cost their row's text, never the file."""
    lists = tmp_path / "datacomp"
    lists.mkdir()
    rows = [(f"http://cdn.example/{i}.jpg", f"a small caption {i}, with a comma") for i in range(6)]
    csv_text = 'uid,url,text\n' + "".join(f'{i},{u},"{t}"\n' for i, (u, t) in enumerate(rows))
    csv_text += "99,http://cdn.example/x.jpg\n"  # one field short: malformed
    (lists / "shard0.csv").write_bytes(csv_text.encode() + b'7,http://cdn.example/bytes.jpg,caf\xe9 au lait\n')
    jl = [orjson.dumps({"uid": 10 + i, "url": u, "text": t}) for i, (u, t) in enumerate(rows[:3])]
    jl += [b'{"url": "http://cdn.example/broken.jpg", "text": ', b"[1, 2]", b"",
           orjson.dumps({"url": "http://cdn.example/n.jpg", "text": 12345})]
    (lists / "shard1.jsonl.gz").write_bytes(gzip.compress(b"\n".join(jl) + b"\n"))
    lake = tmp_path / "lake"
    assert ingest(lake, "--input", str(lists), "--caption-col", "text", "--keep-cols", "uid",
                  "--set", "ingest.language_detection=false") == 0
    lg = ledger(lake)
    assert lg["rows_in"] == 8 + 6 and lg["failed"] == {"malformed_row": 3}
    assert lg["dropped"] == {}
    pairs = Lake(str(lake)).table("pairs").read_arrow().to_pylist()
    assert len(pairs) == 11
    by = {(r["source_file"].rsplit("/", 1)[1], r["source_offset"]): r for r in pairs}
    assert by[("shard0.csv", 6)]["text"] == "caf\ufffd au lait"  # the bad byte, replaced; the row kept
    assert by[("shard1.jsonl.gz", 6)]["text"] == "12345"  # line 6: a number as a caption is its text
    assert by[("shard0.csv", 2)]["uid"] == expected_uid(*rows[2]) == by[("shard1.jsonl.gz", 2)]["uid"]
    assert {r["language"] for r in pairs} == {"nolang"}  # detection off, no language column
    side = Lake(str(lake)).table("list_columns").read_arrow().to_pylist()
    assert sorted(orjson.loads(r["columns"])["uid"] for r in side if r["source_file"].endswith(".csv")) == \
        [str(i) for i in range(6)] + ["7"]  # CSV values are text

    cc12m = tmp_path / "cc12m.tsv"
    cc12m.write_text("".join(f"http://cc.example/{i}.jpg\tA photo of a \"quoted\" thing number {i}\n"
                             for i in range(5)))
    assert ingest(lake, "--input", str(cc12m), "--column-names", "url,caption") == 0
    cc = [r for r in Lake(str(lake)).table("pairs").read_arrow().to_pylist() if r["crawl"] == "cc12m"]
    assert sorted(r["source_offset"] for r in cc) == [0, 1, 2, 3, 4]
    assert cc[0]["text"].startswith('A photo of a "quoted" thing') and cc[0]["language"] == "en"
    assert describe_main([str(lake), "--check", "--rows", "0"]) == 0


def test_list_on_s3(spark, moto_s3, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(**moto_s3)
    t = laion_list([f"http://s3list.example/{i}.jpg" for i in range(7)])
    with fs.open("l5s-test/lists/laion/part-0.parquet", "wb") as f:
        pq.write_table(t, f)
    opts = ",".join(f'{k} = "{v}"' for k, v in moto_s3.items())
    lake = tmp_path / "lake"
    assert ingest(lake, "--input", "s3://l5s-test/lists/laion/", "--url-col", "URL", "--caption-col", "TEXT",
                  "--set", f"ingest.input_storage_options={{{opts}}}") == 0
    pairs = Lake(str(lake)).table("pairs").read_arrow()
    assert pairs.num_rows == 7
    assert set(pairs.column("source_file").to_pylist()) == {"s3://l5s-test/lists/laion/part-0.parquet"}


def test_wrong_arguments_stop_before_any_work(tmp_path, capsys):
    lists = tmp_path / "l"
    lists.mkdir()
    pq.write_table(laion_list(["http://a.example/1.jpg"]), lists / "p.parquet")
    lake = tmp_path / "lake"
    assert ingest(lake, "--input", str(lists)) == 2  # default url / caption: LAION says URL / TEXT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--url-col 'url'" in err and "its columns: URL, TEXT, WIDTH" in err
    assert ingest(lake, "--input", str(lists), "--url-col", "URL", "--caption-col", "TEXT", "--keep-cols", "nope") == 2
    assert "--keep-cols nope 'nope'" in capsys.readouterr().err
    (lists / "urls.txt").write_text("http://a.example/1.jpg\n")
    assert ingest(lake, "--input", str(lists / "urls.txt")) == 2
    assert "give --input-format" in capsys.readouterr().err
    assert ingest(lake, "--input", str(lists / "urls.txt"), "--input-format", "xml") == 2
    assert "one of parquet, csv, tsv, jsonl" in capsys.readouterr().err
    assert ingest(lake, "--input", str(tmp_path / "missing.parquet")) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not (lake / "pairs").exists() and not (lake / "_runs" / "ingest").exists()
    (tmp_path / "a-file").write_text("x")
    assert ingest(tmp_path / "a-file", "--input", str(lists), "--url-col", "URL", "--caption-col", "TEXT") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err


def test_units_cover_each_row_once_whatever_unit_rows_and_a_changed_file_stops():
    from laion5b_spark.config import ConfigError
    from laion5b_spark.ingest.lists import ListFile, covered_rows, units_of
    from laion5b_spark.lake import FileEntry

    lf = ListFile("s3://b/l.parquet", "parquet", 1000, ("url",), (4, 4, 4, 4, 2))
    span = lambda units: [(u.get("start"), u.get("stop")) for u in units]  # noqa: E731
    assert span(units_of([lf], {}, 6)) == [(0, 8), (8, 16), (16, 18)]  # at row-group boundaries
    done = [FileEntry("a", "k", covers={"file": lf.url, "start": 0, "stop": 8, "bytes": 1000}),
            FileEntry("b", "k", covers={"file": lf.url, "start": 12, "stop": 16, "bytes": 1000})]
    assert span(units_of([lf], covered_rows(done, [lf]), 100)) == [(8, 12), (16, 18)]
    text = ListFile("/l/cc12m.tsv", "tsv", 50, ("url", "caption"))
    assert span(units_of([text], {}, 6)) == [(0, -1)]
    whole = [FileEntry("c", "k", covers={"file": text.url, "start": 0, "stop": -1, "bytes": 50})]
    assert units_of([text], covered_rows(whole, [text]), 6) == []
    with pytest.raises(ConfigError, match="is 1,000 bytes, 999 when it was ingested"):
        covered_rows([FileEntry("d", "k", covers={"file": lf.url, "start": 0, "stop": 8, "bytes": 999})], [lf])


def test_a_list_file_that_cannot_be_read_fails_its_unit(tmp_path):
    from laion5b_spark.accounting import ErrorSamples
    from laion5b_spark.config import load_config
    from laion5b_spark.job import Unit, UnitContext

    job = IngestJob()
    args = job.parser().parse_args(["--lake", str(tmp_path), "--input", str(tmp_path)])
    lake = Lake(str(tmp_path / "lake"))
    s = job.settings(args, load_config(), lake)
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(b"url,caption\n" + b"http://a.example/1.jpg,one\n" * 99)[:-9])
    for name in ("gone.parquet", "cut.parquet", "cut.csv.gz"):
        fmt = name.split(".")[1]
        unit = Unit(key=name, source=str(tmp_path / name), meta=(("format", fmt), ("start", 0), ("stop", 9)))
        result = job.process_unit(unit, UnitContext(lake.ref, s, ErrorSamples()))
        assert result.failed_reason == "input_unreachable" and name in result.failed_message


def test_bom_files_and_bad_quotes_cost_rows_not_files_and_a_list_keeps_its_settings(spark, tmp_path, capsys):
    """A UTF-8 BOM (Excel's CSV, some JSONL) is not part of the first column's name nor a bad first row; an
    unclosed quote and a quoted field longer than pyarrow's block cost their own row at most (a small block here:
    the same failure a 4 MiB block has with a longer field). Then the list's settings are recorded: a rerun that
    would read its rows another way (another --caption-col, another --list-name) stops before any work."""
    lists = tmp_path / "lists"
    lists.mkdir()
    row = "http://bom.example/{0}.jpg,a photo of a red house by the river number {0},{0}\n".format
    (lists / "a-bom.csv").write_bytes(("\ufeffurl,caption,uid\n" + "".join(row(i) for i in range(5))).encode())
    long_caption = "a caption\nover several lines " + "x" * 1500  # three blocks: "straddling object" in pyarrow
    quotes = ("url,caption,uid\n" + "".join(row(i) for i in range(10, 15))
              + 'http://bom.example/unclosed.jpg,"an unclosed quote,99\n'  # no other quote for 40+ rows
              + "".join(row(i) for i in range(20, 60))
              + f'http://bom.example/long.jpg,"{long_caption}",98\n'
              + "".join(row(i) for i in range(60, 63)))
    (lists / "b-quotes.csv").write_text(quotes)
    jl = [orjson.dumps({"url": f"http://bom.example/{i}.jpg", "caption": f"a jsonl caption {i}", "uid": i})
          for i in (70, 71)]
    (lists / "c-bom.jsonl").write_bytes(codecs_bom() + b"\n".join(jl) + b"\n")
    lake = tmp_path / "lake"
    args = ["--input", str(lists), "--set", "ingest.language_detection=false", "--set", "ingest.csv_block_bytes=512"]
    assert ingest(lake, *args) == 0
    lg = ledger(lake)
    assert lg["rows_in"] == 5 + (5 + 1 + 40 + 1 + 3) + 2 and lg["failed"] == {"malformed_row": 1}
    pairs = Lake(str(lake)).table("pairs").read_arrow().to_pylist()
    by = {(r["source_file"].rsplit("/", 1)[1], r["source_offset"]): r for r in pairs}
    assert sorted(o for f, o in by if f == "a-bom.csv") == [0, 1, 2, 3, 4]
    assert sorted(o for f, o in by if f == "c-bom.jsonl") == [0, 1]  # line 0, after the BOM, is a row
    quoted = sorted(o for f, o in by if f == "b-quotes.csv")
    assert quoted == list(range(5 + 40 + 1 + 3))  # all but the unclosed quote's row (not numbered, as pyarrow does)
    assert by[("b-quotes.csv", 5)]["url"] == "http://bom.example/20.jpg"  # the row after the bad quote
    assert by[("b-quotes.csv", 45)]["text"] == clean_caption(long_caption, raw_html=False, max_chars=4096)
    assert by[("b-quotes.csv", 48)]["url"] == "http://bom.example/62.jpg"
    errors = Lake(str(lake)).table("pairs").error_samples()
    assert [e["excerpt"] for e in errors if e["reason"] == "malformed_row"] == \
        ['http://bom.example/unclosed.jpg,"an unclosed quote,99\n']
    recorded = Lake(str(lake)).table("pairs").meta()
    assert recorded["ingest.list.lists.caption_col"] == "caption" and recorded["ingest.list.lists.keep_cols"] == []

    # a killed run's rerun with another caption column: one line naming it, before any work, nothing written
    (lists / "d-more.csv").write_text("url,caption,uid\n" + row(80))
    capsys.readouterr()
    manifest, runs = (lake / "pairs" / "_manifest.json").read_bytes(), len(Lake(str(lake)).runs("ingest"))
    assert ingest(lake, *args, "--caption-col", "uid") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--caption-col 'uid': list 'lists'" in err and \
        "ingested with --caption-col 'caption'" in err
    assert ingest(lake, *args, "--set", "ingest.min_text_length=3") == 2
    assert "ingest.min_text_length 3" in capsys.readouterr().err
    # the same files under another list name: their crawl column would say two names
    assert ingest(lake, *args, "--list-name", "other") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was ingested as list 'lists'" in err
    assert (lake / "pairs" / "_manifest.json").read_bytes() == manifest
    assert len(Lake(str(lake)).runs("ingest")) == runs
    assert ingest(lake, *args) == 0 and ledger(lake)["rows_out"] == 1  # the same settings: the new file


def codecs_bom() -> bytes:
    import codecs

    return codecs.BOM_UTF8


def test_row_by_row_reader_numbers_rows_as_pyarrow_does(tmp_path):
    """The reader pyarrow hands a file to after a parse error: strict quotes, a record over 16 blocks stops and is
    read again from its second line, TSV lines over a block, rows handed on before the error not handed on twice
    (numbers go on where they stopped)."""
    from laion5b_spark.ingest.lists import read_batches
    from laion5b_spark.job import Unit

    def read(name, text, columns, names=(), block=256, batch_rows=7):
        path = tmp_path / name
        path.write_text(text)
        unit = Unit(key=str(path), source=str(path), meta=(("format", name.rsplit(".", 1)[1]), ("start", 0),
                                                          ("stop", -1)))
        bad, out = [], []
        for t, numbers, _ in read_batches(unit, columns, names, batch_rows, {}, bad, block):
            out += zip(numbers.tolist(), *(t.column(c).to_pylist() for c in columns))
        return out, [b for _, b in bad]

    rows = "".join(f"http://r.example/{i}.jpg,caption {i}\n" for i in range(30))  # 30 rows of ~33 bytes
    text = ("url,caption\n" + rows + 'http://r.example/stray.jpg,"a stray" quote\n' + "\n"
            + 'http://r.example/open.jpg,"never closed\n' + rows + "http://r.example/3fields.jpg,a,b\n"
            + 'http://r.example/nl.jpg,"two\nlines"\n')
    out, bad = read("quotes.csv", text, ["url", "caption"])
    assert [n for n, *_ in out] == list(range(61))  # every row but the three malformed, numbered in order
    assert out[29][1:] == ("http://r.example/29.jpg", "caption 29") and out[30][1] == "http://r.example/0.jpg"
    assert out[60][1:] == ("http://r.example/nl.jpg", "two\nlines")
    assert bad == ['http://r.example/stray.jpg,"a stray" quote\n', 'http://r.example/open.jpg,"never closed\n',
                   "http://r.example/3fields.jpg,a,b\n"]
    # a quote whose field runs past 16 blocks: its line is the one malformed row
    far = "url,caption\n" + 'http://r.example/far.jpg,"runs on\n' + rows * 5 + 'http://r.example/end.jpg,"x"\n'
    out, bad = read("far.csv", far, ["url"], block=64)
    assert len(out) == 151 and bad == ['http://r.example/far.jpg,"runs on\n']
    tsv = "".join(f"http://t.example/{i}.jpg\tcaption {i}\n" for i in range(3)) + "http://t.example/l.jpg\t" + \
        "y" * 1000 + "\n" + "http://t.example/9.jpg\tcaption 9\n"
    out, bad = read("long.tsv", tsv, ["url", "caption"], ("url", "caption"))
    assert [(n, u) for n, u, _ in out] == [(i, f"http://t.example/{j}.jpg") for i, j in enumerate("012l9")]
    assert out[3][2] == "y" * 1000 and bad == []


def test_the_default_list_name_does_not_hang_on_the_order_of_inputs(tmp_path):
    from laion5b_spark.config import load_config

    job = IngestJob()
    lake = Lake(str(tmp_path / "lake"))
    inputs = ["s3://b/laion2B-multi/", "s3://b/laion2B-en/"]
    names = {job.settings(job.parser().parse_args(["--lake", str(tmp_path), "--input", *order]), load_config(),
                          lake).list_name for order in (inputs, inputs[::-1])}
    assert names == {"laion2B-en"}
