"""bench/dedup: this project's dedup job vs plain Spark dropDuplicates vs DuckDB DISTINCT ON, same table, one run.

    make bench-dedup            # or: python bench/dedup/run.py [--rows 20000000] [--cores 2]

Generates a pairs table (cached in bench/dedup/data/) with laion5b_spark.sample.pairs: ~30% duplicates by
url+text, heavy hitters (a few items on very many pages), re-captioned repeats, 250k-row files. Then runs, one
after the other, each as its own process with the same number of cores, reading the same parquet files and
writing zstd parquet:

  ours      jobs/dedup.py (url_text key, shuffled output) - the whole job: Spark start-up, key pass, survivor
            reduce, row pass, writes, commit
  spark     spark.read.parquet(files).dropDuplicates(["url", "text"]).write.parquet(zstd) - plain Spark, same
            profile (conf/spark/local.conf, local[N])
  duckdb    COPY (SELECT DISTINCT ON (url, text) * FROM read_parquet(files)) TO parquet (zstd), threads=N

and prints rows/s per core, the ratios, and checks the three give the same number of rows.
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
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(HERE, "data")
ROWS_PER_FILE = 250_000


def _generate_file(args):
    """Stage one generated pairs file (a worker process); the driver commits every entry in one go."""
    from laion5b_spark.job import Unit
    from laion5b_spark.lake import Lake
    from laion5b_spark.sample.pairs import generate_rows

    lake_url, i, n_files, rows, crawl = args
    key = f"crawl-data/{crawl}/segments/0/wat/{crawl}-{i:05d}.warc.wat.gz"
    t = generate_rows(rows, 1000 + i, first_item=i * rows, item_space=int(n_files * rows * 0.7),
                      source_file=key, crawl=crawl)
    table = Lake(lake_url).table("pairs")
    return table.write_unit("generated", Unit(key, key).id, key, t)


def ensure_table(rows: int, workers: int) -> str:
    from laion5b_spark.lake import Lake

    lake_url = os.path.join(DATA, f"pairs-{rows}")
    table = Lake(lake_url).table("pairs")
    if table.num_rows() == rows:
        return lake_url
    shutil.rmtree(lake_url, ignore_errors=True)
    n_files = max(1, rows // ROWS_PER_FILE)
    crawls = ["CC-MAIN-2024-10", "CC-MAIN-2024-18"]
    jobs = [(lake_url, i, n_files, rows // n_files, crawls[i * len(crawls) // n_files]) for i in range(n_files)]
    print(f"generating {rows:,} pair rows in {n_files} files into {lake_url} ...", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        entries = list(pool.map(_generate_file, jobs))
    Lake(lake_url).table("pairs").commit(entries, "generated")
    return lake_url


def _env(cores: int) -> dict:
    return dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
                SPARK_LOCAL_IP="127.0.0.1", L5S_SPARK_LOG_LEVEL="ERROR")


def _timed(cmd: list[str], cores: int) -> tuple[float, str]:
    t0 = time.time()
    p = subprocess.run(cmd, env=_env(cores), capture_output=True, text=True, cwd=ROOT)
    dt = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd[:3]} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return dt, p.stdout


def run_ours(src_lake: str, work: str, cores: int) -> tuple[float, int]:
    from laion5b_spark.lake import Lake

    lake = os.path.join(work, "ours")
    os.makedirs(lake)
    os.symlink(os.path.join(src_lake, "pairs"), os.path.join(lake, "pairs"))
    dt, out = _timed([sys.executable, "jobs/dedup.py", "--lake", lake, "--set", "run.progress_interval_s=600",
                      "--spark-profile", _profile(work, cores)], cores)
    print("\n".join("    " + line for line in out.splitlines() if "in ->" in line or "dropped" in line))
    rec = Lake(lake).runs("dedup")[-1]
    print(f"    run record: {rec['seconds']} s from listing to commit (Spark start-up included); "
          f"{rec['output']['files']} files; "
          f"peak task memory {rec['info']['peak_task_rss_mb']:,.0f} MB", flush=True)
    return dt, Lake(lake).table("pairs_unique").num_rows()


def _profile(work: str, cores: int) -> str:
    """conf/spark/local.conf with local[cores]: the same Spark settings for every Spark tool in the run."""
    from laion5b_spark.spark import derive_profile

    return derive_profile("local", os.path.join(work, "bench.conf"), {"spark.master": f"local[{cores}]"})


_SPARK_PEER = """
import sys, time
from laion5b_spark.spark import get_session
profile, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
spark = get_session("bench dropDuplicates", profile)
df = spark.read.parquet(*files)
df.dropDuplicates(["url", "text"]).write.option("compression", "zstd").parquet(out)
t0 = time.time()
n = spark.read.parquet(out).count()
print(time.time() - t0, n)
"""


def run_spark(src_lake: str, work: str, cores: int) -> tuple[float, int]:
    """Whole-process wall time like the others, minus the row count at the end (not part of the work)."""
    from laion5b_spark.lake import Lake

    files = Lake(src_lake).table("pairs").files()
    dt, out = _timed([sys.executable, "-c", _SPARK_PEER, _profile(work, cores), os.path.join(work, "out"), *files],
                     cores)
    count_s, n = out.strip().splitlines()[-1].split()
    return dt - float(count_s), int(n)


_DUCKDB_PEER = """
import sys, duckdb
threads, out, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
con = duckdb.connect()
con.execute(f"SET threads={threads}")
con.execute(f"COPY (SELECT DISTINCT ON (url, text) * FROM read_parquet({files!r})) TO '{out}' "
            "(FORMAT parquet, COMPRESSION zstd)")
print(con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0])
"""


def run_duckdb(src_lake: str, work: str, cores: int) -> tuple[float, int]:
    from laion5b_spark.lake import Lake

    files = Lake(src_lake).table("pairs").files()
    dt, out = _timed([sys.executable, "-c", _DUCKDB_PEER, str(cores), os.path.join(work, "duck.parquet"), *files],
                     cores)
    return dt, int(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tools", default="ours,spark,duckdb")
    ap.add_argument("--json", help="write the figures here (bench/dedup/last.json)")
    args = ap.parse_args(argv)
    src = ensure_table(args.rows, args.cores)
    results = {}
    runners = {"ours": run_ours, "spark": run_spark, "duckdb": run_duckdb}
    with tempfile.TemporaryDirectory(prefix="bench-dedup-", dir=os.path.join(ROOT, "build")
                                     if os.path.isdir(os.path.join(ROOT, "build")) else None) as work:
        for name in args.tools.split(","):
            print(f"{name} ...", flush=True)
            sub = os.path.join(work, name + "-work")
            os.makedirs(sub)
            dt, rows_out = runners[name](src, sub, args.cores)
            results[name] = {"seconds": round(dt, 1), "rows_out": rows_out,
                             "rows_per_s_per_core": round(args.rows / dt / args.cores)}
            print(f"  {name}: {dt:,.1f} s, {rows_out:,} rows out, "
                  f"{args.rows / dt / args.cores:,.0f} input rows/s per core", flush=True)
    counts = {r["rows_out"] for r in results.values()}
    report = {"rows_in": args.rows, "cores": args.cores, "machine": f"{platform.machine()} {os.cpu_count()} vCPU, "
              f"Python {platform.python_version()}", "results": results, "same_rows": len(counts) == 1}
    if "ours" in results:
        for peer in ("spark", "duckdb"):
            if peer in results:
                report[f"ours_vs_{peer}"] = round(results[peer]["seconds"] / results["ours"]["seconds"], 2)
                print(f"ours / {peer}: {report[f'ours_vs_{peer}']}x rows/s per core")
    print("same row count from every tool:", report["same_rows"], sorted(counts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["same_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
