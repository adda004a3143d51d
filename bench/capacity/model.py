"""Capacity model: wall time of a LAION-400M build on one 16-core node and a LAION-5B build on ten 16-core nodes
with one GPU each, from the per-stage costs the benchmarks measured on this machine.

    python bench/capacity/model.py [--clip-pass 0.10] [--download-ok 0.55] [--unique 0.7] [--node-gbps 1]

Each stage's cost comes from its bench/<stage>/last.json; a stage without one is reported as "not measured yet"
and left out of the total (never estimated as if measured). Assumptions are parameters, printed with the result.
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


def measured(stage: str) -> dict | None:
    p = os.path.join(BENCH, stage, "last.json")
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
    args = ap.parse_args()

    ext = measured("extract")
    print("assumptions: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    for build, (release, nodes, cores, _gpus) in BUILDS.items():
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
        dl = measured("download")
        if dl:
            r = dl["results"].get("ours-polite") or dl["results"]["ours"]
            # a run of days: the rate once running, without the bench's seconds of start-up
            rate = r.get("running_img_per_s_per_core") or r["img_per_s_per_core"]
            cpu_s = scored / rate / (nodes * cores)  # decoding successes is the cost; failures are cheap
            print(f"  download: {human(cpu_s)} CPU for {scored:,.0f} images at {rate:,} img/s/core (decode + resize to "
                  f"256 px, loopback bench with default politeness; real hosts add latency, hidden by threads)")
        for stage, issue in (("clip", 5), ("index", 6)):
            print(f"  {stage:8}: " + ("see bench/" + stage if measured(stage) else f"not measured yet (issue {issue})"))
    print("\nLAION's own: img2dataset 5.8B images in 7 days on 10 nodes; ViT-L/14 embeddings on 32 A100 in ~1 week. "
          "Goal: 5B end to end in <= 5 days on 10 nodes - undecided until every stage is measured.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
