"""Which device a clip task uses (laion5b_spark/clip/device.py), with fake resource maps and device counts."""

from types import SimpleNamespace

import pytest

from laion5b_spark.clip import device
from laion5b_spark.clip.device import DEVICE_ENV, device_for


def gpu(*addresses):
    return {"gpu": SimpleNamespace(name="gpu", addresses=list(addresses))}


def test_a_scheduled_task_runs_on_its_address():
    assert device_for(gpu("3"), cuda_devices=4) == "cuda:3"
    assert device_for(gpu("1", "2"), cuda_devices=4) == "cuda:1"
    with pytest.raises(RuntimeError, match="assigned GPU 5 but this process sees 2"):
        device_for(gpu("5"), cuda_devices=2)


def test_unscheduled_with_at_most_one_gpu():
    assert device_for({}, cuda_devices=0) == "cpu"
    assert device_for({}, cuda_devices=1) == "cuda:0"
    assert device_for({"gpu": SimpleNamespace(name="gpu", addresses=[])}, cuda_devices=1) == "cuda:0"


def test_unscheduled_with_several_gpus_is_an_error_that_says_what_to_do():
    with pytest.raises(RuntimeError) as err:
        device_for({}, cuda_devices=4)
    msg = str(err.value)
    for hint in ("sees 4 GPUs", "spark.executor.resource.gpu.amount", "spark.task.resource.gpu.amount",
                 "clip.task_gpus", "CUDA_VISIBLE_DEVICES", f"{DEVICE_ENV}=cuda:<index>"):
        assert hint in msg


@pytest.mark.parametrize("explicit,devices,expect", [
    ("cuda:1", 4, "cuda:1"), ("cuda:0", 1, "cuda:0"), ("cpu", 4, "cpu"), ("cpu", 0, "cpu"), (" cuda:3 ", 4, "cuda:3"),
])
def test_an_explicit_device_makes_local_mode_with_several_gpus_usable(explicit, devices, expect):
    assert device_for({}, cuda_devices=devices, explicit=explicit) == expect


@pytest.mark.parametrize("explicit,devices,msg", [
    ("cuda:4", 4, "sees 4 CUDA devices: use cuda:0 .. cuda:3 or cpu"),
    ("cuda:0", 0, "sees 0 CUDA devices: use cpu"),
    ("cuda:1", 1, "sees 1 CUDA devices: use cuda:0 or cpu"),
    ("cuda", 2, "use cpu or cuda:<index>"),
    ("gpu1", 2, "use cpu or cuda:<index>"),
])
def test_a_bad_explicit_device_is_refused(explicit, devices, msg):
    with pytest.raises(RuntimeError, match=msg):
        device_for({}, cuda_devices=devices, explicit=explicit)


def test_an_explicit_device_conflicting_with_spark_scheduling_is_refused():
    with pytest.raises(RuntimeError, match=f"{DEVICE_ENV}=cuda:1 but Spark assigned this task GPU 0: unset"):
        device_for(gpu("0"), cuda_devices=2, explicit="cuda:1")


def test_task_device_reads_the_environment(monkeypatch):
    """Outside a task (no TaskContext) on this CPU machine: cpu, or what L5S_CLIP_DEVICE says."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    with pytest.raises(RuntimeError, match="sees 2 GPUs"):
        device.task_device()
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    assert device.task_device() == "cuda:1"
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert device.task_device() == "cpu"
