"""pytest fixtures for the real Kubernetes cluster of tools/k8s-stack. Import the ones you use:

    from k8s.fixtures import k8s_cluster, k8s_namespace  # noqa: F401

`k8s_cluster` (session) starts the cluster (built by `make k8s`, which `make test` runs: about
10 minutes once, then cached under build/k8s; it fails at once, saying so, where it is not built)
under a lease, as tests/slurm does with tools/test-stack: sessions and
benchmarks running at once share one cluster, and the last lease out stops it (unless it was
started by hand). It yields a `Cluster`: the provider's kubeconfig (a client certificate with the
RBAC a job launcher needs, not an administrator), an admin kubeconfig for the tests' own checks,
kubectl, the base image every node has, and the node facts: one real node running real pods with
2 fake `nvidia.com/gpu`, and a pool of KWOK nodes (8 GPUs each, tainted: a pod needs
`Cluster.kwok_toleration`). Pods resolve cluster names (CoreDNS: a headless Service gives an
Indexed Job's pods the names <job>-<index>.<service>); there is no kube-proxy, so ClusterIP
Services do not route, and pods cannot reach the apiserver. KWOK pods have no process (no logs,
no exec); KWOK marks them Running at once and, for pods of Jobs, Succeeded 1-6 s later, unless
the pod's annotation `pod-complete.stage.kwok.x-k8s.io/delay` (e.g. "1h") says how long they run.

`k8s_namespace` gives each test a namespace of its own (created with the admin identity, usable
by the provider's), deleted at teardown with everything in it: tests never see each other's Jobs,
and sessions sharing the cluster never touch each other's objects.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "tools" / "k8s-stack"
START_TIMEOUT = 300.0


def stack_env() -> dict[str, str]:
    """`tools/k8s-stack env` as a dict."""
    done = subprocess.run([str(STACK_SCRIPT), "env"], capture_output=True, text=True, check=True, timeout=30)
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return env


@frozen
class Cluster:
    env: dict[str, str]

    @property
    def kubeconfig(self) -> Path:
        """The provider's kubeconfig (client certificate, context with the `flow` namespace)."""
        return Path(self.env["FLOW_K8S_KUBECONFIG"])

    @property
    def admin_kubeconfig(self) -> Path:
        return Path(self.env["FLOW_K8S_ADMIN_KUBECONFIG"])

    @property
    def context(self) -> str:
        return self.env["FLOW_K8S_CONTEXT"]

    @property
    def image(self) -> str:
        """Debian minbase with python3, on every real node (imagePullPolicy Never/IfNotPresent)."""
        return self.env["FLOW_K8S_IMAGE"]

    @property
    def node(self) -> str:
        return self.env["FLOW_K8S_NODE"]

    @property
    def node_gpus(self) -> int:
        return int(self.env["FLOW_K8S_NODE_GPUS"])

    @property
    def node_gpu_product(self) -> str:
        return self.env["FLOW_K8S_NODE_GPU_PRODUCT"]

    @property
    def kwok_nodes(self) -> list[str]:
        return [f"flow-kwok-{i}" for i in range(int(self.env["FLOW_K8S_KWOK_NODES"]))]

    @property
    def kwok_gpus(self) -> int:
        return int(self.env["FLOW_K8S_KWOK_GPUS"])

    @property
    def kwok_gpu_product(self) -> str:
        return self.env["FLOW_K8S_KWOK_GPU_PRODUCT"]

    @property
    def kwok_toleration(self) -> dict[str, str]:
        """What a pod needs to land on the KWOK pool (whose nodes are tainted)."""
        key, _, rest = self.env["FLOW_K8S_KWOK_TAINT"].partition("=")
        value, _, effect = rest.partition(":")
        return {"key": key, "operator": "Equal", "value": value, "effect": effect}

    def kubectl(
        self, *argv: str, admin: bool = True, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """kubectl of the cluster's own version, as the admin or as the provider's identity."""
        config = self.admin_kubeconfig if admin else self.kubeconfig
        return subprocess.run(
            [self.env["FLOW_K8S_KUBECTL"], "--kubeconfig", str(config), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def create(self, manifest: Mapping[str, Any], namespace: str, admin: bool = False) -> None:
        self.kubectl("-n", namespace, "create", "-f", "-", admin=admin, stdin=json.dumps(manifest))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        out = self.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout
        found: dict[str, Any] = json.loads(out)
        return found

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        argv = ["-n", namespace, "get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        listed: list[dict[str, Any]] = json.loads(self.kubectl(*argv).stdout)["items"]
        return listed


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the Kubernetes test cluster needs root (apt-get, mounts, links, iptables); CI runs as root")
    if subprocess.run([str(STACK_SCRIPT), "built"], capture_output=True, timeout=60).returncode != 0:
        # Not inside a test's timeout: `make test` builds it first (make k8s), once per machine.
        pytest.fail("the Kubernetes test cluster is not built: run `make k8s` (about 10 minutes, once)")
    lease = str(os.getpid())
    subprocess.run([str(STACK_SCRIPT), "start", "--lease", lease], check=True, timeout=START_TIMEOUT)
    try:
        yield Cluster(env=stack_env())
    finally:
        subprocess.run([str(STACK_SCRIPT), "release", lease], check=False, timeout=300)


@pytest.fixture
def k8s_namespace(k8s_cluster: Cluster) -> Iterator[str]:
    name = f"flow-t-{uuid.uuid4().hex[:10]}"
    k8s_cluster.kubectl("create", "namespace", name)
    # Pods are refused until the namespace's default service account exists.
    k8s_cluster.kubectl("-n", name, "wait", "--for=create", "serviceaccount/default", "--timeout=60s", timeout=90)
    try:
        yield name
    finally:
        # Without waiting: the namespace controller deletes its pods and Jobs in the background.
        k8s_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
