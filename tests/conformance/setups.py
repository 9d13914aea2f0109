"""The provider set-ups the conformance scenarios run against: each a real flowd configured for one
provider, with what a scenario needs to know about it (never how the provider works inside).

A new provider is added here: one function that starts a flowd for it and says, as data, what the
scenarios need (a scratch directory its tasks can write and this test can read, how to keep its
GPUs busy, which refusals it documents, how many nodes it can give a task, ...), and one name in
SETUPS. The scenarios themselves (test_scenarios.py) do not change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakes.mithril import CATALOG, FakeMithril

from conftest import Daemon, _cleanup, pid_alive, short_tmpdir, wait_until
from flow import Flow, TaskStatus, errors

SETUPS = ("local", "slurm-local", "slurm-ssh", "mithril", "kubernetes")
GPU = "a100"  # what every set-up offers one of, and ALL_GPUS of
ALL_GPUS = "2xa100"
TIME_LIMIT_HOURS = 1 / 60  # whole minutes: Slurm's unit, so the limit means the same everywhere


@dataclass
class Refusal:
    """A request the provider refuses before accepting anything, and the seed's exception run()
    raises for it. `prepare` makes the provider refuse (and is undone after)."""

    name: str
    exception: type[errors.FlowError]
    options: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None  # another provider of the same flowd
    prepare: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext


@dataclass
class Unreachable:
    """A provider of the same flowd that cannot be asked, and what find_instances raises for it."""

    provider: str
    exception: type[errors.FlowError]


@dataclass
class Setup:
    name: str
    daemon: Daemon
    provider: str
    scratch: Path  # its tasks can write here; the test reads
    busy: Callable[[], contextlib.AbstractContextManager[None]]  # meanwhile a new GPU task queues
    refusals: list[Refusal]
    unreachable: list[Unreachable]  # empty: the provider is always reachable (says `always_reachable`)
    max_nodes: int  # the most num_instances this set-up runs (1: a larger task is refused)
    node_logs: bool  # one output per node (logs(node=K))
    region: str  # a region it offers
    always_reachable: str = ""  # why it has no unreachable case, when it has none
    task_options: dict[str, Any] = field(default_factory=dict)  # what every task here needs (an instance type)
    multi_node_options: dict[str, Any] = field(default_factory=dict)  # where a task of max_nodes nodes runs
    clients: list[Flow] = field(default_factory=list)
    timed: Any = None  # a task with max_run_time_hours, started when the set-up is
    # Whether a pid a task wrote names a live process (tasks in containers see their own pids).
    alive: Callable[[int], bool] = pid_alive

    def flow(self, provider: str | None = None) -> Flow:
        client: Flow = self.daemon.client(provider=provider or self.provider)  # type: ignore[assignment]
        self.clients.append(client)
        return client

    def run(self, command: str | list[str], provider: str | None = None, **options: Any) -> Any:
        """A task with this set-up's own needs (task_options), without a code upload unless asked."""
        return self.flow(provider).run(command, **{"upload_code": False, **self.task_options, **options})

    def path(self, name: str) -> Path:
        return self.scratch / f"{name}-{uuid.uuid4().hex[:8]}"

    def close(self) -> None:
        for client in self.clients:
            client.close()


def _scratch(parent: Path) -> Path:
    path = parent / f"conformance-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o777)
    path.chmod(0o777)  # tasks of other users (the Slurm and Mithril test users) write here
    return path


@contextlib.contextmanager
def _gpus_held(setup: Setup) -> Iterator[None]:
    """A task holds every GPU until the block ends: the next GPU task waits in the queue."""
    gate = setup.path("gate")
    blocker = setup.flow().run(f"while [ ! -e {gate} ]; do sleep 0.05; done", instance_type=ALL_GPUS, upload_code=False)
    try:
        wait_until(lambda: blocker.status is TaskStatus.RUNNING, 120)
        yield
    finally:
        gate.touch()
        blocker.wait(timeout=120)


# --- local ----------------------------------------------------------------------------------------

INVENTORY = [{"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}] * 2


@contextlib.contextmanager
def local_setup() -> Iterator[Setup]:
    daemon = Daemon(short_tmpdir("flow-cl-"))
    os.environ["FLOW_LOCAL_GPUS"] = json.dumps(INVENTORY)
    try:
        daemon.start()
    finally:
        del os.environ["FLOW_LOCAL_GPUS"]
    scratch = _scratch(Path("/tmp"))
    setup = Setup(
        name="local",
        daemon=daemon,
        provider="local",
        scratch=scratch,
        busy=lambda: _gpus_held(setup),
        refusals=[
            Refusal("more memory than the machine has", errors.ResourceNotAvailableError, {"memory_mb": 64 * 2**20}),
            Refusal("a working_dir that does not exist", errors.ValidationError, {"working_dir": "/no/such/dir"}),
            Refusal("ssh_keys (no meaning for a local process)", errors.ValidationError, {"ssh_keys": ["my-key"]}),
        ],
        unreachable=[],
        always_reachable="the local provider is this machine: it has nobody to ask",
        max_nodes=2,
        node_logs=True,
        region="local",
    )
    try:
        yield setup
    finally:
        setup.close()
        _cleanup(daemon)
        shutil.rmtree(scratch, ignore_errors=True)


# --- slurm (local CLI mode and SSH mode, on the test stack) -----------------------------------------


@contextlib.contextmanager
def slurm_setup(stack: Any, mode: str) -> Iterator[Setup]:
    from slurm.conftest import slurm_daemon_for

    env = stack.env
    broken = f"""\
  slurm-down:
    kind: slurm
    mode: ssh
    host: 127.0.0.1
    port: 1
    user: {env["FLOW_TEST_SSH_USER"]}
    key_file: {env["FLOW_TEST_SSH_KEY"]}
    known_hosts: {env["FLOW_TEST_SSH_KNOWN_HOSTS"]}
    work_dir: /tmp/nowhere
    connect_timeout: 2
  slurm-noconf:
    kind: slurm
    mode: local
    slurm_conf: /dev/null
"""
    daemon, work = slurm_daemon_for(stack, extra=broken)
    daemon.start()
    scratch = _scratch(stack.shared)
    setup = Setup(
        name=mode,
        daemon=daemon,
        provider=mode,
        scratch=scratch,
        busy=lambda: _gpus_held(setup),
        refusals=[
            Refusal(
                "an option sbatch refuses",
                errors.ValidationError,
                {"script": "#!/bin/bash\n#SBATCH --constraint=nosuchfeature\ntrue\n"},
            ),
            Refusal("a partition the cluster does not have", errors.ResourceNotAvailableError, {"region": "nope"}),
            Refusal("ssh_keys (nodes are reached through the cluster)", errors.ValidationError, {"ssh_keys": ["k"]}),
        ],
        unreachable=[
            Unreachable("slurm-down", errors.ProviderError),
            Unreachable("slurm-noconf", errors.ProviderError),
        ],
        max_nodes=2,  # on partition multi: two hosts (tools/test-stack)
        node_logs=False,
        region="debug",
        multi_node_options={"region": "multi"},
    )
    try:
        yield setup
    finally:
        setup.close()
        stack.cancel_under(daemon.home.root, work)
        _cleanup(daemon)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


# --- mithril (the OpenAPI-checked fake, instances on the test stack's sshd) -------------------------


@contextlib.contextmanager
def _no_capacity(fake: FakeMithril, setup: Setup) -> Iterator[None]:
    """The a100 auctions get no capacity after flowd has seen them with some: a new bid stays
    Open (the task PENDING), as on the platform when capacity goes between listing and bidding."""
    setup.flow().find_instances({"instance_type": GPU})  # flowd has seen the capacity
    (kind,) = [t for t in CATALOG if t.name == "a100-80gb.sxm.1x"]
    for region, _, _, _ in kind.auctions:
        fake.set_capacity(kind.name, region, 0)
    try:
        yield
    finally:
        for region, capacity, _, _ in kind.auctions:
            fake.set_capacity(kind.name, region, capacity)


@contextlib.contextmanager
def _quota(fake: FakeMithril) -> Iterator[None]:
    fake.set_quota("a100-80gb.sxm.1x", 0)
    try:
        yield
    finally:
        fake.set_quota("a100-80gb.sxm.1x", 1000)


@contextlib.contextmanager
def _rejected(fake: FakeMithril) -> Iterator[None]:
    detail = [
        {
            "loc": ["body", "instance_quantity"],
            "msg": "ensure this value is less than or equal to 64",
            "type": "value_error",
        }
    ]
    fake.inject("POST", "/v2/spot/bids", status=422, body={"detail": detail})
    yield


@contextlib.contextmanager
def mithril_setup(stack: dict[str, str]) -> Iterator[Setup]:
    from mithril.conftest import mithril_yaml

    fake = FakeMithril(ssh_port=int(stack["FLOW_TEST_SSH_PORT"]), ssh_user=stack["FLOW_TEST_MITHRIL_SSH_USER"])
    fake.start()
    daemon = Daemon(short_tmpdir("flow-cm-"))
    daemon.home.root.mkdir(parents=True, exist_ok=True)
    common = (
        f"    project: {fake.project_name}\n    ssh_key_file: {stack['FLOW_TEST_SSH_KEY']}\n"
        f"    ssh_user: {stack['FLOW_TEST_MITHRIL_SSH_USER']}\n    known_hosts: {stack['FLOW_TEST_SSH_KNOWN_HOSTS']}\n"
    )
    extra = (
        f"  mithril-badkey:\n    kind: mithril\n    api_key: fkey_{'W' * 24}\n    api_url: {fake.base_url}\n{common}"
        f"  mithril-down:\n    kind: mithril\n    api_key: {fake.api_key}\n    api_url: http://127.0.0.1:1\n{common}"
    )
    daemon.home.config.write_text(mithril_yaml(fake, stack) + extra)
    daemon.home.config.chmod(0o600)
    old = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("MITHRIL_")}
    env_timeout = os.environ.get("FLOW_MITHRIL_TIMEOUT")
    os.environ["FLOW_MITHRIL_TIMEOUT"] = "3"  # the unreachable provider answers within seconds
    try:
        daemon.start()
    finally:
        os.environ.update(old)
        if env_timeout is None:
            del os.environ["FLOW_MITHRIL_TIMEOUT"]
        else:
            os.environ["FLOW_MITHRIL_TIMEOUT"] = env_timeout
    scratch = _scratch(Path(stack["FLOW_TEST_MITHRIL_SSH_HOME"]))
    setup = Setup(
        name="mithril",
        daemon=daemon,
        provider="mithril",
        scratch=scratch,
        busy=lambda: _no_capacity(fake, setup),
        refusals=[
            Refusal("a quota of zero", errors.QuotaExceededError, prepare=lambda: _quota(fake)),
            Refusal("a bad API key", errors.AuthenticationError, provider="mithril-badkey"),
            Refusal("a request the API rejects (422)", errors.ValidationAPIError, prepare=lambda: _rejected(fake)),
            Refusal("an SSH key the project lacks", errors.ValidationError, {"ssh_keys": ["no-such-key"]}),
            Refusal("more RAM than the instance type has", errors.ResourceNotAvailableError, {"memory_mb": 10**7}),
        ],
        unreachable=[
            Unreachable("mithril-down", errors.NetworkError),
            Unreachable("mithril-badkey", errors.AuthenticationError),
        ],
        max_nodes=2,
        node_logs=True,  # each node's log pushed from its instance
        region="us-central1-a",
        task_options={"instance_type": GPU},  # Mithril rents GPU instances: a task names one
    )
    try:
        yield setup
    finally:
        setup.close()
        _cleanup(daemon)
        fake.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        fake.assert_clean()


# --- kubernetes (the real cluster of tools/k8s-stack) ------------------------------------------------


def pod_pid_alive(pid: int) -> bool:
    """Whether a process of some pod (another PID namespace) has `pid` there and still runs: the
    pids a task in a pod writes are its namespace's. The scenarios' left-behind processes are
    `sleep 600`, which tells them from other pods' processes of the same number (a task's wrapper
    runs short sleeps of its own)."""
    own = os.readlink("/proc/self/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == own:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        nspids = fields.get("NSpid", "").split()
        running = fields.get("State", "").strip()[:1] != "Z"
        if nspids and nspids[-1] == str(pid) and running and cmdline == b"sleep\x00600\x00":
            return True
    return False


def kubernetes_yaml(cluster: Any, namespace: str, scratch: Path | None = None, name: str = "k8s") -> str:
    paths = f"    node_paths: [{scratch}]\n" if scratch is not None else ""
    return (
        f"  {name}:\n    kind: kubernetes\n    kubeconfig: {cluster.kubeconfig}\n    context: {cluster.context}\n"
        f"    namespace: {namespace}\n    image: {cluster.image}\n    image_pull_policy: IfNotPresent\n{paths}"
    )


@contextlib.contextmanager
def kubernetes_setup(cluster: Any) -> Iterator[Setup]:
    namespace = f"flow-conf-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("-n", namespace, "wait", "--for=create", "serviceaccount/default", "--timeout=60s", timeout=90)
    daemon = Daemon(short_tmpdir("flow-ck-"))
    daemon.home.root.mkdir(parents=True, exist_ok=True)
    scratch = _scratch(Path("/tmp"))
    down = daemon.home.root / "down.kubeconfig"
    down.write_text(cluster.kubeconfig.read_text().replace(cluster.env["FLOW_K8S_SERVER"], "https://127.0.0.1:1"))
    badtoken = daemon.home.root / "badtoken.kubeconfig"
    server = cluster.env["FLOW_K8S_SERVER"]
    badtoken.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: "
        f"{server}, insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: not-a-token}}\n"
        "contexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
    )
    for path in (down, badtoken):
        path.chmod(0o600)
    daemon.home.config.write_text(
        "providers:\n"
        + kubernetes_yaml(cluster, namespace, scratch)
        + f"  k8s-down:\n    kind: kubernetes\n    kubeconfig: {down}\n    namespace: {namespace}\n"
        + f"  k8s-badtoken:\n    kind: kubernetes\n    kubeconfig: {badtoken}\n    namespace: {namespace}\n"
    )
    daemon.home.config.chmod(0o600)
    daemon.start()
    setup = Setup(
        name="kubernetes",
        daemon=daemon,
        provider="k8s",
        scratch=scratch,
        busy=lambda: _gpus_held(setup),
        refusals=[
            Refusal("more memory than any node has", errors.ResourceNotAvailableError, {"memory_mb": 64 * 2**20}),
            Refusal("ssh_keys (pods are reached through the API)", errors.ValidationError, {"ssh_keys": ["my-key"]}),
            Refusal("credentials the cluster does not accept", errors.AuthenticationError, provider="k8s-badtoken"),
        ],
        unreachable=[
            Unreachable("k8s-down", errors.NetworkError),
            Unreachable("k8s-badtoken", errors.AuthenticationError),
        ],
        max_nodes=2,
        node_logs=True,
        region=cluster.context,  # the kubeconfig's cluster name: its nodes have no region label
        alive=pod_pid_alive,
    )
    try:
        yield setup
    finally:
        setup.close()
        _cleanup(daemon)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        shutil.rmtree(scratch, ignore_errors=True)
