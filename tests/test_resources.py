"""Stage-level task resources: what is refused before a run (it would wait forever), and what local mode skips."""

import pytest

from laion5b_spark.config import ConfigError
from laion5b_spark.resources import TaskResources, check_fits, supports_task_profiles, task_profile


def test_requests_spark_cannot_schedule_are_refused():
    with pytest.raises(ConfigError, match="share"):
        TaskResources(gpus=0.75)  # neither a share of one GPU Spark can split nor whole GPUs
    with pytest.raises(ConfigError, match="negative"):
        TaskResources(cpus=-1)
    assert not TaskResources() and TaskResources(gpus=0.5) and TaskResources(cpus=8)
    conf = {"spark.executor.cores": "16", "spark.executor.resource.gpu.amount": "1"}
    check_fits(TaskResources(cpus=8, gpus=0.5), conf)
    with pytest.raises(ConfigError, match="spark.executor.cores=16"):
        check_fits(TaskResources(cpus=32), conf)
    with pytest.raises(ConfigError, match="no GPUs"):
        check_fits(TaskResources(gpus=0.5), {"spark.executor.cores": "4"})
    with pytest.raises(ConfigError, match="gpu.amount=1"):
        check_fits(TaskResources(gpus=2), conf)
    two = {"spark.executor.cores": "4", "spark.executor.resource.gpu.amount": "2"}
    check_fits(TaskResources(gpus=0.5), two)  # 4 tasks x 0.5 cover both GPUs
    with pytest.raises(ConfigError, match="uses 1 of its 2 GPUs"):
        check_fits(TaskResources(gpus=0.25), two)  # 4 x 0.25 would all sit on GPU 0
    with pytest.raises(ConfigError, match="at most 1 or more cores"):
        check_fits(TaskResources(cpus=2, gpus=0.5), two)


def test_local_mode_is_the_one_master_without_task_profiles():
    assert not supports_task_profiles("local[2]") and not supports_task_profiles("local")
    assert supports_task_profiles("spark://127.0.0.1:7077") and supports_task_profiles("local-cluster[2,1,1024]")
    assert supports_task_profiles("yarn") and supports_task_profiles("k8s://https://h:443")


def test_the_profile_carries_the_task_requests():
    p = task_profile(TaskResources(cpus=8, gpus=0.25))  # no SparkContext here: pyspark keeps it Python-side
    reqs = p.taskResources
    assert reqs["cpus"].amount == 8 and reqs["gpu"].amount == 0.25 and not p.executorResources
