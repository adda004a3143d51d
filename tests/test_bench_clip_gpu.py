"""bench/clip/gpu.py runs on CPU with the tiny config and reports every figure it promises, each a measured number."""

import importlib.util
import json
import subprocess
import sys

from conftest import ROOT


def test_gpu_bench_runs_on_cpu_with_the_tiny_model(tmp_path):
    out = tmp_path / "gpu.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "clip" / "gpu.py"), "--device", "cpu", "--models",
                        "l5s-tiny", "--images", "128", "--batch-size", "32", "--decode-threads", "2",
                        "--read-rows", "64", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["precision"] == "fp32" and report["busy_method"] is None
    r = report["models"]["l5s-tiny"]
    assert r["images"] == 128
    for key in ("img_per_s_end_to_end", "decode_img_per_s_per_core", "decode_img_per_s_pool", "model_img_per_s",
                "end_to_end_seconds", "bound_img_per_s"):
        assert r[key] > 0, key
    # end to end does both halves, so it cannot beat either alone by much (timer noise aside)
    assert r["img_per_s_end_to_end"] <= 1.2 * r["bound_img_per_s"]
    assert 0 < r["model_time_share"] <= 1 and r["gpu_busy_fraction"] is None  # no GPU: no busy figure
    assert r["limit"] in ("decode", "model", "main thread")
    assert r["target_img_per_s"] is None and r["cores_per_gpu_for_target"] is None  # targets are for ViT-B/L only
    assert "l5s-tiny:" in p.stdout and "img/s end to end" in p.stdout
    assert r["tokenize_us_per_caption"] > 0 and r["gpu_decode"] is None  # --gpu-decode runs on cuda only


def test_the_gpu_check_runs_on_cpu(tmp_path):
    """The script a GPU session runs first (the device path against the CPU path), smoke-run with cpu for cuda."""
    out = tmp_path / "check.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "clip" / "gpu_check.py"), "--device", "cpu", "--rows",
                        "300", "--json", str(out)], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["cpu"]["ok"] and report["cpu"]["max_abs_sim_diff"] == 0.0  # the same device: the same numbers
    assert report["cpu+gpu_decode"]["ok"]


def test_the_bench_table_has_download_row_groups():
    from laion5b_spark.download.job import DownloadJob

    spec = importlib.util.spec_from_file_location("clip_gpu_bench", ROOT / "bench" / "clip" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.ROW_GROUP == DownloadJob.row_group_size  # read_rows reads what a clip task would read
