"""A small but complete lake for the inspection tests (notebook API, stats, the notebook itself).

pairs, pairs_unique and images are written directly, with manifest counts and run records shaped like the real
jobs' (extract and download per unit, dedup per run); scored and dataset come from a real clip run with the
project's tiny shapes CLIP. Built once per test process (a session's tests share it; they only read it).
"""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pytest

from laion5b_spark import schemas
from laion5b_spark.accounting import Ledger
from laion5b_spark.job import Unit
from laion5b_spark.keys import pair_uid
from laion5b_spark.lake import Lake, new_run_id, utcnow
from laion5b_spark.sample import shapes

ASSET = os.path.join(os.path.dirname(shapes.__file__), "assets", "l5s-tiny-shapes")
HOSTS = ["www.red-cdn.test", "img.shapes.test", "pics.example.org", "img.shapes.test"]
LANGS = ["en", "en", "de", "fr", "en"]
N = 80  # unique pairs
DUPLICATES = 8  # pairs rows repeating an earlier (url, text): dedup drops them
DOWNLOADED = 70  # pairs_unique rows that reached images; the other 10 are still to download
FAILED = {"http_404": 4, "not_an_image": 2}
_built: dict[str, str] = {}


def _pairs_rows(items: list[tuple[str, str]], source_file: str) -> pa.Table:
    n = len(items)
    return pa.table({
        "uid": pa.array([pair_uid(u, t) for u, t in items], pa.int64()),
        "url": [u for u, _ in items], "text": [t for _, t in items],
        "page_url": [f"https://site.test/page/{i}.html" for i in range(n)],
        "language": [LANGS[i % len(LANGS)] for i in range(n)],
        "language_score": pa.array([0.99] * n, pa.float32()),
        "source_file": [source_file] * n, "source_offset": pa.array(range(n), pa.int64()),
        "crawl": ["CC-MAIN-2024-10"] * n, "license": pa.nulls(n, pa.string()),
        "width": pa.nulls(n, pa.int32()), "height": pa.nulls(n, pa.int32()),
    }, schema=schemas.PAIRS)


def _commit(lake: Lake, table: str, units: dict[str, tuple[pa.Table, dict]], run_id: str, **kw) -> None:
    """Stage one file per unit (with its ledgers, small row groups) and commit them, as a job's driver does."""
    t = lake.table(table)
    entries = [t.write_unit(run_id, Unit(key, key).id, key, rows, counts=counts, row_group_size=16)
               for key, (rows, counts) in units.items()]
    t.commit(entries, run_id, **kw)


def _record(lake: Lake, job: str, run_id: str, table: str, counts: dict, rows: int) -> None:
    lake.write_run(job, run_id, {"job": job, "run_id": run_id, "status": "succeeded", "started": utcnow(),
                                 "ended": utcnow(), "seconds": 1.5, "table": table, "counts": counts,
                                 "table_rows": rows, "config": {}})


def build(root: str) -> str:
    lake = Lake(root)
    shots = shapes.pairs(N, seed=7)
    items = [(f"http://{HOSTS[i % len(HOSTS)]}/p/{i}.jpg", caption) for i, (_, caption, _) in enumerate(shots)]
    jpg = {pair_uid(u, t): b for (u, t), (b, _, _) in zip(items, shots)}

    # extract: two files; the second repeats the first DUPLICATES pairs (the same image on another page)
    halves = {"crawl/a.warc.wat.gz": items[:40], "crawl/b.warc.wat.gz": items[40:] + items[:DUPLICATES]}
    extract_units, total = {}, {"img_tags": Ledger("img_tags"), "records": Ledger("records")}
    for i, (key, part) in enumerate(halves.items()):
        tags = Ledger("img_tags", rows_in=len(part) + 5 + i, rows_out=len(part))
        tags.drop("no_alt", 3 + i)
        tags.drop("alt_too_short", 2)
        records = Ledger("records", rows_in=30, rows_out=25)
        records.drop("no_images", 5)
        counts = {"img_tags": tags.to_dict(), "records": records.to_dict()}
        total["img_tags"].add(tags)
        total["records"].add(records)
        extract_units[key] = (_pairs_rows(part, key), counts)
    rid = new_run_id()
    _commit(lake, "pairs", extract_units, rid)
    _record(lake, "extract", rid, "pairs", {k: v.to_dict() for k, v in total.items()}, N + DUPLICATES)

    # dedup: one batch, counts in the run record only (as the real job: a batch has no per-unit ledger)
    rid = new_run_id()
    unique = _pairs_rows(items, "crawl/a.warc.wat.gz")
    _commit(lake, "pairs_unique", {"batch-0": (unique, {})}, rid,
            consumed={"pairs": [e.path for e in lake.table("pairs").entries()]})
    dedup = Ledger("pairs", rows_in=N + DUPLICATES, rows_out=N)
    dedup.drop("duplicate", DUPLICATES)
    _record(lake, "dedup", rid, "pairs_unique", {"pairs": dedup.to_dict()}, N)

    # download: the first DOWNLOADED pairs in two shards; a few fail, one success's bytes do not decode
    reasons = [r for r, k in FAILED.items() for _ in range(k)]
    rid, units, total = new_run_id(), {}, Ledger("images")
    for s, (lo, hi) in enumerate([(0, 35), (35, DOWNLOADED)]):
        rows = unique.slice(lo, hi - lo).to_pylist()
        ledger = Ledger("images", rows_in=len(rows))
        out = {name: [] for name in schemas.IMAGES.names}
        for j, r in enumerate(rows):
            i = lo + j
            reason = reasons[i // 10] if i % 10 == 3 and i // 10 < len(reasons) else None
            data = None if reason else (b"\xff\xd8broken" if i == 5 else jpg[r["uid"]])
            if reason:
                ledger.fail(reason)
            else:
                ledger.rows_out += 1
            row = dict(uid=r["uid"], url=r["url"], text=r["text"], language=r["language"], key=f"{s:05d}{j:04d}",
                       status="failed" if reason else "success", reason=reason,
                       error_message="HTTP 404" if reason == "http_404" else None,
                       http_status=404 if reason == "http_404" else 200,
                       width=None if reason else 128, height=None if reason else 128,
                       original_width=None if reason else 100 + 37 * i, original_height=None if reason else 90 + 11 * i,
                       sha256=None if reason else f"{i:064x}", mime=None if reason else "jpeg", jpg=data, exif=None)
            for k, v in row.items():
                out[k].append(v)
        total.add(ledger)
        units[f"shard-{s}"] = (pa.table(out, schema=schemas.IMAGES), {"images": ledger.to_dict()})
    _commit(lake, "images", units, rid)
    _record(lake, "download", rid, "images", {"images": total.to_dict()}, DOWNLOADED)

    from laion5b_spark.clip.job import ClipJob

    threshold = json.load(open(ASSET + ".json"))["threshold"]
    rc = ClipJob().main(["--lake", root, "--set", "clip.model=l5s-tiny", "--set", f"clip.pretrained={ASSET}.safetensors",
                         "--set", f"clip.threshold={threshold}", "--set", "clip.batch_size=32",
                         "--set", "run.commit_interval_s=0.5"])
    assert rc == 0, "the clip run of the inspection fixture failed"
    return root


@pytest.fixture(scope="session")
def inspect_lake(spark, tmp_path_factory) -> str:
    """The path of the built lake (tests must not write to it: copy it first, see ``copy_lake``)."""
    if "lake" not in _built:
        _built["lake"] = build(str(tmp_path_factory.mktemp("inspect") / "lake"))
    return _built["lake"]


def copy_lake(src: str, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def write_dedup_images(lake: Lake, duplicates: dict[int, tuple[int, bool]], uids: list[int]) -> None:
    """A dedup_images table as the index job writes it: ``duplicates`` uid -> (representative, exact?)."""
    rows = []
    for u in uids:
        rep, exact = duplicates.get(u, (None, False))
        rows.append({"uid": u, "duplicate": rep is not None, "near_dup_of": rep if rep and not exact else None,
                     "exact_dup_of": rep if exact else None, "group_size": 2 if rep else 1,
                     "nearest_similarity": 0.99 if rep else None, "sha256": None})
    t = pa.Table.from_pylist(rows, schema=schemas.DEDUP_IMAGES)
    _commit(lake, "dedup_images", {"all": (t, {})}, new_run_id())
