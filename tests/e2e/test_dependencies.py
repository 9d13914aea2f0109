"""Pipelines without another tool: dependencies between real tasks of a real flowd (local
provider), from the SDK, the CLI, YAML and FlowApp, across a kill -9 of flowd."""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, _cleanup, short_tmpdir, wait_until
from flow import Flow, TaskConfig, TaskStatus
from flow.errors import ValidationError

DEADLINE = 60


def gated(gate: Path, then: str) -> list[str]:
    return ["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.02; done; {then}"]


def test_a_pipeline_runs_in_order_and_hands_files_on(flow: Flow, tmp_path: Path) -> None:
    data = tmp_path / "data"
    prep = flow.run(["sh", "-c", f"echo 3 > {data}"], upload_code=False)
    double = ["sh", "-c", f"echo $(( $(cat {data}) * 2 )) > {data}.model"]
    train = flow.run(double, depends_on=[prep], upload_code=False)
    score = flow.run(["cat", f"{data}.model"], depends_on=[train.task_id], upload_code=False)
    assert score.wait(timeout=DEADLINE).last_status is TaskStatus.COMPLETED
    assert score.logs() == "6\n"
    assert prep.refresh().completed_at <= train.refresh().started_at  # type: ignore[operator]
    assert train.completed_at <= score.started_at  # type: ignore[operator]


def test_a_pending_dependent_says_what_it_waits_for_in_flow_status(shared_daemon: Daemon, tmp_path: Path) -> None:
    flow: Flow = shared_daemon.client()  # type: ignore[assignment]
    gate = tmp_path / "gate"
    first = flow.run(gated(gate, "true"), upload_code=False)
    second = flow.run(["true"], depends_on=[f"{first.task_id}:afterany"], upload_code=False)
    listed = shared_daemon.flow_cli("status")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if row.startswith(second.task_id))
    assert "PENDING" in line and f"waiting for {first.task_id} to end (afterany)" in line
    shown = json.loads(shared_daemon.flow_cli("status", second.task_id, "--json").stdout)
    assert shown["state_reason"] == f"waiting for {first.task_id} to end (afterany)"
    gate.touch()
    assert second.wait(timeout=DEADLINE).last_status is TaskStatus.COMPLETED


def test_a_failure_cancels_the_rest_of_the_pipeline_and_afternotok_cleans_up(flow: Flow, tmp_path: Path) -> None:
    train = flow.run(["sh", "-c", "exit 4"], upload_code=False)
    evaluate = flow.run(["true"], depends_on=[train], upload_code=False)
    report = flow.run(["true"], depends_on=[evaluate], upload_code=False)
    cleanup = flow.run(["echo", "cleaning"], depends_on=[f"{train.task_id}:afternotok"], upload_code=False)
    assert evaluate.wait(timeout=DEADLINE).last_status is TaskStatus.CANCELLED
    assert evaluate.state_reason == f"dependency {train.task_id} ended FAILED (afterok)"
    assert report.wait(timeout=DEADLINE).last_status is TaskStatus.CANCELLED
    assert report.state_reason == f"dependency {evaluate.task_id} was cancelled: {evaluate.state_reason}"
    assert evaluate.started_at is None and report.exit_code is None
    assert cleanup.wait(timeout=DEADLINE).logs() == "cleaning\n"


def test_unknown_and_malformed_dependencies_are_refused_at_submit(flow: Flow) -> None:
    with pytest.raises(ValidationError) as unknown:
        flow.run(["true"], depends_on=["t-doesnotexist"], upload_code=False)
    assert "depends_on[0]" in str(unknown.value) and "names no task" in str(unknown.value)
    with pytest.raises(ValidationError) as malformed:
        TaskConfig(command=["true"], depends_on=["t-abc:afterwards"])
    assert "afterwards" in str(malformed.value) and "afterok" in str(malformed.value)


def test_after_starts_a_dependent_alongside_its_dependency(flow: Flow, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = flow.run(gated(gate, "true"), upload_code=False)
    client = flow.run(["sh", "-c", f"touch {gate}"], depends_on=[f"{server.task_id}:after"], upload_code=False)
    assert client.wait(timeout=DEADLINE).last_status is TaskStatus.COMPLETED
    assert server.wait(timeout=DEADLINE).last_status is TaskStatus.COMPLETED


def test_a_diamond_joins_both_branches(flow: Flow, tmp_path: Path) -> None:
    top = flow.run(["sh", "-c", f"echo a > {tmp_path}/a"], upload_code=False)
    left = flow.run(["sh", "-c", f"cp {tmp_path}/a {tmp_path}/b"], depends_on=[top], upload_code=False)
    right = flow.run(["sh", "-c", f"cp {tmp_path}/a {tmp_path}/c"], depends_on=[top], upload_code=False)
    join = flow.run(["sh", "-c", f"cat {tmp_path}/b {tmp_path}/c"], depends_on=[left, right], upload_code=False)
    assert join.wait(timeout=DEADLINE).logs() == "a\na\n"


def test_a_100_task_chain(flow: Flow, tmp_path: Path) -> None:
    counter = tmp_path / "n"
    counter.write_text("0")
    step = ["sh", "-c", f"echo $(( $(cat {counter}) + 1 )) > {counter}.tmp && mv {counter}.tmp {counter}"]
    chain = [flow.run(step, upload_code=False)]
    for _ in range(99):
        chain.append(flow.run(step, depends_on=[chain[-1]], upload_code=False))
    assert chain[-1].wait(timeout=300).last_status is TaskStatus.COMPLETED
    assert counter.read_text().strip() == "100"  # each ran once, one after the other


def test_start_after_holds_a_task_until_then(flow: Flow) -> None:
    at = time.time() + 2
    task = flow.run(["true"], start_after=at, upload_code=False)
    assert task.last_status is TaskStatus.PENDING and "(start_after)" in task.state_reason
    task.wait(timeout=DEADLINE)
    assert task.started_at is not None and task.started_at.timestamp() >= at


def test_yaml_depends_on(flow: Flow, tmp_path: Path) -> None:
    first = flow.run(["true"], upload_code=False)
    job = tmp_path / "job.yaml"
    job.write_text(f"command: echo second\nupload_code: false\ndepends_on: [{first.task_id}:afterany]\npriority: 3\n")
    second = flow.run(str(job))
    assert second.config.depends_on[0].task_id == first.task_id and second.config.priority == 3
    assert second.wait(timeout=DEADLINE).logs() == "second\n"


# --- the command line --------------------------------------------------------------------------


def test_flow_run_after_begin_and_priority(shared_daemon: Daemon, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    first = shared_daemon.flow_cli("run", "-d", "--no-upload", "--", *gated(gate, "true"))
    assert first.returncode == 0, first.stderr
    first_id = first.stdout.strip()
    second = shared_daemon.flow_cli(
        "run", "-d", "--json", "--no-upload", "--after", first_id, "--after", "singleton", "--priority", "4",
        "--begin", "now+1", "echo done",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    shown = json.loads(second.stdout)
    assert shown["status"] == "PENDING" and f"waiting for {first_id}" in shown["state_reason"]
    gate.touch()
    waited = shared_daemon.flow_cli("wait", shown["task_id"])
    assert waited.returncode == 0, waited.stderr
    bad = shared_daemon.flow_cli("run", "--no-upload", "--after", "t-x:sometime", "true")
    assert bad.returncode != 0 and "--after" in bad.stderr and "sometime" in bad.stderr
    late = shared_daemon.flow_cli("run", "--no-upload", "--begin", "next week", "true")
    assert late.returncode != 0 and "--begin" in late.stderr


# --- FlowApp ---------------------------------------------------------------------------------------


def test_flowapp_spawn_depends_on(flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "steps.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            from flow import FlowApp

            app = FlowApp()

            @app.function()
            def write(path: str, text: str) -> str:
                Path(path).write_text(text)
                return text

            @app.function()
            def read(path: str) -> str:
                return Path(path).read_text()
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import steps  # type: ignore[import-not-found]

    steps.app._flow = flow
    out = str(tmp_path / "out.txt")
    writer = steps.write.spawn(out, "hello")
    reader = steps.read.spawn(out, depends_on=[writer])
    assert reader.result() == "hello"
    assert reader.config.depends_on[0].task_id == writer.task_id


# --- kill -9 -------------------------------------------------------------------------------------


def test_dependents_pending_across_a_kill_9_of_flowd(daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = daemon.client()  # type: ignore[assignment]
    gate, out = tmp_path / "gate", tmp_path / "out"
    first = client.run(gated(gate, f"echo first >> {out}"), upload_code=False)
    second = client.run(["sh", "-c", f"echo second >> {out}"], depends_on=[first], upload_code=False)
    third = client.run(["sh", "-c", f"echo third >> {out}"], depends_on=[second], upload_code=False)
    doomed = client.run(["true"], depends_on=[f"{first.task_id}:afternotok"], upload_code=False)
    wait_until(lambda: first.status is TaskStatus.RUNNING, DEADLINE)

    daemon.kill9()
    daemon.start()
    for task in (second, third):
        assert task.refresh().last_status is TaskStatus.PENDING
        assert task.state_reason.startswith("waiting for ")
    gate.touch()  # first ends after the restart: the holds, derived from the store, go on
    assert third.wait(timeout=DEADLINE).last_status is TaskStatus.COMPLETED
    assert out.read_text() == "first\nsecond\nthird\n"
    assert doomed.wait(timeout=DEADLINE).last_status is TaskStatus.CANCELLED

    # A dependency that ends while flowd is down is learnt at restart.
    gate2 = tmp_path / "gate2"
    fourth = client.run(gated(gate2, "exit 1"), upload_code=False)
    fifth = client.run(["true"], depends_on=[fourth], upload_code=False)
    wait_until(lambda: fourth.status is TaskStatus.RUNNING, DEADLINE)
    daemon.kill9()
    gate2.touch()
    wait_until(lambda: not any(p for p in _processes_of(fourth.task_id)), DEADLINE)
    daemon.start()
    assert fifth.wait(timeout=DEADLINE).last_status is TaskStatus.CANCELLED
    assert fifth.state_reason == f"dependency {fourth.task_id} ended FAILED (afterok)"


def _processes_of(task_id: str) -> list[str]:
    marker = f"flow-task:{task_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0"):
                    found.append(entry)
            except OSError:
                continue
    return found


# --- priority on the local GPU queue -------------------------------------------------------------


@pytest.fixture
def one_gpu_daemon() -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-p-"))
    os.environ["FLOW_LOCAL_GPUS"] = json.dumps([{"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}])
    try:
        d.start()
    finally:
        del os.environ["FLOW_LOCAL_GPUS"]
    yield d
    _cleanup(d)


def test_the_gpu_queue_starts_higher_priority_first(one_gpu_daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = one_gpu_daemon.client()  # type: ignore[assignment]
    gate, order = tmp_path / "gate", tmp_path / "order"
    busy = client.run(gated(gate, "true"), instance_type="a100", upload_code=False)
    wait_until(lambda: busy.status is TaskStatus.RUNNING, DEADLINE)
    queued = [
        client.run(["sh", "-c", f"echo {label} >> {order}"], instance_type="a100", priority=p, upload_code=False)
        for label, p in (("low", -1), ("first", 0), ("high", 7), ("second", 0))
    ]
    gate.touch()
    for task in queued:
        assert task.wait(timeout=DEADLINE).last_status is TaskStatus.COMPLETED
    assert order.read_text().split() == ["high", "first", "second", "low"]
