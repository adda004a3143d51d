"""bench/serve: queries/s of the search service (laion5b_spark/index/serve.py) against the floor, a bare faiss
search loop over the same index, in one run.

    python bench/serve/run.py [--rows 40000] [--dim 256] [--queries 2000] [--k 10] [--json bench/serve/last.json]

A generated lake (make_scored_lake: clustered unit vectors with planted near-copies, fp16 in ``scored``) gets its
image index from the real index job (Spark local), then the same embedding queries (rows' own vectors plus noise)
run four ways, one client at a time and then with ``--clients`` concurrent ones, in ``--rounds`` interleaved
rounds (each way keeps its best):

* floor: ``index.search(q, k)`` on the faiss index the service loads, one query per call;
* the service in-process: ``SearchService.knn`` (request checks, search, metadata of the top ``num_images``);
* over HTTP: POST /knn-service on a kept-alive connection (what a ClipClient session or the front end pays);
* over HTTP with deduplicate + use_safety_model on ``--dedup-ids`` result ids (the front end's defaults).

clip-back itself is not run: installing clip-retrieval would replace this project's open_clip, pyarrow and
transformers (``pip install --dry-run``), and clip-back loads its CLIP model from the internet at start.
Text and image queries add one CLIP forward pass on CPU (model-dependent: see bench/clip) to these figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the generated lake names a hub model: fail at once, not retry


def build_lake(root: str, rows: int, dim: int) -> None:
    from laion5b_spark.index.job import IndexJob
    from laion5b_spark.sample.embeddings import make_scored_lake

    files = max(1, rows // 10_000)
    make_scored_lake(root, files=files, rows_per_file=rows // files, dim=dim, seed=5, near_groups=50, exact_pairs=20)
    rc = IndexJob().main(["--lake", root, "--set", "index.text=false", "--set", "index.near_dup=false",
                          "--set", "index.recall_queries=200", "--set", "index.max_index_memory_usage=1G",
                          "--set", "index.current_memory_available=4G", "--set", "run.progress_interval_s=60"])
    if rc != 0:
        raise SystemExit(f"the index job failed ({rc})")


def rate(fn, items, clients: int) -> float:
    """Calls of ``fn(item, client)`` per second, ``items`` shared out among ``clients`` threads."""
    chunks = [items[i::clients] for i in range(clients)]
    t0 = time.perf_counter()
    threads = [threading.Thread(target=lambda c=c, ch=ch: [fn(x, c) for x in ch]) for c, ch in enumerate(chunks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(items) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10, help="num_images = num_result_ids")
    ap.add_argument("--dedup-ids", type=int, default=200, help="num_result_ids of the deduplicate+safety run")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each mode keeps its best")
    ap.add_argument("--lake", default="", help="reuse this lake (built there when it has no index)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    from laion5b_spark.index.layout import read_pointer
    from laion5b_spark.index.serve import SearchService, ServeSettings, serve_in_thread
    from laion5b_spark.lake import Lake
    from laion5b_spark.spark import get_session

    tmp = None
    root = args.lake or os.path.join(tempfile.mkdtemp(prefix="l5s-bench-serve-"), "lake")
    if not args.lake:
        tmp = os.path.dirname(root)
    t0 = time.perf_counter()
    if read_pointer(Lake(root), "image") is None:
        get_session("bench-serve", "local", extra={"spark.master": "local[2]"})
        build_lake(root, args.rows, args.dim)
    built = time.perf_counter() - t0
    service = SearchService(Lake(root), ServeSettings(name="bench"))
    knn = service.modalities["image"].knn
    index = knn.index
    rng = np.random.default_rng(0)
    picks = rng.integers(0, index.ntotal, args.queries)
    base = np.stack([knn.vector(int(i)) for i in picks])
    queries = base + 0.05 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(base.shape[1])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    bodies = [json.dumps({"embedding_input": q.tolist(), "num_images": args.k, "num_result_ids": args.k,
                          "indice_name": "bench"}).encode() for q in queries]
    dedup_bodies = [json.dumps({"embedding_input": q.tolist(), "num_images": args.k, "num_result_ids": args.dedup_ids,
                                "deduplicate": True, "use_safety_model": True, "indice_name": "bench"}).encode()
                    for q in queries]
    server, url = serve_in_thread(service)
    host, port = url.split("//")[1].split(":")
    conns: dict[int, http.client.HTTPConnection] = {}

    def floor(i, c):
        index.search(queries[i:i + 1], args.k)

    def in_process(i, c):
        service.knn({"embedding_input": queries[i].tolist(), "num_images": args.k, "num_result_ids": args.k})

    def over_http(bodies_):
        def call(i, c):
            conn = conns.setdefault(c, http.client.HTTPConnection(host, int(port)))
            conn.request("POST", "/knn-service", body=bodies_[i], headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            assert r.status == 200, data
        return call

    ids = list(range(args.queries))
    for fn in (floor, in_process, over_http(bodies)):  # warm-up: caches, connections, page-ins
        rate(fn, ids[:50], 1)
    results = {}
    modes = {"floor_faiss_qps": floor, "service_in_process_qps": in_process,
             "service_http_qps": over_http(bodies), "service_http_dedup_safety_qps": over_http(dedup_bodies)}
    for clients in (1, args.clients):
        best = dict.fromkeys(modes, 0.0)
        for _ in range(args.rounds):  # interleaved rounds, best of each: a shared VM drifts between runs
            for name, fn in modes.items():
                for conn in conns.values():
                    conn.close()
                conns.clear()
                best[name] = max(best[name], rate(fn, ids, clients))
        results[clients] = best
    server.shutdown()
    out = {"vectors": int(index.ntotal), "dim": int(knn.pointer["dim"]), "index_key": knn.pointer.get("index_key"),
           "k": args.k, "dedup_ids": args.dedup_ids, "queries": args.queries, "lake_build_s": round(built, 1),
           "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
           "results": {str(c): {k: round(v, 1) for k, v in r.items()} for c, r in results.items()}}
    for c, r in results.items():
        out["results"][str(c)]["ratio_http_to_floor"] = round(r["service_http_qps"] / r["floor_faiss_qps"], 3)
    print(f"{out['vectors']:,} vectors x {out['dim']} ({out['index_key']}), k={args.k}, {args.queries} queries")
    for c, r in results.items():
        print(f"{c} client(s): floor {r['floor_faiss_qps']:,.0f} q/s | service in-process "
              f"{r['service_in_process_qps']:,.0f} | HTTP {r['service_http_qps']:,.0f} "
              f"(ratio {r['service_http_qps'] / r['floor_faiss_qps']:.3f}) | HTTP dedup+safety over "
              f"{args.dedup_ids} ids {r['service_http_dedup_safety_qps']:,.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
