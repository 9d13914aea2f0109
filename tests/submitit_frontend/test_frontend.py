"""The submitit frontend on the local provider, through a real flowd: submitit code runs unchanged
apart from `cluster="flow"`, every job is an ordinary Flow task, and submitit's own test files pass
with Flow's plugin installed (and, for the executor-generic ones, with Flow as the executor)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, _cleanup, short_tmpdir, wait_until
from flow import Flow, TaskStatus
from flow.errors import ValidationError

submitit = pytest.importorskip("submitit")

import cloudpickle  # noqa: E402

from flow.submitit import FlowExecutor, FlowJob, FlowJobEnvironment  # noqa: E402
from submitit_frontend import EXAMPLES, HERE, run_example  # noqa: E402

# The jobs' functions below travel by value: the ranks need not import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# submitit's tests that race the wall clock, whatever the executor (they fail on a loaded machine,
# LocalExecutor's too): test_as_completed asserts two 0.1 s jobs finish within 1.5 s of the
# submission; test_requeuing (1 s steps against a 3 s limit) and test_custom_checkpoint (a signal
# 1 s after the start, before which the job must have installed its handler) need the job's
# interpreter to start within a second or two. Flow's requeue after timeouts is covered by
# test_a_checkpointable_that_times_out_is_requeued_from_its_checkpoint, with room to start.
# submitit's tests of its own local executor that wait a fixed time for it (test_cancel: 0.1 s for
# a cancel to show), which a busy machine does not give: they test submitit, not Flow's plugin.
TIMING_THRESHOLDS = (
    "test_as_completed",
    "test_requeuing",
    "test_custom_checkpoint",
    "local/test_local.py::test_cancel",
)


@pytest.fixture(scope="module")
def local_daemon() -> Iterator[Daemon]:
    daemon = Daemon(short_tmpdir("flow-sub-"))
    daemon.start()
    yield daemon
    _cleanup(daemon)


@pytest.fixture
def executor(local_daemon: Daemon, tmp_path: Path) -> FlowExecutor:
    return FlowExecutor(tmp_path / "logs", flow_home=str(local_daemon.home.root))


@pytest.fixture
def flow(local_daemon: Daemon) -> Iterator[Flow]:
    client = Flow(flow_home=local_daemon.home.root)
    yield client
    client.close()


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
def test_the_documentation_examples_run_unchanged_on_the_local_provider(
    local_daemon: Daemon, tmp_path: Path, example: str
) -> None:
    done = run_example(example, tmp_path / example, local_daemon.env)
    assert done.returncode == 0, f"{example}.py failed:\n{done.stdout}\n{done.stderr}"


def test_flow_is_a_submitit_plugin() -> None:
    from submitit.core import plugins

    assert plugins.get_executors()["flow"] is FlowExecutor
    assert isinstance(plugins.get_job_environments()["flow"], FlowJobEnvironment)
    assert not FlowJobEnvironment().activated()  # not inside a submitit job, even inside a Flow task
    assert FlowExecutor.affinity() == 0  # never picked unless named


def test_the_launcher_speaks_flowds_and_submitits_requeue_codes() -> None:
    from flow.domain.task.lifecycle import REQUEUE_EXIT_STATUS
    from flow.runtime import submitit_launch
    from flow.submitit import REQUEUE_EXIT_CODE

    assert submitit_launch.REQUEUE_EXIT_STATUS == REQUEUE_EXIT_STATUS
    assert submitit_launch.SUBMITIT_REQUEUE_EXIT_CODE == REQUEUE_EXIT_CODE


@pytest.mark.parametrize(
    ("state", "reason", "shown"),
    [
        ("PENDING", "", "PENDING"),
        ("PROVISIONING", "", "PENDING"),
        ("PENDING", "attempt 2 of at most 7: to run again, ...", "REQUEUED"),
        ("RUNNING", "", "RUNNING"),
        ("COMPLETED", "exited with code 0", "COMPLETED"),
        ("FAILED", "exited with code 1", "FAILED"),
        ("FAILED", "TIMEOUT: ran past max_run_time_hours=1", "TIMEOUT"),
        ("CANCELLED", "cancelled by user", "CANCELLED"),
        ("PREEMPTED", "", "INTERRUPTED"),
    ],
)
def test_flow_states_read_as_submitits_and_only_unfinished_ones_keep_a_job_waiting(
    state: str, reason: str, shown: str
) -> None:
    from flow.submitit import FlowInfoWatcher, _submitit_state

    assert _submitit_state(state, reason) == shown
    watcher = FlowInfoWatcher()
    watcher.record("t-x", state, reason)
    assert watcher.is_done("t-x", mode="cache") is TaskStatus(state).is_terminal


def test_submitit_loading_flows_plugin_imports_no_sdk() -> None:
    """Every submitit user with Flow installed loads the plugin: it must not pull in gRPC or the SDK."""
    probe = (
        "import sys, submitit; from submitit.core import plugins; "
        "plugins.get_executors(); plugins.get_job_environments(); "
        "print(sorted(m for m in sys.modules if m.startswith(('grpc', 'flowapi', 'flow.client', 'flow.wire'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_a_job_is_an_ordinary_flow_task_with_its_parameters_mapped(
    executor: FlowExecutor, flow: Flow, tmp_path: Path, local_daemon: Daemon
) -> None:
    executor.update_parameters(name="my job!", mem_gb=1.5, timeout_min=2, nodes=2, tasks_per_node=2)
    job = executor.submit(print, "hello from a rank")
    assert job.results() == [None] * 4
    task = flow.get_task(job.job_id)
    assert task.status is TaskStatus.COMPLETED
    config = task.config
    assert (config.name, config.num_instances, config.memory_mb) == ("my-job", 2, 1536)
    assert config.max_run_time_hours is not None and config.max_run_time_hours >= 2 / 60
    assert config.max_retries >= 4  # Checkpointable requeues: submitit's max_num_timeout (3) and more
    assert config.command is not None and "flow.runtime.submitit_launch" in config.command
    assert job.job_id in local_daemon.flow_cli("status").stdout
    assert local_daemon.flow_cli("logs", job.job_id).stdout.count("hello from a rank") == 4  # every rank's
    assert [job.task(k).paths.result_pickle.exists() for k in range(4)] == [True] * 4
    # every part of a multi-task job asks this flowd (not the default one) about the task
    assert FlowJob.watcher.homes[job.job_id] == (executor.flow_home, None)
    assert {job.task(k)._flow_key for k in range(4)} == {(executor.flow_home, None)}
    assert job.paths.submitted_pickle == tmp_path / "logs" / f"{job.job_id}_submitted.pkl"
    assert "hello from a rank" in (job.task(3).stdout() or "")


def test_unknown_and_invalid_parameters_are_refused_in_submitits_style(executor: FlowExecutor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Unavailable parameter\(s\): \['blublu'\]\nValid parameters are:"):
        executor.update_parameters(blublu=12)
    with pytest.raises(ValueError, match='Parameter "nodes" expected type'):
        executor.update_parameters(nodes="2")
    with pytest.raises(ValueError, match="needs the GPU model: set flow_instance_type"):
        executor.update_parameters(gpus_per_node=1)
    with pytest.raises(ValidationError, match="region"):
        executor.update_parameters(region="not a region")
    auto = submitit.AutoExecutor(tmp_path / "auto", cluster="flow")
    with pytest.raises(NameError, match="Unknown argument 'blublu' for executor 'flow'"):
        auto.update_parameters(flow_blublu=1)
    auto.update_parameters(flow_instance_type="a100", gpus_per_node=2, slurm_partition="dev")  # slurm_: dropped
    assert auto._executor.parameters["instance_type"] == "a100"
    assert auto._executor._task_config(auto._executor.parameters, "python3").instance_type == "2xa100"


def test_slurm_parameters_on_a_provider_that_is_not_slurm_are_warned_about(executor: FlowExecutor) -> None:
    executor.update_parameters(slurm_partition="dev", slurm_qos="high")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert executor.submit(int, "3").result() == 3
    assert any("slurm_partition, slurm_qos ignored" in str(w.message) for w in caught)


def test_cancel_ends_the_task_and_the_job(executor: FlowExecutor, flow: Flow, tmp_path: Path) -> None:
    gate = tmp_path / "never"
    job = executor.submit(_wait_for, str(gate))
    wait_until(lambda: "waiting" in (job.stdout() or ""), 60)
    job.cancel()
    job.wait()
    assert job.state == "CANCELLED"
    assert flow.get_task(job.job_id).status is TaskStatus.CANCELLED
    with pytest.raises(submitit.core.utils.UncompletedJobError, match="has not produced any output"):
        job.result()
    # `flow cancel` is the same thing, seen from the job
    other = executor.submit(_wait_for, str(gate))
    wait_until(lambda: "waiting" in (other.stdout() or ""), 60)
    flow.cancel(other.job_id)
    other.wait()
    assert other.state == "CANCELLED"


def test_array_parallelism_bounds_how_many_elements_run_at_once(executor: FlowExecutor, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    executor.update_parameters(array_parallelism=2)
    jobs = executor.map_array(_wait_for, [str(gate)] * 4)
    flow = Flow(flow_home=executor.flow_home)
    wait_until(lambda: all("waiting" in (j.stdout() or "") for j in jobs[:2]), 120)
    # the other two wait in flowd, holding nothing: PENDING behind the element two places before
    for k in (2, 3):
        task = flow.get_task(jobs[k].job_id)
        assert task.status is TaskStatus.PENDING and jobs[k - 2].job_id in task.state_reason, task.state_reason
        assert jobs[k].state == "PENDING" and not jobs[k].paths.stdout.exists()
    gate.touch()
    assert [j.result() for j in jobs] == ["released"] * 4


@pytest.mark.slow
def test_a_checkpointable_that_times_out_is_requeued_from_its_checkpoint(executor: FlowExecutor) -> None:
    # A 20 s limit, the checkpoint signal 4 s before it (the job's interpreter has 16 s to start
    # and install submitit's handler): the job needs two attempts to count to 2.
    executor.update_parameters(timeout_min=20 / 60, signal_delay_s=4)
    job = executor.submit(_SlowCounter(), 2)
    assert job.result() == 2
    out = job.stdout() or ""
    assert out.count("Requeued job") == 1 and "start at 1" in out and "this job is timed-out" in out
    # flowd ran the same task again: its history shows the requeued run
    task = Flow(flow_home=executor.flow_home).get_task(job.job_id)
    assert task.status is TaskStatus.COMPLETED
    assert [(a.state, a.exit_code) for a in task.attempts] == [(TaskStatus.FAILED, 75)]
    assert f"flow: job {job.job_id} asks to be requeued" in task.logs()


def test_jobs_survive_pickling(executor: FlowExecutor) -> None:
    import pickle

    job = executor.submit(abs, -4)
    again = pickle.loads(pickle.dumps(job))
    assert isinstance(again, FlowJob) and again.result() == 4


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_submitits_own_test_files_pass_with_flows_plugin_installed(local_daemon: Daemon, tmp_path: Path) -> None:
    """submitit's shipped tests, as shipped. Not run: test_documentation.py (it checks the links of
    the sdist's markdown files: it needs the source tree, not an installed package) and the
    wall-clock ones (TIMING_THRESHOLDS)."""
    done = _pytest_submitit(
        local_daemon,
        tmp_path,
        [],
        ["submitit"],
        ["test_assert_markdown_links_not_broken", *TIMING_THRESHOLDS],
    )
    assert done.returncode == 0, done.stdout[-6000:]
    assert " failed" not in done.stdout and "5 deselected" in done.stdout, done.stdout[-2000:]
    assert "test_requeuing_checkpointable PASSED" in done.stdout  # only the exact names are left out


# LocalJob internals that FlowJob does not have: the controller's Popen (job._process) and the
# state name LocalJob gives a signalled controller ("INTERRUPTED"; Flow says CANCELLED).
LOCAL_JOB_INTERNALS = ("test_local_job", "test_killed", "test_cancel")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_submitits_executor_tests_pass_with_flow_as_the_executor(local_daemon: Daemon, tmp_path: Path) -> None:
    """submitit's own tests of LocalExecutor and of the shared `executor` fixture, with FlowExecutor
    in LocalExecutor's place (tests/submitit_frontend/flow_as_local.py): map_array, submit_array,
    errors, multi-task ranks, stdout/stderr, setup, submission reload, odd folder names."""
    modules = [
        "submitit.local.test_local",
        "submitit.test_helpers",
        "submitit.core.test_utils",
        "submitit.auto.test_auto",
    ]
    done = _pytest_submitit(
        local_daemon, tmp_path, ["flow_as_local"], modules, [*LOCAL_JOB_INTERNALS, *TIMING_THRESHOLDS]
    )
    assert done.returncode == 0, done.stdout[-6000:]
    assert "test_local_map_array PASSED" in done.stdout and "test_get_first_task_error PASSED" in done.stdout


def _pytest_submitit(
    daemon: Daemon, tmp_path: Path, plugins: list[str], modules: list[str], deselected: list[str]
) -> subprocess.CompletedProcess[str]:
    env = {
        **daemon.env,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "SUBMITIT_DESELECT": ",".join(deselected),  # plugin_isolation leaves them out, by exact name
    }
    argv = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"]
    argv += ["-o", "asyncio_default_fixture_loop_scope=function"]
    for plugin in ("plugin_isolation", *plugins):
        argv += ["-p", plugin]
    argv += ["--pyargs", *modules]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def _wait_for(gate: str) -> str:
    import time

    print("waiting", flush=True)
    while not Path(gate).exists():
        time.sleep(0.05)
    return "released"


class _SlowCounter(submitit.helpers.Checkpointable):
    """Counts one step per attempt, then waits for the time limit's signal (which checkpoints it)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, total: int) -> int:
        import time

        print(f"start at {self.count}", flush=True)
        self.count += 1
        while self.count < total:
            time.sleep(0.05)
        return self.count
