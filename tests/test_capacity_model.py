"""bench/capacity/model.py: the printed terms exist and agree with each other and with the figures it writes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "bench", "capacity", "model.py")


def _model():
    spec = importlib.util.spec_from_file_location("capacity_model", MODEL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("capacity") / "model.json"
    p = subprocess.run([sys.executable, MODEL, "--json", str(out)], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    with open(out) as f:
        return p.stdout, json.load(f)


def test_every_build_prints_the_new_terms_with_their_sources(run):
    text, data = run
    assert set(data["builds"]) == {"LAION-400M, 1 node x 16 cores + 1 GPU", "LAION-5B, 10 nodes x 16 cores + 1 GPU"}
    blocks = text.split("\nLAION-")[1:]
    assert len(blocks) == 2
    for block in blocks:
        for term in ("funnel", "multilingual share", "full size", "stored", "failed", "network floor", "keep up",
                     "decode cores per GPU", "fetches in flight", "overlapped schedule", "fill", "drain",
                     "projected", "ratio", "limited by", "storage at the end", "compacted", "scored", "release"):
            assert term in block, term
        for bucket in ("en", "multi", "nolang"):
            assert re.search(rf"^\s+{bucket}\s+[\d,]+", block, re.M), bucket
    # the clip GPU rate is not measured here: it must say so wherever it is used
    if "bench/clip/gpu.json" not in json.dumps(data["sources"]):
        assert "ASSUMPTION" in text and "ASSUMED rate" in text
    for cite in ("[blog]", "[i2d]", "[i2d-ok]", "arXiv 2210.08402", "laion.ai/blog/laion-5b"):
        assert cite in text, cite
    # LAION's published bucket sizes are the 5B funnel's release column
    five = data["builds"]["LAION-5B, 10 nodes x 16 cores + 1 GPU"]
    assert [round(f["release"] / 1e9, 2) for f in five["funnel"].values()] == [2.32, 2.26, 1.27]


def test_the_figures_agree_with_each_other(run):
    text, data = run
    params = data["parameters"]
    for name, p in data["builds"].items():
        gbps, nodes = params["node_gbps"], p["nodes"]
        scored = sum(f["scored"] for f in p["funnel"].values())
        assert scored == pytest.approx(p["release"] / params["clip_pass"])
        assert p["tried"] == pytest.approx(scored / params["download_ok"])
        assert p["fetch_bytes"] == pytest.approx(scored * p["full_bytes"])
        # the floor is the downloads' bytes at the cluster's bandwidth
        assert p["network_floor_s"] == pytest.approx(p["fetch_bytes"] * 8 / (gbps * 1e9 * nodes))
        s = p["schedule"]
        for resource, seconds in s["resources_s"].items():
            assert s["projected_s"] >= seconds, resource
        assert s["projected_s"] == pytest.approx(s["fill_s"] + max(s["resources_s"].values()) + s["drain_s"])
        assert s["limit"] == max(s["resources_s"], key=s["resources_s"].get)
        assert s["resources_s"]["network in"] >= p["network_floor_s"]  # failed attempts only add bytes
        assert p["ratio"] == pytest.approx(s["projected_s"] / p["network_floor_s"])
        assert p["ratio"] >= 1.0
        assert f"ratio {p['ratio']:.2f}" in text
        # keep up: the download cores needed deliver exactly the network's image rate
        k = p["keep_up"]
        per_node = k["img_per_s_per_node"]
        assert k["download_cores"] * p["stages"]["download"]["rate"] == pytest.approx(per_node)
        in_bytes = p["net_in_bytes"] / scored  # bytes into the node per success, failures and read-back included
        assert per_node * in_bytes == pytest.approx(gbps * 1e9 / 8)
        sto = p["storage"]
        assert 0 < sto["images_compacted"] < sto["images"]
        assert sto["release_images"] < sto["images_compacted"]


def test_bandwidth_and_lake_traffic_move_the_terms_they_should():
    model = _model()
    m = model.inputs(model.parse([]))
    build = list(model.BUILDS)[-1]
    one = model.project(build, model.parse([]), m)
    two = model.project(build, model.parse(["--node-gbps", "2"]), m)
    apart = model.project(build, model.parse(["--lake-traffic", "separate"]), m)
    assert two["network_floor_s"] == pytest.approx(one["network_floor_s"] / 2)
    assert two["keep_up"]["img_per_s_per_node"] == pytest.approx(2 * one["keep_up"]["img_per_s_per_node"])
    # clip's read-back costs inbound bytes only when the lake shares the fetching NIC
    assert one["net_in_bytes"] - apart["net_in_bytes"] == pytest.approx(one["readback_bytes"])
    # compaction after the download reads clip's compacted files (or, rereading, every images file) at the NIC's or
    # the lake disks' bandwidth
    reread = model.project(build, model.parse(["--compaction", "reread"]), m)
    assert reread["compact_read_bytes"] == pytest.approx(one["readback_bytes"])
    assert one["compact_read_bytes"] == pytest.approx(one["storage"]["images_compacted"] - one["failed"] * 300, rel=1e-6)
    off = model.project(build, model.parse(["--compaction", "off"]), m)
    assert one["schedule"]["drain_s"] - off["schedule"]["drain_s"] == pytest.approx(one["schedule"]["compact_s"])
    assert one["schedule"]["compact_s"] == pytest.approx(one["compact_read_bytes"] * 8 / (1e9 * 10))
    assert apart["schedule"]["compact_s"] == pytest.approx(one["schedule"]["compact_s"] / 16)
    assert one["readback_bytes"] > 0 and apart["ratio"] < one["ratio"]
    assert apart["network_floor_s"] == one["network_floor_s"]
