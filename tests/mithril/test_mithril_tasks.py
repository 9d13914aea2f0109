"""Tasks on the mithril provider, end to end: the SDK -> a real flowd -> the fake Mithril server
(spec-checked) -> instances that are the test stack's real sshd, reached over real SSH."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes.mithril import FakeMithril

from conftest import Daemon, wait_until
from flow import TaskConfig, TaskStatus, errors
from mithril.conftest import StartDaemon

A100 = {"instance_type": "a100", "upload_code": False}


def client(daemon: Daemon, **kwargs: Any) -> Any:
    return daemon.client(**kwargs)


def live_bids(fake: FakeMithril) -> list[dict[str, Any]]:
    return [b for b in fake.bids.values() if b["status"] != "Terminated"]


def states_of(task: Any, stop: threading.Event, seen: list[TaskStatus]) -> None:
    while not stop.is_set():
        state = task.status
        if not seen or seen[-1] is not state:
            seen.append(state)
        if state.is_terminal:
            return
        stop.wait(0.05)


def test_run_provisions_streams_live_logs_and_completes(
    fake_mithril: FakeMithril, start_daemon: StartDaemon, mithril_stack: dict[str, str], tmp_path: Path
) -> None:
    fake_mithril.provisioning_delay_s = 1.0
    daemon = start_daemon()
    gate = Path(mithril_stack["FLOW_TEST_MITHRIL_SSH_HOME"]) / f"gate-{os.getpid()}-{tmp_path.name}"
    gate.unlink(missing_ok=True)
    flow = client(daemon)
    command = f"echo first; while [ ! -e {gate} ]; do sleep 0.1; done; echo second"
    task = flow.run(command, **A100)
    assert task.provider == "mithril" and task.instance_type == "a100-80gb.sxm.1x"
    assert task.cost_per_hour > 0
    seen: list[TaskStatus] = []
    stop = threading.Event()
    watcher = threading.Thread(target=states_of, args=(task, stop, seen))
    watcher.start()
    try:
        lines = task.logs(follow=True)
        assert next(lines) == "first"  # live: the command is still waiting on the gate
        assert task.status is TaskStatus.RUNNING
        gate.touch()
        assert list(lines) == ["second"]
        task.wait(timeout=60)
    finally:
        stop.set()
        watcher.join()
        gate.unlink(missing_ok=True)
    assert task.status is TaskStatus.COMPLETED and task.exit_code == 0
    assert seen[0] in (TaskStatus.PENDING, TaskStatus.PROVISIONING)
    assert TaskStatus.PROVISIONING in seen and TaskStatus.RUNNING in seen
    assert task.logs() == "first\nsecond\n"
    (bid,) = fake_mithril.bids.values()
    wait_until(lambda: fake_mithril.bids[bid["fid"]]["status"] == "Terminated", 10)  # no bill after exit
    assert bid["name"].endswith(task.task_id)
    assert bid["limit_price"].startswith("$")


def test_a_failing_command_fails_with_its_exit_code(fake_mithril: FakeMithril, mithril_daemon: Daemon) -> None:
    task = client(mithril_daemon).run("echo oops >&2; exit 3", **A100)
    task.wait(timeout=60)
    assert task.status is TaskStatus.FAILED and task.exit_code == 3
    assert task.logs() == "oops\n"
    wait_until(lambda: not live_bids(fake_mithril), 10)


def test_max_run_time_is_enforced_on_the_instance(fake_mithril: FakeMithril, mithril_daemon: Daemon) -> None:
    task = client(mithril_daemon).run("echo started; sleep 600", max_run_time_hours=2 / 3600, **A100)
    task.wait(timeout=60)
    assert task.status is TaskStatus.FAILED and task.state_reason.startswith("TIMEOUT")
    assert task.exit_code == 124 and task.logs() == "started\n"
    wait_until(lambda: not live_bids(fake_mithril), 10)


def test_cancel_mid_run_deletes_the_bid(fake_mithril: FakeMithril, mithril_daemon: Daemon) -> None:
    task = client(mithril_daemon).run("echo up; sleep 600", **A100)
    wait_until(lambda: task.status is TaskStatus.RUNNING and "up" in task.logs(), 30)
    task.cancel()
    task.wait(timeout=30)
    assert task.status is TaskStatus.CANCELLED
    assert not live_bids(fake_mithril)
    (inst,) = fake_mithril.instances.values()
    wait_until(lambda: fake_mithril.startup_exit_code(inst["fid"]) is not None, 10)  # the process is gone


def test_preemption_ends_preempted_with_the_reason(fake_mithril: FakeMithril, mithril_daemon: Daemon) -> None:
    task = client(mithril_daemon).run("sleep 600", **A100)
    wait_until(lambda: task.status is TaskStatus.RUNNING, 30)
    (bid,) = fake_mithril.bids.values()
    fake_mithril.preempt(bid["fid"], reallocate=True)  # the platform would run it again: Flow stops it
    task.wait(timeout=30)
    assert task.status is TaskStatus.PREEMPTED
    assert "PREEMPTED" in task.state_reason and "reclaimed" in task.state_reason
    wait_until(lambda: fake_mithril.bids[bid["fid"]]["status"] == "Terminated", 10)


def test_a_429_storm_and_a_timed_out_create_make_exactly_one_bid(
    fake_mithril: FakeMithril, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(env={"FLOW_MITHRIL_TIMEOUT": "1"})
    flow = client(daemon)
    fake_mithril.inject("POST", "/v2/spot/bids", status=429, count=4, headers={"Retry-After": "0"})
    fake_mithril.inject("GET", "/v2/spot/bids", status=503, count=2)
    first = flow.run("echo one", **A100)
    first.wait(timeout=60)
    assert first.status is TaskStatus.COMPLETED
    assert len(fake_mithril.bids) == 1
    # The bid is created, but the answer comes after flowd gave up waiting: it must find it by name.
    fake_mithril.inject("POST", "/v2/spot/bids", status=None, delay_s=2.5)
    second = flow.run("echo two", **A100)
    second.wait(timeout=60)
    assert second.status is TaskStatus.COMPLETED and second.logs() == "two\n"
    assert len(fake_mithril.bids) == 2
    posts = [r for r in fake_mithril.requests if r.method == "POST" and r.path == "/v2/spot/bids"]
    assert [r.status for r in posts].count(429) == 4


def test_a_wrong_key_is_an_authentication_error_with_a_suggestion(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(api_key="fkey_" + "W" * 24)
    with pytest.raises(errors.AuthenticationError) as caught:
        client(daemon).run("true", **A100)
    assert any("MITHRIL_API_KEY" in s for s in caught.value.suggestions)
    assert "W" * 24 not in str(caught.value)
    assert "W" * 24 not in (daemon.home.root / "flowd.log").read_text()


def test_a_price_below_the_minimum_is_refused_before_anything_is_created(
    fake_mithril: FakeMithril, mithril_daemon: Daemon
) -> None:
    fake_mithril.set_min_price("a100-80gb.sxm.1x", "us-central1-a", 50)
    with pytest.raises(errors.ResourceNotAvailableError) as caught:
        client(mithril_daemon).run("true", max_price_per_hour=49.5, region="us-central1-a", **A100)
    assert "$50.00" in caught.value.message
    assert any("max_price_per_hour" in s for s in caught.value.suggestions)
    assert not fake_mithril.bids


def test_a_script_over_the_limit_goes_over_sftp_with_code_and_secrets(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    noise = base64.b64encode(os.urandom(9000)).decode()  # incompressible: no room in 10,000 characters
    (tmp_path / "big.txt").write_text(noise)
    (tmp_path / "main.py").write_text("import os\nprint(len(open('big.txt').read()), os.environ['TOKEN'])\n")
    monkeypatch.setenv("TOKEN", "sekrit-value-123")
    config = TaskConfig(
        command=f"python3 main.py; echo {noise[:4000]} | wc -c",
        instance_type="a100",
        code_root=str(tmp_path),
        secret_env=["TOKEN"],
    )
    task = client(mithril_daemon).run(config)
    task.wait(timeout=90)
    assert task.status is TaskStatus.COMPLETED, task.state_reason
    assert task.logs() == f"{len(noise)} sekrit-value-123\n4001\n"
    (bid,) = fake_mithril.bids.values()
    script = bid["launch_specification"]["startup_script"]
    assert len(script) <= 9000 and noise[:100] not in script and "sekrit" not in script


def test_flow_with_a_mithril_provider_object(
    fake_mithril: FakeMithril, start_daemon: StartDaemon, mithril_stack: dict[str, str]
) -> None:
    from flow.providers.local import LocalProvider
    from flow.providers.mithril import MithrilProvider

    daemon = start_daemon(config=False)
    provider = MithrilProvider(
        api_key=fake_mithril.api_key,
        project=fake_mithril.project_name,
        api_url=fake_mithril.base_url,
        ssh_key_file=mithril_stack["FLOW_TEST_SSH_KEY"],
        ssh_user=mithril_stack["FLOW_TEST_MITHRIL_SSH_USER"],
    )
    assert fake_mithril.api_key not in repr(provider)
    flow = client(daemon, provider=provider)
    task = flow.run("echo via-object", **A100)
    task.wait(timeout=60)
    assert task.provider == "mithril" and task.logs() == "via-object\n"
    saved = daemon.home.root / "providers.d" / "mithril.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert fake_mithril.api_key not in (daemon.home.root / "flowd.log").read_text()
    assert fake_mithril.api_key not in repr(flow.list_tasks())
    assert client(daemon, provider=provider).provider == "mithril"  # the same settings again: fine
    assert client(daemon, provider=LocalProvider()).run("echo here").wait(timeout=30).provider == "local"
    daemon.stop()
    daemon.start()  # a restarted flowd knows the provider again
    assert "mithril" in {p.name for p in client(daemon).daemon_info().providers}


def test_flow_picks_mithril_when_the_environment_has_a_key(
    fake_mithril: FakeMithril, start_daemon: StartDaemon, mithril_stack: dict[str, str]
) -> None:
    env = {
        "MITHRIL_API_KEY": fake_mithril.api_key,
        "MITHRIL_PROJECT": fake_mithril.project_name,
        "MITHRIL_API_URL": fake_mithril.base_url,
        "MITHRIL_SSH_KEY": mithril_stack["FLOW_TEST_SSH_KEY"],
        "MITHRIL_SSH_USER": mithril_stack["FLOW_TEST_MITHRIL_SSH_USER"],
    }
    daemon = start_daemon(config=False, env=env)
    assert client(daemon).daemon_info().default_provider == "mithril"
    task = client(daemon).run("echo env", **A100)
    assert task.wait(timeout=60).provider == "mithril"
    assert client(daemon, provider="local").run("echo l").wait(timeout=30).provider == "local"


def test_exec_and_ssh_run_on_the_instance(fake_mithril: FakeMithril, mithril_daemon: Daemon) -> None:
    task = client(mithril_daemon).run("sleep 600", **A100)
    wait_until(lambda: task.status is TaskStatus.RUNNING, 30)
    result = task.exec("pwd; echo err >&2; exit 5")
    assert result.exit_code == 5 and result.stderr == b"err\n"
    assert result.stdout.decode().strip().endswith(f".flow/tasks/{task.task_id}/nodes/0/code")
    assert task.ssh("nvidia-smi -L") == 0
    task.cancel()


def test_a_restarted_flowd_finds_its_tasks_and_loses_no_log(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, mithril_stack: dict[str, str], tmp_path: Path
) -> None:
    gate = Path(mithril_stack["FLOW_TEST_MITHRIL_SSH_HOME"]) / f"gate-{os.getpid()}-{tmp_path.name}"
    gate.unlink(missing_ok=True)
    task = client(mithril_daemon).run(f"echo a; while [ ! -e {gate} ]; do sleep 0.1; done; echo b", **A100)
    try:
        wait_until(lambda: "a" in task.logs(), 30)
        mithril_daemon.kill9()
        gate.touch()  # it ends while flowd is down
        mithril_daemon.start()
        again = client(mithril_daemon).get_task(task.task_id).wait(timeout=60)
    finally:
        gate.unlink(missing_ok=True)
    assert again.status is TaskStatus.COMPLETED and again.exit_code == 0
    assert again.logs() == "a\nb\n"
    assert len(fake_mithril.bids) == 1
    wait_until(lambda: not live_bids(fake_mithril), 10)


def test_find_instances_lists_the_api_catalog_through_the_matcher(
    fake_mithril: FakeMithril, mithril_daemon: Daemon
) -> None:
    fake_mithril.set_capacity("a100-80gb.sxm.2x", "us-central1-b", 0)
    found = client(mithril_daemon).find_instances({"gpu_memory_gb": 80, "min_gpu_count": 2})
    assert found, found.explanation
    names = {(o["instance_type"], o["region"]) for o in found}
    assert {"2xa100", "8xa100", "8xh100"} <= {name for name, _ in names}  # from /v2/instance-types
    assert ("2xa100", "us-central1-b") not in names  # no capacity there
    assert all(not name.startswith(("a100", "1xa100")) for name, _ in names)  # fewer than 2 GPUs
    prices = [o["price_per_hour"] for o in found]
    assert prices == sorted(prices) and all(p > 0 for p in prices)


def test_invoke_runs_a_function_on_an_instance_and_returns_its_value(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, tmp_path: Path
) -> None:
    from flow import invoke

    (tmp_path / "fns.py").write_text(
        "def double(x):\n    return {'value': 2 * x}\n\ndef boom():\n    raise KeyError('k')\n"
    )
    flow = client(mithril_daemon)
    assert invoke(str(tmp_path / "fns.py"), "double", args=[21], gpu="a100", flow=flow, code_root=str(tmp_path)) == {
        "value": 42
    }
    with pytest.raises(KeyError):
        invoke(str(tmp_path / "fns.py"), "boom", gpu="a100", flow=flow, code_root=str(tmp_path))
    wait_until(lambda: not live_bids(fake_mithril), 10)
