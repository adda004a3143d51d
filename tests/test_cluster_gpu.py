"""GPU task shares on a real Spark standalone cluster, on a machine without GPUs.

The GPUs are faked at the only place the product asks the hardware: a fake ``nvidia-smi`` on the worker's PATH, so
deploy/gpu_discovery.sh, run by the worker that ``deploy/cluster.sh worker start --gpus 2`` started, reports two
GPUs. Spark's scheduler then hands out their addresses, and the product's own code (``resources.task_profile``,
``clip.device.device_for``) turns them into stage profiles and devices. What is proven: no two tasks that run at
once are given the same whole GPU, a 0.5 share packs two tasks per GPU and no more, and each task's device is
``cuda:<its address>`` (never "everything on cuda:0", clip-retrieval's bug). No CUDA runs here: the real GPU run is
bench/clip/gpu_device.sh on a GPU machine.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, free_port

pytestmark = pytest.mark.cluster
CLUSTER = ROOT / "deploy" / "cluster.sh"
DISCOVERY = ROOT / "deploy" / "gpu_discovery.sh"

UUIDS = ["GPU-8932f937-d72c-4106-c12f-20bd9faed9f6", "GPU-8a11c0de-0000-4000-8000-000000000001",
         "GPU-3c5e0b1a-1111-4111-8111-111111111112", "GPU-3c5e77f2-2222-4222-8222-222222222223"]


def fake_smi(n=2, mig=()):
    """A fake nvidia-smi with ``n`` GPUs (real nvidia-smi's output formats) and the MIG devices ``mig`` on GPU 0."""
    query = "".join(f"{i}, {UUIDS[i]}\\n" for i in range(n))
    listing = "".join(f"GPU {i}: NVIDIA Fake (UUID: {UUIDS[i]})\\n"
                      + ("".join(f"  MIG 1g.18gb     Device {j}: (UUID: {m})\\n" for j, m in enumerate(mig))
                         if i == 0 else "") for i in range(n))
    return f"""#!/bin/sh
# a fake nvidia-smi: {n} GPUs
case "$*" in
  *--query-gpu=index,uuid*) printf '{query}';;
  -L) printf '{listing}';;
  *) echo "fake nvidia-smi: unexpected arguments: $*" >&2; exit 2;;
esac
"""


FAKE_SMI = fake_smi(2)


def _fake_bin(d, body=FAKE_SMI):
    d.mkdir(parents=True, exist_ok=True)
    smi = d / "nvidia-smi"
    smi.write_text(body)
    smi.chmod(0o755)
    return d


def _tools_only(d, extra=()):
    """A PATH dir holding only the tools gpu_discovery.sh uses (no nvidia-smi, wherever the real PATH has one)."""
    import shutil

    d.mkdir(parents=True, exist_ok=True)
    for tool in ("bash", "tr", "grep", "sed", "paste", *extra):
        os.symlink(shutil.which(tool), d / tool)
    return d


def _discover(path, visible=None, stderr=None):
    """The script's JSON; ``visible``: CUDA_VISIBLE_DEVICES (None = unset); ``stderr``: a list for its warnings."""
    env = {"PATH": path} if visible is None else {"PATH": path, "CUDA_VISIBLE_DEVICES": visible}
    out = subprocess.run([str(DISCOVERY)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    if stderr is not None:
        stderr.append(out.stderr)
    return json.loads(out.stdout)


# --- deploy/gpu_discovery.sh, no Spark -------------------------------------------------------------------------

def test_discovery_lists_the_fake_gpus(tmp_path):
    path = f"{_fake_bin(tmp_path / 'fake')}:{_tools_only(tmp_path / 'tools')}"
    assert _discover(path) == {"name": "gpu", "addresses": ["0", "1"]}


def test_discovery_without_nvidia_smi_lists_none(tmp_path):
    assert _discover(str(_tools_only(tmp_path / "tools"))) == {"name": "gpu", "addresses": []}


@pytest.mark.parametrize("body", [
    # what the real nvidia-smi does without a driver / without GPUs: the message goes to stdout
    "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 9",
    "echo 'No devices were found'; exit 6",
    "exit 1",
    "echo 'ERROR: 3 garbage'",  # exits 0 but lists no index: no address may come from it
], ids=["no-driver", "no-devices", "silent-failure", "garbage"])
def test_discovery_when_nvidia_smi_fails_lists_none(tmp_path, body):
    fake = _fake_bin(tmp_path / "fake", "#!/bin/sh\n" + body + "\n")
    path = f"{fake}:{_tools_only(tmp_path / 'tools')}"
    assert _discover(path) == {"name": "gpu", "addresses": []}
    assert _discover(path, visible="0") == {"name": "gpu", "addresses": []}  # nothing to check the entry against


def test_discovery_with_visible_devices_but_no_nvidia_smi_lists_none(tmp_path):
    assert _discover(str(_tools_only(tmp_path / "tools")), visible="0,1") == {"name": "gpu", "addresses": []}


@pytest.mark.parametrize("visible,addresses", [
    ("2,0", ["0", "1"]),  # CUDA renumbers the visible GPUs from 0, in the order given
    ("3", ["0"]),
    ("0,1,2,3", ["0", "1", "2", "3"]),
    (" 1 , 2 ", ["0", "1"]),
    (f"{UUIDS[2]},{UUIDS[0]}", ["0", "1"]),  # full UUIDs
    ("GPU-8932,GPU-8a", ["0", "1"]),  # unique UUID prefixes
    ("GPU-3c5e", []),  # a prefix of two UUIDs names no GPU
    ("", []),  # set but empty: CUDA sees no GPU
    ("-1", []),
    ("NoDevFiles", []),  # what some schedulers set when a job has no GPU
    ("1,-1,2", ["0"]),  # CUDA stops at the first entry that names no device
    ("1,7,2", ["0"]),
    ("7", []),
    ("GPU-ffff", []),
    ("1,1", []),  # a GPU named twice: CUDA showed none for "0,0" (an H200), so none is listed
    (f"0,{UUIDS[0]}", []),
], ids=["reordered", "one", "all", "spaces", "uuids", "uuid-prefixes", "ambiguous-prefix", "empty", "minus-one",
        "nodevfiles", "stops-at-minus-one", "stops-at-unknown-index", "unknown-index", "unknown-uuid", "repeated",
        "repeated-as-uuid"])
def test_discovery_lists_the_cuda_indices_of_visible_devices(tmp_path, visible, addresses):
    path = f"{_fake_bin(tmp_path / 'fake', fake_smi(4))}:{_tools_only(tmp_path / 'tools')}"
    warnings = []
    assert _discover(path, visible=visible, stderr=warnings) == {"name": "gpu", "addresses": addresses}
    if visible.strip() in ("7", "GPU-ffff", "GPU-3c5e"):
        assert "names no GPU nvidia-smi lists" in warnings[0]
    if visible in ("1,1", f"0,{UUIDS[0]}"):
        assert "name each GPU once" in warnings[0]


@pytest.mark.parametrize("visible,addresses", [
    ("MIG-5d2e6c1e-aaaa-5bbb-8ccc-000000000001", ["0"]),
    ("MIG-5d2e6c1e-aaaa-5bbb-8ccc-000000000002,MIG-5d2e6c1e-aaaa-5bbb-8ccc-000000000001", ["0"]),  # CUDA: one
    ("MIG-5d2e6c1e-aaaa-5bbb-8ccc-000000000002", ["0"]),
    ("MIG-5d2e", ["0"]),  # a prefix
    (f"MIG-{UUIDS[0]}/1/0", ["0"]),  # the older form: parent GPU UUID / GPU instance / compute instance
    ("MIG-00000000-0000-0000-0000-000000000000", []),
], ids=["mig", "two-migs", "second-mig", "mig-prefix", "mig-old-form", "unknown-mig"])
def test_discovery_with_mig_devices(tmp_path, visible, addresses):
    mig = ["MIG-5d2e6c1e-aaaa-5bbb-8ccc-000000000001", "MIG-5d2e6c1e-aaaa-5bbb-8ccc-000000000002"]
    path = f"{_fake_bin(tmp_path / 'fake', fake_smi(2, mig))}:{_tools_only(tmp_path / 'tools')}"
    assert _discover(path, visible=visible) == {"name": "gpu", "addresses": addresses}


def test_discovery_lists_nvidia_smi_indices_when_nothing_is_hidden(tmp_path):
    path = f"{_fake_bin(tmp_path / 'fake', fake_smi(4))}:{_tools_only(tmp_path / 'tools')}"
    assert _discover(path) == {"name": "gpu", "addresses": ["0", "1", "2", "3"]}


# --- a one-worker standalone cluster with two (fake) GPUs ------------------------------------------------------

def _sh(*args, env):
    return subprocess.run([str(CLUSTER), *args], env=env, check=True, capture_output=True, text=True).stdout


def _pgid_alive(pgid):
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpucluster")
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = dict(os.environ, L5S_CLUSTER_DIR=str(d), SPARK_LOCAL_IP="127.0.0.1", L5S_VENV=venv)
    worker_env = dict(env, PATH=f"{_fake_bin(d / 'fakebin')}:{env['PATH']}")  # only the worker sees the "GPUs"
    port = free_port()
    master = f"spark://127.0.0.1:{port}"
    groups = []
    try:
        _sh("master", "start", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port()), env=env)
        groups.append(int((d / "master.pid").read_text()))
        _sh("worker", "start", master, "--cores", "4", "--memory", "2g", "--gpus", "2", "--name", "g1",
            "--work-dir", str(d / "g1"), "--webui-port", str(free_port()), env=worker_env)
        groups.append(int((d / "g1.pid").read_text()))
        _wait_registered(d)
        conf = d / "gpu.conf"
        conf.write_text(f"spark.master {master}\nspark.executor.cores 4\nspark.executor.memory 512m\n"
                        "spark.executor.resource.gpu.amount 2\nspark.task.resource.gpu.amount 0.25\n"
                        "spark.driver.host 127.0.0.1\nspark.driver.bindAddress 127.0.0.1\n"
                        "spark.ui.enabled false\nspark.python.worker.reuse true\n")
        yield {"dir": d, "env": env, "conf": conf, "master": master}
    finally:
        for role, name in (("worker", "g1"), ("master", None)):
            subprocess.run([str(CLUSTER), role, "stop", *([name] if name else [])], env=env, capture_output=True)
        time.sleep(1)
        left = subprocess.run(["pgrep", "-f", str(d)], capture_output=True, text=True).stdout.split()
        left += [p for g in groups for p in _pgid_alive(g)]  # executors and Python workers are in the groups
        assert not left, f"processes outlived the cluster: {left}"


def _wait_registered(d):
    deadline = time.time() + 90
    while time.time() < deadline:
        log = (d / "master.log").read_text() if (d / "master.log").exists() else ""
        if "Registering worker" in log:
            return
        time.sleep(0.5)
    pytest.fail("worker did not register:\n" + (d / "master.log").read_text()[-3000:]
                + "\n--- worker log:\n" + ((d / "g1.log").read_text()[-3000:] if (d / "g1.log").exists() else ""))


PROBE = r'''
import json, sys, time
from pyspark import TaskContext
from pyspark.sql import SparkSession
from laion5b_spark.clip.device import device_for
from laion5b_spark.resources import TaskResources, check_fits, stage_profile_ids, task_profile

spark = SparkSession.builder.appName("l5s gpu probe").getOrCreate()
sc = spark.sparkContext
SLEEP = float(sys.argv[2])

def probe(i, rows):
    ctx = TaskContext.get()
    start = time.time()
    time.sleep(SLEEP)
    res = ctx.resources()
    gpu = res.get("gpu")
    yield {"partition": i, "addresses": sorted(gpu.addresses) if gpu else [], "device": device_for(res, cuda_devices=2),
           "start": start, "end": time.time(), "stage": ctx.stageId(), "attempt": ctx.attemptNumber(),
           "cpus": ctx.cpus()}

out = {}
# default first: its four tasks start the executor's Python workers, so later stages do not wait for them
for name, res in (("default", None), ("half", TaskResources(gpus=0.5)), ("whole", TaskResources(gpus=1))):
    sc.setJobGroup(name, name)
    rdd = sc.parallelize(range(8), 8)
    if res is not None:
        check_fits(res, sc.getConf())
        rdd = rdd.withResources(task_profile(res))
    out[name] = {"tasks": rdd.mapPartitionsWithIndex(probe).collect(), "profiles": stage_profile_ids(sc, name)}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
spark.stop()
'''


@pytest.fixture(scope="module")
def probed(gpu_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpuprobe")
    script, result = tmp / "gpu_probe.py", tmp / "tasks.json"
    script.write_text(PROBE)
    out = subprocess.run([str(ROOT / "deploy" / "submit.sh"), "--properties-file", str(gpu_cluster["conf"]),
                          str(script), str(result), "1.5"],
                         env=gpu_cluster["env"], capture_output=True, text=True, timeout=240)
    (tmp / "driver.log").write_text(out.stderr)
    assert out.returncode == 0, out.stderr[-4000:]
    return dict(json.loads(result.read_text()), driver_log=out.stderr)


def _overlap(a, b):
    return a["start"] < b["end"] and b["start"] < a["end"]


def _max_concurrent(tasks):
    events = sorted([(t["start"], 1) for t in tasks] + [(t["end"], -1) for t in tasks])  # an end sorts first
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def _check_devices(tasks):
    for t in tasks:
        assert len(t["addresses"]) == 1, t
        assert t["device"] == f"cuda:{t['addresses'][0]}", t
    assert {t["addresses"][0] for t in tasks} == {"0", "1"}  # both GPUs, not all on GPU 0


def test_worker_announces_the_discovered_gpus(gpu_cluster, probed):
    """The worker ran deploy/gpu_discovery.sh, which found the fake nvidia-smi on its PATH."""
    log = (gpu_cluster["dir"] / "g1.log").read_text()
    assert f"Discovering resources for gpu with script: {DISCOVERY}" in log
    assert "gpu -> [name: gpu, addresses: 0,1]" in log
    assert "--resourcesFile" in log  # the executor got its GPU addresses from the worker


def test_whole_gpu_tasks_never_share_an_address(probed):
    whole = probed["whole"]
    tasks = whole["tasks"]
    assert sorted(t["partition"] for t in tasks) == list(range(8))
    assert whole["profiles"] and 0 not in whole["profiles"]  # the stage ran with the product's task profile
    _check_devices(tasks)
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            if _overlap(a, b):
                assert a["addresses"] != b["addresses"], (a, b)
    assert _max_concurrent(tasks) == 2  # two GPUs, one each: both used at once, never a third task


def test_half_gpu_tasks_pack_two_per_address(probed):
    half = probed["half"]
    tasks = half["tasks"]
    assert sorted(t["partition"] for t in tasks) == list(range(8))
    assert half["profiles"] and 0 not in half["profiles"] and half["profiles"] != probed["whole"]["profiles"]
    _check_devices(tasks)
    for a in tasks:  # at most two tasks on an address at any moment: check at each task's start
        on_it = [b for b in tasks if b["addresses"] == a["addresses"] and b["start"] <= a["start"] < b["end"]]
        assert len(on_it) <= 2, on_it
    assert 2 < _max_concurrent(tasks) <= 4  # concurrency really happened, within 4 cores / 4 half-GPU slots


def test_default_share_maps_each_task_to_its_address(probed):
    """The cluster's 0.25 share on an executor with 4 cores and 2 GPUs: each task runs on cuda:<its address>, but
    Spark fills the lowest address first, and 4 cores x 0.25 fill GPU 0 alone: GPU 1 stays idle. This pins that
    behaviour (docs/DEPLOY.md): on a multi-GPU node the share must be at most GPUs / cores to reach every GPU."""
    default = probed["default"]
    tasks = default["tasks"]
    assert default["profiles"] == [0]
    for t in tasks:
        assert len(t["addresses"]) == 1 and t["device"] == f"cuda:{t['addresses'][0]}", t
    assert 2 < _max_concurrent(tasks) <= 4  # four cores, four slots
    assert {t["addresses"][0] for t in tasks} == {"0"}, "Spark now spreads fractional shares: update docs/DEPLOY.md"
