"""Stage-level task resources: one stage (clip) asks for more CPUs or a bigger GPU share per task than the cluster's
defaults, which suit the CPU stages (``conf/spark/cluster-10n-gpu.conf``: 1 core and 1/16 GPU per task).

Spark runs a *task* resource profile (``TaskResourceRequests`` only, no executor requests) on the executors it
already has, without dynamic allocation, on standalone, YARN and Kubernetes; local mode refuses it
("TaskResourceProfiles are only supported for Standalone, Yarn and Kubernetes cluster"), so there the request is
left out with a note and tasks keep ``spark.task.cpus``. A request the executors cannot hold would leave the stage
waiting forever, so it is refused before the job starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError


@dataclass(frozen=True)
class TaskResources:
    cpus: int = 0  # 0 = spark.task.cpus
    gpus: float = 0.0  # 0 = spark.task.resource.gpu.amount

    def __post_init__(self):
        if self.cpus < 0 or self.gpus < 0:
            raise ConfigError(f"task resources must not be negative (cpus={self.cpus}, gpus={self.gpus})")
        if self.gpus > 0.5 and self.gpus != int(self.gpus):  # Spark's rule: a share of one GPU, or whole GPUs
            raise ConfigError(f"task GPUs {self.gpus}: use a share <= 0.5 (0.5, 0.25, ...) or a whole number")

    def __bool__(self) -> bool:
        return self.cpus > 0 or self.gpus > 0

    def describe(self) -> str:
        return ", ".join(p for p in (f"{self.cpus} CPUs" if self.cpus else "",
                                     f"{self.gpus:g} GPU" if self.gpus else "") if p) + " per task"


def supports_task_profiles(master: str) -> bool:
    return not master.startswith("local") or master.startswith("local-cluster")


def check_fits(res: TaskResources, conf) -> None:
    """Refuse what no executor can run (``conf``: the SparkConf): the stage would wait for it forever."""
    cores = conf.get("spark.executor.cores", None)
    if res.cpus and cores is not None and res.cpus > int(cores):
        raise ConfigError(f"{res.cpus} CPUs per task but executors have spark.executor.cores={cores}")
    if res.gpus:
        have = float(conf.get("spark.executor.resource.gpu.amount", "0"))
        if have <= 0:
            raise ConfigError(f"{res.gpus:g} GPU per task but executors have no GPUs: set "
                              "spark.executor.resource.gpu.amount and a discovery script (docs/DEPLOY.md)")
        if res.gpus > have:
            raise ConfigError(f"{res.gpus:g} GPUs per task but executors have spark.executor.resource.gpu.amount="
                              f"{have:g}")
        if res.gpus < 1 and cores is not None:
            # Spark gives a share on the lowest address with room: too few tasks at once fill GPU 0 and leave
            # the others idle (what cluster tests show on a 2-GPU worker)
            at_once = int(cores) // (res.cpus or int(conf.get("spark.task.cpus", "1")))
            if at_once * res.gpus < have:
                raise ConfigError(
                    f"{res.gpus:g} GPU per task with {at_once} tasks at once per executor (spark.executor.cores="
                    f"{cores}) uses {at_once * res.gpus:g} of its {have:g} GPUs: Spark packs shares onto the "
                    f"first GPU and the rest stay idle; use a share of at most {have / at_once:g} or more cores")


def task_profile(res: TaskResources):
    """The pyspark ResourceProfile for these requests (an active SparkContext registers it on the JVM)."""
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    req = TaskResourceRequests()
    if res.cpus:
        req = req.cpus(res.cpus)
    if res.gpus:
        req = req.resource("gpu", res.gpus)
    return ResourceProfileBuilder().require(req).build


def stage_profile_ids(sc, group: str) -> list[int]:
    """The resource profile id each stage of a job group ran with (0 = the default profile): what Spark applied,
    read from its status store (a JVM-internal API, so an empty list when it is not there)."""
    try:
        tracker, store = sc.statusTracker(), sc._jsc.sc().statusStore()
        stages = {s for j in tracker.getJobIdsForGroup(group) if (info := tracker.getJobInfo(j))
                  for s in info.stageIds}
        return sorted({int(store.lastStageAttempt(s).resourceProfileId()) for s in stages})
    except Exception:  # noqa: BLE001 - an observation for the run record, never a reason to fail a run
        return []
