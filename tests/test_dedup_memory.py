"""Dedup of a table several times larger than the memory it runs with (marked slow: ~2 minutes)."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from laion5b_spark.lake import Lake
from laion5b_spark.sample.pairs import make_pairs_lake

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_table_larger_than_memory_dedups_with_bounded_task_memory(tmp_path):
    lake = tmp_path / "lake"
    written = make_pairs_lake(str(lake), files=32, rows_per_file=250_000, crawls=("CC-MAIN-2024-10",), seed=11)
    table_mb = sum(t.nbytes for t in written.values()) / 2**20  # uncompressed, as Arrow holds it
    expected = len(set().union(*(set(t.column("uid").to_pylist()) for t in written.values())))
    conf = tmp_path / "small.conf"
    # the smallest heap Spark accepts; executor = driver in local mode
    conf.write_text((ROOT / "conf/spark/local.conf").read_text().replace("spark.driver.memory                   2g",
                                                                         "spark.driver.memory 512m")
                    + "spark.python.worker.memory 64m\n")
    assert "512m" in conf.read_text()
    p = subprocess.run([sys.executable, str(ROOT / "jobs/dedup.py"), "--lake", str(lake), "--spark-profile", str(conf),
                        "--set", "dedup.rows_per_task=250000", "--set", "dedup.bucket_mb=4", "--set",
                        "dedup.file_mb=8"], capture_output=True, text=True,
                       env=dict(os.environ, L5S_SPARK_LOG_LEVEL="ERROR"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    out = Lake(str(lake)).table("pairs_unique")
    rows = out.read_arrow(columns=["uid"])
    assert rows.num_rows == expected == pc.count_distinct(rows.column("uid")).as_py()
    rec = Lake(str(lake)).runs("dedup")[-1]
    assert rec["inputs"]["buckets"] >= 15 and rec["output"]["files"] >= 8
    peak = rec["info"]["peak_task_rss_mb"]
    assert table_mb > 3.5 * 512, f"the table ({table_mb:.0f} MB) should be several times the 512 MB heap"
    assert peak < table_mb / 3, f"a task peaked at {peak} MB for a {table_mb:.0f} MB table: memory is not bounded"
