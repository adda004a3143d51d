"""A real Spark standalone cluster on 127.0.0.1 (master + 2 one-core workers), started with deploy/cluster.sh.

The tables a cluster writes must equal a local run's, also when a worker is killed mid-stage.
Everything is torn down, even on failure, and no JVM may outlive the test.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, free_port, wait_for_first_commit
from laion5b_spark.clip.score import embeddings_array
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
            _start_worker(d, name, master, env)
        _wait_registered(d, 2)
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


@pytest.fixture(scope="module")
def image_server():
    """The demo's image server: the same answer for a path on every run, so two downloads can be compared."""
    from laion5b_spark.sample.image_server import serve

    server = serve()
    port = server.server_address[1]
    yield ["--set", f'download.connect_to=["*=127.0.0.1:{port}"]', "--set", f'download.allow=["127.0.0.1:{port}"]',
           "--set", "download.backoff_base_s=0.05", "--set", "download.shard_rows=100"]
    server.shutdown()


def _start_worker(d, name, master, env):
    _sh("worker", "start", master, "--cores", "1", "--memory", "1g", "--name", name, "--work-dir", str(d / name),
        "--webui-port", str(free_port()), env=env)


def _wait_registered(d, n):
    """Until the master's log shows n worker registrations in all."""
    deadline = time.time() + 90
    while time.time() < deadline:
        log = (d / "master.log").read_text() if (d / "master.log").exists() else ""
        if log.count("Registering worker") >= n:
            return
        time.sleep(0.5)
    pytest.fail("workers did not register:\n" + (d / "master.log").read_text()[-3000:])


def _ensure_two_workers(cluster):
    """An earlier test may have killed w2 (a lost node): start it again."""
    d = cluster["dir"]
    pid = int((d / "w2.pid").read_text())
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "Z":  # alive (a zombie is as dead as gone)
                return
    except FileNotFoundError:
        pass
    (d / "w2.pid").unlink()  # cluster.sh would take a zombie's pid for a running worker
    seen = (d / "master.log").read_text().count("Registering worker")
    _start_worker(d, "w2", cluster["master"], cluster["env"])
    _wait_registered(d, seen + 1)


def _submit(cluster, lake, inputs, job="extract", args=()):
    args = ["--input", *inputs, "--set", "run.commit_interval_s=0.5"] if job == "extract" else list(args)
    out = subprocess.run([str(ROOT / "deploy" / "submit.sh"), "--properties-file", str(cluster["conf"]),
                          str(ROOT / "jobs" / f"{job}.py"), "--lake", str(lake), *args],
                         env=cluster["env"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _rows(lake):
    t = Lake(str(lake)).table("pairs").read_arrow()
    return sorted(map(orjson.dumps, t.to_pylist()))


def _images(lake):
    """Each row's outcome, image bytes included, by uid (keys name shards, which differ between runs' layouts)."""
    t = Lake(str(lake)).table("images").read_arrow(columns=["uid", "status", "reason", "sha256", "width", "jpg"])
    rows = [dict(r, jpg=r["jpg"] and hashlib.sha256(r["jpg"]).hexdigest()) for r in t.to_pylist()]
    return sorted(map(orjson.dumps, rows))


def _local(tmp_path, inputs, dedup=False, download=()):
    from laion5b_spark.dedup.job import DedupJob
    from laion5b_spark.download.job import DownloadJob
    from laion5b_spark.extract.job import ExtractJob

    lake = tmp_path / "local"
    assert ExtractJob().main(["--lake", str(lake), "--input", *inputs]) == 0
    if dedup:
        assert DedupJob().main(["--lake", str(lake)]) == 0
    if download:
        assert DownloadJob().main(["--lake", str(lake), *download]) == 0
    return lake


def _files(lake, table):
    t = Lake(str(lake)).table(table)
    return [pq.read_table(t.path(e.path)) for e in t.entries()]


@pytest.fixture(scope="module")
def downloaded(spark, standalone, tmp_path_factory, sample_crawl, image_server):
    """The sample crawl through extract, dedup and download on the cluster, and the same locally."""
    tmp_path = tmp_path_factory.mktemp("downloaded")
    inputs = [os.path.join(sample_crawl["root"], p) for p in sample_crawl["wat"] + sample_crawl["warc"]]
    lake = tmp_path / "cluster"
    out = _submit(standalone, lake, inputs)
    _submit(standalone, lake, [], job="dedup")
    _submit(standalone, lake, [], job="download", args=image_server)
    local = _local(tmp_path, inputs, dedup=True, download=image_server)
    return {"cluster": lake, "local": local, "extract_stdout": out.stdout}


def test_cluster_table_equals_local(standalone, downloaded):
    lake, local = downloaded["cluster"], downloaded["local"]
    assert "6 units done" in downloaded["extract_stdout"]
    assert _rows(lake) == _rows(local)
    a, b = _files(lake, "pairs_unique"), _files(local, "pairs_unique")  # the same rows in the same files
    assert a and len(a) == len(b) and all(x.equals(y) for x, y in zip(a, b))
    images = _images(lake)
    assert images == _images(local) and len(images) == sum(x.num_rows for x in a)
    assert any(b'"success"' in r for r in images) and any(b'"http_404"' in r for r in images)
    for job in ("extract", "dedup", "download"):
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


@pytest.mark.slow  # ~65 s: a killed worker stays in the default suite through test_worker_killed_mid_run_same_table
def test_worker_killed_mid_download_every_shard_once(spark, standalone, tmp_path, image_server):
    """A node lost mid-download: its shards run again elsewhere; each pair ends up in images exactly once."""
    import pyarrow as pa

    from laion5b_spark.sample.pairs import generate_rows, write_pairs

    urls = [f"http://images.sample.test/kill/{i}.jpg" for i in range(1600)]
    rows = generate_rows(len(urls), 5, source_file="crawl-data/x/k.wat.gz").set_column(1, "url", pa.array(urls))
    lake = tmp_path / "kill"
    write_pairs(Lake(str(lake)), {"k": rows}, table="pairs_unique")
    _ensure_two_workers(standalone)
    proc = subprocess.Popen([str(ROOT / "deploy" / "submit.sh"), "--properties-file", str(standalone["conf"]),
                             str(ROOT / "jobs" / "download.py"), "--lake", str(lake), *image_server,
                             "--set", "run.commit_interval_s=0.3"],
                            env=standalone["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed = wait_for_first_commit(lake, proc, table="images")
    pid = int((standalone["dir"] / "w2.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert 1 <= committed < 16, f"the kill did not land mid-run (committed={committed})"
    assert proc.returncode == 0, err[-3000:]
    t = Lake(str(lake)).table("images")
    assert len({e.unit for e in t.entries()}) == len(t.entries()) == 16
    got = t.read_arrow(columns=["uid"]).column("uid").to_pylist()
    assert sorted(got) == sorted(rows.column("uid").to_pylist())


def _clip_args(*extra):
    from laion5b_spark.sample import shapes

    asset = os.path.join(os.path.dirname(shapes.__file__), "assets", "l5s-tiny-shapes")
    with open(asset + ".json") as f:
        threshold = orjson.loads(f.read())["threshold"]
    return ["--set", "clip.model=l5s-tiny", "--set", f"clip.pretrained={asset}.safetensors",
            "--set", f"clip.threshold={threshold}", "--set", "clip.batch_size=32", "--set", "clip.read_rows=64",
            "--set", "run.commit_interval_s=0.5", *extra], threshold


@pytest.mark.slow  # ~140 s; task profiles stay in the default suite (test_cluster_gpu.py)
def test_cluster_clip_equals_local(standalone, downloaded):
    """clip on the cluster (with a stage-level task profile) gives the local run's scored and dataset tables."""
    from laion5b_spark.clip.job import ClipJob

    args, threshold = _clip_args("--set", "clip.task_cpus=1")
    lake, local = downloaded["cluster"], downloaded["local"]
    _ensure_two_workers(standalone)
    _submit(standalone, lake, [], job="clip", args=args)
    assert ClipJob().main(["--lake", str(local), *args]) == 0
    rec = Lake(str(lake)).runs("clip")[-1]
    assert rec["spark"]["master"] == standalone["master"] and rec["status"] == "succeeded"
    asked = rec["spark"]["task_resources"]
    assert asked["applied"] and asked["cpus"] == 1 and asked["profile_id"] != 0
    assert rec["spark"]["stage_resource_profiles"] == [asked["profile_id"]]  # Spark ran the stage with it
    assert Lake(str(local)).runs("clip")[-1]["spark"]["task_resources"]["applied"] is False  # local mode
    # The same tiny model on CPU, one torch thread per task on both sides: bit-identical is expected; 1e-5 leaves
    # room for BLAS kernels that depend on how rows fall into batches (files are cut alike, so they should not).
    tol = 1e-5
    for name in ("scored", "dataset"):
        a, b = (Lake(str(x)).table(name).read_arrow().sort_by("uid") for x in (lake, local))
        assert a.num_rows == b.num_rows > 0, name
        sim_a, sim_b = (t.column("similarity").to_numpy(zero_copy_only=False) for t in (a, b))
        assert np.allclose(sim_a, sim_b, atol=tol, rtol=0, equal_nan=True), name
        near = np.abs(np.nan_to_num(sim_b, nan=-9) - threshold) < tol  # a pass may flip only at the threshold
        keep = [c for c in a.column_names if c not in ("similarity", "image_embedding", "text_embedding")]
        ra, rb = a.select(keep).to_pylist(), b.select(keep).to_pylist()
        assert [r for r, n in zip(ra, near) if not n] == [r for r, n in zip(rb, near) if not n], name
    a, b = (Lake(str(x)).table("scored").read_arrow().sort_by("uid") for x in (lake, local))
    assert set(a.column("status").to_pylist()) >= {"scored"} and pc.sum(pc.fill_null(a.column("passed"), False)).as_py()
    for col in ("image_embedding", "text_embedding"):
        ea, eb = embeddings_array(a.column(col)), embeddings_array(b.column(col))
        assert ea.shape == eb.shape and np.abs(ea.astype(np.float32) - eb.astype(np.float32)).max() <= 1e-3, col

    # index on the cluster: executors export and search the image index; the same groups as a local run
    from laion5b_spark.index.job import IndexJob
    from laion5b_spark.index.layout import read_pointer

    index_args = ["--set", "index.recall_queries=100"]  # 0.96: the tiny CLIP's shape drawings form groups
    _submit(standalone, lake, [], job="index", args=index_args)
    assert IndexJob().main(["--lake", str(local), *index_args]) == 0
    assert Lake(str(lake)).runs("index")[-1]["spark"]["master"] == standalone["master"]
    for name in ("image", "text"):
        pa_, pb = read_pointer(Lake(str(lake)), name), read_pointer(Lake(str(local)), name)
        # parts are numbered by scored file path, and paths carry each lake's run ids: compare what they hold
        assert (pa_["vectors"], sorted(pa_["part_rows"])) == (pb["vectors"], sorted(pb["part_rows"])), name
    a, b = (Lake(str(x)).table("dedup_images").read_arrow().sort_by("uid") for x in (lake, local))
    assert a.num_rows == b.num_rows > 0 and pc.sum(a.column("duplicate").cast("int64")).as_py() > 0
    assert a.drop(["nearest_similarity"]).equals(b.drop(["nearest_similarity"]))


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two cluster jobs at once, clip in sequence, compact twice: ~5 min quiet, 10+ at load 8
def test_download_and_clip_follow_together_equal_the_two_in_sequence(spark, standalone, downloaded, image_server,
                                                                      tmp_path):
    """download and ``clip --follow`` submitted together, one core each: clip scores shards while download still
    fetches, and the tables equal download then clip one after the other."""
    import shutil

    from laion5b_spark.clip.job import ClipJob

    _ensure_two_workers(standalone)
    lake = tmp_path / "together"
    shutil.copytree(downloaded["cluster"] / "pairs_unique", lake / "pairs_unique")
    conf = tmp_path / "one-core.conf"  # two applications at once: each gets one of the two workers
    conf.write_text(standalone["conf"].read_text().replace("spark.cores.max 2", "spark.cores.max 1"))
    clip_args, threshold = _clip_args()

    def submit(job, args):
        return subprocess.Popen([str(ROOT / "deploy" / "submit.sh"), "--properties-file", str(conf),
                                 str(ROOT / "jobs" / f"{job}.py"), "--lake", str(lake), *args],
                                env=standalone["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    download = submit("download", [*image_server, "--set", "run.commit_interval_s=0.5"])
    deadline = time.time() + 120
    while not Lake(str(lake)).runs("download") and time.time() < deadline:
        time.sleep(0.2)  # clip --follow needs a live writer or committed rows
    clip = submit("clip", [*clip_args, "--follow", "--follow-poll-s", "0.5"])
    out_d, err_d = download.communicate(timeout=400)
    out_c, err_c = clip.communicate(timeout=400)
    assert download.returncode == 0, err_d[-3000:]
    assert clip.returncode == 0, err_c[-3000:]
    assert "follow: " in out_c + err_c
    assert _images(lake) == _images(downloaded["local"])

    sequence = tmp_path / "sequence"  # the same images, clip after download
    shutil.copytree(lake / "images", sequence / "images")
    assert ClipJob().main(["--lake", str(sequence), *clip_args]) == 0
    for name in ("scored", "dataset"):
        a, b = (Lake(str(x)).table(name).read_arrow().sort_by("uid") for x in (lake, sequence))
        assert a.num_rows == b.num_rows > 0, name
        assert a.column("uid").equals(b.column("uid")), name
        assert np.allclose(a.column("similarity").to_numpy(zero_copy_only=False),
                           b.column("similarity").to_numpy(zero_copy_only=False), atol=1e-5, equal_nan=True), name
    units = Lake(str(lake)).table("scored").manifest()["runs"]
    assert len(units) == 1  # one clip run took every shard as download committed it

    # compaction on the cluster takes the compactions clip's executors wrote, and equals one that rereads each file
    from laion5b_spark.compact.job import CompactJob
    from laion5b_spark.compact.rule import offers

    compact = submit("compact", ["--set", "run.commit_interval_s=0.5"])
    out_k, err_k = compact.communicate(timeout=400)
    assert compact.returncode == 0, err_k[-3000:]
    shards = len(Lake(str(lake)).table("images").entries())
    assert Lake(str(lake)).runs("compact")[-1]["info"]["from_clip"] == shards
    shutil.rmtree(sequence / "images" / "_staging")  # every run's offers (the copy holds the cluster run's too)
    assert offers(Lake(str(sequence)).table("images")) == {}
    assert CompactJob().main(["--lake", str(sequence)]) == 0
    assert Lake(str(sequence)).runs("compact")[-1]["info"]["from_clip"] == 0
    a, b = (Lake(str(x)).table("images").read_arrow().sort_by("uid") for x in (lake, sequence))
    assert a.equals(b) and a.column("jpg").null_count > _rows_with_status(lake, "failed")
    assert ClipJob().main(["--lake", str(lake), *clip_args]) == 0  # nothing to score again
    assert Lake(str(lake)).runs("clip")[-1]["units"]["to_run"] == 0


def _rows_with_status(lake, status: str) -> int:
    import pyarrow.compute as pc

    t = Lake(str(lake)).table("images").read_arrow(["status"])
    return pc.sum(pc.equal(t.column("status"), status).cast("int64")).as_py() or 0
