"""Which device a task's model runs on: the GPU Spark assigned to this task, never "whatever is GPU 0".

clip-retrieval's bug #292 put every task on GPU 0. With ``spark.task.resource.gpu.amount`` set, Spark gives each
task its own GPU address in ``TaskContext.resources()["gpu"]``; that address is the CUDA index (the discovery
script, deploy/gpu_discovery.sh, lists indices as CUDA sees them).
"""

from __future__ import annotations


def device_for(resources: dict, cuda_devices: int) -> str:
    """``resources``: TaskContext.resources() (name -> ResourceInformation with ``addresses``)."""
    gpu = resources.get("gpu")
    if gpu is not None and list(gpu.addresses):
        index = int(list(gpu.addresses)[0])
        if index >= cuda_devices:
            raise RuntimeError(f"Spark assigned GPU {index} but this process sees {cuda_devices} CUDA devices: "
                               "check the discovery script and CUDA_VISIBLE_DEVICES on the executors")
        return f"cuda:{index}"
    # no GPU scheduling (local mode, a CPU cluster): one GPU is safe to use, several would all land on 0
    return "cuda:0" if cuda_devices == 1 else "cpu"


def task_device() -> str:
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return device_for(ctx.resources() if ctx else {}, torch.cuda.device_count() if torch.cuda.is_available() else 0)
