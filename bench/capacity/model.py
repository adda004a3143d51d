"""Capacity model: wall time of a LAION-400M build on one 16-core node and a LAION-5B build on ten 16-core nodes
with one GPU each, from the per-stage costs the benchmarks measured on this machine.

    python bench/capacity/model.py [--clip-pass 0.10] [--download-ok 0.55] [--unique 0.7] [--node-gbps 1]

Each stage's cost comes from its bench/<stage>/last.json; a stage without one is reported as "not measured yet"
and left out of the total (never estimated as if measured). Assumptions are parameters, printed with the result.
The one stage figure that is not measured here is the clip GPU rate: until bench/clip/gpu.json exists (bench/clip/
gpu_device.sh on a GPU machine) it is --gpu-img-per-s, clip-retrieval's published ~2,500 img/s for ViT-B/32 on
one A100, and every line that uses it says ASSUMPTION.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)

BUILDS = {  # release rows, nodes, cores per node, GPUs per node
    "LAION-400M, 1 node x 16 cores": (400e6, 1, 16, 0),
    "LAION-5B, 10 nodes x 16 cores + 1 GPU": (5.85e9, 10, 16, 1),
}


GOAL = "LAION-5B, 10 nodes x 16 cores + 1 GPU"


def measured(stage: str, name: str = "last.json") -> dict | None:
    p = os.path.join(BENCH, stage, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def human(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:,.1f} h" if h < 48 else f"{h / 24:,.1f} days"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip-pass", type=float, default=0.10, help="share of downloaded pairs passing CLIP (LAION: ~10%%)")
    ap.add_argument("--download-ok", type=float, default=0.55, help="share of unique URLs that download")
    ap.add_argument("--unique", type=float, default=0.70, help="share of extracted pairs left after dedup")
    ap.add_argument("--node-gbps", type=float, default=1.0, help="input bandwidth per node for WAT reads, Gbit/s")
    ap.add_argument("--gpu-img-per-s", type=float, default=2500.0,
                    help="ASSUMED clip rate per GPU while bench/clip/gpu.json is missing (clip-retrieval: ViT-B/32, "
                         "A100)")
    ap.add_argument("--goal-days", type=float, default=5.0)
    args = ap.parse_args()
    gpu = measured("clip", "gpu.json")
    gpu_b32 = (gpu or {}).get("models", {}).get("ViT-B-32")

    ext = measured("extract")
    print("assumptions: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    verdict = {}
    for build, (release, nodes, cores, gpus) in BUILDS.items():
        stages = {}  # stage -> wall seconds, for the verdict
        scored = release / args.clip_pass
        unique = scored / args.download_ok  # unique URLs to try
        extracted = unique / args.unique
        print(f"\n{build}: {release:,.0f} released <- {scored:,.0f} images scored <- {unique:,.0f} URLs tried "
              f"<- {extracted:,.0f} pairs extracted")
        if ext:
            r = ext["results"]["ours"]
            mb_per_pair = ext["input_mb"] / r["items"]
            cpu_s = extracted / r["items_per_s"] / (nodes * cores)
            net_s = extracted * mb_per_pair * 8 / 1000 / (args.node_gbps * nodes)
            print(f"  extract : {human(max(cpu_s, net_s))} ({human(cpu_s)} CPU at {r['items_per_s']:,} pairs/s/core; "
                  f"{human(net_s)} to read {extracted * mb_per_pair / 1e6:,.0f} TB of WAT at {args.node_gbps} Gbit/s"
                  f"/node) - {'network' if net_s > cpu_s else 'CPU'}-bound")
            stages["extract"] = max(cpu_s, net_s)
        else:
            print("  extract : not measured yet")
        dd = measured("dedup")
        if dd:
            rate = dd["results"]["ours"]["rows_per_s_per_core"]
            cpu_s = extracted / rate / (nodes * cores)
            shuffle_gb = extracted * 16 * 2 / 1e9  # keys+positions, then survivors' positions (upper bound)
            net_s = shuffle_gb * 8 / (args.node_gbps * nodes) if nodes > 1 else 0.0
            print(f"  dedup   : {human(max(cpu_s, net_s))} ({human(cpu_s)} CPU at {rate:,} rows/s/core, whole job on "
                  f"the 20M-row bench, assumed linear; {shuffle_gb:,.0f} GB of keys cross the shuffle"
                  + (f", {human(net_s)} at {args.node_gbps} Gbit/s/node" if nodes > 1 else "") + ")")
            stages["dedup"] = max(cpu_s, net_s)
        dl = measured("download")
        if dl:
            r = dl["results"].get("ours-polite") or dl["results"]["ours"]
            # a run of days: the rate once running, without the bench's seconds of start-up
            rate = r.get("running_img_per_s_per_core") or r["img_per_s_per_core"]
            cpu_s = scored / rate / (nodes * cores)  # decoding successes is the cost; failures are cheap
            print(f"  download: {human(cpu_s)} CPU for {scored:,.0f} images at {rate:,} img/s/core (decode + resize to "
                  f"256 px, loopback bench with default politeness; real hosts add latency, hidden by threads)")
            stages["download"] = cpu_s
        stages.update(clip_lines(scored, nodes, cores, gpus, gpu, gpu_b32, args))
        stages.update(index_lines(release, nodes, cores))
        if stages:
            limit = max(stages, key=stages.get)
            verdict[build] = (limit, stages[limit], sum(stages.values()))
            print(f"  => longest stage: {limit} ({human(stages[limit])}); stages one after the other: "
                  f"{human(sum(stages.values()))}")
    print("\nLAION's own: img2dataset 5.8B images in 7 days on 10 nodes; ViT-L/14 embeddings on 32 A100 in ~1 week.")
    if GOAL in verdict:
        limit, longest, total = verdict[GOAL]
        fits = total <= args.goal_days * 86400
        print(f"Goal: 5B end to end in <= {args.goal_days:g} days on 10 nodes: {'fits' if fits else 'does NOT fit'} "
              f"({human(total)} with stages in sequence). Limiting stage: {limit} "
              f"({human(longest)}, {longest / 86400 / args.goal_days:.1f}x the whole budget)"
              + ("" if gpu_b32 else "; the clip GPU figure in it is an ASSUMPTION, not measured") + ".")
    return 0


def index_lines(release: float, nodes: int, cores: int) -> dict[str, float]:
    """The index stage from bench/index: two autofaiss builds (image, text) on the driver's cores, and the
    near-duplicate pass's neighbour searches spread over every core. Linear in the vectors: a crude
    extrapolation of one 1M-vector build (training is a near-fixed cost, adding vectors is linear)."""
    ix = measured("index")
    if ix is None:
        print("  index   : not measured yet (bench/index)")
        return {}
    per_vector = ix["build_seconds"] * ix["cores"] / ix["vectors"]  # core-seconds per vector
    build_s = 2 * release * per_vector / cores  # image and text, one node's cores each
    # the near-duplicate pass at the cheapest measured search parameters that find the planted copies the tuned
    # ones find (index.near_dup_index_param)
    runs = ix.get("near_dup_search") or {"tuned": {"queries_per_s": ix["neighbour_search_per_s"], "index_param": "",
                                                   "planted_in_top_k": 0}}
    best = max(r["planted_in_top_k"] for r in runs.values())
    near = max((r for r in runs.values() if r["planted_in_top_k"] >= best - 0.005), key=lambda r: r["queries_per_s"])
    near_s = release / near["queries_per_s"] * ix["cores"] / (nodes * cores)
    grouping = measured("index", "grouping.json")  # the distributed components pass (bench/index/grouping.py)
    group_s = release * grouping["core_us_per_row"] / 1e6 / (nodes * cores) if grouping else 0.0
    group_note = (f"; {human(group_s)} of grouping at {grouping['core_us_per_row']:.1f} core-us per row "
                  f"({grouping['rows']:,}-row bench, assumed linear)" if grouping else "; grouping not measured yet")
    print(f"  index   : {human(build_s + near_s + group_s)} ({human(build_s)} for two autofaiss builds of "
          f"{release:,.0f} vectors at {per_vector * 1e3:.2f} core-ms per vector ({ix['index_key']}, "
          f"{ix['vectors']:,}-vector bench, assumed linear) on one node; {human(near_s)} of near-duplicate search at "
          f"{near['queries_per_s'] / ix['cores']:,.0f} queries/s/core ({near['index_param']}) on {nodes * cores} "
          f"cores{group_note})")
    return {"index": build_s + near_s + group_s}


def clip_lines(scored: float, nodes: int, cores: int, gpus: int, gpu: dict | None, b32: dict | None,
               args) -> dict[str, float]:
    """Print the clip stage on CPU (measured) and on the build's GPUs (measured or ASSUMED); return its wall time."""
    cpu = measured("clip")
    if cpu is None:
        print("  clip    : not measured yet (issue 5)")
        return {}
    # the job's rate once running, on cpu["cores"] cores: core-seconds per 1,000 images (fp32 ViT-B-32)
    core_s_k = 1000 * cpu["cores"] / cpu["ours_img_per_s_running"]
    cpu_s = scored * core_s_k / 1000 / (nodes * cores)
    print(f"  clip CPU: {human(cpu_s)} for {scored:,.0f} images at {core_s_k:,.0f} core-s per 1,000 images "
          f"({cpu['model']} fp32, bench/clip/last.json) on {nodes * cores} cores")
    if not gpus:
        return {"clip": cpu_s}
    n_gpu = nodes * gpus
    if b32:
        rate, src = b32["img_per_s_end_to_end"], f"measured, bench/clip/gpu.json on {gpu.get('gpu')}"
    else:
        rate, src = args.gpu_img_per_s, "ASSUMPTION, not measured: clip-retrieval's published ViT-B/32 rate per A100"
    gpu_s = scored / rate / n_gpu
    need = scored / rate / (args.goal_days * 86400)
    print(f"  clip GPU: {human(gpu_s)} on {n_gpu} GPUs at {rate:,.0f} img/s per GPU ({src}); "
          f"{need:,.0f} such GPUs would do it in {args.goal_days:g} days on their own")
    if b32 and b32.get("decode_img_per_s_per_core"):
        print(f"            decode beside it: {rate / b32['decode_img_per_s_per_core']:.1f} cores per GPU at "
              f"{b32['decode_img_per_s_per_core']:,.0f} img/s per core (measured)")
    return {"clip": min(cpu_s, gpu_s)}


if __name__ == "__main__":
    sys.exit(main())
