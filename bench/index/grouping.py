"""bench/index/grouping: the near-duplicate grouping on Spark (``neardup.group``: components by large-star /
small-star exchanges, the job's code) against the single-machine way (every row and edge in one process, scipy's
connected components: what the index job did on its driver before), same input, same answer checked.

    python bench/index/grouping.py [--rows 2000000] [--parts 20] [--json bench/index/grouping.json]

Input (generated once under bench/index/grouping-data/): ids parts as the index job exports them (uid, sha256,
similarity, passed), and near edges per part: 15% of rows in near-duplicate groups of 2-6 rows (a chain in
random order plus one extra edge per group), 3% of rows an exact copy (same sha256) of a random row. Each tool
runs in its own process; the figure that matters beside time is the driver's peak RSS: the single-machine way
holds every row, ours holds file entries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
DATA = os.path.join(HERE, "grouping-data")


def make_data(rows: int, parts: int, seed: int = 0) -> list[int]:
    spec = {"rows": rows, "parts": parts, "seed": seed}
    stamp = os.path.join(DATA, "_spec.json")
    sizes = [rows // parts + (1 if i < rows % parts else 0) for i in range(parts)]
    if os.path.exists(stamp) and json.load(open(stamp)) == spec:
        return sizes
    os.makedirs(DATA, exist_ok=True)
    rng = np.random.default_rng(seed)
    uid = rng.integers(1, 2**62, rows, dtype=np.int64)
    sim = rng.uniform(0.28, 0.4, rows)
    passed = rng.random(rows) < 0.9
    sha = np.array([f"{x:016x}" * 4 for x in rng.integers(0, 2**62, rows, dtype=np.int64)], dtype=object)
    copies = rng.choice(rows, size=(int(rows * 0.03), 2), replace=False)
    sha[copies[:, 1]] = sha[copies[:, 0]]
    members = rng.permutation(rows)[: int(rows * 0.15)]
    a, b, i = [], [], 0
    while i < len(members) - 1:
        g = members[i:i + int(rng.integers(2, 7))]
        a.extend(g[:-1]), b.extend(g[1:])
        if len(g) > 2:
            a.append(g[0]), b.append(g[-1])
        i += len(g)
    a, b = np.array(a, np.int64), np.array(b, np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    owner = np.searchsorted(offsets, a, side="right") - 1
    for p in range(parts):
        lo, hi = offsets[p], offsets[p + 1]
        pq.write_table(pa.table({"uid": uid[lo:hi], "sha256": pa.array(sha[lo:hi], pa.string()),
                                 "similarity": sim[lo:hi].astype(np.float32), "passed": passed[lo:hi]}),
                       os.path.join(DATA, f"ids-{p:04d}.parquet"))
        sel = owner == p
        pq.write_table(pa.table({"a": a[sel], "b": b[sel], "cos": np.full(sel.sum(), 0.97, np.float32)}),
                       os.path.join(DATA, f"edges-{p:04d}.parquet"))
    json.dump(spec, open(stamp, "w"))
    return sizes


def rows_of_factory(offsets):
    from laion5b_spark.index.neardup import PartRows

    def rows_of(p: int) -> PartRows:
        t = pq.read_table(os.path.join(DATA, f"ids-{p:04d}.parquet"))
        return PartRows(int(offsets[p]), t.column("uid").to_numpy(), t.column("similarity").to_numpy(),
                        t.column("passed").to_numpy(zero_copy_only=False), t.column("sha256").combine_chunks())
    return rows_of


def edges_of(p: int):
    t = pq.read_table(os.path.join(DATA, f"edges-{p:04d}.parquet"))
    return t.column("a").to_numpy(), t.column("b").to_numpy(), t.column("cos").to_numpy()


def run_ours(sizes: list[int], cores: int) -> dict:
    from pyspark.sql import SparkSession

    from laion5b_spark.exchange import OnSpark
    from laion5b_spark.index import neardup

    spark = (SparkSession.builder.master(f"local[{cores}]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "2g").getOrCreate())
    t0 = time.perf_counter()
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    out = os.path.join(DATA, "out-ours")
    os.makedirs(out, exist_ok=True)

    def finish(p, table):
        pq.write_table(table, os.path.join(out, f"part-{p:04d}.parquet"))
        return table.num_rows

    engine = OnSpark(spark.sparkContext)
    near = engine.parts(len(sizes), lambda p: [(p, ("near", *edges_of(p)))])
    rounds = []
    done = neardup.group(engine, offsets, rows_of_factory(offsets), near, finish, rounds.append)
    seconds = time.perf_counter() - t0
    spark.stop()
    return {"seconds": seconds, "rows": sum(r for _, r, _ in done), "rounds": len(rounds), "output": out}


def run_single(sizes: list[int]) -> dict:
    """Every row and edge in this process; scipy's connected components; the same representative rule."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t0 = time.perf_counter()
    ids = pa.concat_tables([pq.read_table(os.path.join(DATA, f"ids-{p:04d}.parquet")) for p in range(len(sizes))])
    e = [edges_of(p) for p in range(len(sizes))]
    a, b = np.concatenate([x[0] for x in e]), np.concatenate([x[1] for x in e])
    n = ids.num_rows
    uid, sim = ids.column("uid").to_numpy(), ids.column("similarity").to_numpy().astype(np.float64)
    passed = ids.column("passed").to_numpy(zero_copy_only=False)
    rank = np.empty(n, np.int64)
    rank[np.lexsort((np.arange(n), uid, -sim, ~passed))] = np.arange(n)
    codes = ids.column("sha256").combine_chunks().dictionary_encode().indices.to_numpy()
    best_by_code = np.full(codes.max() + 1, n, np.int64)
    np.minimum.at(best_by_code, codes, rank)
    row_of_rank = np.argsort(rank)
    exact = row_of_rank[best_by_code[codes]]
    copy = np.flatnonzero(exact != np.arange(n))
    g = coo_matrix((np.ones(len(a) + len(copy), np.int8), (np.concatenate([a, copy]), np.concatenate([b, exact[copy]]))),
                   shape=(n, n))
    _, comp = connected_components(g, directed=False)
    best = np.full(comp.max() + 1, n, np.int64)
    np.minimum.at(best, comp, rank)
    rep = row_of_rank[best[comp]]
    seconds = time.perf_counter() - t0
    out = os.path.join(DATA, "single-rep.npy")
    np.save(out, uid[rep])
    return {"seconds": seconds, "rows": n, "output": out}


def child(args) -> None:
    sizes = json.loads(args.sizes)
    r = run_ours(sizes, args.cores) if args.child == "ours" else run_single(sizes)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--json", default="")
    ap.add_argument("--child", choices=["ours", "single"], help=argparse.SUPPRESS)
    ap.add_argument("--sizes", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sizes = make_data(args.rows, args.parts)
    results = {}
    for tool in ("single", "ours"):
        out = subprocess.run([sys.executable, __file__, "--child", tool, "--sizes", json.dumps(sizes),
                              "--cores", str(args.cores)], capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            sys.exit(f"{tool} failed:\n{out.stderr[-3000:]}")
        results[tool] = json.loads(line[0][7:])
        print(f"{tool:6s}: {results[tool]['seconds']:.1f} s, driver peak RSS {results[tool]['peak_rss_mb']:.0f} MB")
    ours_rep = pa.concat_tables([pq.read_table(os.path.join(results["ours"]["output"], f"part-{p:04d}.parquet"))
                                 for p in range(len(sizes))])
    uid = ours_rep.column("uid").to_numpy()
    rep = np.where(ours_rep.column("duplicate").to_numpy(zero_copy_only=False),
                   ours_rep.column("near_dup_of").fill_null(0).to_numpy(), uid)
    same = bool(np.array_equal(rep, np.load(results["single"]["output"], allow_pickle=False)))
    dups = int(ours_rep.column("duplicate").to_numpy(zero_copy_only=False).sum())
    ratio = results["single"]["seconds"] / results["ours"]["seconds"]
    print(f"same representatives: {same}; {dups:,} duplicates of {len(uid):,} rows; "
          f"{results['ours']['rounds']} component rounds; ours / single-machine speed = {ratio:.2f}x")
    report = {"rows": args.rows, "parts": args.parts, "cores": args.cores, "same_answer": same, "duplicates": dups,
              "ours": {k: v for k, v in results["ours"].items() if k != "output"},
              "single_machine": {k: v for k, v in results["single"].items() if k != "output"},
              "speed_ratio": round(ratio, 3),
              "core_us_per_row": round(results["ours"]["seconds"] * args.cores / args.rows * 1e6, 2),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "date": time.strftime("%Y-%m-%d")}
    if not same:
        sys.exit("the two answers differ")
    if args.json:
        json.dump(report, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
