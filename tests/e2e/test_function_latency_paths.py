"""Function tasks on warm interpreters (daemon/flowd/providers/warm_python.py) behave exactly as
cold ones: a real flowd with the fast path (the default) next to one with FLOW_WARM_PYTHON=0.

Every function here reports what it sees from inside the task (environment, cwd, argv, sys.path,
modules, signals, process group, open files) and how it was started (its parent's command line:
the warm wrapper's `flow-warm-python flow-task:ID`, or the cold path's keeper), so each
test also proves which path ran.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Daemon, _cleanup, pid_alive, short_tmpdir, wait_until
from flow import Flow, TaskStatus, invoke
from flow.config import TaskConfig
from flow.domain.task.function_call import FunctionCall
from flow.errors import TaskExecutionError
from flow.invoke import spawn_invocation

INVENTORY = [
    {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920},
    {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920},
]

PROBE = '''
import os
import sys
import time


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [p.decode() for p in f.read().split(b"\\0") if p]


def snapshot(note="x"):
    modules = sorted(sys.modules)  # before this function imports anything
    fds = sorted(os.listdir("/proc/self/fd"))
    import signal
    import __main__

    print(f"probe says {note}")
    return {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "path": sys.path,
        "executable": sys.executable,
        "prefix": sys.prefix,
        "flags": list(sys.flags),
        "modules": modules,
        "main": [__main__.__name__, __main__.__file__, type(__main__.__loader__).__name__, __main__.__spec__ is None],
        "signals": {
            name: str(signal.getsignal(getattr(signal, name)))
            for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE", "SIGCHLD", "SIGQUIT", "SIGUSR1", "SIGXFSZ")
        },
        "group": [os.getpgid(0) == os.getsid(0), os.getsid(0) == os.getppid()],
        "stdio": [
            sys.stdout.line_buffering, sys.stdout.write_through, sys.stdout.encoding,
            sys.stderr.line_buffering, os.isatty(1),
            os.path.realpath("/proc/self/fd/0"), os.path.realpath("/proc/self/fd/1"),
            os.path.realpath("/proc/self/fd/2"),
        ],
        "fds": fds,
        "umask": os.umask(0o022),
        "cmdline": _cmdline(os.getpid()),
        "parent": _cmdline(os.getppid()),
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }


def fail(message):
    raise ValueError(message)


def hold(pid_file, gate, value):
    """Writes its pid, waits for `gate` to exist, returns value."""
    with open(pid_file + ".partial", "w") as f:
        f.write(f"{os.getpid()} {os.getppid()}")
    os.replace(pid_file + ".partial", pid_file)
    while not os.path.exists(gate):
        time.sleep(0.02)
    return {"value": value, "pid": os.getpid(), "parent": _cmdline(os.getppid()), "gpus": _gpus()}


def _gpus():
    return [os.environ.get(n) for n in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")]


def gpus():
    return {"gpus": _gpus(), "parent": _cmdline(os.getppid())}


def import_extra():
    import flow_extra_mod

    return [flow_extra_mod.VALUE, _cmdline(os.getppid())[:1]]
'''


def started_daemon(prefix: str, **env: str) -> Daemon:
    d = Daemon(short_tmpdir(prefix))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return d


@pytest.fixture(scope="module")
def warm_daemon() -> Iterator[Daemon]:
    d = started_daemon("flow-w-", FLOW_LOCAL_GPUS=json.dumps(INVENTORY))
    yield d
    _cleanup(d)


@pytest.fixture(scope="module")
def cold_daemon() -> Iterator[Daemon]:
    d = started_daemon("flow-c-", FLOW_WARM_PYTHON="0", FLOW_LOCAL_GPUS=json.dumps(INVENTORY))
    yield d
    _cleanup(d)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "probe.py").write_text(PROBE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def client(daemon: Daemon) -> Flow:
    return Flow(flow_home=daemon.home.root)


def is_warm(parent: list[str], task_id: str) -> bool:
    return parent[:2] == ["flow-warm-python", f"flow-task:{task_id}"]


def until_warm(flow: Flow, project: Path) -> None:
    """Calls until one runs warm. A zygote slower to start than flowd waits for (a busy machine)
    makes the calls cold for a while, then a new zygote serves them: a condition to wait for."""

    def warm_call() -> bool:
        call = spawn_invocation(project / "probe.py", "gpus", flow=flow)
        return is_warm(call.result(timeout=60)["parent"], call.task_id)

    wait_until(warm_call, 180, interval=0.5)


def is_cold(parent: list[str], task_id: str) -> bool:
    """Started by the local provider's keeper (local_keeper_process.py), the parent of cold tasks."""
    return any(arg.endswith("local_keeper_process.py") for arg in parent)


def normalized(value: Any, daemon: Daemon, task_id: str) -> Any:
    """`value` with what differs between any two tasks (home, task id, pids) replaced."""
    text = json.dumps(value, sort_keys=True)
    text = text.replace(str(daemon.home.root), "<HOME>").replace(task_id, "<TASK>")
    return json.loads(text)


def probe(daemon: Daemon, project: Path) -> tuple[dict[str, Any], str]:
    with client(daemon) as flow:
        task = spawn_invocation(project / "probe.py", "snapshot", ["hi"], flow=flow, env={"USER_SETTING": "on"})
        seen: dict[str, Any] = task.result(timeout=60)
        assert task.logs() == "probe says hi\n"
        return seen, task.task_id


def test_warm_and_cold_tasks_see_the_same_process(warm_daemon: Daemon, cold_daemon: Daemon, project: Path) -> None:
    warm, warm_id = probe(warm_daemon, project)
    cold, cold_id = probe(cold_daemon, project)
    assert is_warm(warm.pop("parent"), warm_id)
    assert is_cold(cold.pop("parent"), cold_id)
    for seen in (warm, cold):
        seen.pop("pid")
        seen.pop("ppid")
        seen["env"].pop("FLOW_WARM_PYTHON", None)
    warm_n, cold_n = normalized(warm, warm_daemon, warm_id), normalized(cold, cold_daemon, cold_id)
    assert warm_n["env"] == cold_n["env"]
    assert warm_n["env"]["USER_SETTING"] == "on" and warm_n["env"]["FLOW_TASK_ID"] == "<TASK>"
    assert warm_n["env"]["PYTHONUNBUFFERED"] == "1"
    assert warm_n["cwd"] == "<HOME>/tasks/<TASK>/code"
    assert warm_n["cmdline"] == [sys.executable, *warm_n["argv"]]
    assert warm_n["group"] == [True, False]  # leads its own session and process group
    assert warm_n["fds"] == ["0", "1", "2", "3"]  # nothing of the zygote's leaks into the task
    assert warm_n["stdio"][5:] == ["/dev/null", "<HOME>/tasks/<TASK>/output.log", "<HOME>/tasks/<TASK>/output.log"]
    assert warm_n == cold_n


def test_exceptions_and_tracebacks_are_the_same(warm_daemon: Daemon, cold_daemon: Daemon, project: Path) -> None:
    raised: list[tuple[str, str]] = []
    for daemon in (warm_daemon, cold_daemon):
        with client(daemon) as flow:
            task = spawn_invocation(project / "probe.py", "fail", ["bad input"], flow=flow)
            with pytest.raises(ValueError, match="bad input") as info:
                task.result(timeout=60)
            assert isinstance(info.value, TaskExecutionError)
            trace = info.value.remote_traceback
            raised.append((normalized(trace, daemon, task.task_id), task.last_status.name))
    assert raised[0] == raised[1]
    trace, state = raised[0]
    assert state == "FAILED"
    assert 'File "<HOME>/tasks/<TASK>/flow_runner.py"' in trace  # the task's copy, as when cold
    assert 'probe.py", line' in trace and "ValueError: bad input" in trace


def test_each_gpu_call_sees_its_own_gpus(warm_daemon: Daemon, project: Path) -> None:
    with client(warm_daemon) as flow:
        one = spawn_invocation(project / "probe.py", "gpus", gpu="a100", flow=flow)
        seen = one.result(timeout=60)
        assert is_warm(seen["parent"], one.task_id)
        assert seen["gpus"] == ["0", "0", "PCI_BUS_ID"]
        both = spawn_invocation(project / "probe.py", "gpus", gpu="2xa100", flow=flow).result(timeout=60)
        assert both["gpus"] == ["0,1", "0,1", "PCI_BUS_ID"]
        cpu = spawn_invocation(project / "probe.py", "gpus", flow=flow).result(timeout=60)
        assert cpu["gpus"] == ["", "void", "PCI_BUS_ID"]  # a CPU task sees no GPU


def test_concurrent_calls_run_in_separate_processes(warm_daemon: Daemon, project: Path) -> None:
    gate = project / "gate"
    with client(warm_daemon) as flow:
        tasks = [
            spawn_invocation(
                project / "probe.py", "hold", [str(project / f"pid{i}"), str(gate), i], gpu="a100", flow=flow
            )
            for i in range(2)
        ]
        wait_until(lambda: all((project / f"pid{i}").exists() for i in range(2)), 60)
        pids = [tuple(map(int, (project / f"pid{i}").read_text().split())) for i in range(2)]
        # Both alive at once, each in its own process under its own wrapper.
        assert all(pid_alive(pid) and pid_alive(wrapper) for pid, wrapper in pids)
        assert len({p for pair in pids for p in pair}) == 4
        gate.write_text("")
        results = [t.result(timeout=60) for t in tasks]
    assert [r["value"] for r in results] == [0, 1]
    assert all(is_warm(r["parent"], t.task_id) for r, t in zip(results, tasks, strict=True))
    assert sorted(r["gpus"][0] for r in results) == ["0", "1"]  # one A100 each, never shared


def test_cancel_kills_a_warm_function_task(warm_daemon: Daemon, project: Path) -> None:
    with client(warm_daemon) as flow:
        never = str(project / "never")
        task = spawn_invocation(project / "probe.py", "hold", [str(project / "pid"), never, 0], flow=flow)
        wait_until(lambda: (project / "pid").exists(), 60)
        pid, wrapper = map(int, (project / "pid").read_text().split())
        with open(f"/proc/{wrapper}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[:2] == [b"flow-warm-python", f"flow-task:{task.task_id}".encode()]
        task.cancel()
        assert task.wait(timeout=30).last_status is TaskStatus.CANCELLED
        wait_until(lambda: not pid_alive(pid) and not pid_alive(wrapper), 10)
        with pytest.raises(TaskExecutionError, match="without returning a result"):
            task.result(timeout=10)


def zygotes_of(daemon: Daemon) -> list[int]:
    needle = str(daemon.home.root / "warm-python").encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if any(needle in part for part in f.read().split(b"\0")):
                        found.append(int(entry))
            except OSError:
                continue
    return [pid for pid in found if pid_alive(pid)]


def test_kill_9_of_flowd_while_warm_tasks_run_is_reconciled(project: Path) -> None:
    daemon = started_daemon("flow-k-")
    try:
        with client(daemon) as flow:
            until_warm(flow, project)  # the zygote is up: the next calls run warm
            early = spawn_invocation(
                project / "probe.py", "hold", [str(project / "pid-e"), str(project / "gate-e"), "early"], flow=flow
            )
            late = spawn_invocation(
                project / "probe.py", "hold", [str(project / "pid-l"), str(project / "gate-l"), "late"], flow=flow
            )
            wait_until(lambda: (project / "pid-e").exists() and (project / "pid-l").exists(), 60)
        assert zygotes_of(daemon)
        daemon.kill9()
        wait_until(lambda: not zygotes_of(daemon), 10)  # the zygote ends with flowd; tasks do not
        early_pid, early_wrapper = map(int, (project / "pid-e").read_text().split())
        assert pid_alive(early_pid) and pid_alive(early_wrapper)
        (project / "gate-e").write_text("")  # ends while no flowd runs: its wrapper records how
        wait_until(lambda: not pid_alive(early_wrapper), 30)
        daemon.start()
        with client(daemon) as flow:
            assert flow.get_task(early.task_id).wait(timeout=30).last_status is TaskStatus.COMPLETED
            assert flow.get_task(early.task_id).result(timeout=30)["value"] == "early"
            adopted = flow.get_task(late.task_id)
            assert adopted.status is TaskStatus.RUNNING
            (project / "gate-l").write_text("")
            assert adopted.wait(timeout=30).last_status is TaskStatus.COMPLETED
            assert adopted.exit_code == 0
            assert adopted.result(timeout=30)["value"] == "late"
            until_warm(flow, project)  # the new flowd starts its own zygote
    finally:
        _cleanup(daemon)


def test_a_changed_site_directory_retires_the_zygote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package installed after the zygote started (here: a .pth file in the user site, which
    only an interpreter start reads) is seen by the next call, as with a cold start."""
    base_python = str(Path(sys.base_prefix) / "bin" / "python3")
    user_base = tmp_path / "userbase"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = user_base / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "flow_extra_mod.py").write_text("VALUE = 42\n")
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text(PROBE)
    daemon = started_daemon("flow-s-", PYTHONUSERBASE=str(user_base))
    try:
        with client(daemon) as flow:
            config = TaskConfig(upload_code=True, code_root=str(code), name="import-extra")
            call = FunctionCall(function="import_extra", path="probe.py", python=base_python)
            first = flow.submit(config, function_call=call)
            with pytest.raises(ModuleNotFoundError):
                first.result(timeout=60)
            (site / "extra.pth").write_text(f"{extra}\n")
            second = flow.submit(config, function_call=call)
            assert second.result(timeout=60) == [42, ["flow-warm-python"]]
    finally:
        _cleanup(daemon)


def test_remote_calls_from_threads_each_get_a_value(warm_daemon: Daemon, project: Path) -> None:
    """Many calls at once through one zygote: every call gets its own answer."""
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        with client(warm_daemon) as flow:
            results[i] = invoke(project / "probe.py", "snapshot", args=[str(i)], flow=flow)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == list(range(8))
    assert len({r["pid"] for r in results.values()}) == 8
    assert all(r["parent"][0] == "flow-warm-python" for r in results.values())


def test_a_killed_zygote_is_replaced(warm_daemon: Daemon, project: Path) -> None:
    with client(warm_daemon) as flow:
        first = spawn_invocation(project / "probe.py", "gpus", flow=flow)
        assert is_warm(first.result(timeout=60)["parent"], first.task_id)
        for pid in zygotes_of(warm_daemon):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not zygotes_of(warm_daemon), 10)
        second = spawn_invocation(project / "probe.py", "gpus", flow=flow)
        assert is_warm(second.result(timeout=60)["parent"], second.task_id)
        assert len(zygotes_of(warm_daemon)) == 1


def test_an_interpreter_that_cannot_serve_runs_cold(warm_daemon: Daemon, cold_daemon: Daemon, project: Path) -> None:
    """`python` that is no Python (here /bin/true, which exits at once): the call ends as it does
    without warm interpreters, every time."""
    outcomes = []
    for daemon in (warm_daemon, warm_daemon, cold_daemon):
        with client(daemon) as flow:
            config = TaskConfig(upload_code=True, code_root=str(project), name="not-python")
            task = flow.submit(config, function_call=FunctionCall(function="gpus", path="probe.py", python="/bin/true"))
            with pytest.raises(TaskExecutionError) as info:
                task.result(timeout=60)
            outcomes.append((task.last_status, task.exit_code, info.value.message.replace(task.task_id, "<TASK>")))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][:2] == (TaskStatus.COMPLETED, 0)


def test_a_relative_pythonpath_resolves_against_the_task_directory(
    warm_daemon: Daemon, cold_daemon: Daemon, project: Path
) -> None:
    """A relative PYTHONPATH entry is resolved against the cwd at interpreter start: such calls
    start cold, so `lib` is the task's own code/lib, as without warm interpreters."""
    (project / "lib").mkdir()
    (project / "lib" / "flow_lib_mod.py").write_text("WHERE = __file__\n")
    (project / "uses_lib.py").write_text(
        "import os\n\n\ndef where():\n    import flow_lib_mod\n\n"
        "    parent = open(f'/proc/{os.getppid()}/cmdline', 'rb').read().split(b'\\0')\n"
        "    return [flow_lib_mod.WHERE, os.getcwd(), [p.decode() for p in parent]]\n"
    )
    seen = []
    for daemon in (warm_daemon, cold_daemon):
        with client(daemon) as flow:
            task = spawn_invocation(project / "uses_lib.py", "where", flow=flow, env={"PYTHONPATH": "lib"})
            module, cwd, parent = task.result(timeout=60)
            assert module == f"{cwd}/lib/flow_lib_mod.py"
            assert is_cold(parent, task.task_id)  # started cold on both daemons
            seen.append(normalized(module, daemon, task.task_id))
    assert seen[0] == seen[1] == "<HOME>/tasks/<TASK>/code/lib/flow_lib_mod.py"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(json_values, min_size=1, max_size=5))
def test_zygote_messages_round_trip_through_a_pipe(messages: list[Any]) -> None:
    """The framing flowd and the zygote speak (runner._write_frame/read_frame; warm_python reads
    replies the same way): any JSON values, in order, then EOF."""
    from flow.runtime import runner

    read_end, write_end = os.pipe()
    try:
        writer = threading.Thread(target=lambda: [runner._write_frame(write_end, m) for m in messages])
        writer.start()
        received = [runner.read_frame(read_end) for _ in messages]
        writer.join()
        os.close(write_end)
        write_end = -1
        assert received == messages
        assert runner.read_frame(read_end) is None
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)


def test_a_reply_that_stops_half_way_is_given_up_at_the_deadline() -> None:
    """flowd reads a worker's reply with a deadline (warm_python.read_reply): a frame cut short,
    or none at all, is None once it passes, not a read that blocks forever."""
    import time

    from flow.runtime import runner
    from flowd.providers.warm_python import read_reply

    read_end, write_end = os.pipe()
    try:
        assert runner.read_frame(read_end, deadline=time.monotonic() + 0.05) is None  # nothing came
        os.write(write_end, (100).to_bytes(4, "big") + b'{"cut": ')  # a frame cut short
        assert read_reply(read_end, timeout=0.05) is None
        runner._write_frame(write_end, ["not", "an", "object"])  # whole, but not a reply
        assert read_reply(read_end, timeout=5) is None
        runner._write_frame(write_end, {"ok": True})
        assert read_reply(read_end, timeout=5) == {"ok": True}
    finally:
        os.close(read_end)
        os.close(write_end)


def test_repeated_uploads_in_one_process_see_every_edit(warm_daemon: Daemon, tmp_path: Path) -> None:
    """The SDK keeps its hash cache open and in memory between calls: an unchanged tree sends
    nothing, and an edited file (same size, new content) is hashed and sent again."""
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    with client(warm_daemon) as flow:
        first = flow.upload_code(tmp_path)
        again = flow.upload_code(tmp_path)
        assert (again.digest, again.sent_bytes) == (first.digest, 0)
        before = source.stat().st_mtime_ns
        source.write_text("x = 2\n")
        os.utime(source, ns=(before + 10**9, before + 10**9))  # a later mtime, whatever the clock's grain
        edited = flow.upload_code(tmp_path)
        assert edited.digest != first.digest
        assert edited.sent_files == 2  # the new content and the new manifest
        assert flow.upload_code(tmp_path).digest == edited.digest
