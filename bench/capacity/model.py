"""Capacity model: a LAION-400M build on one node and a LAION-5B build on ten (16 cores and one GPU each), from the
per-stage costs the benchmarks measured on this machine, the bytes they measured, and LAION's published funnel.

    python bench/capacity/model.py [--node-gbps 1] [--clip-pass 0.10] [--download-ok 0.55] [--lake-traffic nic]
                                   [--gpu-img-per-s 2500] [--json OUT]

What it prints, per build:
  funnel     per bucket (en / multi / nolang, LAION-5B's three parts): release <- images scored <- URLs tried <-
             pairs extracted, from LAION's published counts and its "removed about 90%" [blog]
  bytes      per image at full size (what a fetch moves) and stored (256 px, what `images` keeps and clip reads
             back), failed attempts' bytes, and the network floor: the successful downloads' bytes at the node
             bandwidth - no schedule can beat it
  stages     each stage's cost alone (CPU, GPU, network), as measured by bench/<stage>/last.json
  keep up    the rate the network delivers images at, and the cores / GPUs per node each stage needs to match it
  schedule   stages OVERLAPPED (download and `clip --follow` at once; issue 19): fill (extract + dedup, before the
             first URL can be fetched) + the slowest shared resource (network in, CPU, GPU) + drain (the index,
             built over every embedding); the projected time and its ratio to the network floor
  storage    at the end: `images` as written and with the bytes of below-threshold rows compacted away, the
             embeddings in `scored`, the release (parquet + its images)

Measured here vs assumed: every figure from a bench JSON says so; every other figure is a parameter printed as an
ASSUMPTION with its source. A stage without a bench JSON is "not measured yet" and left out. The clip GPU rate is
not measured on this machine: until bench/clip/gpu.json exists (bench/clip/gpu_device.sh on a GPU machine) it is
--gpu-img-per-s, clip-retrieval's published ~2,500 img/s for ViT-B/32 on one A100, and every line using it says
ASSUMPTION.

Sources (printed with the figures they back):
  [blog]  LAION-5B blog, https://laion.ai/blog/laion-5b/ (LAION-AI/laion.ai blog/laion-5b.md): "laion2B-en 2.32
          billion ... laion2B-multi 2.26 billion ... laion1B-nolang 1.27 billion"; "we removed about 90% of the
          samples, trimming the 50+ billion of candidates to just below 6 billion"; thresholds 0.28 (ViT-B/32, en)
          and 0.26 (mCLIP, the rest); "240TB in 384, 80TB in 224"; metadata "(800GB)"; ViT-L/14 image embeddings
          "(9TB)"; "1800 sample/s for ViT-B/32" per GPU; img2dataset "5,85B samples in a week using 10 nodes"
  [paper] Schuhmann et al., LAION-5B, NeurIPS 2022, arXiv 2210.08402: 5.85B CLIP-filtered pairs, 2.32B English
  [i2d]   img2dataset README (rom1504/img2dataset): "downloading a thousand average image per second requires
          about 130MB/s" (~130 KB per full-size image); LAION-5B "took 7 days (result 240TB), average of 9500
          sample/s on 10 machines"; dataset_examples/laion400m.md: 256 px, "The result is 10TB"
  [i2d-ok] img2dataset issues: #277 (LAION-400M re-download, "success rate is about 0.83-0.85"; one shard's stats:
          8,542 success, 83 "Image decoding error", the rest HTTP/DNS/TLS errors), #400 (0.68 in 2024), #439
          (the maintainer: "75% success may be normal")
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)

BUILDS = {  # release rows, nodes, cores per node, GPUs per node
    "LAION-400M, 1 node x 16 cores + 1 GPU": (400e6, 1, 16, 1),
    "LAION-5B, 10 nodes x 16 cores + 1 GPU": (5.85e9, 10, 16, 1),
}
# LAION-5B's three parts, release rows [blog, paper]; a 400M build is modelled with the same shares
BUCKETS = {"en": 2.32e9, "multi": 2.26e9, "nolang": 1.27e9}
GOAL_RATIO = 1.15  # issue 19: projected end to end <= 1.15x the download's network floor
EMBED_DIM = 512  # ViT-B-32's embedding width: scored keeps image and text embeddings in fp16 (schemas.SCORED)
TB, PB = 1e12, 1e15


def measured(stage: str, name: str = "last.json") -> dict | None:
    p = os.path.join(BENCH, stage, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def human(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:,.1f} h" if h < 48 else f"{h / 24:,.1f} days"


def size(b: float) -> str:
    return f"{b / PB:,.2f} PB" if b >= 0.5 * PB else f"{b / TB:,.1f} TB"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip-pass", type=float, default=0.10,
                    help="share of scored images passing CLIP: LAION 'removed about 90%%' [blog]")
    ap.add_argument("--download-ok", type=float, default=0.55,
                    help="ASSUMED share of unique URLs that give an image; re-downloads of LAION's already-filtered "
                         "lists get 0.68-0.85 [i2d-ok], fresh crawl URLs less")
    ap.add_argument("--unique", type=float, default=0.70, help="ASSUMED share of extracted pairs left after dedup")
    ap.add_argument("--node-gbps", type=float, default=1.0, help="inbound bandwidth per node, Gbit/s")
    ap.add_argument("--full-kb", type=float, default=130.0,
                    help="ASSUMED mean full-size image on the web, KB: img2dataset's ~130 MB/s per 1,000 img/s [i2d]")
    ap.add_argument("--error-kb", type=float, default=4.0,
                    help="ASSUMED bytes of a failed attempt that is not an image (error page, headers), KB")
    ap.add_argument("--decode-error-share", type=float, default=0.057,
                    help="share of failures that fetched a whole image that did not decode: 83 of ~1,458 failures "
                         "in img2dataset#277's shard [i2d-ok]")
    ap.add_argument("--ok-latency-s", type=float, default=0.5, help="ASSUMED seconds a successful fetch holds a thread")
    ap.add_argument("--fail-latency-s", type=float, default=2.0,
                    help="ASSUMED seconds a failed attempt holds a thread (DNS and 404 fast, timeouts 5-10 s)")
    ap.add_argument("--failed-row-kb", type=float, default=0.3,
                    help="ASSUMED images-table bytes of a row without image bytes (url, text, reason, sha256), KB")
    ap.add_argument("--release-row-bytes", type=float, default=800e9 / 5.85e9,
                    help="release parquet bytes per row: LAION's metadata, 800 GB for 5.85B rows [blog]")
    ap.add_argument("--lake-traffic", choices=["nic", "separate"], default="nic",
                    help="nic: the lake (s3) is reached through the NIC that fetches images, so clip's read-back "
                         "of image bytes competes with downloads; separate: a storage network or local disks")
    ap.add_argument("--compaction", choices=["in-clip", "reread", "off"], default="in-clip",
                    help="jobs/compact.py, once download has ended (one writer per table), a drain step: in-clip "
                         "(compact.in_clip, the default) takes the compacted files clip's tasks wrote (the kept "
                         "bytes); reread reads every images file once more; off: no compaction")
    ap.add_argument("--lake-gbps", type=float, default=16.0,
                    help="ASSUMED lake read bandwidth per node with --lake-traffic separate, Gbit/s (one NVMe "
                         "disk reads ~2 GB/s); with nic the lake is read through --node-gbps")
    ap.add_argument("--gpu-img-per-s", type=float, default=2500.0,
                    help="ASSUMED clip rate per GPU while bench/clip/gpu.json is missing (clip-retrieval: ViT-B/32, "
                         "A100; LAION's own 2022 run: 1,800 [blog])")
    ap.add_argument("--mclip-gpu-factor", type=float, default=1.0,
                    help="ASSUMED GPU cost of a multi/nolang row (mCLIP text tower) relative to an English row")
    ap.add_argument("--cores-per-node", type=int, help="override the builds' 16 cores per node")
    ap.add_argument("--gpus-per-node", type=int, help="override the builds' 1 GPU per node (0: clip on CPU)")
    ap.add_argument("--goal-days", type=float, default=5.0, help="also print the node bandwidth this would take")
    ap.add_argument("--json", help="write every build's figures here")
    return ap.parse_args(argv)


def inputs(args) -> dict:
    """The measured figures the model uses, each with where it comes from; None where not measured."""
    m = {}
    dl = measured("download")
    if dl:
        r = dl["results"].get("ours-polite") or dl["results"]["ours"]
        # a run of days: the rate once running, without the bench's seconds of start-up
        m["download_rate"] = (r.get("running_img_per_s_per_core") or r["img_per_s_per_core"],
                              "bench/download/last.json, ours-polite once running (decode + resize of ~140 KB "
                              "photos-like JPEGs, loopback nginx)")
        sized = r if "stored_jpg_kb_per_image" in r else \
            ((measured("download", "bytes.json") or {}).get("results") or {}).get("ours-polite")
        if sized:
            m["bench_bytes"] = (sized, "bench/download/" + ("last.json" if sized is r else "bytes.json (a 2,000-image "
                                                             "run of the same bench for its bytes alone)"))
    dec = measured("capacity", "decode.json")
    if dec:
        m["stored_kb"] = (dec["stored_kb_per_image"]["configured"],
                          f"bench/capacity/decode.json: the download stage's ImageProcessor, short side 256, "
                          f"keep_ratio, q95 (conf/pipeline/laion*.toml) on the bench's {dec['images']} images of "
                          f"{dec['original_kb_per_image']} KB")
        m["stored_ratio"] = dec["stored_kb_per_image"]["configured"] / dec["original_kb_per_image"]
    gpu = measured("clip", "gpu.json")
    b32 = (gpu or {}).get("models", {}).get("ViT-B-32")
    if b32:
        m["gpu_rate"] = (b32["img_per_s_end_to_end"], f"measured, bench/clip/gpu.json on {gpu.get('gpu')}")
    else:
        m["gpu_rate"] = (args.gpu_img_per_s, "ASSUMPTION, not measured: clip-retrieval's published ViT-B/32 rate "
                                             "per A100")
    if b32 and b32.get("decode_img_per_s_per_core"):
        m["decode_rate"] = (b32["decode_img_per_s_per_core"], "measured, bench/clip/gpu.json (the GPU machine's CPU)")
    elif dec:
        m["decode_rate"] = (dec["clip_decode_img_per_s_per_core"],
                            f"measured on this machine, bench/capacity/decode.json ({dec['machine']})")
    cpu = measured("clip")
    if cpu:
        m["clip_cpu_core_s"] = (cpu["cores"] / cpu["ours_img_per_s_running"],
                                f"bench/clip/last.json ({cpu['model']} fp32 on CPU, once running)")
    return m


def project(build: str, args, m: dict) -> dict:
    """Every figure of one build, printed by report(); the JSON output."""
    release, nodes, cores, gpus = BUILDS[build]
    cores = args.cores_per_node or cores
    gpus = gpus if args.gpus_per_node is None else args.gpus_per_node
    p = {"build": build, "nodes": nodes, "cores_per_node": cores, "gpus_per_node": gpus, "release": release}

    # funnel per bucket: LAION's published release counts, scaled to this build, back through each loss
    share = {b: n / sum(BUCKETS.values()) for b, n in BUCKETS.items()}
    p["funnel"] = {b: {"release": release * s, "scored": release * s / args.clip_pass,
                       "tried": release * s / args.clip_pass / args.download_ok,
                       "extracted": release * s / args.clip_pass / args.download_ok / args.unique}
                   for b, s in share.items()}
    scored = sum(f["scored"] for f in p["funnel"].values())
    tried = sum(f["tried"] for f in p["funnel"].values())
    failed = tried - scored
    p.update(scored=scored, tried=tried, failed=failed, multilingual_share=share["multi"] + share["nolang"])

    # bytes per image: full size (what a fetch moves), stored (what images keeps and clip reads back)
    full = args.full_kb * 1e3
    stored = m["stored_kb"][0] * 1024 if "stored_kb" in m else None
    bench = m.get("bench_bytes", (None,))[0]
    # images-table bytes per stored image: the bench's parquet/JPEG ratio applied to the configured JPEG size
    row = stored * bench["images_table_kb_per_row"] / bench["stored_jpg_kb_per_image"] if stored and bench else stored
    fail_b = args.decode_error_share * full + (1 - args.decode_error_share) * args.error_kb * 1e3
    p.update(full_bytes=full, stored_bytes=stored, images_row_bytes=row, failed_attempt_bytes=fail_b)

    bw = args.node_gbps * 1e9 / 8 * nodes  # bytes/s into the cluster
    fetch = scored * full
    p["fetch_bytes"], p["failed_bytes"] = fetch, failed * fail_b
    p["readback_bytes"] = scored * row if row else 0.0
    # compact (jobs/compact.py) takes the compacted files clip's tasks wrote (~the kept bytes), or, rereading,
    # reads each images file whole: its kept bytes are scattered over every row group, no column chunk is skipped
    kept_row = args.clip_pass * (row or 0) + (1 - args.clip_pass) * args.failed_row_kb * 1e3
    p["compact_read_bytes"] = {"in-clip": scored * kept_row, "reread": p["readback_bytes"]}.get(args.compaction, 0.0)
    p["network_floor_s"] = fetch * 8 / (args.node_gbps * 1e9 * nodes)
    on_nic = args.lake_traffic == "nic"
    net_in = fetch + p["failed_bytes"] + (p["readback_bytes"] if on_nic else 0.0)
    p["net_in_bytes"] = net_in
    # outbound (full duplex, a check only): images written, embeddings written
    p["net_out_bytes"] = scored * (row or 0) + scored * (2 * EMBED_DIM * 2) \
        + (scored * kept_row if args.compaction == "in-clip" else 0.0)  # clip's tasks write the compacted files

    # stage costs alone
    stages = {}
    ext = measured("extract")
    if ext:
        r = ext["results"]["ours"]
        extracted = sum(f["extracted"] for f in p["funnel"].values())
        wat = extracted * ext["input_mb"] * 1e6 / r["items"]
        cpu_s = extracted / r["items_per_s"] / (nodes * cores)
        stages["extract"] = {"cpu_s": cpu_s, "net_s": wat / bw, "wat_bytes": wat,
                             "s": max(cpu_s, wat / bw), "rate": r["items_per_s"]}
    dd = measured("dedup")
    if dd:
        extracted = sum(f["extracted"] for f in p["funnel"].values())
        rate = dd["results"]["ours"]["rows_per_s_per_core"]
        cpu_s = extracted / rate / (nodes * cores)
        shuffle = extracted * 16 * 2  # keys + positions, then survivors' positions (upper bound)
        net_s = shuffle / bw if nodes > 1 else 0.0
        stages["dedup"] = {"cpu_s": cpu_s, "net_s": net_s, "s": max(cpu_s, net_s), "rate": rate,
                           "shuffle_bytes": shuffle}
    if "download_rate" in m:
        rate = m["download_rate"][0]
        stages["download"] = {"cpu_core_s": scored / rate, "s": scored / rate / (nodes * cores), "rate": rate}
    gpu_rate = m["gpu_rate"][0]
    gpu_work = scored * (1 - p["multilingual_share"]) + scored * p["multilingual_share"] * args.mclip_gpu_factor
    if gpus:
        stages["clip"] = {"gpu_s": gpu_work / gpu_rate / (nodes * gpus), "rate": gpu_rate}
        if "decode_rate" in m:
            stages["clip"]["decode_core_s"] = scored / m["decode_rate"][0]
        stages["clip"]["s"] = stages["clip"]["gpu_s"]
    elif "clip_cpu_core_s" in m:
        stages["clip"] = {"cpu_core_s": scored * m["clip_cpu_core_s"][0],
                          "s": scored * m["clip_cpu_core_s"][0] / (nodes * cores)}
    idx = index_seconds(release, nodes, cores)
    if idx:
        stages["index"] = idx
    p["stages"] = stages
    p["sequence_s"] = sum(s["s"] for s in stages.values())  # the old view: one after the other, network not counted

    # keep up: the rate the NIC delivers successes at, and what each stage needs per node to match it
    per_success_in = full + failed / scored * fail_b + ((row or 0) if on_nic else 0.0)
    r_node = args.node_gbps * 1e9 / 8 / per_success_in  # successes per second per node
    need = {}
    if "download" in stages:
        need["download_cores"] = r_node / stages["download"]["rate"]
    if gpus and "decode_rate" in m:
        need["clip_decode_cores"] = r_node / m["decode_rate"][0]
    if gpus:
        need["gpus"] = r_node * (gpu_work / scored) / gpu_rate
        need["decode_cores_per_gpu"] = gpu_rate / m["decode_rate"][0] if "decode_rate" in m else None
    elif "clip_cpu_core_s" in m:
        need["clip_cpu_cores"] = r_node * m["clip_cpu_core_s"][0]
    need["cpu_cores"] = sum(v for k, v in need.items() if k.endswith("_cores"))
    need["fetches_in_flight"] = r_node * args.ok_latency_s + r_node * failed / scored * args.fail_latency_s
    p["keep_up"] = {"img_per_s_per_node": r_node, **need}

    # the overlapped schedule: fill, then download and clip sharing each node's NIC, cores and GPU, then drain
    res = {"network in": net_in / bw}
    core_s = stages.get("download", {}).get("cpu_core_s", 0.0) + stages.get("clip", {}).get("decode_core_s", 0.0) \
        + stages.get("clip", {}).get("cpu_core_s", 0.0)
    res["CPU"] = core_s / (nodes * cores)
    if gpus and "clip" in stages:
        res["GPU"] = stages["clip"]["gpu_s"]
    fill = stages.get("extract", {}).get("s", 0.0) + stages.get("dedup", {}).get("s", 0.0)
    # drain: compact (it waits for download's end: images has one writer at a time) reading images at the lake's
    # bandwidth, then the index over every embedding
    lake_bw = (args.node_gbps if on_nic else args.lake_gbps) * 1e9 / 8 * nodes
    compact_s = p["compact_read_bytes"] / lake_bw
    drain = compact_s + stages.get("index", {}).get("s", 0.0)
    limit = max(res, key=res.get)
    p["schedule"] = {"resources_s": res, "limit": limit, "fill_s": fill, "drain_s": drain, "compact_s": compact_s,
                     "projected_s": fill + res[limit] + drain}
    p["ratio"] = p["schedule"]["projected_s"] / p["network_floor_s"]
    p["keep_up"]["fits"] = need["cpu_cores"] <= cores and need.get("gpus", 0.0) <= gpus
    p["goal_met"] = p["ratio"] <= GOAL_RATIO and limit == "network in" and p["keep_up"]["fits"]

    # storage at the end
    meta = args.failed_row_kb * 1e3
    images = scored * (row or 0) + failed * meta
    kept = scored * args.clip_pass * (row or 0) + scored * (1 - args.clip_pass) * meta + failed * meta
    # peak: compact runs once download has ended (one writer per table), so every candidate's bytes are stored
    # at once before it; at the end only what compaction keeps
    p["storage"] = {"images": images, "images_compacted": kept, "images_peak": images, "scored": scored * (2 * EMBED_DIM * 2 + 24),
                    "release_parquet": release * args.release_row_bytes, "release_images": release * (stored or 0)}
    p["gbps_for_goal_days"] = fetch * 8 / (args.goal_days * 86400 * nodes) / 1e9
    return p


def index_seconds(release: float, nodes: int, cores: int) -> dict | None:
    """The index stage from bench/index: two autofaiss builds (image, text) on one node's cores, the near-duplicate
    pass's neighbour searches over every core, and the grouping. Linear in the vectors: a crude extrapolation of one
    1M-vector build (training is a near-fixed cost, adding vectors is linear)."""
    ix = measured("index")
    if ix is None:
        return None
    per_vector = ix["build_seconds"] * ix["cores"] / ix["vectors"]  # core-seconds per vector
    build_s = 2 * release * per_vector / cores
    # the near-duplicate pass at the cheapest measured search parameters that find the planted copies the tuned
    # ones find (index.near_dup_index_param)
    runs = ix.get("near_dup_search") or {"tuned": {"queries_per_s": ix["neighbour_search_per_s"], "index_param": "",
                                                   "planted_in_top_k": 0}}
    best = max(r["planted_in_top_k"] for r in runs.values())
    near = max((r for r in runs.values() if r["planted_in_top_k"] >= best - 0.005), key=lambda r: r["queries_per_s"])
    near_s = release / near["queries_per_s"] * ix["cores"] / (nodes * cores)
    grouping = measured("index", "grouping.json")  # the distributed components pass (bench/index/grouping.py)
    group_s = release * grouping["core_us_per_row"] / 1e6 / (nodes * cores) if grouping else 0.0
    return {"s": build_s + near_s + group_s, "build_s": build_s, "near_s": near_s, "group_s": group_s,
            "per_vector_ms": per_vector * 1e3, "index_key": ix["index_key"], "near_param": near["index_param"]}


def report(p: dict, args, m: dict) -> None:
    n, c, g = p["nodes"], p["cores_per_node"], p["gpus_per_node"]
    print(f"\n{p['build']} (as modelled: {n} x {c} cores" + (f" + {g} GPU" if g else ", no GPU")
          + f", {args.node_gbps:g} Gbit/s in per node)")
    print(f"  funnel [blog: release per bucket, ~90% removed by CLIP; download-ok, unique: ASSUMPTIONS]")
    print(f"    {'bucket':7} {'release':>14} {'scored':>16} {'URLs tried':>16} {'pairs extracted':>17}")
    if p["release"] != sum(BUCKETS.values()):
        print("    (LAION-5B's bucket shares, scaled to this build)")
    for b, f in p["funnel"].items():
        print(f"    {b:7} {f['release']:>14,.0f} {f['scored']:>16,.0f} {f['tried']:>16,.0f} {f['extracted']:>17,.0f}")
    print(f"    multilingual share (multi + nolang, scored with mCLIP at 0.26 [blog]): "
          f"{100 * p['multilingual_share']:.0f}%, at {args.mclip_gpu_factor:g}x an English row's GPU cost "
          f"(ASSUMPTION, not measured)")
    bench = m.get("bench_bytes")
    print("  bytes per image")
    print(f"    full size  {p['full_bytes'] / 1e3:,.0f} KB (ASSUMPTION from [i2d]); the download bench fetched "
          + (f"{bench[0]['fetched_kb_per_image']} KB per image ({bench[1]}; generated photos-like images)"
             if bench else "- (no bytes recorded)"))
    if p["stored_bytes"]:
        print(f"    stored     {p['stored_bytes'] / 1024:,.1f} KB JPEG, {p['images_row_bytes'] / 1024:,.1f} KB per "
              f"images row ({m['stored_kb'][1]}; the download bench's own 256 x 256 border default stored "
              f"{bench[0]['stored_jpg_kb_per_image'] if bench else '-'} KB); published: 10 TB for LAION-400M at "
              f"256 px [i2d], 240 TB at 384 / 80 TB at 224 for 5.85B [blog]")
    print(f"    failed     {p['failed']:,.0f} attempts x {p['failed_attempt_bytes'] / 1e3:,.1f} KB "
          f"({100 * args.decode_error_share:.1f}% whole images that did not decode [i2d-ok], the rest "
          f"{args.error_kb:g} KB error responses: ASSUMPTION) = {size(p['failed_bytes'])}, "
          f"{100 * p['failed_bytes'] / p['fetch_bytes']:.1f}% of the images' bytes")
    print(f"  network floor: {p['scored']:,.0f} downloads x {p['full_bytes'] / 1e3:,.0f} KB = "
          f"{size(p['fetch_bytes'])} at {args.node_gbps:g} Gbit/s x {n} node{'s' * (n > 1)} = "
          f"{human(p['network_floor_s'])}  ({args.goal_days:g} days would take {p['gbps_for_goal_days']:,.1f} "
          f"Gbit/s per node)")
    st = p["stages"]
    print("  stages alone (measured unless marked)")
    if "extract" in st:
        e = st["extract"]
        print(f"    extract : {human(e['s'])} ({human(e['cpu_s'])} CPU at {e['rate']:,} pairs/s/core; "
              f"{human(e['net_s'])} to read {size(e['wat_bytes'])} of WAT) - "
              f"{'network' if e['net_s'] > e['cpu_s'] else 'CPU'}-bound")
    else:
        print("    extract : not measured yet")
    if "dedup" in st:
        d = st["dedup"]
        print(f"    dedup   : {human(d['s'])} ({human(d['cpu_s'])} CPU at {d['rate']:,} rows/s/core, 20M-row bench, "
              f"assumed linear; {size(d['shuffle_bytes'])} of keys cross the shuffle)")
    if "download" in st:
        d = st["download"]
        print(f"    download: {human(d['s'])} CPU at {d['rate']:,} img/s/core ({m['download_rate'][1]})")
    if "clip" in st and g:
        cl = st["clip"]
        print(f"    clip    : {human(cl['gpu_s'])} GPU on {n * g} GPUs at {cl['rate']:,.0f} img/s ({m['gpu_rate'][1]})"
              + (f"; decode beside it {cl['decode_core_s'] / (n * c) / 86400:,.1f} days of all {n * c} cores at "
                 f"{m['decode_rate'][0]:,.0f} img/s/core ({m['decode_rate'][1]})" if "decode_core_s" in cl else ""))
    if "clip_cpu_core_s" in m:
        cpu_s = p["scored"] * m["clip_cpu_core_s"][0] / (n * c)
        print(f"    clip CPU: {human(cpu_s)} on {n * c} cores at {1000 * m['clip_cpu_core_s'][0]:,.0f} core-s per "
              f"1,000 images ({m['clip_cpu_core_s'][1]}) - for reference: CPU clip cannot keep up")
    if "index" in st:
        i = st["index"]
        print(f"    index   : {human(i['s'])} ({human(i['build_s'])} for two autofaiss builds at "
              f"{i['per_vector_ms']:.2f} core-ms per vector ({i['index_key']}, 1M-vector bench, assumed linear) on one "
              f"node; {human(i['near_s'])} near-duplicate search ({i['near_param']}); {human(i['group_s'])} grouping)")
    print(f"    in sequence, as before (network not counted): {human(p['sequence_s'])}")
    k = p["keep_up"]
    print(f"  keep up with the network: {k['img_per_s_per_node']:,.0f} images/s per node "
          f"(each success brings {100 * p['failed'] / p['scored']:.0f}% failed attempts"
          + (", and clip reads its stored bytes back through the same NIC" if args.lake_traffic == "nic" else "")
          + ")")
    parts = []
    if "download_cores" in k:
        parts.append(f"download {k['download_cores']:.1f} cores")
    if "clip_decode_cores" in k:
        parts.append(f"clip decode {k['clip_decode_cores']:.1f} cores")
    if "gpus" in k:
        parts.append(f"{k['gpus']:.2f} GPU (ASSUMED rate)" if "ASSUMPTION" in m["gpu_rate"][1]
                     else f"{k['gpus']:.2f} GPU")
    if "clip_cpu_cores" in k:
        parts.append(f"clip on CPU {k['clip_cpu_cores']:,.0f} cores")
    print(f"    per node: {', '.join(parts)}; {k['cpu_cores']:.1f} of {c} cores "
          + ("- fits" if k["fits"] else "- does NOT fit"))
    if k.get("decode_cores_per_gpu"):
        print(f"    decode cores per GPU at its full rate: {k['decode_cores_per_gpu']:.1f}")
    print(f"    fetches in flight per node: {k['fetches_in_flight']:,.0f} ({args.ok_latency_s:g} s per success, "
          f"{args.fail_latency_s:g} s per failure: ASSUMPTIONS, the bench is loopback); download.threads 32 x "
          f"{c} tasks = {32 * c}" + (f" - raise download.threads to ~{-(-k['fetches_in_flight'] // c):.0f}"
                                     if k["fetches_in_flight"] > 32 * c else ""))
    s = p["schedule"]
    print("  overlapped schedule (download and clip --follow at once): fill + slowest resource + drain")
    print("    resources: " + ", ".join(f"{r} {human(t)}" for r, t in s["resources_s"].items())
          + f"  (network in: {size(p['net_in_bytes'])} = images + failed attempts"
          + (" + clip's read-back" if args.lake_traffic == "nic" else "")
          + "; out: "
          + f"{size(p['net_out_bytes'])}, full duplex)")
    print(f"    fill (extract + dedup) {human(s['fill_s'])}; drain {human(s['drain_s'])}: compact "
          f"{human(s['compact_s'])} (reads {size(p['compact_read_bytes'])} of images at "
          + (f"{args.node_gbps:g} Gbit/s per node, the NIC" if args.lake_traffic == "nic"
             else f"{args.lake_gbps:g} Gbit/s per node, ASSUMED local disk") + "), then the index")
    print(f"    => network floor {human(p['network_floor_s'])}, projected {human(s['projected_s'])}, ratio "
          f"{p['ratio']:.2f} (goal <= {GOAL_RATIO}); limited by {s['limit']}")
    sto = p["storage"]
    print(f"  storage at the end: images {size(sto['images'])} ({size(sto['images_compacted'])} with below-threshold "
          f"bytes compacted away by jobs/compact.py; the peak before it runs: {size(sto['images_peak'])}); scored {size(sto['scored'])} (two {EMBED_DIM}-dim fp16 embeddings per row, from "
          f"the schema); release {size(sto['release_parquet'])} parquet [blog: 800 GB for 5.85B] + "
          f"{size(sto['release_images'])} of its images at the stored size")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    m = inputs(args)
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in vars(args).items() if k != "json"))
    results = {}
    for build in BUILDS:
        p = project(build, args, m)
        report(p, args, m)
        results[build] = p
    print("\nLAION's own: img2dataset 5.8B images in 7 days on 10 nodes (9,500 img/s, 240 TB at 384 px) [i2d]; "
          "ViT-L/14 embeddings on 32 A100 in ~1 week [blog].")
    five = results[list(BUILDS)[-1]]
    print(f"Goal (issue 19): projected <= {GOAL_RATIO}x the network floor with every stage keeping up: "
          + "; ".join(f"{b.split(',')[0]} {'met' if p['goal_met'] else 'NOT met'} ({p['ratio']:.2f}, "
                      f"{p['schedule']['limit']}-bound)" for b, p in results.items())
          + ("" if "ASSUMPTION" not in m["gpu_rate"][1] else "; the GPU rate in it is an ASSUMPTION") + ".")
    if args.lake_traffic == "nic" and not five["goal_met"]:
        alt = project(list(BUILDS)[-1], argparse.Namespace(**{**vars(args), "lake_traffic": "separate"}), m)
        print(f"  with clip's read-back off the fetching NIC (--lake-traffic separate): ratio {alt['ratio']:.2f} for "
              f"the 5B build")
    print("Sources: [blog] laion.ai/blog/laion-5b; [paper] arXiv 2210.08402; [i2d] img2dataset README and "
          "dataset_examples; [i2d-ok] img2dataset issues #277, #400, #439 (quotes in this script's docstring).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"parameters": {k: v for k, v in vars(args).items() if k != "json"},
                       "sources": {k: v[1] for k, v in m.items() if isinstance(v, tuple)}, "builds": results},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
