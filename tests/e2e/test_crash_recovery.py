"""flowd killed with SIGKILL while tasks run: nothing is lost when it comes back."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import Daemon, pid_alive, wait_until
from flow import Flow, TaskConfig, TaskStatus


def _gate(path: Path, then: str) -> str:
    return f"while [ ! -e {path} ]; do sleep 0.02; done; {then}"


def test_tasks_survive_a_daemon_kill_and_are_reconciled(daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = daemon.client()
    gate = tmp_path / "gate"
    # Finish while the daemon is down: one succeeds, one fails, each with output before and after.
    ok = client.run(["sh", "-c", "echo before; " + _gate(gate, "echo after; exit 0")], upload_code=False)
    bad = client.run(["sh", "-c", "echo before; " + _gate(gate, "echo after; exit 7")], upload_code=False)
    # Keeps running across the restart and finishes later.
    later = client.run(["sh", "-c", _gate(tmp_path / "later", "echo later-done")], upload_code=False)
    # Cancelled after the restart.
    victim = client.run(["sleep", "600"], upload_code=False)
    # Already finished before the crash.
    early = client.run(["sh", "-c", "echo early; exit 4"], upload_code=False).wait(timeout=30)
    wait_until(lambda: ok.status is TaskStatus.RUNNING and "before" in ok.logs(), 10)

    daemon.kill9()
    gate.write_text("")  # ok and bad end while no daemon watches them: their keeper records how
    wait_until(lambda: all((daemon.home.task_dir(t.task_id) / "exit_status").exists() for t in (ok, bad)), 60)
    daemon.start()

    assert client.get_task(ok.task_id).wait(timeout=30).exit_code == 0
    assert ok.refresh().last_status is TaskStatus.COMPLETED
    assert ok.logs() == "before\nafter\n"
    bad = client.get_task(bad.task_id).wait(timeout=30)
    assert (bad.last_status, bad.exit_code, bad.logs()) == (TaskStatus.FAILED, 7, "before\nafter\n")
    assert client.get_task(early.task_id).exit_code == 4
    assert later.status is TaskStatus.RUNNING
    (tmp_path / "later").write_text("")
    assert later.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert later.logs() == "later-done\n"
    victim.cancel()
    assert victim.wait(timeout=30).last_status is TaskStatus.CANCELLED


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def test_a_task_killed_while_the_daemon_is_down_ends_with_the_status_its_keeper_recorded(
    daemon: Daemon, tmp_path: Path
) -> None:
    client: Flow = daemon.client()
    pidfile = tmp_path / "pid"
    task = client.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"], upload_code=False)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
    daemon.kill9()
    os.killpg(os.getpgid(int(pidfile.read_text())), signal.SIGKILL)
    wait_until(lambda: not pid_alive(int(pidfile.read_text())), 10)
    daemon.start()
    final = client.get_task(task.task_id).wait(timeout=30)
    assert (final.last_status, final.exit_code) == (TaskStatus.FAILED, 128 + 9)


def test_a_task_killed_with_its_keeper_while_the_daemon_is_down_is_failed_not_lost(
    daemon: Daemon, tmp_path: Path
) -> None:
    client: Flow = daemon.client()
    pidfile = tmp_path / "pid"
    task = client.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"], upload_code=False)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
    pid = int(pidfile.read_text())
    keeper = _parent(pid)
    assert b"local_keeper_process.py" in Path(f"/proc/{keeper}/cmdline").read_bytes()
    daemon.kill9()
    # The keeper, then the task: nothing is left to record how it ended.
    os.kill(keeper, signal.SIGKILL)
    wait_until(lambda: not pid_alive(keeper), 10)
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10)
    daemon.start()
    final = client.get_task(task.task_id).wait(timeout=30)
    assert final.last_status is TaskStatus.FAILED
    assert "left no exit status" in final.state_reason


def test_time_limit_is_enforced_across_a_restart(daemon: Daemon) -> None:
    client: Flow = daemon.client()
    task = client.run(TaskConfig(command=["sleep", "600"], max_run_time_hours=2.0 / 3600, upload_code=False))
    daemon.kill9()
    daemon.start()
    final = task.wait(timeout=60)
    assert final.last_status is TaskStatus.FAILED
    assert final.state_reason.startswith("TIMEOUT")


def test_a_restarted_daemon_keeps_the_task_history(daemon: Daemon) -> None:
    client: Flow = daemon.client()
    ids = [client.run(["sh", "-c", f"echo {i}"], upload_code=False).wait(timeout=30).task_id for i in range(5)]
    daemon.stop()
    daemon.start()
    assert [t.task_id for t in client.list_tasks()] == list(reversed(ids))
    assert [client.get_task(i).logs() for i in ids] == [f"{i}\n" for i in range(5)]
