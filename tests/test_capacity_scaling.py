"""bench/capacity/scaling.py: where the driver and the workers run, and the inputs it makes for download and clip."""

from __future__ import annotations

import importlib.util
import os

import pyarrow.compute as pc

from laion5b_spark import schemas
from laion5b_spark.lake import Lake

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scaling():
    spec = importlib.util.spec_from_file_location("capacity_scaling",
                                                  os.path.join(ROOT, "bench", "capacity", "scaling.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_machine_with_enough_cpus_keeps_the_driver_off_the_workers_cpus():
    plan = _scaling().cpu_plan(list(range(16)), driver_cores=2, cores_per_worker=4)
    assert plan["driver_isolated"] and plan["workers_isolated"]
    assert plan["driver"] == [0, 1] and plan["workers"] == [[2, 3, 4, 5], [6, 7, 8, 9]]


def test_too_few_cpus_is_said_not_hidden():
    scaling = _scaling()
    two = scaling.cpu_plan([0, 1], driver_cores=1, cores_per_worker=1)
    assert not two["driver_isolated"] and two["workers_isolated"]
    assert two["driver"] is None and two["workers"] == [[0], [1]] and "NOT ISOLATED" in two["note"]
    one = scaling.cpu_plan([0], driver_cores=1, cores_per_worker=1)
    assert not one["driver_isolated"] and not one["workers_isolated"] and one["workers"] == [None, None]
    assert scaling.pinned(["x"], None) == ["x"] and scaling.pinned(["x"], [2, 3]) == ["taskset", "-c", "2,3", "x"]


def test_the_generated_inputs_are_valid_tables_with_unique_uids(tmp_path):
    scaling = _scaling()
    scaling.make_pairs_unique(str(tmp_path / "a"), 300, hosts=7)
    pairs = Lake(str(tmp_path / "a")).table("pairs_unique").read_arrow()
    schemas.check("pairs_unique", pairs)
    assert pairs.num_rows == 300 and pc.count_distinct(pairs.column("uid")).as_py() == 300
    assert len({u.split("/")[2] for u in pairs.column("url").to_pylist()}) == 7
    scaling.make_images(str(tmp_path / "b"), 50, files=4, distinct=8)
    images = Lake(str(tmp_path / "b")).table("images")
    schemas.check("images", images.read_arrow())
    assert len(images.entries()) == 4 and images.num_rows() == 50
    assert pc.count_distinct(images.read_arrow().column("uid")).as_py() == 50
