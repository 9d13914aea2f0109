"""The container command Flow's local provider builds for `image=` tasks
(flow.domain.task.container_command.container_argv), run by real podman with the locally built
Debian + python3 image: what a task relies on inside its container. The commands come from the
same pure function the provider calls, so a flag podman reads differently from docker shows here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from conftest import wait_until
from flow.domain.task.container_command import ContainerSpec, Mount, container_argv, container_env, container_workdir
from images.fixtures import Podman


def _name() -> str:
    return f"flow-test-{uuid.uuid4().hex[:10]}"


def _command(
    podman: Podman,
    argv: Sequence[str],
    *,
    code: Path,
    task: Path,
    name: str,
    env_names: Sequence[str] = (),
    working_dir: str | None = None,
    gpus: Sequence[int] = (),
    host_network: bool = False,
) -> list[str]:
    spec = ContainerSpec(
        engine="podman",
        image=podman.image,
        argv=tuple(argv),
        name=name,
        workdir=container_workdir(working_dir),
        env_names=tuple(env_names),
        mounts=(Mount(str(code), "/workspace"), Mount(str(task), "/flow/task")),
        gpus=tuple(gpus),
        host_network=host_network,
    )
    built = container_argv(spec).unwrap()
    return [podman.client, *built[1:]]


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    code = tmp_path / "code"
    (code / "src").mkdir(parents=True)
    (code / "src" / "train.py").write_text("import os\nprint('train', os.getcwd(), os.environ['A'])\n")
    task = tmp_path / "task"
    task.mkdir()
    yield code, task


def _run(podman: Podman, command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=podman.environ(env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )


def test_the_code_is_at_workspace_and_the_task_sees_its_env_by_name(podman: Podman, dirs: tuple[Path, Path]) -> None:
    code, task = dirs
    env = container_env({"A": "x y; $HOME", "WANDB_API_KEY": "wk-canary-123"}, ())
    command = _command(
        podman,
        ["sh", "-c", 'python3 train.py && echo "key=$WANDB_API_KEY" > /flow/task/out && ls /workspace'],
        code=code,
        task=task,
        name=_name(),
        env_names=sorted(env),
        working_dir="src",
    )
    assert "wk-canary-123" not in " ".join(command)  # values travel in the client's environment only
    done = _run(podman, command, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["train /workspace/src x y; $HOME", "src"]
    assert (task / "out").read_text() == "key=wk-canary-123\n"  # the task directory is writable at /flow/task


def test_exit_codes_reach_the_client(podman: Podman, dirs: tuple[Path, Path]) -> None:
    code, task = dirs
    failed = _run(podman, _command(podman, ["sh", "-c", "exit 7"], code=code, task=task, name=_name()))
    assert failed.returncode == 7
    missing = _run(podman, _command(podman, ["no-such-program"], code=code, task=task, name=_name()))
    # Under --init (catatonit) a program missing from the image exits 1 with "failed to exec pid1",
    # not the shell's 127 "not found": the task fails either way, but the message does not name it.
    assert missing.returncode != 0
    assert "failed to exec" in missing.stderr


def test_an_image_that_is_not_there_fails_at_once_naming_it(podman: Podman, dirs: tuple[Path, Path]) -> None:
    code, task = dirs
    command = _command(podman, ["true"], code=code, task=task, name=_name())
    command[command.index(podman.image)] = "flow.local/does-not-exist:1"
    done = _run(podman, command)
    assert done.returncode == 125  # podman's own failure, not the task's
    assert "flow.local/does-not-exist" in done.stderr


def test_a_missing_working_dir_is_created(podman: Podman, dirs: tuple[Path, Path]) -> None:
    code, task = dirs
    done = _run(podman, _command(podman, ["pwd"], code=code, task=task, name=_name(), working_dir="new/sub"))
    assert (done.returncode, done.stdout) == (0, "/workspace/new/sub\n")


def test_assigned_gpus_reach_the_container_as_cdi_devices(podman: Podman, dirs: tuple[Path, Path]) -> None:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("real GPUs: their own CDI spec applies, not the fake one")
    code, task = dirs
    env = container_env({}, (1, 3))
    command = _command(
        podman, ["sh", "-c", "env | sort"], code=code, task=task, name=_name(), env_names=sorted(env), gpus=(1, 3)
    )
    done = _run(podman, command, env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("FLOW_FAKE_CDI_GPU")] == [
        "FLOW_FAKE_CDI_GPU1=1",
        "FLOW_FAKE_CDI_GPU3=1",
    ]
    assert "CUDA_VISIBLE_DEVICES=0,1" in lines  # numbered from 0 inside


def _running(podman: Podman, name: str) -> bool:
    done = podman.run(["inspect", "-f", "{{.State.Running}}", name])
    return done.stdout.strip() == "true"


def test_exec_reaches_the_running_container_and_sigterm_to_the_client_stops_it(
    podman: Podman, dirs: tuple[Path, Path]
) -> None:
    """What `flow ssh`/exec and cancel rely on: exec by the container's name; the client that
    flowd started forwards SIGTERM into the container (--init: the program gets it as PID 2)."""
    code, task = dirs
    name = _name()
    script = "trap 'echo got-term > /flow/task/term; exit 143' TERM; touch /flow/task/up; sleep 600 & wait"
    client = subprocess.Popen(
        _command(podman, ["sh", "-c", script], code=code, task=task, name=name),
        env=podman.environ(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(lambda: (task / "up").exists() and _running(podman, name), timeout=60)
        done = podman.run(["exec", "-i", name, "python3", "-c", "import os; print(os.getcwd())"])
        assert (done.returncode, done.stdout) == (0, "/workspace\n")
        client.send_signal(signal.SIGTERM)
        assert client.wait(timeout=60) == 143
        assert (task / "term").read_text() == "got-term\n"
        wait_until(lambda: podman.run(["container", "exists", name]).returncode == 1, timeout=60)  # --rm
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()
        podman.run(["rm", "-f", "-t", "0", name])


def test_rm_f_removes_a_container_whose_client_was_killed(podman: Podman, dirs: tuple[Path, Path]) -> None:
    """Cancel after the grace period: flowd SIGKILLs the client, then `podman rm -f NAME`."""
    code, task = dirs
    name = _name()
    client = subprocess.Popen(
        _command(podman, ["sleep", "600"], code=code, task=task, name=name),
        env=podman.environ(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _running(podman, name), timeout=60)
        client.kill()
        client.wait(timeout=30)
        assert _running(podman, name)  # a killed client leaves its container running
        assert podman.run(["rm", "-f", name]).returncode == 0
        assert podman.run(["container", "exists", name]).returncode == 1
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        podman.run(["rm", "-f", "-t", "0", name])


def test_nodes_of_a_multi_node_task_reach_each_other_on_the_host_network(
    podman: Podman, dirs: tuple[Path, Path]
) -> None:
    code, task = dirs
    (code / "rendezvous.py").write_text(
        "import os, socket, sys\n"
        "addr = (os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']))\n"
        "if os.environ['NODE_RANK'] == '0':\n"
        "    s = socket.create_server(addr)\n"
        "    open('/flow/task/listening', 'w').close()\n"
        "    conn, _ = s.accept()\n"
        "    print('rank 0 got', conn.recv(100).decode())\n"
        "else:\n"
        "    socket.create_connection(addr).sendall(b'hello from rank 1')\n"
    )
    with_port = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(20000 + os.getpid() % 20000)}
    envs = [container_env({**with_port, "NODE_RANK": str(rank)}, ()) for rank in (0, 1)]
    commands = [
        _command(
            podman,
            ["python3", "rendezvous.py"],
            code=code,
            task=task,
            name=_name(),
            env_names=sorted(env),
            host_network=True,
        )
        for env in envs
    ]
    rank0 = subprocess.Popen(
        commands[0], env=podman.environ(envs[0]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: (task / "listening").exists() or rank0.poll() is not None, timeout=60)
        rank1 = _run(podman, commands[1], envs[1])
        assert rank1.returncode == 0, rank1.stderr
        out, _ = rank0.communicate(timeout=60)
        assert (rank0.returncode, out) == (0, "rank 0 got hello from rank 1\n")
    finally:
        if rank0.poll() is None:
            rank0.kill()
            rank0.wait()
