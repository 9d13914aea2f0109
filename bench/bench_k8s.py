"""The kubernetes provider against the real test cluster (tools/k8s-stack): submit->RUNNING and
submit->first log line against kubectl on the same cluster, and the API requests Flow sends while
100 tasks run (on the KWOK pool: simulated nodes, so the count is Flow's, not the node's).

Run: .venv/bin/python bench/bench_k8s.py [--quick]   (as root: it takes a lease on tools/k8s-stack,
starting it if needed; the last lease stops it again)

  submit->RUNNING (1 task)       Flow.run(sleep) then task.status every 20 ms until RUNNING;
                                 floor: `kubectl create job` (the same image and command), then
                                 `kubectl wait --for=condition=Ready` on its pod
  submit->first log line         Flow.run(echo; sleep) then task.logs(follow=True) until its first line;
                                 floor: `kubectl create job`, `kubectl wait` Ready, `kubectl logs -f`
                                 until the first line
  API requests/s (N live)        the provider's own requests, counted by its API client, in a steady
                                 window while N tasks run on the KWOK pool (one provider in this
                                 process, the same code flowd runs); floor: a poller that GETs each
                                 task's pod once a second sends N a second. Log streams are counted
                                 apart: KWOK pods have no output to stream.

Ratios are Flow's over the floor's; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flow.client import Flow
from flow.config import TaskConfig
from flow.task import TaskStatus

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import BenchDaemon, Sample, fmt
else:
    from harness import BenchDaemon, Sample, fmt

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "tools" / "k8s-stack"
PROVIDER = "bench-k8s"
SPIN = 0.02
# How long KWOK lets a Job's pod "run": at least delay, at most jitter-delay (5 s when not given).
KWOK_RUNS = (("pod-complete.stage.kwok.x-k8s.io/delay", "1h"), ("pod-complete.stage.kwok.x-k8s.io/jitter-delay", "1h"))


def stack_env() -> dict[str, str]:
    done = subprocess.run([str(STACK), "env"], capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


class Kubectl:
    def __init__(self, env: dict[str, str], namespace: str) -> None:
        self.env = env
        self.namespace = namespace

    def argv(self, *args: str, admin: bool = False) -> list[str]:
        config = self.env["FLOW_K8S_ADMIN_KUBECONFIG" if admin else "FLOW_K8S_KUBECONFIG"]
        return [self.env["FLOW_K8S_KUBECTL"], "--kubeconfig", config, "-n", self.namespace, *args]

    def __call__(self, *args: str, admin: bool = False, check: bool = True) -> str:
        done = subprocess.run(self.argv(*args, admin=admin), capture_output=True, text=True, timeout=120, check=check)
        return done.stdout


def bare(kubectl: Kubectl, image: str, runs: int, first_line: bool) -> Sample:
    """kubectl create job, then kubectl wait for its pod (and kubectl logs -f for a line)."""
    seconds = []
    for _ in range(runs):
        name = f"bare-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        kubectl("create", "job", name, f"--image={image}", "--", "sh", "-c", "echo hello; sleep 60")
        kubectl("wait", "--for=create", "pod", "-l", f"job-name={name}", "--timeout=120s")
        kubectl("wait", "--for=condition=Ready", "pod", "-l", f"job-name={name}", "--timeout=120s")
        if first_line:
            with subprocess.Popen(kubectl.argv("logs", "-f", f"job/{name}"), stdout=subprocess.PIPE, text=True) as logs:
                assert logs.stdout is not None
                logs.stdout.readline()
                seconds.append(time.perf_counter() - started)
                logs.kill()
        else:
            seconds.append(time.perf_counter() - started)
        kubectl("delete", "job", name, "--wait=false", "--cascade=background")
    return Sample("kubectl create job + wait", seconds)


def measured(flow: Flow, runs: int, first_line: bool) -> Sample:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        task = flow.run(TaskConfig(command="echo hello; sleep 60", upload_code=False))
        if first_line:
            next(iter(task.logs(follow=True)))
        else:
            while task.status is not TaskStatus.RUNNING:
                time.sleep(SPIN)
        seconds.append(time.perf_counter() - started)
        task.cancel()
    return Sample("flow run", seconds)


def requests_with_live_tasks(env: dict[str, str], namespace: str, count: int, window: float) -> dict[str, Any]:
    """One provider in this process (the code flowd runs), `count` tasks on the KWOK pool."""
    import threading

    from flow.domain.daemon_config import KubernetesSettings, Toleration
    from flow.domain.task.lifecycle import Started, TaskEvent, TaskRecord
    from flowd.blobs import BlobStore
    from flowd.providers.base import Queued
    from flowd.providers.kubernetes import KubernetesProvider

    key, _, rest = env["FLOW_K8S_KWOK_TAINT"].partition("=")
    value, _, effect = rest.partition(":")
    settings = KubernetesSettings(
        name=PROVIDER,
        kubeconfig=env["FLOW_K8S_KUBECONFIG"],
        namespace=namespace,
        image=env["FLOW_K8S_IMAGE"],
        tolerations=(Toleration(key=key, value=value, effect=effect),),
        node_selector=(("nvidia.com/gpu.product", env["FLOW_K8S_KWOK_GPU_PRODUCT"]),),
        pod_annotations=KWOK_RUNS,
    )
    running: set[str] = set()
    lock = threading.Lock()

    def report(task_id: str, event: TaskEvent, state: object | None = None) -> None:
        if isinstance(event, Started):
            with lock:
                running.add(task_id)

    scratch = Path(tempfile.mkdtemp(prefix="flow-bench-k8s-"))
    provider = KubernetesProvider(settings, scratch / "tasks", report, BlobStore(scratch / "blobs"), os.environ)
    try:
        config = TaskConfig(command="true", upload_code=False)  # CPU: 100 fit where 32 GPUs would not
        placed = provider.place(config).unwrap()
        started = time.perf_counter()
        for i in range(count):
            record = TaskRecord(
                task_id=f"t-bench{i:05d}", config=config, provider=PROVIDER, created_at=time.time(),
                instance_type=placed.instance_type,
            )  # fmt: skip
            launched = provider.launch(record)
            assert isinstance(launched, Queued), launched
            provider.watch(record, launched.state)
        while len(running) < count:
            time.sleep(SPIN)
        all_running = time.perf_counter() - started
        assert provider.api is not None
        before = dict(provider.api.requests)
        time.sleep(window)
        after = dict(provider.api.requests)
        return {
            "all running": all_running,
            "window": window,
            "steady": {k: after.get(k, 0) - before.get(k, 0) for k in after},
            "launch": before,
        }
    finally:
        provider.close()
        shutil.rmtree(scratch, ignore_errors=True)


def row(name: str, value: str, p90: str, floor: str, ratio: str) -> str:
    return f"{name:<34} {value:>10} {p90:>10} {floor:>12} {ratio:>7}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and 20 tasks instead of 100 (a smoke run)")
    args = parser.parse_args()
    runs, count, window = (3, 20, 3.0) if args.quick else (10, 100, 10.0)
    if os.geteuid() != 0:
        print("bench_k8s needs the test cluster: run it as root (it starts tools/k8s-stack)", file=sys.stderr)
        return 2
    lease = str(os.getpid())
    subprocess.run([str(STACK), "start", "--lease", lease], check=True, timeout=900)
    env = {**os.environ, **stack_env()}
    namespace = f"flow-bench-{uuid.uuid4().hex[:8]}"
    kubectl = Kubectl(env, namespace)
    kubectl("create", "namespace", namespace, admin=True)
    kubectl("wait", "--for=create", "serviceaccount/default", "--timeout=60s", admin=True)
    daemon = BenchDaemon()
    config = daemon.home.config
    config.write_text(
        f"providers:\n  {PROVIDER}:\n    kind: kubernetes\n    kubeconfig: {env['FLOW_K8S_KUBECONFIG']}\n"
        f"    namespace: {namespace}\n    image: {env['FLOW_K8S_IMAGE']}\n"
    )
    config.chmod(0o600)
    try:
        daemon.start()
        flow = Flow(provider=PROVIDER, flow_home=daemon.home.root)
        print(f"FLOW_HOME={daemon.home.root}: kubernetes provider, namespace {namespace}")
        measured(flow, 1, first_line=False)  # warm: the node list, the image on the node
        bare(kubectl, env["FLOW_K8S_IMAGE"], 1, first_line=False)
        floor_run, flow_run = bare(kubectl, env["FLOW_K8S_IMAGE"], runs, False), measured(flow, runs, False)
        floor_log, flow_log = bare(kubectl, env["FLOW_K8S_IMAGE"], runs, True), measured(flow, runs, True)
        flow.close()
        counted = requests_with_live_tasks(env, namespace, count, window)
        steady = counted["steady"]
        others = sum(v for k, v in steady.items() if k != "log")
        per_second = others / window
        print()
        print(row("row", "median", "p90", "floor", "ratio"))
        for name, sample, floor in (
            ("submit->RUNNING (1 task)", flow_run, floor_run),
            ("submit->first log line", flow_log, floor_log),
        ):
            ratio = f"{sample.median / floor.median:.2f}x"
            print(row(name, fmt(sample.median), fmt(sample.p90), fmt(floor.median), ratio))
        floor_rate = float(count)  # one GET per task per second
        print(
            row(
                f"API requests/s ({count} live)",
                f"{per_second:.2f}",
                "-",
                f"{floor_rate:.2f}",
                f"{per_second / floor_rate:.3f}x",
            )
        )
        print()
        launch = counted["launch"]
        print(
            f"{count} tasks on the KWOK pool: all RUNNING {counted['all running']:.2f} s after the first launch; "
            f"requests until then: {dict(sorted(launch.items()))} (create: one per object; one node list per "
            f"placement cache); steady window {window:g} s: {dict(sorted(steady.items()))} (log: KWOK pods have "
            "no output, so their streams are retried with backoff)"
        )
        return 0
    finally:
        daemon.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", admin=True, check=False)
        subprocess.run([str(STACK), "release", lease], check=False, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
