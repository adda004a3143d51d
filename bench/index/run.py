"""bench/index: build time, peak memory and recall of the index job's build step on generated embeddings.

    python bench/index/run.py [--vectors 1000000] [--dim 512] [--memory 64M] [--available 8G] [--index-key KEY]
                              [--json bench/index/last.json]

The embeddings are CLIP-like (unit vectors under a tree of topics, so neighbours are graded; fp16) in .npy parts
as the index job exports them (bench/index/data/, made once and reused), with 1% of rows replaced by a
near-copy of another row (cosine ~0.999). The build runs in a child process - ``laion5b_spark.index.build``:
autofaiss with the job's settings, then the job's recall check against exact search - so its peak RSS is the
build's alone. Then the near-duplicate pass's neighbour search (k=16) on a sample, with autofaiss's tuned
search parameters and with cheaper ones (``--near-param``): queries/s, which is what the pass costs per row,
and the share of planted copies it finds. ``--memory`` is ``index.max_index_memory_usage``: LAION-400M's 16 GB index
over 400M vectors is ~40 bytes per vector, so 64M for 1M vectors is the same budget per vector.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from laion5b_spark.sample.embeddings import hierarchical, near_copy  # noqa: E402


def make_data(folder: str, vectors: int, dim: int, parts: int, seed: int = 0) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    stamp = os.path.join(folder, "_spec.json")
    spec = {"vectors": vectors, "dim": dim, "parts": parts, "seed": seed, "data": "hierarchical+1% copies"}
    files = [os.path.join(folder, f"part-{i:06d}.npy") for i in range(parts)]
    if os.path.exists(stamp) and json.load(open(stamp)) == spec and all(map(os.path.exists, files)) \
            and os.path.exists(folder + "-copies.npy"):
        return files
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))  # another spec: made again
    rng = np.random.default_rng(seed)
    x = hierarchical(vectors, dim, rng)
    copies = rng.choice(vectors, size=2 * (vectors // 100), replace=False).reshape(-1, 2)  # (source, copy)
    for a, b in copies:
        x[b] = near_copy(x[a], rng)
    per = vectors // parts
    for i, f in enumerate(files):
        hi = (i + 1) * per if i < parts - 1 else vectors
        np.save(f, x[i * per:hi].astype(np.float16))
    np.save(folder + "-copies.npy", copies)  # beside the folder: autofaiss reads every .npy inside it
    json.dump(spec, open(stamp, "w"))
    return files


def child(args) -> None:
    """The measured process: build, recall, neighbour search rate; prints one JSON line."""
    from laion5b_spark.index.build import IndexSettings, Vectors, build, load, recall
    from laion5b_spark.index.neardup import query_scale

    s = IndexSettings(max_index_memory_usage=args.memory, current_memory_available=args.available,
                      index_key=args.index_key, recall_queries=args.queries, recall_k=10, nb_cores=os.cpu_count() or 1)
    out = os.path.join(HERE, "out")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    infos = build(args.data, os.path.join(out, "knn.index"), os.path.join(out, "index_infos.json"), s)
    build_s = time.time() - t0
    rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    index = load(os.path.join(out, "knn.index"), infos.get("index_param"))
    files = sorted(os.path.join(args.data, f) for f in os.listdir(args.data) if f.endswith(".npy"))
    vectors = Vectors([np.load(f, mmap_mode="r") for f in files])
    rec = recall(index, vectors, s.recall_queries, s.recall_k)
    copies = np.load(args.data + "-copies.npy")[:2000]
    near = {}
    for label, param in (("tuned", infos.get("index_param")), ("cheap", args.near_param)):
        index = load(os.path.join(out, "knn.index"), param)
        q = vectors.get(copies[:, 0])
        t0 = time.time()
        scores, ids = index.search(q, 17)
        rate = len(q) / (time.time() - t0)
        scores = scores / query_scale(index, q)[:, None]  # as the job's candidates step compares them
        # per candidate floor (index.near_dup_threshold 0.96 - index.near_dup_margin): the share of planted copies
        # among the candidates, and candidates per row (each one crosses the shuffle with a 1 KB vector)
        floors = {}
        for floor in (0.94, 0.90, 0.85):
            found = np.mean([(c in row[s >= floor]) for c, row, s in zip(copies[:, 1], ids, scores)])
            per_row = float(((scores[:, 1:] >= floor) & (ids[:, 1:] >= 0)).sum(axis=1).mean())
            floors[f"{floor:.2f}"] = {"planted_found": round(float(found), 4), "candidates_per_row": round(per_row, 2)}
        in_top = np.mean([c in row for c, row in zip(copies[:, 1], ids)])
        near[label] = {"index_param": param, "queries_per_s": round(rate), "floors": floors,
                       "planted_in_top_k": round(float(in_top), 4)}
    search_rate = near["tuned"]["queries_per_s"]
    print(json.dumps({"near_dup_search": near, "build_seconds": round(build_s, 1), "peak_rss_build_mb": round(rss_build),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "index_key": infos.get("index_key"), "index_param": infos.get("index_param"),
                      "index_mb": round(os.path.getsize(os.path.join(out, "knn.index")) / 1e6, 1),
                      "recall": rec, "neighbour_search_per_s": search_rate, "search_sample": len(copies)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--parts", type=int, default=10)
    ap.add_argument("--memory", default="64M", help="index.max_index_memory_usage (default 64M: ~LAION-400M's 40 B/vector)")
    ap.add_argument("--available", default="8G", help="index.current_memory_available")
    ap.add_argument("--index-key", default="", help="index.index_key (default: autofaiss chooses)")
    ap.add_argument("--near-param", default="nprobe=16,efSearch=32,ht=2048",
                    help="cheaper search parameters tried for the near-duplicate pass (index.near_dup_index_param)")
    ap.add_argument("--queries", type=int, default=1000, help="recall queries (exact search over every vector)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    data = os.path.join(HERE, "data", f"{args.vectors}x{args.dim}")
    t0 = time.time()
    make_data(data, args.vectors, args.dim, args.parts)
    print(f"data: {args.vectors:,} x {args.dim} fp16 in {args.parts} parts ({time.time() - t0:.0f}s)", flush=True)
    cmd = [sys.executable, __file__, "--child", "--data", data, "--memory", args.memory, "--available",
           args.available, "--index-key", args.index_key, "--queries", str(args.queries), "--near-param",
           args.near_param]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-4000:], file=sys.stderr)
        return proc.returncode
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(vectors=args.vectors, dim=args.dim, max_index_memory_usage=args.memory, forced_index_key=args.index_key,
                  current_memory_available=args.available, wall_seconds=round(time.time() - t0, 1),
                  embeddings_mb=round(args.vectors * args.dim * 2 / 1e6), cores=os.cpu_count(),
                  machine=f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                  date=time.strftime("%Y-%m-%d"))
    r = result["recall"]
    print(f"build {result['build_seconds']}s ({result['index_key']}, {result['index_mb']} MB index), peak RSS "
          f"{result['peak_rss_build_mb']:,} MB for {result['embeddings_mb']:,} MB of fp16 embeddings; recall@{r['k']} "
          f"{r['recall_at_k']} (recall@1 {r['recall_at_1']}) on {r['queries']} queries; neighbour search "
          f"{result['neighbour_search_per_s']:,} queries/s (k=17, {result['cores']} cores)")
    for label, r in result["near_dup_search"].items():
        floors = ", ".join(f">= {f}: {100 * v['planted_found']:.1f}% found, {v['candidates_per_row']} candidates/row"
                           for f, v in r["floors"].items())
        print(f"near-duplicate search, {label} ({r['index_param']}): {r['queries_per_s']:,} queries/s; planted copies "
              f"among the 16 neighbours {100 * r['planted_in_top_k']:.1f}%; index score {floors}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
