"""The extract job end to end on Spark: accounting, resume, bad input, s3, kill -9, spark-submit."""

import os
import signal
import subprocess
import sys

import orjson
import pytest

from conftest import ROOT, shared_sample, wait_for_first_commit
from laion5b_spark import schemas
from laion5b_spark.extract.job import ExtractJob
from laion5b_spark.lake import Lake

pytestmark = pytest.mark.spark
FAST = ["--set", "run.commit_interval_s=0.2", "--set", "run.progress_interval_s=1"]


def extract(lake, *inputs, extra=()):
    return ExtractJob().main(["--lake", str(lake), "--input", *map(str, inputs), *FAST, *extra])


def table_rows(lake, storage_options=None):
    t = Lake(str(lake), storage_options).table("pairs").read_arrow()
    schemas.check("pairs", t)
    return sorted(map(orjson.dumps, t.drop_columns(["source_file"]).to_pylist()))


def last_run(lake):
    return Lake(str(lake)).runs("extract")[-1]  # run ids sort in start order


def test_job_end_to_end_resume_and_accounting(spark, tmp_path, sample_crawl):
    root = sample_crawl["root"]
    manifest = os.path.join(root, "wat.paths.gz")
    lake = tmp_path / "lake"
    assert extract(lake, manifest, extra=["--input-base-url", root]) == 0
    run = last_run(lake)
    assert run["status"] == "succeeded" and run["units"]["done"] == 3
    img = run["counts"]["img_tags"]
    assert img["rows_in"] == img["rows_out"] + sum(img["dropped"].values()) + sum(img["failed"].values())
    rec = run["counts"]["records"]
    assert rec["rows_in"] == rec["rows_out"] + sum(rec["dropped"].values()) + sum(rec["failed"].values())
    t = Lake(str(lake)).table("pairs")
    assert t.num_rows() == img["rows_out"] > 300
    for entry in t.manifest()["files"]:  # every unit keeps its own balanced accounting
        for ledger in entry["counts"].values():
            assert ledger["rows_in"] == (ledger["rows_out"] + sum(ledger["dropped"].values())
                                         + sum(ledger["failed"].values()))
    assert set(t.manifest()["files"][0]) >= {"unit", "key", "path", "rows", "bytes", "counts", "run_id"}
    first = table_rows(lake)

    # rerun: everything is committed, nothing runs, the table is unchanged
    assert extract(lake, manifest, extra=["--input-base-url", root]) == 0
    assert last_run(lake)["units"]["to_run"] == 0
    assert table_rows(lake) == first

    # a lake built one file at a time is the same table as one run over all files
    lake2 = tmp_path / "lake2"
    wats = [os.path.join(root, w) for w in sample_crawl["wat"]]
    assert extract(lake2, wats[0]) == 0
    assert extract(lake2, *wats) == 0
    assert last_run(lake2)["units"]["already_committed"] == 1
    assert table_rows(lake2) == first


def test_bad_inputs_are_counted_and_unreachable_units_retried(spark, tmp_path, sample_crawl, http_dir):
    www, base = http_dir
    good = os.path.join(sample_crawl["root"], sample_crawl["wat"][0])
    (www / "good.wat.gz").write_bytes(open(good, "rb").read())
    bad = [shared_sample(n) for n in ("example-trunc.warc", "example.arc.gz", "clipped.warc.gz",
                                      "example-wrong-chunks.warc.gz")]
    lake = tmp_path / "lake"
    inputs = [*bad, f"{base}/good.wat.gz", f"{base}/later.wat.gz"]
    code = extract(lake, *inputs, extra=["--set", "extract.input_retries=1", "--set",
                                         "extract.input_retry_wait_s=0.05"])
    assert code == 1  # bad input is data; the unreachable unit makes the run partial (exit 1), not a success
    run = last_run(lake)
    assert run["status"] == "partial" and run["units"]["done"] == 5 and run["units"]["failed"] == 1
    assert run["failed_units"][0]["reason"] == "input_unreachable"
    assert run["counts"]["records"]["failed"] == {"corrupt_record": 1, "truncated_file": 1,
                                                  "unsupported_format": 1}
    reasons = {e["reason"] for e in Lake(str(lake)).table("pairs").error_samples()}
    assert reasons == {"corrupt_record", "truncated_file", "unsupported_format", "input_unreachable"}
    # the missing file appears; a rerun runs just that unit
    (www / "later.wat.gz").write_bytes(open(good, "rb").read())
    assert extract(lake, *inputs) == 0
    run = last_run(lake)
    assert run["units"]["to_run"] == 1 and run["units"]["done"] == 1
    per_file = {}
    for f in Lake(str(lake)).table("pairs").read_arrow().column("source_file").to_pylist():
        per_file[f] = per_file.get(f, 0) + 1
    assert per_file[f"{base}/later.wat.gz"] == per_file[f"{base}/good.wat.gz"] > 0
    assert per_file[str(shared_sample("clipped.warc.gz"))] == 6


def test_s3_lake_and_input(spark, tmp_path, sample_crawl, moto_s3):
    import s3fs

    fs = s3fs.S3FileSystem(**moto_s3)
    src = os.path.join(sample_crawl["root"], sample_crawl["wat"][1])
    fs.put_file(src, "l5s-test/crawl/CC-MAIN-2099-01/one.warc.wat.gz")
    toml = tmp_path / "s3.toml"
    toml.write_text(f"[lake]\nstorage_options = {_toml_table(moto_s3)}\n"
                    f"[extract]\ninput_storage_options = {_toml_table(moto_s3)}\n")
    lake = "s3://l5s-test/lake"
    code = ExtractJob().main(["--lake", lake, "--input", "s3://l5s-test/crawl/", "--config", str(toml), *FAST])
    assert code == 0
    local = tmp_path / "local"
    assert extract(local, src) == 0
    assert table_rows(lake, moto_s3) == table_rows(local)


def _toml_table(d):
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in d.items()) + " }"


def test_help_and_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ExtractJob().main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--input" in out and "wat.paths.gz" in out and "examples:" in out
    assert ExtractJob().main(["--lake", str(tmp_path), "--input", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert ExtractJob().main(["--lake", str(tmp_path), "--input", str(tmp_path), "--set", "extract.typo=1"]) == 2
    assert "unknown setting 'extract.typo'" in capsys.readouterr().err


def _job_cmd(lake, inputs, conf):
    return [sys.executable, str(ROOT / "jobs" / "extract.py"), "--lake", str(lake), "--input", *inputs,
            "--spark-profile", str(conf), *FAST]


@pytest.mark.slow  # ~65 s: test_lake_contract.py::test_extract_killed_then_rerun kills extract in the default suite
def test_kill_9_mid_run_then_rerun_gives_the_same_table(tmp_path):
    from laion5b_spark.sample.crawl import make_sample_crawl

    crawl = make_sample_crawl(str(tmp_path / "crawl"), files=8, pages_per_file=250, seed=5)
    inputs = [os.path.join(crawl["root"], w) for w in crawl["wat"]]
    conf = tmp_path / "one-core.conf"
    conf.write_text((ROOT / "conf/spark/local.conf").read_text().replace("local[*]", "local[1]"))
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")

    reference = tmp_path / "reference"
    subprocess.run(_job_cmd(reference, inputs, conf), check=True, env=env, stdout=subprocess.DEVNULL)

    lake = tmp_path / "killed"
    proc = subprocess.Popen(_job_cmd(lake, inputs, conf), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    committed = wait_for_first_commit(lake, proc, timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)  # driver, JVM and Python workers: nothing gets to clean up
    proc.wait()
    assert 1 <= committed < 8, f"the kill did not land mid-run (committed={committed})"

    subprocess.run(_job_cmd(lake, inputs, conf), check=True, env=env, stdout=subprocess.DEVNULL)
    assert table_rows(lake) == table_rows(reference)
    runs = Lake(str(lake)).runs("extract")
    assert any(r["status"] == "running" for r in runs)  # the killed run's record says it never finished
    assert [r["units"]["already_committed"] for r in runs if r["status"] == "succeeded"][0] >= 1


def test_spark_submit_through_the_wrapper(tmp_path, sample_crawl):
    lake = tmp_path / "lake"
    wat = os.path.join(sample_crawl["root"], sample_crawl["wat"][0])
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = dict(os.environ, L5S_VENV=venv)
    out = subprocess.run([str(ROOT / "deploy" / "submit.sh"), "--properties-file", str(ROOT / "conf/spark/local.conf"),
                          str(ROOT / "jobs" / "extract.py"), "--lake", str(lake), "--input", wat],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "succeeded" in out.stdout and "pairs by language" in out.stdout
    assert Lake(str(lake)).table("pairs").num_rows() > 50
