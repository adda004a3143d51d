"""A real Spark standalone cluster on 127.0.0.1 (master + 2 one-core workers), started with deploy/cluster.sh.

The tables a cluster writes must equal a local run's, also when a worker is killed mid-stage.
Everything is torn down, even on failure, and no JVM may outlive the test.
"""

import os
import signal
import subprocess
import sys
import time

import orjson
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, free_port, wait_for_first_commit
from laion5b_spark.lake import Lake

pytestmark = pytest.mark.cluster
CLUSTER = ROOT / "deploy" / "cluster.sh"


def _sh(*args, env):
    return subprocess.run([str(CLUSTER), *args], env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = dict(os.environ, L5S_CLUSTER_DIR=str(d), SPARK_LOCAL_IP="127.0.0.1", L5S_VENV=venv)
    port = free_port()
    master = f"spark://127.0.0.1:{port}"
    try:
        _sh("master", "start", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port()), env=env)
        for name in ("w1", "w2"):
            _sh("worker", "start", master, "--cores", "1", "--memory", "1g", "--name", name, "--work-dir",
                str(d / name), "--webui-port", str(free_port()), env=env)
        deadline = time.time() + 90
        while time.time() < deadline:
            log = (d / "master.log").read_text() if (d / "master.log").exists() else ""
            if log.count("Registering worker") >= 2:
                break
            time.sleep(0.5)
        else:
            pytest.fail("workers did not register:\n" + (d / "master.log").read_text()[-3000:])
        conf = d / "standalone.conf"
        conf.write_text(f"spark.master {master}\nspark.executor.memory 512m\nspark.executor.cores 1\n"
                        "spark.cores.max 2\nspark.driver.host 127.0.0.1\nspark.driver.bindAddress 127.0.0.1\n"
                        "spark.ui.enabled false\nspark.task.maxFailures 4\nspark.python.worker.reuse true\n")
        yield {"dir": d, "env": env, "conf": conf, "master": master}
    finally:
        for name in ("w1", "w2", "master"):
            role = "master" if name == "master" else "worker"
            subprocess.run([str(CLUSTER), role, "stop", *([] if role == "master" else [name])], env=env,
                           capture_output=True)
        time.sleep(1)
        left = subprocess.run(["pgrep", "-f", str(d)], capture_output=True, text=True).stdout.split()
        assert not left, f"processes outlived the cluster: {left}"


def _submit(cluster, lake, inputs, job="extract"):
    args = ["--input", *inputs, "--set", "run.commit_interval_s=0.5"] if job == "extract" else []
    out = subprocess.run([str(ROOT / "deploy" / "submit.sh"), "--properties-file", str(cluster["conf"]),
                          str(ROOT / "jobs" / f"{job}.py"), "--lake", str(lake), *args],
                         env=cluster["env"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _rows(lake):
    t = Lake(str(lake)).table("pairs").read_arrow()
    return sorted(map(orjson.dumps, t.to_pylist()))


def _local(tmp_path, inputs, dedup=False):
    from laion5b_spark.dedup.job import DedupJob
    from laion5b_spark.extract.job import ExtractJob

    lake = tmp_path / "local"
    assert ExtractJob().main(["--lake", str(lake), "--input", *inputs]) == 0
    if dedup:
        assert DedupJob().main(["--lake", str(lake)]) == 0
    return lake


def _files(lake, table):
    t = Lake(str(lake)).table(table)
    return [pq.read_table(t.path(e["path"])) for e in t.entries()]


def test_cluster_table_equals_local(spark, standalone, tmp_path, sample_crawl):
    inputs = [os.path.join(sample_crawl["root"], p) for p in sample_crawl["wat"] + sample_crawl["warc"]]
    lake = tmp_path / "cluster"
    out = _submit(standalone, lake, inputs)
    assert "6 units done" in out.stdout
    _submit(standalone, lake, [], job="dedup")
    local = _local(tmp_path, inputs, dedup=True)
    assert _rows(lake) == _rows(local)
    a, b = _files(lake, "pairs_unique"), _files(local, "pairs_unique")  # the same rows in the same files
    assert a and len(a) == len(b) and all(x.equals(y) for x, y in zip(a, b))
    for job in ("extract", "dedup"):
        assert Lake(str(lake)).runs(job)[-1]["spark"]["master"] == standalone["master"]


@pytest.mark.slow
def test_packed_env_runs_on_the_cluster(spark, standalone, tmp_path, sample_crawl):
    """Executors use the venv-pack archive (deploy/pack_env.sh), not the project's venv."""
    archive = tmp_path / "env.tar.gz"
    env = dict(standalone["env"], L5S_PACK_VENV=str(tmp_path / "pack-venv"))
    subprocess.run([str(ROOT / "deploy" / "pack_env.sh"), str(archive)], env=env, check=True, capture_output=True)
    wat = os.path.join(sample_crawl["root"], sample_crawl["wat"][0])
    lake = tmp_path / "packed"
    out = subprocess.run([str(ROOT / "deploy" / "submit.sh"), "--properties-file", str(standalone["conf"]),
                          "--archives", f"{archive}#env", "--conf", "spark.pyspark.python=./env/bin/python",
                          "--conf", f"spark.pyspark.driver.python={sys.executable}",
                          str(ROOT / "jobs" / "extract.py"), "--lake", str(lake), "--input", wat],
                         env=standalone["env"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _rows(lake) == _rows(_local(tmp_path, [wat]))
    unpacked = list(standalone["dir"].glob("w*/app-*/*/env/bin/python"))
    assert unpacked, "no executor unpacked the archive"


def test_worker_killed_mid_run_same_table(spark, standalone, tmp_path):
    from laion5b_spark.sample.crawl import make_sample_crawl

    crawl = make_sample_crawl(str(tmp_path / "crawl"), files=8, pages_per_file=250, seed=11)
    inputs = [os.path.join(crawl["root"], w) for w in crawl["wat"]]
    lake = tmp_path / "cluster"
    proc = subprocess.Popen([str(ROOT / "deploy" / "submit.sh"), "--properties-file", str(standalone["conf"]),
                             str(ROOT / "jobs" / "extract.py"), "--lake", str(lake), "--input", *inputs,
                             "--set", "run.commit_interval_s=0.3"],
                            env=standalone["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = wait_for_first_commit(lake, proc)
    pid = int((standalone["dir"] / "w2.pid").read_text())
    os.killpg(pid, signal.SIGKILL)  # the worker, its executor and its Python workers: a lost node
    out, err = proc.communicate(timeout=300)
    assert 1 <= committed < 8, f"the kill did not land mid-run (committed={committed})"
    assert proc.returncode == 0, err[-3000:]
    assert "8 units done" in out
    assert _rows(lake) == _rows(_local(tmp_path, inputs))
