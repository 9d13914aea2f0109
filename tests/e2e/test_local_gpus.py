"""The local provider shares GPUs: a real flowd with a declared (synthetic) inventory.

FLOW_LOCAL_GPUS makes flowd believe in GPUs this CI machine does not have; the tasks are real
processes and read their CUDA_VISIBLE_DEVICES. The real NVML path runs in tools/gpu-check on a
machine with a GPU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, _cleanup, short_tmpdir, wait_until
from flow import Flow, TaskStatus
from flow.errors import ResourceNotAvailableError

INVENTORY = [
    {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920},
    {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920},
    {"name": "Tesla T4", "memory_mib": 15360},
]


@pytest.fixture(scope="module")
def gpu_daemon() -> Iterator[Daemon]:
    import os

    d = Daemon(short_tmpdir("flow-g-"))
    os.environ["FLOW_LOCAL_GPUS"] = json.dumps(INVENTORY)
    try:
        d.start()
    finally:
        del os.environ["FLOW_LOCAL_GPUS"]
    yield d
    _cleanup(d)


@pytest.fixture(scope="module")
def gflow(gpu_daemon: Daemon) -> Iterator[Flow]:
    client = gpu_daemon.client()
    yield client
    client.close()


SHOW = ["sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES|$CUDA_DEVICE_ORDER"']


def test_the_machine_offers_its_gpus(gflow: Flow) -> None:
    names = {o["instance_type"] for o in gflow.find_instances()}
    assert names == {"cpu", "a100", "2xa100", "t4"}


def test_instance_type_gets_matching_gpus_only(gflow: Flow) -> None:
    task = gflow.run(SHOW, instance_type="2xa100", upload_code=False).wait(timeout=30)
    assert task.logs() == "0,1|0,1|PCI_BUS_ID\n"
    assert task.instance_type == "a100-80gb.sxm.2x"
    t4 = gflow.run(SHOW, instance_type="t4", upload_code=False).wait(timeout=30)
    assert t4.logs().startswith("2|2|")


def test_min_gpu_memory_picks_the_smallest_gpu_that_fits(gflow: Flow) -> None:
    small = gflow.run(SHOW, min_gpu_memory_gb=16, upload_code=False).wait(timeout=30)
    assert small.logs().startswith("2|")  # the T4, keeping the A100s free
    big = gflow.run(SHOW, min_gpu_memory_gb=40, upload_code=False).wait(timeout=30)
    assert big.logs().split("|")[0] in ("0", "1")


def test_cpu_tasks_see_no_gpus(gflow: Flow) -> None:
    assert gflow.run(SHOW, upload_code=False).wait(timeout=30).logs() == "|void|PCI_BUS_ID\n"


def test_impossible_requests_fail_fast_listing_the_gpus(gflow: Flow) -> None:
    for kwargs in ({"instance_type": "4xa100"}, {"instance_type": "h100"}, {"min_gpu_memory_gb": 100}):
        with pytest.raises(ResourceNotAvailableError) as caught:
            gflow.run(["true"], upload_code=False, **kwargs)
        assert "2x a100-80gb (GPUs 0, 1), 1x t4-16gb (GPU 2)" in caught.value.message


def test_tasks_queue_fifo_and_start_when_gpus_free(gflow: Flow, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    hold = gflow.run(
        ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.02; done"], instance_type="2xa100", upload_code=False
    )
    wait_until(lambda: hold.status is TaskStatus.RUNNING, 10)
    first = gflow.run(SHOW, instance_type="a100", upload_code=False)
    second = gflow.run(SHOW, instance_type="a100", upload_code=False)
    assert first.status is TaskStatus.PENDING and second.status is TaskStatus.PENDING
    gate.write_text("")
    assert first.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert second.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert first.started_at is not None and second.started_at is not None and hold.wait(timeout=30).completed_at
    assert hold.completed_at <= first.started_at


def test_cancel_releases_gpus_and_a_queued_task_can_be_cancelled(gflow: Flow) -> None:
    hold = gflow.run(["sleep", "600"], instance_type="t4", upload_code=False)
    wait_until(lambda: hold.status is TaskStatus.RUNNING, 10)
    queued = gflow.run(["sleep", "600"], instance_type="t4", upload_code=False)
    waiter = gflow.run(SHOW, instance_type="t4", upload_code=False)
    assert queued.status is TaskStatus.PENDING
    queued.cancel()
    assert queued.wait(timeout=30).last_status is TaskStatus.CANCELLED
    assert queued.started_at is None
    hold.cancel()
    assert waiter.wait(timeout=30).logs().startswith("2|")  # it got the T4 the cancel freed


def test_queued_tasks_survive_a_daemon_restart(gpu_daemon: Daemon, gflow: Flow, tmp_path: Path) -> None:
    import os

    gate = tmp_path / "gate"
    hold = gflow.run(["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.02; done"], instance_type="t4", upload_code=False)
    wait_until(lambda: hold.status is TaskStatus.RUNNING, 10)
    queued = gflow.run(SHOW, instance_type="t4", upload_code=False)
    gpu_daemon.kill9()
    os.environ["FLOW_LOCAL_GPUS"] = json.dumps(INVENTORY)
    try:
        gpu_daemon.start()
    finally:
        del os.environ["FLOW_LOCAL_GPUS"]
    assert queued.status is TaskStatus.PENDING  # still waiting for the T4 the adopted task holds
    gate.write_text("")
    assert hold.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert queued.wait(timeout=30).logs().startswith("2|")
