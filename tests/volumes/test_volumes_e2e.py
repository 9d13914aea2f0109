"""Volumes end to end: a real flowd, real loop-mounted ext4 images, real tasks in private mount
namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any

import pytest

from conftest import Daemon, wait_until
from flow import MountSpec, TaskConfig, VolumeSpec
from flow.errors import FlowError, ResourceNotFoundError, ValidationError, VolumeError
from flow.task import TaskStatus
from volumes.volume_helpers import finished, loop_devices, release_storage


def run(flow: Any, command: str, *volumes: VolumeSpec, mounts: tuple[MountSpec, ...] = (), **kw: Any) -> Any:
    return flow.run(
        TaskConfig(command=command, volumes=list(volumes), data_mounts=list(mounts), upload_code=False, **kw)
    )


def output(task: Any) -> str:
    return "".join(task.logs())


def test_data_written_by_one_task_is_read_by_the_next_and_survives_a_restart(vdaemon: Daemon) -> None:
    flow: Any = vdaemon.client()
    data = VolumeSpec(name="data", size_gb=1)
    writer = finished(run(flow, "echo hello > /volumes/data/x && sync", data))
    assert (writer.status, writer.exit_code) == (TaskStatus.COMPLETED, 0), output(writer)
    reader = finished(run(flow, "cat /volumes/data/x", data))
    assert reader.status is TaskStatus.COMPLETED
    assert output(reader) == "hello\n"
    # The volume was created on first use, by name, and reused: one volume.
    (volume,) = flow.list_volumes()
    assert (volume.name, volume.size_gb, volume.interface) == ("data", 1, "block")
    flow.close()

    vdaemon.stop()
    vdaemon.start()
    flow = vdaemon.client()
    by_name = finished(run(flow, "cat /volumes/data/x", data))
    assert output(by_name) == "hello\n"
    by_id = finished(run(flow, "cat /restored/x", VolumeSpec(volume_id=volume.volume_id, mount_path="/restored")))
    assert output(by_id) == "hello\n"
    flow.close()


def test_nothing_is_mounted_on_the_host(vflow: Any, vdaemon: Daemon) -> None:
    task = finished(run(vflow, "grep -c ' /volumes/data ' /proc/self/mountinfo", VolumeSpec(name="data", size_gb=1)))
    assert output(task) == "1\n"
    with open("/proc/self/mountinfo") as info:
        assert not [line for line in info if " /volumes/" in line]


def test_mount_points_are_never_created_on_the_host(vflow: Any, tmp_path: Any) -> None:
    """A task's volumes and data mounts appear where it asks, in its own view of the machine:
    missing mount points (a new top-level directory, one inside an existing host directory) are
    never created on the host, which keeps everything else as it is (writes reach the host)."""
    import secrets

    top = f"/flow-test-{secrets.token_hex(4)}"
    inside = f"/mnt/flow-test-{secrets.token_hex(4)}"
    (tmp_path / "in.txt").write_text("data\n")
    host_mnt = sorted(os.listdir("/mnt"))
    task = finished(
        run(
            vflow,
            f"cat {top}/data/in.txt {inside}/deep/in.txt && echo kept > {top}/vol/x && cat {top}/vol/x "
            f"&& echo written > {tmp_path}/out.txt && ls -A /mnt && pwd",
            VolumeSpec(name="v", size_gb=1, mount_path=f"{top}/vol"),
            mounts=(
                MountSpec(source=str(tmp_path), target=f"{top}/data"),
                MountSpec(source=str(tmp_path), target=f"{inside}/deep"),
            ),
        )
    )
    lines = output(task).splitlines()
    assert task.status is TaskStatus.COMPLETED, lines
    assert lines[:3] == ["data", "data", "kept"]
    assert set(lines[3:-1]) == {*host_mnt, inside.removeprefix("/mnt/")}  # the host's /mnt, and the new one
    assert lines[-1].endswith(f"{task.task_id}/work")
    assert not os.path.exists(top) and not os.path.exists(inside)
    assert sorted(os.listdir("/mnt")) == host_mnt
    assert (tmp_path / "out.txt").read_text() == "written\n"  # the rest of the machine is the host's


def test_writes_beyond_the_size_fail_inside_the_task(vflow: Any) -> None:
    task = finished(
        run(vflow, "dd if=/dev/zero of=/volumes/small/fill bs=1M count=1100", VolumeSpec(name="small", size_gb=1)),
        timeout=300,
    )
    assert task.status is TaskStatus.FAILED
    assert task.exit_code not in (0, None)
    assert "No space left on device" in output(task)
    # The volume is still usable: the full file is there, a new small write fails, a delete frees it.
    after = finished(
        run(
            vflow,
            "ls -l /volumes/small/fill && rm /volumes/small/fill && echo ok > /volumes/small/y",
            VolumeSpec(name="small", size_gb=1),
        )
    )
    assert after.status is TaskStatus.COMPLETED, output(after)


def test_a_block_volume_attaches_to_one_live_task_at_a_time(vflow: Any) -> None:
    holder = run(vflow, "sleep 600", VolumeSpec(name="solo", size_gb=1))
    wait_until(lambda: holder.refresh().status is TaskStatus.RUNNING, 30)
    before = len(vflow.list_tasks())
    with pytest.raises(VolumeError) as refused:
        run(vflow, "true", VolumeSpec(name="solo", size_gb=1))
    assert holder.task_id in refused.value.message
    assert len(vflow.list_tasks()) == before  # nothing was created
    holder.cancel()
    holder.wait(timeout=60)
    assert finished(run(vflow, "true", VolumeSpec(name="solo", size_gb=1))).status is TaskStatus.COMPLETED


def test_concurrent_submits_never_both_take_a_block_volume(vflow: Any) -> None:
    vflow.create_volume(size_gb=1, name="race")
    outcomes: list[object] = []

    def submit() -> None:
        try:
            outcomes.append(run(vflow, "sleep 600", VolumeSpec(name="race", size_gb=1)))
        except FlowError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tasks = [o for o in outcomes if not isinstance(o, FlowError)]
    assert len(tasks) == 1
    assert all(isinstance(o, VolumeError) for o in outcomes if o not in tasks)
    tasks[0].cancel()


def test_a_file_volume_is_shared_by_running_tasks(vflow: Any) -> None:
    shared = VolumeSpec(name="shared", size_gb=1, interface="file")
    first = run(
        vflow, "echo from-first > /volumes/shared/a; while [ ! -e /volumes/shared/b ]; do sleep 0.05; done", shared
    )
    second = run(
        vflow,
        "while [ ! -e /volumes/shared/a ]; do sleep 0.05; done; cat /volumes/shared/a; touch /volumes/shared/b",
        shared,
    )
    assert finished(second, 60).status is TaskStatus.COMPLETED
    assert finished(first, 60).status is TaskStatus.COMPLETED
    assert output(second) == "from-first\n"


def test_delete_is_refused_while_a_live_task_uses_the_volume_and_the_data_is_kept(vflow: Any) -> None:
    volume = vflow.create_volume(size_gb=1, name="keep")
    spec = VolumeSpec(volume_id=volume.volume_id, mount_path="/keep")
    user = run(vflow, "echo precious > /keep/x && echo written && sleep 600", spec)
    wait_until(lambda: "written" in output(user), 30)
    wait_until(lambda: vflow.get_volume(volume.volume_id).attachments == (user.task_id,), 30)
    with pytest.raises(VolumeError) as refused:
        vflow.delete_volume(volume.volume_id)
    assert user.task_id in refused.value.message
    user.cancel()
    user.wait(timeout=60)
    reader = finished(run(vflow, "cat /keep/x", spec))
    assert output(reader) == "precious\n"
    assert vflow.delete_volume(volume.volume_id) is True
    assert vflow.list_volumes() == []
    with pytest.raises(ResourceNotFoundError):
        vflow.delete_volume(volume.volume_id)
    with pytest.raises(ResourceNotFoundError):
        vflow.get_volume(volume.volume_id)
    with pytest.raises(ResourceNotFoundError):
        run(vflow, "true", spec)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda f: f.create_volume(size_gb=0, name="zero"), "size_gb"),
        (lambda f: f.create_volume(size_gb=10**7, name="huge"), "size_gb"),
        (lambda f: f.create_volume(size_gb="100", name="text"), "size_gb"),
        (lambda f: f.create_volume(size_gb=1, name="bad name"), "name"),
        (lambda f: f.create_volume(size_gb=1, name="ok", interface="nfs"), "interface"),
        (lambda f: run(f, "true", VolumeSpec(name="x", size_gb=1, mount_path="relative")), "mount_path"),
        (lambda f: run(f, "true", VolumeSpec(name="../x", size_gb=1)), "name"),
        (lambda f: run(f, "true", VolumeSpec(name="x", size_gb=-1)), "size_gb"),
        (lambda f: run(f, "true", mounts=(MountSpec(source="relative/dir", target="/d"),)), "source"),
    ],
)
def test_invalid_names_sizes_and_paths_are_refused_before_anything_is_created(
    vshared: Daemon, call: Any, field: str
) -> None:
    vflow: Any = vshared.client()
    vdaemon = vshared
    with pytest.raises(ValidationError) as refused:
        call(vflow)
    assert [v.field.rsplit(".", 1)[-1] for v in refused.value.violations] == [field]
    assert vflow.list_volumes() == []
    assert vflow.list_tasks() == []
    assert not (vdaemon.home.root / "volumes").exists() or not list((vdaemon.home.root / "volumes").iterdir())
    vflow.close()


def test_the_daemon_validates_volume_requests_from_any_client(vdaemon: Daemon) -> None:
    """Other-language clients skip the SDK's checks: flowd refuses on its own."""
    from flow.connection import DaemonConnection
    from flow.wire.calls import Call
    from flow.wire.volume_codec import CREATE_VOLUME, LIST_VOLUMES
    from flowapi.v1 import volume_pb2

    def create(request: volume_pb2.CreateVolumeRequest) -> Call[volume_pb2.CreateVolumeResponse]:
        return Call(CREATE_VOLUME, request.SerializeToString(), volume_pb2.CreateVolumeResponse.FromString)

    conn = DaemonConnection(vdaemon.home)
    for request in (
        volume_pb2.CreateVolumeRequest(name="", size_gb=1),
        volume_pb2.CreateVolumeRequest(name="a b", size_gb=1),
        volume_pb2.CreateVolumeRequest(name="ok", size_gb=-5),
        volume_pb2.CreateVolumeRequest(name="ok", size_gb=1, interface=7),
        volume_pb2.CreateVolumeRequest(name="ok", size_gb=1, request_id="x" * 500),
    ):
        with pytest.raises(ValidationError):
            conn.unary(create(request), timeout=30)
    with pytest.raises(ValidationError):
        listing = volume_pb2.ListVolumesRequest(page_token="nope").SerializeToString()
        conn.unary(Call(LIST_VOLUMES, listing, volume_pb2.ListVolumesResponse.FromString), timeout=30)
    # request_id makes a retried create idempotent; a taken name is refused.
    first = conn.unary(create(volume_pb2.CreateVolumeRequest(name="v", size_gb=1, request_id="r1")), timeout=60)
    again = conn.unary(create(volume_pb2.CreateVolumeRequest(name="v", size_gb=1, request_id="r1")), timeout=60)
    assert first.volume.volume_id == again.volume.volume_id
    with pytest.raises(ValidationError, match="exists already"):
        conn.unary(create(volume_pb2.CreateVolumeRequest(name="v", size_gb=1)), timeout=60)
    conn.close()


def test_the_seed_volume_examples_run_as_written(vflow: Any) -> None:
    """flow-sdk-api-design.md, "Volume Management" and "Volume Mounting", modulo the provider
    (no instance_type: this machine's CPUs)."""
    flow = vflow
    # Create persistent storage
    volume = flow.create_volume(size_gb=100, name="checkpoints")

    # List volumes
    volumes = flow.list_volumes()
    printed = [f"{vol.name}: {vol.size_gb}GB in {vol.region}" for vol in volumes]
    assert printed == ["checkpoints: 100GB in local"]

    # Attach to task
    config = TaskConfig(
        volumes=[VolumeSpec(volume_id=volume.volume_id, mount_path="/checkpoints")],
        command="df -B1 --output=size /checkpoints | tail -1; touch /checkpoints/ok",
        upload_code=False,
    )
    task = finished(flow.run(config))
    assert task.status is TaskStatus.COMPLETED, output(task)
    assert 95 * 10**9 < int(output(task).split()[-1]) <= 100 * 10**9

    # Volumes automatically mount at /volumes/<name>
    auto = finished(
        flow.run(
            TaskConfig(
                volumes=[
                    VolumeSpec(name="data", size_gb=100),  # → /volumes/data
                    VolumeSpec(name="models", size_gb=50),  # → /volumes/models
                ],
                command="mountpoint -q /volumes/data && mountpoint -q /volumes/models && echo both",
                upload_code=False,
            )
        )
    )
    assert output(auto) == "both\n"
    # Custom mount paths
    custom = finished(
        flow.run(
            TaskConfig(
                volumes=[VolumeSpec(name="data", mount_path="/dataset", size_gb=100)],
                command="mountpoint -q /dataset && echo mounted",
                upload_code=False,
            )
        )
    )
    assert output(custom) == "mounted\n"

    # Delete volume
    assert flow.delete_volume(volume.volume_id) is True
    assert sorted(v.name for v in flow.list_volumes()) == ["data", "models"]


def test_cli_volumes_create_list_delete(vdaemon: Daemon) -> None:
    made = vdaemon.flow_cli("volumes", "create", "cli-vol", "--size", "2", "--interface", "file", "--json")
    assert made.returncode == 0, made.stderr
    volume = json.loads(made.stdout)
    assert (volume["name"], volume["size_gb"], volume["interface"], volume["attachments"]) == ("cli-vol", 2, "file", [])
    listed = vdaemon.flow_cli("volumes", "list", "--json")
    assert [v["volume_id"] for v in json.loads(listed.stdout)] == [volume["volume_id"]]
    table = vdaemon.flow_cli("volumes", "list")
    assert "cli-vol" in table.stdout and "2 GB" in table.stdout
    bad = vdaemon.flow_cli("volumes", "create", "bad name", "--size", "1", "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error"]["type"] == "ValidationError"
    gone = vdaemon.flow_cli("volumes", "delete", volume["volume_id"], "--json")
    assert json.loads(gone.stdout) == {"deleted": [volume["volume_id"]]}
    missing = vdaemon.flow_cli("volumes", "delete", volume["volume_id"])
    assert missing.returncode == 1 and volume["volume_id"] in missing.stderr


def test_a_local_directory_is_mounted_read_only(vflow: Any, tmp_path: Any) -> None:
    (tmp_path / "input.txt").write_text("local data\n")
    mounts = (MountSpec(source=f"file://{tmp_path}", target="/input"), MountSpec(source=str(tmp_path), target="/again"))
    task = finished(run(vflow, "cat /input/input.txt /again/input.txt; touch /input/new", mounts=mounts))
    assert task.status is TaskStatus.FAILED
    text = output(task)
    assert text.startswith("local data\nlocal data\n")
    assert "Read-only file system" in text
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValidationError) as missing:  # refused by run(): no task is created
        run(vflow, "true", mounts=(MountSpec(source=str(tmp_path / "nope"), target="/x"),))
    assert [v.field for v in missing.value.violations] == ["data_mounts[0].source"]
    assert "nope" in missing.value.message


def test_stopping_the_daemon_releases_its_loop_devices(vdaemon: Daemon) -> None:
    before = loop_devices()
    flow: Any = vdaemon.client()
    finished(run(flow, "true", VolumeSpec(name="a", size_gb=1), VolumeSpec(name="b", size_gb=1, mount_path="/b")))
    assert len(loop_devices() - before) == 2  # flowd keeps its host mounts while it runs
    flow.close()
    vdaemon.stop()
    wait_until(lambda: loop_devices() <= before, 10)
    release_storage(vdaemon.home.root)
    assert os.path.isdir(vdaemon.home.root / "volumes")


def test_flow_ssh_into_a_task_sees_its_volumes(vflow: Any) -> None:
    task = run(vflow, "echo inside > /volumes/data/x && echo ready && sleep 600", VolumeSpec(name="data", size_gb=1))
    wait_until(lambda: "ready" in output(task), 30)
    result = task.exec("pwd; cat /volumes/data/x")
    assert result.exit_code == 0, result.stderr
    cwd, content = result.stdout.decode().splitlines()
    assert content == "inside"
    assert cwd.endswith(f"{task.task_id}/work")
    task.cancel()


def test_a_task_running_across_a_restart_shares_one_loop_device_with_new_tasks(vdaemon: Daemon) -> None:
    """After a restart flowd mounts the loop device the running task still holds, never a second
    device on the same image (two ext4 mounts of one image from two devices would corrupt it)."""
    flow: Any = vdaemon.client()
    shared = VolumeSpec(name="live", size_gb=1, interface="file")
    old = run(
        flow,
        "echo ready; until [ -e /volumes/live/from-new ]; do sleep 0.05; done; cat /volumes/live/from-new; "
        "until [ -e /volumes/live/finish ]; do sleep 0.05; done",
        shared,
    )
    wait_until(lambda: "ready" in output(old), 30)
    (volume,) = flow.list_volumes()
    flow.close()
    vdaemon.stop()
    vdaemon.start()
    flow = vdaemon.client()
    new = finished(run(flow, "echo written-after-restart > /volumes/live/from-new", shared))
    assert new.status is TaskStatus.COMPLETED, output(new)
    wait_until(lambda: "written-after-restart" in output(flow.get_task(old.task_id)), 30)
    image = vdaemon.home.root / "volumes" / volume.volume_id / "image"
    attached = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout
    assert len(attached.splitlines()) == 1, attached  # the old task and flowd share one device
    finished(run(flow, "touch /volumes/live/finish", shared))
    assert finished(flow.get_task(old.task_id)).status is TaskStatus.COMPLETED
    flow.close()
