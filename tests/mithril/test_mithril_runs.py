"""Mithril runs as a user lives them, end to end (SDK -> real flowd -> the spec-checked fake ->
the test stack's real sshd as instances): the seed's one-liner with no SSH settings, settings
per client, logs pushed over a connection that drops, the last lines after a cancel or a
preemption, two nodes, a preempted task running again, s3:// data mounts."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.mithril import FakeMithril
from volumes.conftest import S3_ENV, s3, s3_endpoint  # noqa: F401 - pytest finds fixtures by name

from conftest import Daemon, wait_until
from flow import MountSpec, TaskConfig, TaskStatus, errors
from mithril.conftest import StartDaemon

A100 = {"instance_type": "a100", "upload_code": False}


def instance_dir(stack: dict[str, str], task_id: str, node: int = 0) -> Path:
    """The node's directory on the (fake's) instance: the test stack's SSH user's home."""
    return Path(stack["FLOW_TEST_MITHRIL_SSH_HOME"]) / ".flow" / "tasks" / task_id / "nodes" / str(node)


def live_bids(fake: FakeMithril) -> list[dict[str, Any]]:
    return [b for b in fake.bids.values() if b["status"] != "Terminated"]


@pytest.fixture
def gate(mithril_stack: dict[str, str]) -> Iterator[Path]:
    """A file the instance's command waits for (the instances' home is this machine's)."""
    path = Path(mithril_stack["FLOW_TEST_MITHRIL_SSH_HOME"]) / f"gate-{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)


def drop_connections(daemon: Daemon) -> int:
    """Kills the sshd session process serving this flowd's kept-open connection (the parent of
    its watcher, which carries the flowd's state directory as its tag): the TCP connection is
    gone, as when a network drops. Returns how many were killed."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"flow-watch" not in argv or not any(str(daemon.home.root).encode() in a for a in argv):
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if not Path(f"/proc/{parent}/cmdline").read_bytes().startswith(b"sshd"):
                continue
            os.kill(parent, signal.SIGKILL)
            killed += 1
        except (OSError, ValueError, IndexError):
            continue
    return killed


def test_the_seed_example_needs_no_ssh_settings(fake_mithril: FakeMithril, start_daemon: StartDaemon) -> None:
    """Flow(provider=MithrilProvider(api_key=..., project=...)): flowd makes a key, registers it
    once, and reaches the instances with it."""
    from flow import Flow
    from flow.providers.mithril import MithrilProvider

    daemon = start_daemon(config=False, env={"MITHRIL_API_URL": fake_mithril.base_url})
    provider = MithrilProvider(api_key=fake_mithril.api_key, project=fake_mithril.project_name)
    flow = Flow(flow_home=daemon.home.root, provider=provider)
    first = flow.run("echo seed", **A100).wait(timeout=90)
    assert first.status is TaskStatus.COMPLETED, first.state_reason
    assert first.logs() == "seed\n"
    key = daemon.home.root / "keys" / "mithril_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    public = key.with_name("mithril_ed25519.pub").read_text().split()[:2]
    registered = list(fake_mithril.ssh_keys.values())
    assert len(registered) == 1 and registered[0]["public_key"].split()[:2] == public
    second = Flow(flow_home=daemon.home.root, provider=provider).run("echo again", **A100).wait(timeout=90)
    assert second.status is TaskStatus.COMPLETED and len(fake_mithril.ssh_keys) == 1  # reused, not made again
    log = (daemon.home.root / "flowd.log").read_text()
    assert key.read_text().splitlines()[1] not in log  # the private key is never logged
    assert log.count("made an SSH key") == 1  # said once
    # The registered key's private half goes missing: a clear error with the fix, no silent new key.
    daemon.stop()
    key.unlink()
    key.with_name("mithril_ed25519.pub").unlink()
    daemon.start()
    with pytest.raises(errors.ValidationError) as caught:
        Flow(flow_home=daemon.home.root, provider=provider).run("echo never", **A100)
    assert "not on this machine" in caught.value.message
    assert any("restore" in s for s in caught.value.suggestions)
    assert any("DELETE /v2/ssh-keys/" in s for s in caught.value.suggestions)
    assert len(fake_mithril.ssh_keys) == 1 and not key.exists()


def test_two_clients_with_different_settings_in_one_flow_home(
    fake_mithril: FakeMithril, start_daemon: StartDaemon, mithril_stack: dict[str, str]
) -> None:
    from flow import Flow
    from flow.providers.mithril import MithrilProvider

    daemon = start_daemon(config=False)
    common = {
        "api_key": fake_mithril.api_key,
        "project": fake_mithril.project_name,
        "api_url": fake_mithril.base_url,
        "ssh_key_file": mithril_stack["FLOW_TEST_SSH_KEY"],
    }
    west = Flow(flow_home=daemon.home.root, provider=MithrilProvider(region="us-central1-a", **common))
    east = Flow(flow_home=daemon.home.root, provider=MithrilProvider(region="us-central1-b", **common))
    wrong = Flow(flow_home=daemon.home.root, provider=MithrilProvider(**{**common, "api_key": "fkey_" + "W" * 24}))
    assert len({west.provider, east.provider, wrong.provider}) == 3  # three settings, three providers
    a = west.run("echo west", **A100)
    b = east.run("echo east", **A100)
    assert a.wait(timeout=90).logs() == "west\n" and b.wait(timeout=90).logs() == "east\n"
    regions = sorted(bid["region"] for bid in fake_mithril.bids.values())
    assert regions == ["us-central1-a", "us-central1-b"]
    with pytest.raises(errors.AuthenticationError):
        wrong.run("true", **A100)
    with pytest.raises(errors.AuthenticationError):
        wrong.list_volumes()
    assert west.list_volumes() == [] and east.list_volumes() == []  # a wrong key affects only its calls
    assert "W" * 24 not in (daemon.home.root / "flowd.log").read_text()


def test_pushed_logs_survive_a_dropped_connection_without_loss_or_duplicates(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, mithril_stack: dict[str, str], gate: Path
) -> None:
    command = f"i=0; while [ ! -e {gate} ]; do i=$((i+1)); echo line $i; sleep 0.02; done; echo end"
    task = mithril_daemon.client().run(command, **A100)
    wait_until(lambda: "line 5\n" in task.logs(), 60)
    assert drop_connections(mithril_daemon) >= 1
    before = task.logs().count("\n")
    wait_until(lambda: task.logs().count("\n") > before + 20, 60)  # flowd connected again and follows
    gate.touch()
    assert task.wait(timeout=60).status is TaskStatus.COMPLETED
    lines = task.logs().splitlines()
    assert lines[-1] == "end" and lines[:-1] == [f"line {i}" for i in range(1, len(lines))]
    assert task.logs().encode() == (instance_dir(mithril_stack, task.task_id) / "output.log").read_bytes()


def test_a_cancelled_command_says_its_last_words(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, mithril_stack: dict[str, str]
) -> None:
    command = "trap 'echo last words; exit 0' TERM; echo up; while true; do sleep 0.05; done"
    task = mithril_daemon.client().run(command, **A100)
    wait_until(lambda: task.logs() == "up\n", 60)
    task.cancel()
    assert task.wait(timeout=60).status is TaskStatus.CANCELLED
    lines = task.logs().splitlines()  # (bash may say "Terminated" for its sleep, which got SIGTERM too)
    assert lines[0] == "up" and lines[-1] == "last words"
    wait_until(lambda: not live_bids(fake_mithril), 30)


def test_a_preempted_task_ends_with_its_last_lines(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, mithril_stack: dict[str, str]
) -> None:
    command = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.02; done"
    task = mithril_daemon.client().run(command, **A100)
    wait_until(lambda: "line 3\n" in task.logs(), 60)
    (bid,) = fake_mithril.bids.values()
    fake_mithril.preempt(bid["fid"], notice_s=0.5)
    assert task.wait(timeout=60).status is TaskStatus.PREEMPTED
    on_instance = (instance_dir(mithril_stack, task.task_id) / "output.log").read_bytes()
    assert task.logs().encode() == on_instance  # every line the command wrote, the last ones too
    assert task.attempts == ()


def test_a_preempted_task_with_retries_runs_again_in_a_new_bid(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, gate: Path
) -> None:
    command = f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo finished"
    task = mithril_daemon.client().run(command, max_retries=2, **A100)
    wait_until(lambda: task.logs() == "started\n", 60)
    (first,) = fake_mithril.bids.values()
    fake_mithril.preempt(first["fid"])
    wait_until(lambda: len(fake_mithril.bids) == 2 and task.status is TaskStatus.RUNNING, 90)
    wait_until(lambda: task.logs() == "started\nstarted\n", 60)
    gate.touch()
    assert task.wait(timeout=60).status is TaskStatus.COMPLETED, task.state_reason
    assert task.logs() == "started\nstarted\nfinished\n"  # one log: the first run's output, then the second's
    (attempt,) = task.attempts
    assert attempt.state is TaskStatus.PREEMPTED and "reclaimed" in attempt.state_reason
    assert len(fake_mithril.bids) == 2 and all(b["name"].endswith(task.task_id) for b in fake_mithril.bids.values())
    wait_until(lambda: not live_bids(fake_mithril), 30)


def test_two_nodes_each_log_and_the_first_failing_code_ends_the_task(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, gate: Path
) -> None:
    # Node 1 fails only once node 0 has written its line: on a busy machine node 0 could
    # otherwise still be starting when node 1's failure ends the task.
    command = (
        'echo "hello from $NODE_RANK of $WORLD_SIZE"; '
        f'if [ "$NODE_RANK" = 1 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; exit 3; fi; exit 0'
    )
    task = mithril_daemon.client().run(command, num_instances=2, **A100)
    wait_until(lambda: task.logs(node=0) == "hello from 0 of 2\n", 120)
    gate.touch()
    task.wait(timeout=120)
    assert task.status is TaskStatus.FAILED and task.exit_code == 3, task.state_reason
    assert task.logs(node=0) == "hello from 0 of 2\n"
    assert task.logs(node=1) == "hello from 1 of 2\n"
    assert sorted(task.logs().splitlines()) == ["[node 0] hello from 0 of 2", "[node 1] hello from 1 of 2"]
    good = mithril_daemon.client().run('echo "rank $NODE_RANK"', num_instances=2, **A100).wait(timeout=120)
    assert good.status is TaskStatus.COMPLETED and good.exit_code == 0
    assert (good.logs(node=0), good.logs(node=1)) == ("rank 0\n", "rank 1\n")


@pytest.fixture
def data_target(mithril_stack: dict[str, str]) -> Iterator[Path]:
    """A target the instance's user may create (the fake runs startup scripts as that user)."""
    path = Path(mithril_stack["FLOW_TEST_MITHRIL_SSH_HOME"]) / f"data-{uuid.uuid4().hex}"
    yield path
    if path.exists():
        for p in [path, *path.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def test_s3_data_mounts_are_synced_read_only_before_the_command(
    fake_mithril: FakeMithril,
    start_daemon: StartDaemon,
    mithril_stack: dict[str, str],
    s3: Any,  # noqa: F811 - the imported fixture, by name
    s3_endpoint: str,  # noqa: F811 - the imported fixture, by name
    data_target: Path,
) -> None:
    daemon = start_daemon(env={**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint})
    bucket = f"mithril-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="train/a.txt", Body=b"alpha\n")
    s3.put_object(Bucket=bucket, Key="train/sub/b.txt", Body=b"beta\n")
    s3.put_object(Bucket=bucket, Key="other/c.txt", Body=b"not mine\n")
    t = str(data_target)
    command = (
        f"cat {t}/a.txt {t}/sub/b.txt; find {t} -type f | sort; "
        f"if touch {t}/new 2>/dev/null; then echo writable; else echo read-only; fi"
    )
    config = TaskConfig(
        command=command,
        instance_type="a100",
        upload_code=False,
        data_mounts=[MountSpec(source=f"s3://{bucket}/train", target=t)],
    )
    task = daemon.client().run(config).wait(timeout=120)
    assert task.status is TaskStatus.COMPLETED, (task.state_reason, task.logs())
    assert task.logs() == f"alpha\nbeta\n{t}/a.txt\n{t}/sub/b.txt\nread-only\n"
    assert not (instance_dir(mithril_stack, task.task_id) / "s3_credentials.json").exists()  # deleted after the sync
    (bid,) = fake_mithril.bids.values()
    seen = bid["launch_specification"]["startup_script"] + (daemon.home.root / "flowd.log").read_text()
    seen += task.logs() + repr(task.to_dict())
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in seen and S3_ENV["AWS_ACCESS_KEY_ID"] not in seen
    missing = TaskConfig(
        command="echo must-not-run",
        instance_type="a100",
        upload_code=False,
        data_mounts=[MountSpec(source="s3://no-such-bucket-flow/data", target=t + "-missing")],
    )
    failed = daemon.client().run(missing).wait(timeout=120)
    assert failed.status is TaskStatus.FAILED and "s3://no-such-bucket-flow/data" in failed.state_reason
    assert "must-not-run" not in failed.logs()
    assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in failed.state_reason + failed.logs()
