"""Which device a task's model runs on: the GPU Spark assigned to this task, never "whatever is GPU 0".

clip-retrieval's bug #292 put every task on GPU 0. With ``spark.task.resource.gpu.amount`` set, Spark gives each
task its own GPU address in ``TaskContext.resources()["gpu"]``; that address is the CUDA index (the discovery
script, deploy/gpu_discovery.sh, lists indices as CUDA sees them).

Without GPU scheduling (local mode, a cluster without GPU amounts):

* no visible GPU: ``cpu``; exactly one: ``cuda:0``;
* several: an error, since tasks would either pile onto one GPU or (as before) silently run on the CPU. Set
  ``spark.executor.resource.gpu.amount`` and ``spark.task.resource.gpu.amount`` (or ``clip.task_gpus``), limit
  ``CUDA_VISIBLE_DEVICES`` to one GPU, or choose the device explicitly:
* ``L5S_CLIP_DEVICE`` (environment of the Python workers: the shell of ``deploy/submit.sh`` in local mode,
  ``spark.executorEnv.L5S_CLIP_DEVICE`` on a cluster) = ``cpu`` or ``cuda:<index>``: every task of that process
  uses it. It is for runs without GPU scheduling; with a Spark-assigned GPU it must be unset.
"""

from __future__ import annotations

import os
import re

DEVICE_ENV = "L5S_CLIP_DEVICE"
_EXPLICIT = re.compile(r"cpu|cuda:(\d+)")


def device_for(resources: dict, cuda_devices: int, explicit: str = "") -> str:
    """``resources``: TaskContext.resources() (name -> ResourceInformation with ``addresses``); ``explicit``: the
    value of ``L5S_CLIP_DEVICE`` ("" = unset)."""
    gpu = resources.get("gpu")
    if gpu is not None and list(gpu.addresses):
        index = int(list(gpu.addresses)[0])
        if explicit:
            raise RuntimeError(f"{DEVICE_ENV}={explicit} but Spark assigned this task GPU {index}: unset "
                               f"{DEVICE_ENV} (it is for runs without GPU scheduling, e.g. local mode)")
        if index >= cuda_devices:
            raise RuntimeError(f"Spark assigned GPU {index} but this process sees {cuda_devices} CUDA devices: "
                               "check the discovery script and CUDA_VISIBLE_DEVICES on the executors")
        return f"cuda:{index}"
    if explicit:
        m = _EXPLICIT.fullmatch(explicit.strip())
        if m is None:
            raise RuntimeError(f"{DEVICE_ENV}={explicit!r}: use cpu or cuda:<index> (e.g. cuda:1)")
        if m.group(1) is not None and int(m.group(1)) >= cuda_devices:
            choices = {0: "cpu", 1: "cuda:0 or cpu"}.get(cuda_devices, f"cuda:0 .. cuda:{cuda_devices - 1} or cpu")
            raise RuntimeError(f"{DEVICE_ENV}={explicit} but this process sees {cuda_devices} CUDA devices: "
                               f"use {choices}")
        return explicit.strip()
    if cuda_devices <= 1:
        return "cuda:0" if cuda_devices == 1 else "cpu"
    # several GPUs and no scheduling: every task on GPU 0 is clip-retrieval's bug, all on the CPU wastes them
    raise RuntimeError(
        f"this process sees {cuda_devices} GPUs but Spark assigned this task none: set "
        "spark.executor.resource.gpu.amount and spark.task.resource.gpu.amount (or clip.task_gpus) so each task "
        f"gets its own, limit CUDA_VISIBLE_DEVICES to one GPU, or choose one with {DEVICE_ENV}=cuda:<index> "
        f"(or {DEVICE_ENV}=cpu) in the executors' environment")


def task_device() -> str:
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return device_for(ctx.resources() if ctx else {}, torch.cuda.device_count() if torch.cuda.is_available() else 0,
                      os.environ.get(DEVICE_ENV, ""))
