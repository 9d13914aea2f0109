"""flowd's configuration file ($FLOW_HOME/config.yaml) as values, and every rule it must obey.

    default_provider: cluster        # optional; "local" when left out
    providers:
      cluster:
        kind: slurm
        mode: ssh                    # or "local": Flow runs on the login node itself
        host: login.example.org
        port: 22
        user: alice
        key_file: ~/.ssh/id_ed25519
        known_hosts: ~/.ssh/known_hosts
        partition: gpu
        work_dir: /home/alice/flow   # snapshots, outputs and exit markers go here
        gpu_type: a100               # what the cluster's untyped "gpu" GRES are

`daemon_config_from_dict` takes the parsed document (plain dicts, lists and scalars) and returns
the settings or one error naming every problem at once: the field path (`providers.cluster.port`),
the value given and a fix; unknown keys get a "did you mean". The shell that read the file maps the
paths back to line numbers. A Mithril provider whose own settings are wrong is not a problem of the
file: it comes back as `UnusableSettings` (flowd serves the others and reports it). Nothing here
touches the file system: whether a key file exists is the
shell's question.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Final, TypeGuard

from attrs import field, frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, validation_error, violation
from flow.domain.instances.instance_types import InstanceType, parse_instance_type

PROVIDER_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
# Partition, account and QoS names end up in #SBATCH lines: nothing a directive would misread.
SLURM_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}")
HOST: Final = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,253}")
USER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\$?")
# A cluster path that is safe in a #SBATCH line, an --output pattern and an unquoted `read`:
# no whitespace, quotes, '#', '%' (an --output pattern character), '\\' or control characters.
PLAIN_PATH: Final = re.compile(r"/[A-Za-z0-9_./+@,:=~-]*")
KINDS: Final = ("local", "slurm", "mithril", "kubernetes")
MODES: Final = ("local", "ssh")
LOCAL: Final = "local"
DEFAULT_POLL_INTERVAL: Final = 1.0
MIN_POLL_INTERVAL: Final = 0.05
MAX_POLL_INTERVAL: Final = 300.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
SUBJECT: Final = "daemon configuration"

TOP_KEYS: Final = ("default_provider", "providers")
SLURM_KEYS: Final = (
    "kind",
    "mode",
    "host",
    "port",
    "user",
    "key_file",
    "known_hosts",
    "host_key_checking",
    "connect_timeout",
    "partition",
    "account",
    "qos",
    "work_dir",
    "slurm_conf",
    "bin_dir",
    "poll_interval",
    "gpu_type",
    "python",
)
MITHRIL_KEYS: Final = (
    "kind",
    "api_key",
    "project",
    "region",
    "api_url",
    "ssh_key_file",
    "ssh_keys",
    "ssh_user",
    "known_hosts",
    "host_key_checking",
    "poll_interval",
)
MITHRIL_API_URL: Final = "https://api.mithril.ai"
MITHRIL_KEY: Final = re.compile(r"fkey_[A-Za-z0-9]{20,}")
MITHRIL_ENV: Final = {
    "MITHRIL_API_KEY": "api_key",
    "MITHRIL_PROJECT": "project",
    "MITHRIL_DEFAULT_PROJECT": "project",
    "MITHRIL_REGION": "region",
    "MITHRIL_DEFAULT_REGION": "region",
    "MITHRIL_API_URL": "api_url",
    "MITHRIL_SSH_KEY": "ssh_key_file",
    "MITHRIL_SSH_KEYS": "ssh_keys",
    "MITHRIL_SSH_USER": "ssh_user",
}
KUBERNETES_KEYS: Final = (
    "kind",
    "kubeconfig",
    "context",
    "namespace",
    "image",
    "image_pull_policy",
    "gpu_resource",
    "gpu_product_label",
    "node_selector",
    "tolerations",
    "queue",
    "storage_class",
    "node_paths",
    "pod_annotations",
)
DEFAULT_KUBE_IMAGE: Final = "python:3.11-slim"
PULL_POLICIES: Final = ("IfNotPresent", "Always", "Never")
# A label key (optionally prefixed: example.com/name) and a label value, as Kubernetes checks them.
LABEL_KEY: Final = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE: Final = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
NAMESPACE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
IMAGE_REF: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")
TOLERATION_KEYS: Final = ("key", "operator", "value", "effect", "tolerationSeconds")
SSH_ONLY_KEYS: Final = ("host", "port", "user", "key_file", "known_hosts", "host_key_checking", "connect_timeout")


@frozen
class SshSettings:
    """How to reach the login node. `user` None: the local user name; `known_hosts` None:
    ~/.ssh/known_hosts; `key_file` None: ssh-agent and the default keys."""

    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    host_key_checking: bool = True
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


@frozen
class SlurmSettings:
    """One Slurm cluster. `ssh` is None in local mode (Flow runs on the login node)."""

    name: str
    ssh: SshSettings | None = None
    work_dir: str | None = None  # None: $FLOW_HOME/slurm/<name> (local mode only)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    slurm_conf: str | None = None
    bin_dir: str | None = None
    poll_interval: float = DEFAULT_POLL_INTERVAL
    gpu: InstanceType | None = None  # the model of untyped GPU GRES (one GPU of it)
    python: str = "python3"

    @property
    def mode(self) -> str:
        return "local" if self.ssh is None else "ssh"


@frozen
class LocalSettings:
    name: str


@frozen
class MithrilSettings:
    """Mithril's GPU cloud. The API key is never shown (repr, logs, errors)."""

    name: str
    api_key: str = field(default="", repr=False)
    project: str | None = None  # a name or a proj_ fid; None: the account's only project
    region: str | None = None  # None: chosen by availability and price
    api_url: str = MITHRIL_API_URL
    ssh_key_file: str | None = None  # the private key flowd logs in to instances with
    ssh_keys: tuple[str, ...] = ()  # names or sshkey_ fids of keys to put on instances
    ssh_user: str = "ubuntu"
    known_hosts: str | None = None  # None: instances' keys are learnt on first use
    host_key_checking: bool = True
    poll_interval: float = 2.0


@frozen
class Toleration:
    """A pod toleration, as Kubernetes spells it (operator Equal or Exists)."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


@frozen
class NodePath:
    """A directory of every node mounted into every task's pods (a shared file system the nodes
    mount, e.g. /mnt/shared), at the same path unless `target` says otherwise."""

    source: str
    target: str


@frozen
class KubernetesSettings:
    """A Kubernetes cluster: Jobs in one namespace, through the user's kubeconfig."""

    name: str
    kubeconfig: str | None = None  # None: $KUBECONFIG, else ~/.kube/config
    context: str | None = None  # None: the kubeconfig's current context
    namespace: str | None = None  # None: the context's namespace, else "default"
    image: str = DEFAULT_KUBE_IMAGE  # tasks without image= run in this one
    image_pull_policy: str = "IfNotPresent"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product_label: str = "nvidia.com/gpu.product"  # GPU feature discovery's node label
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    queue: str | None = None  # a Kueue LocalQueue: Jobs are created suspended and admitted by Kueue
    storage_class: str | None = None  # for volumes (PersistentVolumeClaims); None: the cluster's default
    node_paths: tuple[NodePath, ...] = ()
    pod_annotations: tuple[tuple[str, str], ...] = ()  # e.g. sidecar.istio.io/inject: "false"


@frozen
class UnusableSettings:
    """A provider whose settings are wrong (a malformed key, an unknown setting): flowd keeps
    serving every other provider and reports this one, by name, with `error` (every problem,
    each with its field and a fix), instead of refusing to start."""

    name: str
    kind: str
    error: DomainError


ProviderSettings = LocalSettings | SlurmSettings | MithrilSettings | KubernetesSettings | UnusableSettings


@frozen
class DaemonConfig:
    default_provider: str = LOCAL
    providers: tuple[ProviderSettings, ...] = ()


def _unknown(path: str, key: object, known: tuple[str, ...]) -> FieldViolation:
    name = key if isinstance(key, str) else repr(key)
    close = difflib.get_close_matches(name, list(known), n=1) if isinstance(key, str) else []
    fix = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return violation(f"{path}.{name}" if path else name, key, "is not a known setting", fix)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class _Reader:
    """Reads typed settings out of one mapping, collecting every problem."""

    def __init__(self, data: Mapping[str, object], path: str, out: list[FieldViolation]) -> None:
        self.data = data
        self.path = path
        self.out = out

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def text(self, key: str, pattern: re.Pattern[str] | None, fix: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.out.append(violation(self.at(key), value, f"must be a string, not {type(value).__name__}", fix))
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.out.append(violation(self.at(key), value, "is not valid here", fix))
            return None
        return value

    def path_value(self, key: str, *, plain: bool, local_file: bool) -> str | None:
        """An absolute path (or ~/... for files on this machine); `plain` ones are used in
        #SBATCH lines and scripts, so they must not hold characters those would misread."""
        what = "a file on this machine" if local_file else "a path on the cluster"
        fix = f"give {what} as an absolute path, e.g. /home/you/flow"
        if plain:
            fix += " (letters, digits and / . _ - + @ , : = ~ only)"
        value = self.text(key, None, fix)
        if value is None:
            return None
        starts = ("/", "~/") if local_file else ("/",)
        if not value.startswith(starts):
            self.out.append(violation(self.at(key), value, "must be an absolute path", fix))
        elif "\x00" in value or "\n" in value or "\r" in value:
            self.out.append(violation(self.at(key), value, "contains a line break or NUL byte", fix))
        elif any(part == ".." for part in value.split("/")):
            self.out.append(violation(self.at(key), value, "must not contain '..'", fix))
        elif plain and not PLAIN_PATH.fullmatch(value):
            self.out.append(violation(self.at(key), value, "contains characters Slurm scripts would misread", fix))
        else:
            return value.rstrip("/") or "/"
        return None

    def number(self, key: str, least: float, most: float, default: float, fix: str) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.out.append(violation(self.at(key), value, "must be a number", fix))
            return default
        if not least <= value <= most:
            self.out.append(violation(self.at(key), value, f"must be between {least:g} and {most:g}", fix))
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.out.append(violation(self.at(key), value, "must be true or false", f"write {key}: true"))
            return default
        return value


def _slurm(name: str, data: Mapping[str, object], path: str, out: list[FieldViolation]) -> SlurmSettings:
    read = _Reader(data, path, out)
    mode = data.get("mode", "local")
    if mode not in MODES:
        fix = "use mode: local (Flow runs on the login node) or mode: ssh (Flow reaches it over SSH)"
        out.append(violation(read.at("mode"), mode, "is not a mode", fix))
        mode = "local"
    ssh: SshSettings | None = None
    if mode == "ssh":
        host = read.text("host", HOST, "give the login node's host name or address, e.g. login.example.org")
        if "host" not in data:
            out.append(
                violation(
                    read.at("host"),
                    None,
                    "is required in mode: ssh",
                    "give the login node, e.g. host: login.example.org",
                )
            )
        port = data.get("port", 22)
        if not _is_int(port) or not 1 <= port <= 65535:
            out.append(violation(read.at("port"), port, "is not a TCP port", "give a port from 1 to 65535, e.g. 22"))
            port = 22
        assert isinstance(port, int)
        ssh = SshSettings(
            host=host or "",
            port=port,
            user=read.text("user", USER, "give the user name on the cluster, e.g. alice"),
            key_file=read.path_value("key_file", plain=False, local_file=True),
            known_hosts=read.path_value("known_hosts", plain=False, local_file=True),
            host_key_checking=read.boolean("host_key_checking", True),
            connect_timeout=read.number("connect_timeout", 0.5, 300, DEFAULT_CONNECT_TIMEOUT, "give seconds, e.g. 10"),
        )
        if "work_dir" not in data:
            out.append(
                violation(
                    read.at("work_dir"),
                    None,
                    "is required in mode: ssh",
                    "give a directory on the cluster that its compute nodes see, e.g. work_dir: /home/alice/flow",
                )
            )
    else:
        for key in SSH_ONLY_KEYS:
            if key in data:
                fix = f"remove {key}, or set mode: ssh to reach the cluster over SSH"
                out.append(violation(read.at(key), data[key], "only applies in mode: ssh", fix))
    gpu = None
    gpu_type = read.text("gpu_type", None, 'give the model of the cluster\'s GPUs, e.g. "a100" or "a100-40gb"')
    if gpu_type is not None:
        parsed = parse_instance_type(gpu_type, field=read.at("gpu_type"))
        if isinstance(parsed, Failure):
            out.extend(parsed.failure().violations)
        elif parsed.unwrap().is_cpu or parsed.unwrap().count != 1:
            fix = 'name one GPU model without a count, e.g. "a100"; counts come from the cluster\'s GRES'
            out.append(violation(read.at("gpu_type"), gpu_type, "is not a single GPU model", fix))
        else:
            gpu = parsed.unwrap()
    slurm_name_fix = "give the name as Slurm knows it (letters, digits, _ . : + -)"
    return SlurmSettings(
        name=name,
        ssh=ssh,
        work_dir=read.path_value("work_dir", plain=True, local_file=False),
        partition=read.text("partition", SLURM_NAME, slurm_name_fix),
        account=read.text("account", SLURM_NAME, slurm_name_fix),
        qos=read.text("qos", SLURM_NAME, slurm_name_fix),
        slurm_conf=read.path_value("slurm_conf", plain=True, local_file=False),
        bin_dir=read.path_value("bin_dir", plain=True, local_file=False),
        poll_interval=read.number(
            "poll_interval",
            MIN_POLL_INTERVAL,
            MAX_POLL_INTERVAL,
            DEFAULT_POLL_INTERVAL,
            f"give seconds between status queries, from {MIN_POLL_INTERVAL:g} to {MAX_POLL_INTERVAL:g}, e.g. 1.0",
        ),
        gpu=gpu,
        python=read.text(
            "python",
            re.compile(r"[A-Za-z0-9_./+-]{1,255}"),
            "give the Python interpreter on the cluster, e.g. python3 or /opt/conda/bin/python",
        )
        or "python3",
    )


def _key_problem(value: object) -> str | None:
    if not isinstance(value, str) or not MITHRIL_KEY.fullmatch(value):
        return "is not a Mithril API key (fkey_ followed by at least 20 letters or digits)"
    return None


def mithril_settings(name: str, data: Mapping[str, object], path: str, out: list[FieldViolation]) -> MithrilSettings:
    """A Mithril provider's settings (from the config file, or the MITHRIL_* variables mapped to
    the same keys); the key's value never appears in a violation."""
    read = _Reader(data, path, out)
    key = data.get("api_key")
    if key is None:
        key = ""  # MITHRIL_API_KEY may give it; without one the provider is unusable (and says so)
    elif (problem := _key_problem(key)) is not None:
        fix = "copy the whole key from the Mithril console; it starts with fkey_"
        out.append(violation(read.at("api_key"), "<hidden>", problem, fix))
        key = ""
    assert isinstance(key, str)
    api_url = read.text(
        "api_url", re.compile(r"https?://[A-Za-z0-9_.:\[\]/-]{1,300}"), "give a URL, e.g. https://api.mithril.ai"
    )
    ssh_keys = data.get("ssh_keys", ())
    if isinstance(ssh_keys, str):
        ssh_keys = tuple(k.strip() for k in ssh_keys.split(",") if k.strip())
    if not isinstance(ssh_keys, (list, tuple)) or not all(isinstance(k, str) and k for k in ssh_keys):
        out.append(violation(read.at("ssh_keys"), ssh_keys, "must be a list of key names", "e.g. ssh_keys: [my-key]"))
        ssh_keys = ()
    name_fix = "give a name of letters, digits, _ . -"
    return MithrilSettings(
        name=name,
        api_key=key,
        project=read.text("project", re.compile(r"[A-Za-z0-9_.-][A-Za-z0-9 _.-]{0,127}"), name_fix),
        region=read.text("region", re.compile(r"[a-z0-9-]{1,64}"), "give a region, e.g. us-central1-b"),
        api_url=(api_url or MITHRIL_API_URL).rstrip("/"),
        ssh_key_file=read.path_value("ssh_key_file", plain=False, local_file=True),
        ssh_keys=tuple(str(k) for k in ssh_keys),
        ssh_user=read.text("ssh_user", USER, "give the user instances log in as, e.g. ubuntu") or "ubuntu",
        known_hosts=read.path_value("known_hosts", plain=False, local_file=True),
        host_key_checking=read.boolean("host_key_checking", True),
        poll_interval=read.number(
            "poll_interval", MIN_POLL_INTERVAL, MAX_POLL_INTERVAL, 2.0, "give seconds between status queries, e.g. 2"
        ),
    )


def mithril_from_env(env: Mapping[str, str], name: str = "mithril") -> Result[MithrilSettings | None, DomainError]:
    """The Mithril provider the MITHRIL_* variables configure (None without MITHRIL_API_KEY)."""
    if not env.get("MITHRIL_API_KEY"):
        return Success(None)
    data: dict[str, object] = {}
    for variable, key in MITHRIL_ENV.items():
        if env.get(variable) and key not in data:
            data[key] = env[variable]
    out: list[FieldViolation] = []
    settings = mithril_settings(name, data, "environment", out)
    if out:
        return Failure(validation_error(out, subject="Mithril settings"))
    return Success(settings)


def _annotations(read: _Reader) -> tuple[tuple[str, str], ...]:
    value = read.data.get("pod_annotations")
    if value is None:
        return ()
    fix = 'give annotations as key: "value" pairs, e.g. pod_annotations: {sidecar.istio.io/inject: "false"}'
    if not isinstance(value, Mapping):
        read.out.append(violation(read.at("pod_annotations"), value, "must be a mapping", fix))
        return ()
    found: list[tuple[str, str]] = []
    for k, v in value.items():
        if not isinstance(k, str) or not LABEL_KEY.fullmatch(k):
            read.out.append(violation(f"{read.at('pod_annotations')}.{k}", k, "is not an annotation key", fix))
        elif not isinstance(v, str):
            read.out.append(violation(f"{read.at('pod_annotations')}.{k}", v, "must be a string", fix))
        else:
            found.append((k, v))
    return tuple(found)


def _label_map(read: _Reader, key: str) -> tuple[tuple[str, str], ...]:
    value = read.data.get(key)
    if value is None:
        return ()
    fix = f"give {key} as label: value pairs, e.g. {key}: {{nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}}"
    if not isinstance(value, Mapping):
        read.out.append(violation(read.at(key), value, "must be a mapping of labels to values", fix))
        return ()
    found: list[tuple[str, str]] = []
    for k, v in value.items():
        if not isinstance(k, str) or not LABEL_KEY.fullmatch(k):
            read.out.append(violation(f"{read.at(key)}.{k}", k, "is not a Kubernetes label key", fix))
        elif not isinstance(v, str) or not LABEL_VALUE.fullmatch(v):
            read.out.append(violation(f"{read.at(key)}.{k}", v, "is not a Kubernetes label value", fix))
        else:
            found.append((k, v))
    return tuple(found)


def _tolerations(read: _Reader) -> tuple[Toleration, ...]:
    value = read.data.get("tolerations")
    if value is None:
        return ()
    fix = "give a list such as [{key: kwok.x-k8s.io/node, operator: Equal, value: fake, effect: NoSchedule}]"
    if not isinstance(value, list):
        read.out.append(violation(read.at("tolerations"), value, "must be a list of tolerations", fix))
        return ()
    found: list[Toleration] = []
    for i, item in enumerate(value):
        at = f"{read.at('tolerations')}[{i}]"
        if not isinstance(item, Mapping) or not all(isinstance(v, str) for v in item.values()):
            read.out.append(violation(at, item, "must be a mapping of strings", fix))
            continue
        read.out.extend(_unknown(at, k, TOLERATION_KEYS[:4]) for k in item if k not in TOLERATION_KEYS[:4])
        operator = item.get("operator", "Equal")
        if operator not in ("Equal", "Exists"):
            read.out.append(violation(f"{at}.operator", operator, "is not Equal or Exists", fix))
        effect = item.get("effect", "")
        if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            read.out.append(violation(f"{at}.effect", effect, "is not a taint effect", "use NoSchedule or NoExecute"))
        key = item.get("key", "")
        if key and not LABEL_KEY.fullmatch(key):
            read.out.append(violation(f"{at}.key", key, "is not a taint key", fix))
        found.append(Toleration(key=key, operator=operator, value=item.get("value", ""), effect=effect))
    return tuple(found)


def _node_paths(read: _Reader) -> tuple[NodePath, ...]:
    value = read.data.get("node_paths")
    if value is None:
        return ()
    fix = 'give a list of node directories, e.g. ["/mnt/shared", "/data:/data"] (node path[:path in the pod])'
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        read.out.append(violation(read.at("node_paths"), value, "must be a list of paths", fix))
        return ()
    found: list[NodePath] = []
    for i, item in enumerate(value):
        source, _, target = item.partition(":")
        target = target or source
        if not all(p.startswith("/") and ".." not in p.split("/") and "\x00" not in p for p in (source, target)):
            read.out.append(violation(f"{read.at('node_paths')}[{i}]", item, "is not an absolute path", fix))
        else:
            found.append(NodePath(source=source.rstrip("/") or "/", target=target.rstrip("/") or "/"))
    return tuple(found)


def kubernetes_settings(
    name: str, data: Mapping[str, object], path: str, out: list[FieldViolation]
) -> KubernetesSettings:
    read = _Reader(data, path, out)
    policy = data.get("image_pull_policy", "IfNotPresent")
    if policy not in PULL_POLICIES:
        fix = f"use one of {', '.join(PULL_POLICIES)}"
        out.append(violation(read.at("image_pull_policy"), policy, "is not an image pull policy", fix))
        policy = "IfNotPresent"
    assert isinstance(policy, str)
    label_fix = "give a Kubernetes resource or label name, e.g. nvidia.com/gpu"
    return KubernetesSettings(
        name=name,
        kubeconfig=read.path_value("kubeconfig", plain=False, local_file=True),
        context=read.text("context", re.compile(r"[^\x00-\x1f]{1,253}"), "give a context of your kubeconfig"),
        namespace=read.text("namespace", NAMESPACE, "give a namespace name: lowercase letters, digits and -"),
        image=read.text("image", IMAGE_REF, "give an image reference, e.g. python:3.11-slim") or DEFAULT_KUBE_IMAGE,
        image_pull_policy=policy,
        gpu_resource=read.text("gpu_resource", LABEL_KEY, label_fix) or "nvidia.com/gpu",
        gpu_product_label=read.text("gpu_product_label", LABEL_KEY, label_fix) or "nvidia.com/gpu.product",
        node_selector=_label_map(read, "node_selector"),
        tolerations=_tolerations(read),
        queue=read.text("queue", LABEL_VALUE, "give the name of a Kueue LocalQueue in the namespace"),
        storage_class=read.text("storage_class", NAMESPACE, "give a StorageClass name, e.g. standard"),
        node_paths=_node_paths(read),
        pod_annotations=_annotations(read),
    )


def check_provider_name(name: str, field: str = "provider") -> Result[str, DomainError]:
    """A provider name given in a request: malformed is INVALID_ARGUMENT naming the field, as
    every malformed id is (whether such a provider exists is the caller's question)."""
    if PROVIDER_NAME.fullmatch(name):
        return Success(name)
    fix = "give a configured provider's name (letters, digits, '-' and '_'), or '' for the default"
    return Failure(validation_error([violation(field, name, "is not a provider name", fix)], subject="request"))


def _provider(name: object, data: object, out: list[FieldViolation]) -> ProviderSettings | None:
    if not isinstance(name, str) or not PROVIDER_NAME.fullmatch(name):
        fix = "name providers with letters, digits, '-' and '_', e.g. cluster"
        out.append(violation(f"providers.{name}", name, "is not a valid provider name", fix))
        return None
    path = f"providers.{name}"
    if not isinstance(data, Mapping):
        fix = "give the provider's settings as key: value pairs, starting with kind: slurm"
        out.append(violation(path, data, "must be a mapping", fix))
        return None
    kind = data.get("kind")
    if kind not in KINDS:
        fix = f"give kind: slurm (or kind: local); known kinds: {', '.join(KINDS)}"
        problem = "is required" if kind is None else "is not a provider kind"
        out.append(violation(f"{path}.kind", kind, problem, fix))
        return None
    if name == LOCAL and kind != LOCAL:
        fix = "the name 'local' is the embedded local provider; give this provider another name, e.g. cluster"
        out.append(violation(f"{path}.kind", kind, "cannot be used for the provider named 'local'", fix))
        return None
    if kind == LOCAL and name != LOCAL:
        fix = "there is one local provider (this machine, its GPUs shared by its tasks): name it 'local'"
        out.append(violation(f"{path}.kind", kind, "is the kind of the one provider named 'local'", fix))
        return None
    known = {LOCAL: ("kind",), "mithril": MITHRIL_KEYS, "kubernetes": KUBERNETES_KEYS}.get(kind, SLURM_KEYS)
    if kind == "mithril":  # its own problems make it unusable, not the whole file
        mine = [_unknown(path, key, known) for key in data if key not in known]
        found = mithril_settings(name, {k: v for k, v in data.items() if isinstance(k, str)}, path, mine)
        if mine:
            return UnusableSettings(name, "mithril", validation_error(mine, subject=f"settings of provider {name}"))
        return found
    out.extend(_unknown(path, key, known) for key in data if key not in known)
    if kind == LOCAL:
        return LocalSettings(name=name)
    if kind == "kubernetes":
        return kubernetes_settings(name, {k: v for k, v in data.items() if isinstance(k, str)}, path, out)
    return _slurm(name, {k: v for k, v in data.items() if isinstance(k, str)}, path, out)


def daemon_config_from_dict(data: object) -> Result[DaemonConfig, DomainError]:
    """The daemon's settings from the parsed config file, or every problem with it at once."""
    if data is None:
        return Success(DaemonConfig())
    out: list[FieldViolation] = []
    if not isinstance(data, Mapping):
        fix = "write the file as key: value pairs, e.g. providers: {cluster: {kind: slurm, ...}}"
        return Failure(validation_error([violation("config", data, "must be a mapping", fix)], subject=SUBJECT))
    out.extend(_unknown("", key, TOP_KEYS) for key in data if key not in TOP_KEYS)
    providers: list[ProviderSettings] = []
    raw = data.get("providers")
    if raw is not None and not isinstance(raw, Mapping):
        fix = "give providers as a mapping of names to settings, e.g. providers: {cluster: {kind: slurm}}"
        out.append(violation("providers", raw, "must be a mapping", fix))
    elif isinstance(raw, Mapping):
        for name, settings in raw.items():
            found = _provider(name, settings, out)
            if found is not None:
                providers.append(found)
    default = data.get("default_provider")
    names = [LOCAL, *(p.name for p in providers if p.name != LOCAL)]
    if default is not None and (not isinstance(default, str) or default not in names):
        close = difflib.get_close_matches(default, names, n=1) if isinstance(default, str) else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        fix = f"{hint}name a configured provider: {', '.join(names)}"
        out.append(violation("default_provider", default, "names no configured provider", fix))
    if out:
        return Failure(validation_error(out, subject=SUBJECT))
    return Success(DaemonConfig(default_provider=default or LOCAL, providers=tuple(providers)))
