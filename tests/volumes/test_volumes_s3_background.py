"""s3:// data mounts are copied in the background: submitting returns at once with the task
PENDING and saying what it syncs, the command starts after the data is whole, a cancel during
the sync stops it with nothing started, a failed sync ends the task FAILED naming the source,
and a flowd killed during a sync syncs again when it restarts. A real flowd, a real S3-compatible
server on 127.0.0.1 (tools/s3-server); the assertions are on states and their order, never on
how long anything took."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from conftest import Daemon, wait_until
from flow import MountSpec, TaskConfig
from flow.task import TaskStatus
from volumes.conftest import S3_ENV
from volumes.volume_helpers import finished

SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]
# Large enough that its sync outlasts a few round trips to flowd (moto served it in ~0.7 s here).
BIG = 300 * 2**20
COPIES = 4  # mounts of it in one task, synced one after the other: a wide window to act in


def copies_of(url: str) -> list[MountSpec]:
    return [MountSpec(source=url, target=f"/data{i}") for i in range(COPIES)]


def put_big(s3: Any, bucket: str) -> bytes:
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(1 << 20) * (BIG >> 20)
    s3.put_object(Bucket=bucket, Key="large/blob.bin", Body=body)
    return body


def reasons_until_done(task: Any, timeout: float = 300) -> list[tuple[TaskStatus, str]]:
    """Every distinct (state, state_reason) the task shows until it ends, in order."""
    seen: list[tuple[TaskStatus, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (task.status, task.state_reason)
        if not seen or seen[-1] != state:
            seen.append(state)
        if task.last_status.is_terminal:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"the task did not end: {seen}")


def test_submit_returns_pending_while_the_data_syncs_then_the_command_sees_it(s3_daemon: Daemon, s3: Any) -> None:
    big = put_big(s3, "bgsync")
    flow: Any = s3_daemon.client()
    config = TaskConfig(
        command="sha256sum < /data/blob.bin",
        data_mounts=[MountSpec(source="s3://bgsync/large", target="/data")],
        upload_code=False,
    )
    task = flow.run(config)
    # Submit came back before the data: the task is PENDING and says what it syncs.
    assert task.last_status is TaskStatus.PENDING, (task.last_status, task.state_reason)
    assert task.state_reason.startswith("syncing s3://bgsync/large"), task.state_reason
    seen = reasons_until_done(task)
    states = [s for s, _ in seen]
    assert states[-1] is TaskStatus.COMPLETED, seen
    # PENDING with the listing's figures came first, then the command ran (never before).
    listing = f"syncing s3://bgsync/large (1 file, {BIG / 1e6:.1f} MB)"
    assert (TaskStatus.PENDING, listing) in seen, seen
    assert states.index(TaskStatus.PENDING) < len(states) - 1
    assert all(s is TaskStatus.PENDING for s in states[: seen.index((TaskStatus.PENDING, listing)) + 1])
    assert task.state_reason == "exited with code 0"
    assert "".join(task.logs()).split()[0] == hashlib.sha256(big).hexdigest()
    flow.close()


def test_tasks_beyond_the_sync_limit_wait_their_turn_saying_so(s3_daemon: Daemon, s3: Any) -> None:
    put_big(s3, "turns")
    flow: Any = s3_daemon.client()
    config = TaskConfig(
        command="test -s /data/blob.bin",
        data_mounts=[MountSpec(source="s3://turns/large", target="/data")],
        upload_code=False,
    )
    tasks = [flow.run(config) for _ in range(3)]
    assert [t.last_status for t in tasks] == [TaskStatus.PENDING] * 3
    assert tasks[0].state_reason.startswith("syncing s3://turns/large")
    assert tasks[1].state_reason.startswith("syncing s3://turns/large")
    # Two tasks sync at a time: the third says it waits for them.
    assert tasks[2].state_reason == "waiting to sync s3://turns/large: 2 other tasks are syncing their data"
    for task in tasks:
        assert finished(task, timeout=300).status is TaskStatus.COMPLETED, task.state_reason
    flow.close()


def test_cancel_during_the_sync_stops_it_and_nothing_starts(s3_daemon: Daemon, s3: Any, tmp_path: Path) -> None:
    put_big(s3, "stop")
    ran = tmp_path / "ran"
    flow: Any = s3_daemon.client()
    task = flow.run(
        TaskConfig(
            command=f"touch {ran}",
            data_mounts=copies_of("s3://stop/large"),
            upload_code=False,
        )
    )
    data = s3_daemon.home.root / "tasks" / task.task_id / "data"
    # Cancelled once the first copy is arriving (its listing is done and bytes have come).
    first = data / "0" / "blob.bin"
    wait_until(lambda: first.exists() and first.stat().st_size > 0, timeout=120)
    assert not (data / f"{COPIES - 1}.synced").exists()
    assert task.status is TaskStatus.PENDING, task.state_reason
    task.cancel()
    assert finished(task).status is TaskStatus.CANCELLED
    assert task.state_reason == "cancelled before it started"
    # The sync stopped and its partial data went; the command never ran.
    wait_until(lambda: data.exists() and not any(data.iterdir()), timeout=60)
    assert not ran.exists()
    assert task.started_at is None
    assert "".join(task.logs()) == ""
    # The daemon goes on syncing and running other tasks.
    s3.put_object(Bucket="stop", Key="small/x.txt", Body=b"after\n")
    after = finished(
        flow.run(
            TaskConfig(
                command="cat /d/x.txt",
                data_mounts=[MountSpec(source="s3://stop/small", target="/d")],
                upload_code=False,
            )
        )
    )
    assert after.status is TaskStatus.COMPLETED and "".join(after.logs()) == "after\n"
    assert not ran.exists()
    flow.close()


def test_a_failed_sync_ends_the_task_failed_naming_the_source_and_nothing_runs(
    s3_daemon: Daemon, s3: Any, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket="half")
    s3.put_object(Bucket="half", Key="ok/a.txt", Body=b"a\n")
    ran = tmp_path / "ran"
    flow: Any = s3_daemon.client()
    task = finished(
        flow.run(
            TaskConfig(
                command=f"touch {ran}",
                data_mounts=[
                    MountSpec(source="s3://half/ok", target="/ok"),  # this one syncs ...
                    MountSpec(source="s3://half/missing-object", target="/missing"),  # ... this one cannot
                ],
                upload_code=False,
            )
        )
    )
    assert task.status is TaskStatus.FAILED
    assert task.state_reason.startswith("could not start: could not read s3://half/missing-object"), task.state_reason
    assert SECRET not in task.state_reason and S3_ENV["AWS_ACCESS_KEY_ID"] not in task.state_reason
    assert not ran.exists()
    assert task.started_at is None
    # What had been copied for it is gone too.
    assert not (s3_daemon.home.root / "tasks" / task.task_id / "data" / "0").exists()
    assert SECRET not in (s3_daemon.home.root / "flowd.log").read_text()
    flow.close()


def test_a_flowd_killed_during_the_sync_syncs_again_and_runs_the_task_once(s3_daemon: Daemon, s3: Any) -> None:
    big = put_big(s3, "again")
    flow: Any = s3_daemon.client()
    task = flow.run(
        TaskConfig(
            command=f"sha256sum < /data{COPIES - 1}/blob.bin; echo ran",
            data_mounts=copies_of("s3://again/large"),
            upload_code=False,
        )
    )
    data = s3_daemon.home.root / "tasks" / task.task_id / "data"
    first = data / "0" / "blob.bin"
    wait_until(lambda: first.exists() and first.stat().st_size > 0, timeout=120)
    # Killed while the data is still arriving: the sync has not finished, nothing has started.
    assert not (data / f"{COPIES - 1}.synced").exists()
    assert task.status is TaskStatus.PENDING, task.state_reason
    flow.close()
    s3_daemon.kill9()
    s3_daemon.start()
    flow = s3_daemon.client()
    again = flow.get_task(task.task_id)
    assert finished(again, timeout=300).status is TaskStatus.COMPLETED, again.state_reason
    digest, _, ran = "".join(again.logs()).split()[:3]  # "<sha256>  -", then "ran"
    assert (digest, ran) == (hashlib.sha256(big).hexdigest(), "ran")
    assert "".join(again.logs()).count("ran") == 1
    flow.close()


def test_the_state_machine_shows_a_reason_while_pending_and_drops_it_on_start() -> None:
    """The core's rule the daemon relies on (pure: no daemon)."""
    from returns.result import Failure

    from flow.domain.task.lifecycle import Preparing, Started, TaskRecord, TaskState, apply

    record = TaskRecord(task_id="t-1", config=TaskConfig(command="true"), provider="local", created_at=0.0)
    syncing = apply(record, Preparing(reason="syncing s3://b/p (1 file, 1.0 MB)"), 1.0).unwrap()
    assert (syncing.state, syncing.state_reason) == (TaskState.PENDING, "syncing s3://b/p (1 file, 1.0 MB)")
    started = apply(syncing, Started(), 2.0).unwrap()
    assert (started.state, started.state_reason, started.started_at) == (TaskState.RUNNING, "", 2.0)
    assert isinstance(apply(started, Preparing(reason="late"), 3.0), Failure)  # never once it runs
