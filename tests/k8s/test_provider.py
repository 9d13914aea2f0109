"""The kubernetes provider on the real test cluster (tools/k8s-stack), through a real flowd and the
public SDK and CLI: what the conformance suite does not already show (tests/conformance runs every
scenario there too, the time limit included). GPU requests queue on the node's 2 fake GPUs with the
scheduler's reason, an OOM kill and a missing image fail with their reasons, the nodes of a 2-node
task see each other, cancel leaves no Job or pod, a flowd restart mid-job loses no output, secrets
never appear in a pod spec, and the KWOK pool takes what tolerates it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conformance.setups import kubernetes_yaml

from conftest import Daemon, _cleanup, short_tmpdir, wait_until
from flow import Flow, TaskStatus
from k8s.fixtures import Cluster

GATE = "while [ ! -e /tmp/go ]; do sleep 0.1; done"


@pytest.fixture(scope="module")
def namespace(k8s_cluster: Cluster) -> Iterator[str]:
    name = f"flow-p-{uuid.uuid4().hex[:8]}"
    k8s_cluster.kubectl("create", "namespace", name)
    k8s_cluster.kubectl("-n", name, "wait", "--for=create", "serviceaccount/default", "--timeout=60s", timeout=90)
    yield name
    k8s_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def daemon(k8s_cluster: Cluster, namespace: str) -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-k8-"))
    d.home.root.mkdir(parents=True, exist_ok=True)
    c = k8s_cluster
    taint = c.kwok_toleration
    pool = (
        f"    tolerations: [{{key: {taint['key']}, operator: Equal, value: {taint['value']}, "
        f"effect: {taint['effect']}}}]\n    node_selector: {{nvidia.com/gpu.product: {c.kwok_gpu_product}}}\n"
    )
    providers = kubernetes_yaml(c, namespace) + kubernetes_yaml(c, namespace, name="pool") + pool
    d.home.config.write_text("providers:\n" + providers)
    d.home.config.chmod(0o600)
    d.start()
    yield d
    _cleanup(d)


@pytest.fixture
def flow(daemon: Daemon) -> Iterator[Flow]:
    client: Flow = daemon.client(provider="k8s")  # type: ignore[assignment]
    yield client
    client.close()


def _objects(c: Cluster, ns: str, task_id: str) -> list[str]:
    kinds = "jobs,pods,secrets,configmaps,services"
    return c.kubectl("-n", ns, "get", kinds, "-l", f"flow.dev/task={task_id}", "-o", "name").stdout.split()


def _pods(c: Cluster, ns: str, task_id: str) -> list[dict[str, Any]]:
    return c.items("pods", ns, f"flow.dev/task={task_id}")


def _release(c: Cluster, ns: str, task_id: str) -> None:
    for pod in _pods(c, ns, task_id):
        c.kubectl("-n", ns, "exec", pod["metadata"]["name"], "-c", "task", "--", "touch", "/tmp/go")


def test_a_gpu_task_from_the_cli_lands_on_the_fake_gpus(daemon: Daemon, k8s_cluster: Cluster, namespace: str) -> None:
    command = f"nvidia-smi || echo no-driver; {GATE}"
    done = daemon.flow_cli("run", "--provider", "k8s", "-i", "1xa100", "-d", command, "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    task_id = json.loads(done.stdout)["task_id"]
    client: Flow = daemon.client(provider="k8s")  # type: ignore[assignment]
    try:
        try:
            # stdout's line and stderr's "nvidia-smi: command not found" come through two pipes, in either order
            wait_until(lambda: "no-driver\n" in client.get_task(task_id).logs(), 120, 0.2)
        except AssertionError:
            t = client.get_task(task_id)
            flowd = daemon.home.daemon_log.read_text()[-4000:]
            raise AssertionError(
                f"{t.status} {t.state_reason!r} logs={t.logs()[-300:]!r}\nflowd.log: {flowd}"
            ) from None
        (pod,) = _pods(k8s_cluster, namespace, task_id)
        assert pod["spec"]["nodeName"] == k8s_cluster.node  # the node with the 2 fake GPUs
        assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": k8s_cluster.node_gpu_product}
        _release(k8s_cluster, namespace, task_id)
        task = client.get_task(task_id).wait(timeout=120)
        assert task.last_status is TaskStatus.COMPLETED and task.instance_type.startswith("a100"), task.logs()
    finally:
        client.get_task(task_id).cancel()  # a failure here must not leave a GPU held for the next test
        client.close()
    wait_until(lambda: _objects(k8s_cluster, namespace, task_id) == [], 60, 0.2)  # cleaned up once it ended


def test_a_third_gpu_task_waits_with_the_schedulers_reason_while_two_hold_both_gpus(
    flow: Flow, k8s_cluster: Cluster, namespace: str
) -> None:
    c = k8s_cluster
    holders = [flow.run(GATE, instance_type="a100", upload_code=False) for _ in range(2)]
    try:
        wait_until(lambda: all(t.status is TaskStatus.RUNNING for t in holders), 120, 0.2)
        third = flow.run("echo got-a-gpu", instance_type="a100", upload_code=False)
        wait_until(lambda: "Insufficient nvidia.com/gpu" in flow.get_task(third.task_id).state_reason, 60, 0.2)
        assert flow.get_task(third.task_id).status is TaskStatus.PENDING
        reason = flow.get_task(third.task_id).state_reason
        assert reason.startswith("waiting for a node: 0/") and "nodes are available" in reason, reason
        pods = _pods(c, namespace, holders[0].task_id)
        assert pods[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pods[0]["spec"]["nodeName"] == c.node
        _release(c, namespace, holders[0].task_id)
        assert third.wait(timeout=180).last_status is TaskStatus.COMPLETED  # it took the freed GPU
        _release(c, namespace, holders[1].task_id)
        assert [t.wait(timeout=120).last_status for t in holders] == [TaskStatus.COMPLETED] * 2
    finally:
        for t in holders:  # a failure here must not leave the GPUs held for the next test
            t.cancel()


def test_an_oom_kill_fails_with_kubernetes_reason(flow: Flow) -> None:
    hog = "x = bytearray(400 * 2**20); print('allocated', flush=True)"
    task = flow.run(["python3", "-c", "print('start', flush=True); " + hog], memory_mb=64, upload_code=False)
    final = task.wait(timeout=180)
    assert (final.last_status, final.exit_code) == (TaskStatus.FAILED, 137), final.state_reason
    assert "OOMKilled" in final.state_reason


def test_an_image_that_does_not_exist_fails_at_once_naming_it(flow: Flow, k8s_cluster: Cluster, namespace: str) -> None:
    task = flow.run("true", image="flow.local/does-not-exist:1", upload_code=False)
    final = task.wait(timeout=120)
    assert final.last_status is TaskStatus.FAILED
    assert final.state_reason.startswith("could not start: the image flow.local/does-not-exist:1 cannot be pulled")
    wait_until(lambda: _objects(k8s_cluster, namespace, task.task_id) == [], 60, 0.2)


RANKS = (
    "import os, socket, time\n"
    "rank, n = int(os.environ['NODE_RANK']), int(os.environ['WORLD_SIZE'])\n"
    "addr = (os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']))\n"
    "if rank == 0:\n"
    "    conn, _ = socket.create_server(('', addr[1])).accept()\n"
    "    other = conn.recv(100).decode()\n"
    "    conn.sendall(f'rank {rank} of {n}'.encode())\n"
    "else:\n"
    "    deadline = time.monotonic() + 90\n"
    "    while True:\n"
    "        try:\n"
    "            conn = socket.create_connection(addr, timeout=5)\n"
    "            break\n"
    "        except OSError:\n"
    "            if time.monotonic() > deadline:\n"
    "                raise\n"
    "            time.sleep(0.2)\n"
    "    conn.sendall(f'rank {rank} of {n}'.encode())\n"
    "    other = conn.recv(100).decode()\n"
    "print(f'I am rank {rank} of {n}, the other is {other}', flush=True)\n"
)


def test_the_two_nodes_of_a_task_see_each_others_rank(flow: Flow, k8s_cluster: Cluster, namespace: str) -> None:
    task = flow.run(["python3", "-c", RANKS], num_instances=2, upload_code=False)
    final = task.wait(timeout=240)
    assert final.last_status is TaskStatus.COMPLETED, [task.logs(node=k) for k in (0, 1)]
    assert task.logs(node=0) == "I am rank 0 of 2, the other is rank 1 of 2\n"
    assert task.logs(node=1) == "I am rank 1 of 2, the other is rank 0 of 2\n"
    wait_until(lambda: _objects(k8s_cluster, namespace, task.task_id) == [], 60, 0.2)


def test_cancel_leaves_no_job_and_no_pod(flow: Flow, k8s_cluster: Cluster, namespace: str) -> None:
    task = flow.run("echo up; sleep 600", upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs() == "up\n", 120, 0.2)
    assert _objects(k8s_cluster, namespace, task.task_id)
    task.cancel()
    final = task.wait(timeout=120)
    assert final.last_status is TaskStatus.CANCELLED
    assert _pods(k8s_cluster, namespace, task.task_id) == []  # ended once its pods were gone
    wait_until(lambda: _objects(k8s_cluster, namespace, task.task_id) == [], 60, 0.2)


def test_secrets_reach_the_pod_through_a_secret_never_its_spec(
    flow: Flow, k8s_cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf-canary-7731")
    reverse = "python3 -c 'import os; print(os.environ[\"HF_TOKEN\"][::-1])'"  # the command must not hold it
    task = flow.run(f"{reverse}; {GATE}", secret_env=["HF_TOKEN"], upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs() == "1377-yranac-fh\n", 120, 0.2)
    c = k8s_cluster
    job = c.get("job", f"flow-{task.task_id}", namespace)
    pod = _pods(c, namespace, task.task_id)[0]
    assert "hf-canary-7731" not in json.dumps(job) + json.dumps(pod)
    (env,) = [e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "HF_TOKEN"]
    assert env["valueFrom"]["secretKeyRef"]["name"] == f"flow-{task.task_id}"
    _release(c, namespace, task.task_id)
    assert task.wait(timeout=120).last_status is TaskStatus.COMPLETED
    wait_until(lambda: _objects(c, namespace, task.task_id) == [], 60, 0.2)  # the Secret too


def test_a_flowd_restart_mid_job_loses_no_output_and_sees_the_end(
    daemon: Daemon, k8s_cluster: Cluster, namespace: str
) -> None:
    client: Flow = daemon.client(provider="k8s")  # type: ignore[assignment]
    count = "for i in $(seq 1 500); do echo {0}-$i; done"
    program = f"{count.format('before')}; {GATE}; {count.format('after')}; exit 4"
    task = client.run(program, upload_code=False)
    wait_until(lambda: task.status is TaskStatus.RUNNING and task.logs().endswith("before-500\n"), 120, 0.2)
    client.close()
    daemon.kill9()
    _release(k8s_cluster, namespace, task.task_id)  # it runs on, and ends, while flowd is down
    wait_until(lambda: _pods(k8s_cluster, namespace, task.task_id)[0]["status"].get("phase") == "Failed", 120, 0.2)
    daemon.start()
    again: Flow = daemon.client(provider="k8s")  # type: ignore[assignment]
    try:
        final = again.get_task(task.task_id).wait(timeout=120)
        assert (final.last_status, final.exit_code) == (TaskStatus.FAILED, 4)
        want = "".join(f"before-{i}\n" for i in range(1, 501)) + "".join(f"after-{i}\n" for i in range(1, 501))
        assert again.get_task(task.task_id).logs() == want
    finally:
        again.close()


def test_the_kwok_pool_runs_what_tolerates_it(daemon: Daemon, k8s_cluster: Cluster, namespace: str) -> None:
    pool: Flow = daemon.client(provider="pool")  # type: ignore[assignment]
    try:
        offered = {o["instance_type"] for o in pool.find_instances()}
        assert "8xh100" in offered and "a100" not in offered, offered
        task = pool.run("true", instance_type="8xh100", upload_code=False)
        assert task.wait(timeout=120).last_status is TaskStatus.COMPLETED  # KWOK completes it
    finally:
        pool.close()
    wait_until(lambda: _objects(k8s_cluster, namespace, task.task_id) == [], 60, 0.2)


def test_flow_ssh_reaches_the_pod_through_a_terminal_and_exec_pipes_bytes(daemon: Daemon, flow: Flow) -> None:
    task = flow.run(["sleep", "600"], env={"GREETING": "hello"}, upload_code=False)
    try:
        wait_until(lambda: task.status is TaskStatus.RUNNING, 120, 0.2)
        assert task.exec(["cat"], stdin=b"piped bytes\x00\xff").stdout == b"piped bytes\x00\xff"
        done = daemon.flow_cli("ssh", task.task_id, "--", "sh", "-c", "echo $GREETING $(pwd); echo err >&2; exit 7")
        assert (done.returncode, done.stdout, done.stderr) == (7, "hello /workspace\n", "err\n")
        child = pexpect.spawn(
            str(Path(sys.executable).parent / "flow"),
            ["ssh", task.task_id],
            env=daemon.env,
            dimensions=(33, 111),
            timeout=60,
            encoding="utf-8",
        )
        child.expect(r"[#$] ")  # the shell's prompt: it is reading now
        child.sendline("stty size; echo task=$FLOW_TASK_ID; tty")
        child.expect("33 111")
        child.expect(f"task={task.task_id}")
        child.expect("/dev/pts/")
        child.setwinsize(40, 120)
        child.sendline("stty size")
        child.expect("40 120")  # the resize reached the pod's terminal
        child.sendline("exit 3")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 3
    finally:
        task.cancel()


def test_code_too_large_for_a_configmap_is_streamed_into_the_pod(
    flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "noise.bin").write_bytes(os.urandom(3 * 2**20))  # incompressible: no ConfigMap holds it
    (tmp_path / "check.py").write_text(
        "import hashlib, os\n"
        "data = open('data/noise.bin', 'rb').read()\n"
        "print(os.getcwd(), len(data), hashlib.sha256(data).hexdigest())\n"
    )
    monkeypatch.chdir(tmp_path)
    want = hashlib.sha256((tmp_path / "data" / "noise.bin").read_bytes()).hexdigest()
    task = flow.run(["python3", "check.py"]).wait(timeout=180)
    assert task.last_status is TaskStatus.COMPLETED, (task.state_reason, task.logs())
    assert task.logs() == f"/workspace {3 * 2**20} {want}\n"
