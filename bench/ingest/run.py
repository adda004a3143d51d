"""bench/ingest: jobs/ingest.py vs img2dataset's Reader, on the same LAION-layout list in the same run.

    python bench/ingest/run.py [--rows 1000000] [--files 4] [--cores 2] [--reader PATH]

Writes a list in LAION's published layout (URL, TEXT, WIDTH, HEIGHT, similarity, hash, punsafe, pwatermark,
LANGUAGE; parquet, 50,000-row row groups; captions from bench/language/captions.tsv in 20 languages, 5% with
mojibake or entities, 10% of URLs needing serialization), then, each as its own process on the same cores:

  ours          jobs/ingest.py (local[N]): URL resolution, caption cleanup, uid, language (LANGUAGE kept where
                given, detected for the 30% where it is empty), per-unit dedup, ledgers, one committed parquet per unit
  ours-nodetect the same with ingest.language_detection=false (what language detection costs)
  img2dataset   img2dataset.reader.Reader over the same files (url_col=URL, caption_col=TEXT,
                number_sample_per_shard=10000): the step img2dataset runs before downloading - read the list,
                rename the columns, cut it into feather shards. No URL or caption cleanup, no key, no language.

It prints rows/s (wall clock, start-up included) and the ratios ours / img2dataset. Each tool also runs on a
tenth of the list: for ours, the difference of the two runs gives its rate once running, apart from its fixed
cost (JVM, Spark session, Python workers); for the reader, whose run is mostly its imports, the script times
the Reader itself. Both run pinned to the same --cores (ours as local[N]; the reader is one process whose
pyarrow readers use threads).

img2dataset's Reader is imported from an installed img2dataset, else loaded from --reader (its reader.py, or
the img2dataset wheel: ``pip download --no-deps img2dataset``); it needs only fsspec, pyarrow and pandas.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset's import of albumentations asks PyPI otherwise
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

_READER = """
import importlib.util, os, sys, tempfile, time
src, reader_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    from img2dataset.reader import Reader
except ImportError:
    spec = importlib.util.spec_from_file_location("i2d_reader", reader_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    Reader = mod.Reader
import pyarrow as pa
t0 = time.time()
reader = Reader(src, "parquet", "URL", "TEXT", None, None, None, 10000, set(), out)
rows = 0
for shard_id, path in reader:
    with pa.memory_map(path) as f:
        rows += pa.ipc.open_file(f).read_all().num_rows
print(rows, time.time() - t0)
"""


def make_list(folder: str, rows: int, files: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    with open(os.path.join(ROOT, "bench", "language", "captions.tsv"), encoding="utf-8") as f:
        lines = [ln.rstrip("\n").split("\t", 1) for ln in f.readlines()[1:]]
    langs = np.array([lang for lang, _ in lines])
    texts = [t for _, t in lines]
    per = rows // files
    for k in range(files):
        n = per if k < files - 1 else rows - per * (files - 1)
        pick = rng.integers(0, len(texts), n)
        caption = [f"{texts[j]} {i}" for i, j in zip(range(k * per, k * per + n), pick)]
        for i in rng.choice(n, n // 20, replace=False):  # mojibake and entities, as real alt texts carry
            caption[i] = caption[i].replace("e", "Ã©", 1) + " &amp; more"
        url = [f"https://img{j % 997}.example.com/photos/{k}/{i}.jpg" for i, j in enumerate(rng.integers(0, 10**6, n))]
        for i in rng.choice(n, n // 10, replace=False):  # spaces, unicode, default ports: the scalar path
            url[i] = url[i].replace("/photos/", "/Fotos Été:443/") if i % 2 else url[i].replace(".com/", ".com:443/")
        lang = langs[pick].astype(object)
        lang[rng.random(n) < 0.3] = ""  # LAION-multi's empty LANGUAGE: detected
        t = pa.table({
            "URL": url, "TEXT": caption,
            "WIDTH": pa.array(rng.integers(64, 4000, n), pa.int64()),
            "HEIGHT": pa.array(rng.integers(64, 4000, n), pa.int64()),
            "similarity": rng.random(n), "hash": rng.integers(-2**62, 2**62, n),
            "punsafe": pa.array(rng.random(n), pa.float32()), "pwatermark": pa.array(rng.random(n), pa.float32()),
            "LANGUAGE": pa.array(lang.tolist(), pa.string()),
        })
        pq.write_table(t, os.path.join(folder, f"part-{k:05d}.parquet"), row_group_size=50_000)


def timed(cmd: list[str], env: dict, cores: int) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and the result of a command pinned to the first ``cores`` CPUs (as both tools get)."""
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > cores:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(os.sched_getaffinity(0))[:cores])), *cmd]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return wall, p


def _env() -> dict:
    return dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
                SPARK_LOCAL_IP="127.0.0.1", L5S_SPARK_LOG_LEVEL="ERROR", NO_ALBUMENTATIONS_UPDATE="1")


def run_ours(src: str, work: str, cores: int, detect: bool, unit_rows: int) -> dict:
    from laion5b_spark.lake import Lake
    from laion5b_spark.spark import derive_profile

    lake = tempfile.mkdtemp(dir=work)
    profile = derive_profile("local", os.path.join(work, "bench.conf"), {"spark.master": f"local[{cores}]"})
    wall, _ = timed([sys.executable, "jobs/ingest.py", "--lake", lake, "--input", src, "--url-col", "URL",
                          "--caption-col", "TEXT", "--language-col", "LANGUAGE", "--width-col", "WIDTH",
                          "--height-col", "HEIGHT", "--spark-profile", profile,
                          "--set", f"ingest.unit_rows={unit_rows}",
                          "--set", f"ingest.language_detection={str(detect).lower()}",
                          "--set", "run.progress_interval_s=600", "--set", "run.commit_interval_s=1"], _env(), cores)
    run = Lake(lake).runs("ingest")[0]
    lg = run["counts"]["list_rows"]
    return {"seconds": round(wall, 2), "rows_in": lg["rows_in"], "rows_out": lg["rows_out"]}


def run_reader(src: str, work: str, reader: str, cores: int) -> dict:
    out = tempfile.mkdtemp(dir=work)
    script = os.path.join(work, "reader.py")
    with open(script, "w") as f:
        f.write(_READER)
    wall, p = timed([sys.executable, script, src, reader, out], _env(), cores)
    n, inside = p.stdout.strip().splitlines()[-1].split()
    return {"seconds": round(wall, 2), "rows_in": int(n), "rows_out": int(n),
            "reading_seconds": round(float(inside), 3)}


def find_reader(given: str | None, work: str) -> str:
    """A path to img2dataset's reader.py (unused when img2dataset is installed)."""
    try:
        import img2dataset.reader as r  # noqa: F401
        return r.__file__
    except ImportError:
        pass
    if given and given.endswith(".whl"):
        with zipfile.ZipFile(given) as z:
            z.extract("img2dataset/reader.py", work)
        return os.path.join(work, "img2dataset", "reader.py")
    if given and os.path.exists(given):
        return given
    sys.exit("img2dataset is not installed: give --reader (its reader.py or wheel; pip download --no-deps img2dataset)")


def _run_all(args, work: str, reader: str, results: dict) -> None:
    for label, rows in (("small", args.rows // 10), ("full", args.rows)):
        src = os.path.join(work, f"list-{label}")
        os.mkdir(src)
        make_list(src, rows, args.files)
        for name in args.tools.split(","):
            if name == "img2dataset":
                r = run_reader(src, work, reader, args.cores)
            else:
                r = run_ours(src, work, args.cores, name == "ours", max(50_000, rows // (2 * args.cores)))
            results.setdefault(name, {})[label] = r
            print(f"{name:14} {label:5} {r['rows_in']:>9,} rows in {r['seconds']:6.1f} s "
                  f"({r['rows_in'] / r['seconds']:>9,.0f} rows/s), {r['rows_out']:,} out", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--reader", help="img2dataset's reader.py or wheel, when img2dataset is not installed")
    ap.add_argument("--tools", default="ours,ours-nodetect,img2dataset")
    ap.add_argument("--json", help="write the figures here (bench/ingest/last.json)")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-ingest-")
    reader = find_reader(args.reader, work)
    unit_rows = max(50_000, args.rows // (2 * args.cores))
    results = {}
    try:
        _run_all(args, work, reader, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for name, r in results.items():
        full, small = r["full"], r["small"]
        if "reading_seconds" in full:  # the reader's own time, its imports aside (too short to difference)
            running = full["rows_in"] / full["reading_seconds"]
        else:  # ours: the difference of the two runs, the JVM, Spark session and workers' start-up aside
            running = (full["rows_in"] - small["rows_in"]) / max(full["seconds"] - small["seconds"], 1e-9)
        summary[name] = {"rows_per_s": round(full["rows_in"] / full["seconds"]),
                         "running_rows_per_s": round(running),
                         "fixed_seconds": round(full["seconds"] - full["rows_in"] / running, 1)}
    report = {"rows": args.rows, "files": args.files, "cores": args.cores, "unit_rows": unit_rows,
              "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}",
              "results": results, "summary": summary}
    if "img2dataset" in summary:
        peer = summary["img2dataset"]
        for name in summary:
            if name == "img2dataset":
                continue
            ours = summary[name]
            ratio = {k: round(ours[k] / peer[k], 3) for k in ("rows_per_s", "running_rows_per_s")}
            report[f"{name}_vs_img2dataset"] = ratio
            print(f"{name} / img2dataset reader: {ratio['rows_per_s']}x rows/s end to end, "
                  f"{ratio['running_rows_per_s']}x once running")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
