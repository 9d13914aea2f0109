"""Multi-node tasks on one machine: a real flowd with a declared (synthetic) inventory of four
A100s, real node processes reading their torchrun variables and CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, _cleanup, pid_alive, short_tmpdir, wait_until
from flow import Flow, TaskStatus
from flow.errors import ResourceNotAvailableError, ValidationError

INVENTORY = [{"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}] * 4
VARS = ("NODE_RANK", "NNODES", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SHOW = ["sh", "-c", "echo " + " ".join(f"{v}=${v}" for v in (*VARS, "CUDA_VISIBLE_DEVICES"))]


def _start(d: Daemon) -> None:
    os.environ["FLOW_LOCAL_GPUS"] = json.dumps(INVENTORY)
    try:
        d.start()
    finally:
        del os.environ["FLOW_LOCAL_GPUS"]


@pytest.fixture(scope="module")
def node_daemon() -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-n-"))
    _start(d)
    yield d
    _cleanup(d)


@pytest.fixture(scope="module")
def nflow(node_daemon: Daemon) -> Iterator[Flow]:
    client = node_daemon.client()
    yield client
    client.close()


@pytest.fixture
def restartable() -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-nr-"))
    _start(d)
    yield d
    _cleanup(d)


def _written(path: Path) -> bool:
    """A file the task writes with `echo $$ > path` holds its whole line."""
    return path.exists() and path.read_text().endswith("\n")


def _vars(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split())


def test_each_node_gets_its_gpus_and_the_torchrun_variables(nflow: Flow) -> None:
    task = nflow.run(SHOW, instance_type="2xa100", num_instances=2, upload_code=False).wait(timeout=30)
    assert task.last_status is TaskStatus.COMPLETED and task.exit_code == 0
    nodes = [_vars(task.logs(node=k)) for k in (0, 1)]
    assert [n["CUDA_VISIBLE_DEVICES"] for n in nodes] == ["0,1", "2,3"]
    for rank, env in enumerate(nodes):
        assert env["NODE_RANK"] == env["RANK"] == str(rank)
        assert env["NNODES"] == env["WORLD_SIZE"] == "2"
        assert (env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"], env["MASTER_ADDR"]) == ("0", "1", "127.0.0.1")
    assert nodes[0]["MASTER_PORT"] == nodes[1]["MASTER_PORT"]
    assert 1024 <= int(nodes[0]["MASTER_PORT"]) <= 65535


def test_all_nodes_logs_are_labelled_and_one_nodes_are_raw(nflow: Flow) -> None:
    script = 'for i in 1 2 3; do echo "line $i of $NODE_RANK"; done; printf "no newline $NODE_RANK"'
    task = nflow.run(["sh", "-c", script], num_instances=3, upload_code=False).wait(timeout=30)
    assert task.logs(node=2) == "line 1 of 2\nline 2 of 2\nline 3 of 2\nno newline 2"
    merged = task.logs().splitlines()
    assert len(merged) == 12
    for k in range(3):
        mine = [line for line in merged if line.startswith(f"[node {k}] ")]
        assert mine == [f"[node {k}] line {i} of {k}" for i in (1, 2, 3)] + [f"[node {k}] no newline {k}"]
    assert task.logs(tail=1).splitlines() == [f"[node {k}] no newline {k}" for k in range(3)]


def test_merged_and_per_node_cursors_resume_exactly_once(nflow: Flow) -> None:
    script = 'i=0; while [ $i -lt 200 ]; do echo "n$NODE_RANK-$i"; i=$((i+1)); done'
    task = nflow.run(["sh", "-c", script], num_instances=2, upload_code=False).wait(timeout=30)
    whole = task.logs()
    for node in (None, 1):
        chunks = list(task.log_chunks(follow=False, node=node))
        everything = b"".join(c.data for c in chunks)
        for i, chunk in enumerate(chunks):
            rest = b"".join(c.data for c in task.log_chunks(cursor=chunk.cursor, follow=False, node=node))
            assert b"".join(c.data for c in chunks[: i + 1]) + rest == everything
    assert sorted(whole.splitlines()) == sorted(f"[node {k}] n{k}-{i}" for k in (0, 1) for i in range(200))


def test_bad_node_and_foreign_cursors_are_refused(nflow: Flow) -> None:
    task = nflow.run(["true"], num_instances=2, upload_code=False).wait(timeout=30)
    with pytest.raises(ValidationError) as caught:
        task.logs(node=2)
    assert caught.value.violations[0].field == "node" and "0..1" in caught.value.message
    one_node_cursor = next(iter(nflow.run(["echo", "x"], upload_code=False).wait(timeout=30).log_chunks())).cursor
    with pytest.raises(ValidationError) as caught:
        list(task.log_chunks(cursor=one_node_cursor, follow=False))
    assert caught.value.violations[0].field == "cursor"
    single = nflow.run(["echo", "only"], upload_code=False).wait(timeout=30)
    assert single.logs(node=0) == single.logs() == "only\n"  # a single-node task is node 0
    with pytest.raises(ValidationError):
        single.logs(node=1)


def test_a_failing_node_fails_the_task_and_stops_the_others(nflow: Flow, tmp_path: Path) -> None:
    script = (
        f'if [ "$NODE_RANK" = 1 ]; then while [ ! -s {tmp_path}/pid0 ] || [ ! -s {tmp_path}/pid2 ]; '
        f"do sleep 0.02; done; exit 3; fi; echo $$ > {tmp_path}/pid$NODE_RANK; exec sleep 600"
    )
    task = nflow.run(["sh", "-c", script], num_instances=3, upload_code=False)
    final = task.wait(timeout=30)
    assert (final.last_status, final.exit_code) == (TaskStatus.FAILED, 3)  # the failing node's code
    for k in (0, 2):
        assert not pid_alive(int((tmp_path / f"pid{k}").read_text()))


def test_cancel_stops_every_node(nflow: Flow, tmp_path: Path) -> None:
    script = f"echo $$ > {tmp_path}/pid$NODE_RANK; exec sleep 600"
    task = nflow.run(["sh", "-c", script], num_instances=2, upload_code=False)
    wait_until(lambda: all(_written(tmp_path / f"pid{k}") for k in (0, 1)), 10)
    task.cancel()
    assert task.wait(timeout=30).last_status is TaskStatus.CANCELLED
    assert not any(pid_alive(int((tmp_path / f"pid{k}").read_text())) for k in (0, 1))


def test_nodes_take_all_their_gpus_at_once_in_fifo_order(nflow: Flow, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    hold = nflow.run(
        ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.02; done"], instance_type="a100", upload_code=False
    )
    wait_until(lambda: hold.status is TaskStatus.RUNNING, 10)
    group = nflow.run(SHOW, instance_type="2xa100", num_instances=2, upload_code=False)
    small = nflow.run(SHOW, instance_type="a100", upload_code=False)
    assert group.status is TaskStatus.PENDING  # 3 GPUs are free, it needs 4: it waits whole
    assert small.status is TaskStatus.PENDING  # and nothing overtakes it
    gate.write_text("")
    assert group.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert sorted(_vars(group.logs(node=k))["CUDA_VISIBLE_DEVICES"] for k in (0, 1)) == ["0,1", "2,3"]
    assert small.wait(timeout=30).last_status is TaskStatus.COMPLETED
    assert small.started_at is not None and group.started_at is not None and group.started_at <= small.started_at


def test_more_gpus_than_the_machine_has_fails_fast(nflow: Flow) -> None:
    with pytest.raises(ResourceNotAvailableError) as caught:
        nflow.run(["true"], instance_type="2xa100", num_instances=3, upload_code=False)
    assert "num_instances=3" in caught.value.message and "4x a100-80gb" in caught.value.message


def test_cli_logs_node(node_daemon: Daemon, nflow: Flow) -> None:
    task = nflow.run(["sh", "-c", "echo hello from $NODE_RANK"], num_instances=2, upload_code=False).wait(timeout=30)
    one = node_daemon.flow_cli("logs", task.task_id, "--node", "1")
    assert (one.returncode, one.stdout) == (0, "hello from 1\n")
    every = node_daemon.flow_cli("logs", task.task_id)
    assert sorted(every.stdout.splitlines()) == ["[node 0] hello from 0", "[node 1] hello from 1"]
    bad = node_daemon.flow_cli("logs", task.task_id, "--node", "5")
    assert bad.returncode != 0 and "node" in bad.stderr and "0..1" in bad.stderr


def test_a_daemon_kill_recovers_every_node(restartable: Daemon, tmp_path: Path) -> None:
    client: Flow = restartable.client()
    # Node 0 ends (0) while flowd is down; node 1 keeps running across the restart.
    script = f"echo start $NODE_RANK; while [ ! -e {tmp_path}/go$NODE_RANK ]; do sleep 0.02; done; echo end $NODE_RANK"
    task = client.run(["sh", "-c", script], instance_type="a100", num_instances=2, upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs().count("start") == 2, 10)
    restartable.kill9()
    (tmp_path / "go0").write_text("")
    wait_until(lambda: "end 0" in (restartable.home.tasks / task.task_id / "nodes/0/output.log").read_text(), 10)
    _start(restartable)
    assert task.refresh().status is TaskStatus.RUNNING
    after = client.run(["true"], instance_type="4xa100", upload_code=False)
    assert after.status is TaskStatus.PENDING  # node 1 still holds its GPU after the restart
    (tmp_path / "go1").write_text("")
    final = task.wait(timeout=30)
    assert (final.last_status, final.exit_code) == (TaskStatus.COMPLETED, 0)
    assert task.logs(node=0) == "start 0\nend 0\n" and task.logs(node=1) == "start 1\nend 1\n"
    assert after.wait(timeout=30).last_status is TaskStatus.COMPLETED


def test_a_node_failing_while_flowd_is_down_stops_the_others_after_restart(restartable: Daemon, tmp_path: Path) -> None:
    client: Flow = restartable.client()
    script = (
        f'echo $$ > {tmp_path}/pid$NODE_RANK; if [ "$NODE_RANK" = 1 ]; then '
        f"while [ ! -e {tmp_path}/go ]; do sleep 0.02; done; exit 5; fi; exec sleep 600"
    )
    task = client.run(["sh", "-c", script], num_instances=2, upload_code=False)
    wait_until(lambda: all(_written(tmp_path / f"pid{k}") for k in (0, 1)), 10)
    restartable.kill9()
    (tmp_path / "go").write_text("")
    wait_until(lambda: not pid_alive(int((tmp_path / "pid1").read_text())), 10)
    _start(restartable)
    final = task.wait(timeout=30)
    assert (final.last_status, final.exit_code) == (TaskStatus.FAILED, 5)
    assert not pid_alive(int((tmp_path / "pid0").read_text()))


REPO = Path(__file__).resolve().parents[2]
TORCH_PYTHON = REPO / "build" / "torch-venv" / "bin" / "python"


def test_torch_distributed_all_reduce_across_two_nodes(nflow: Flow) -> None:
    assert TORCH_PYTHON.exists(), (
        f"{TORCH_PYTHON} is missing: `make test` creates it (or `make torch-venv` alone), "
        "a virtualenv with torch==2.15.0 kept out of .venv"
    )
    task = nflow.run([str(TORCH_PYTHON), "allreduce.py"], num_instances=2, code_root=str(REPO / "examples")).wait(
        timeout=300
    )
    assert (task.last_status, task.exit_code) == (TaskStatus.COMPLETED, 0), task.logs()
    for node in (0, 1):
        assert f"node {node} rank {node}/2 (gloo): all_reduce sum = 3, expected 3" in task.logs(node=node)


def test_the_time_limit_stops_every_node(nflow: Flow, tmp_path: Path) -> None:
    script = f"echo $$ > {tmp_path}/pid$NODE_RANK; exec sleep 600"
    task = nflow.run(["sh", "-c", script], num_instances=2, max_run_time_hours=2.0 / 3600, upload_code=False)
    final = task.wait(timeout=60)
    assert final.last_status is TaskStatus.FAILED and final.state_reason.startswith("TIMEOUT")
    assert not any(pid_alive(int((tmp_path / f"pid{k}").read_text())) for k in (0, 1))


def test_a_node_ignoring_sigterm_is_killed_after_the_grace_period(nflow: Flow, tmp_path: Path) -> None:
    script = (
        f'if [ "$NODE_RANK" = 1 ]; then while [ ! -s {tmp_path}/pid ]; do sleep 0.02; done; exit 9; fi; '
        f"trap '' TERM; echo $$ > {tmp_path}/pid; while :; do sleep 0.05; done"
    )
    task = nflow.run(["sh", "-c", script], num_instances=2, upload_code=False)
    final = task.wait(timeout=180)  # the grace period is 10 s; a busy machine takes longer
    assert (final.last_status, final.exit_code) == (TaskStatus.FAILED, 9)
    assert not pid_alive(int((tmp_path / "pid").read_text()))


def test_a_function_on_two_nodes_returns_node_zeros_value(nflow: Flow, tmp_path: Path) -> None:
    from flow import invoke

    (tmp_path / "ranks.py").write_text("import os\n\ndef rank():\n    return int(os.environ['NODE_RANK'])\n")
    for _ in range(3):
        assert invoke(tmp_path / "ranks.py", "rank", flow=nflow, num_instances=2, code_root=str(tmp_path)) == 0
