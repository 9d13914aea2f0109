"""`image=` tasks on the local provider, in real podman containers: a real flowd whose environment
points podman at the test configuration (tools/podman-setup), running the locally built
Debian + python3 image. What a user relies on: the code at /workspace, variables by name, exit
codes, cancel (no container left behind), exec (`flow ssh`), and multi-node image tasks whose
nodes reach each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Daemon, _cleanup, short_tmpdir, wait_until
from flow import Flow, TaskStatus
from images.fixtures import Podman

# Inside a container (not on the host): PID 1 is podman's init, and the task directory is mounted.
WHERE = (
    "import os, sys\n"
    "pid1 = open('/proc/1/cmdline', 'rb').read().split(b'\\0')[0].decode()\n"
    "print('pid1', os.path.basename(pid1), 'cwd', os.getcwd(), 'task-dir', os.path.isdir('/flow/task'))\n"
    "print('A', os.environ['A'], 'secret', os.environ.get('WANDB_API_KEY') == 'wk-canary-123')\n"
)

RENDEZVOUS = (
    "import os, socket, time\n"
    "addr = (os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']))\n"
    "if os.environ['NODE_RANK'] == '0':\n"
    "    conn, _ = socket.create_server(addr).accept()\n"
    "    print('rank 0 of', os.environ['WORLD_SIZE'], 'got', conn.recv(100).decode())\n"
    "else:\n"
    "    deadline = time.monotonic() + 60\n"
    "    while True:\n"
    "        try:\n"
    "            socket.create_connection(addr).sendall(b'hello from rank 1')\n"
    "            break\n"
    "        except ConnectionRefusedError:\n"
    "            if time.monotonic() > deadline:\n"
    "                raise\n"
    "            time.sleep(0.1)\n"
    "    print('rank 1 sent')\n"
)


@pytest.fixture(scope="module")
def podman_daemon(podman: Podman) -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-pi-"))
    saved = {k: os.environ.get(k) for k in podman.env}
    os.environ.update(podman.env)  # flowd (and so its podman client) inherits the test configuration
    try:
        d.start()
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    yield d
    _cleanup(d)
    # A test that failed mid-task leaves its container running: flowd's client was killed, not it.
    names = podman.run(["ps", "-a", "--format", "{{.Names}}"]).stdout.split()
    ours = [n for n in names if any(n.startswith(f"flow-{t.name}") for t in d.home.tasks.glob("t-*"))]
    if ours:
        podman.run(["rm", "-f", "-t", "0", *ours])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "where.py").write_text(WHERE)
    (tmp_path / "rendezvous.py").write_text(RENDEZVOUS)
    monkeypatch.chdir(tmp_path)  # the code snapshot is taken from the current directory
    return tmp_path


def test_the_task_runs_in_the_image_with_its_code_and_env(
    podman_daemon: Daemon, podman: Podman, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client: Flow = podman_daemon.client()  # type: ignore[assignment]
    monkeypatch.setenv("WANDB_API_KEY", "wk-canary-123")
    task = client.run(["python3", "where.py"], image=podman.image, env={"A": "x y"}, secret_env=["WANDB_API_KEY"]).wait(
        timeout=120
    )
    assert task.last_status is TaskStatus.COMPLETED, task.logs()
    assert task.logs().splitlines() == [
        "pid1 podman-init cwd /workspace task-dir True",
        "A x y secret True",
    ]


def test_exit_codes_and_a_missing_image_fail_the_task(podman_daemon: Daemon, podman: Podman) -> None:
    client: Flow = podman_daemon.client()  # type: ignore[assignment]
    failed = client.run(["sh", "-c", "exit 3"], image=podman.image, upload_code=False).wait(timeout=120)
    assert (failed.last_status, failed.exit_code) == (TaskStatus.FAILED, 3)
    missing = client.run(["true"], image="flow.local/does-not-exist:1", upload_code=False).wait(timeout=120)
    assert missing.last_status is TaskStatus.FAILED
    assert "flow.local/does-not-exist" in missing.logs()  # podman's error names the image


def test_exec_and_flow_ssh_go_into_the_container_and_cancel_leaves_none_behind(
    podman_daemon: Daemon, podman: Podman
) -> None:
    client: Flow = podman_daemon.client()  # type: ignore[assignment]
    task = client.run(["sleep", "600"], image=podman.image, upload_code=False)
    name = f"flow-{task.task_id}"

    def container_runs() -> bool:
        return podman.run(["inspect", "-f", "{{.State.Running}}", name]).stdout.strip() == "true"

    wait_until(lambda: task.status is TaskStatus.RUNNING and container_runs(), timeout=120, interval=0.1)
    done = task.exec(["sh", "-c", "pwd; cat /proc/1/cmdline | tr '\\0' ' '"])
    assert (done.exit_code, done.stdout.decode()) == (0, "/workspace\n/run/podman-init -- sleep 600 ")
    ssh = podman_daemon.flow_cli("ssh", task.task_id, "--", "sh", "-c", "test -e /run/.containerenv && exit 5")
    assert (ssh.returncode, ssh.stderr) == (5, "")  # flow ssh lands in the container (podman's marker file)
    task.cancel()
    assert task.wait(timeout=60).last_status is TaskStatus.CANCELLED
    wait_until(lambda: podman.run(["container", "exists", name]).returncode == 1, timeout=60, interval=0.1)


def test_the_nodes_of_a_multi_node_image_task_reach_each_other(
    podman_daemon: Daemon, podman: Podman, project: Path
) -> None:
    client: Flow = podman_daemon.client()  # type: ignore[assignment]
    task = client.run(["python3", "rendezvous.py"], image=podman.image, num_instances=2).wait(timeout=120)
    assert task.last_status is TaskStatus.COMPLETED, task.logs()
    assert task.logs(node=0) == "rank 0 of 2 got hello from rank 1\n"
    assert task.logs(node=1) == "rank 1 sent\n"
