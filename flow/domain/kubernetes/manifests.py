"""A task as Kubernetes objects, planned as data (plain dicts the API takes as JSON).

    Job  flow-<task>           backoffLimit 0 (a task runs once); Indexed with N completions
                               for num_instances=N; the pod spec below
    Service  flow-<task>       (num_instances > 1) headless, publishNotReadyAddresses: every pod
                               is <job>-<index>.<service>, so MASTER_ADDR is <job>-0.<service>
    Secret  flow-<task>        secret_env values; the pod names them (secretKeyRef), never holds them
    ConfigMap  flow-<task>     the code snapshot (code.tar.gz) when it fits (MAX_FILES_BYTES) and,
                               for a function call, the runner and its invocation

Everything carries the labels flow.dev/task (the task id) and flow.dev/provider, so the provider
watches its pods with one selector and deletes what a task left with another.

The pod: shareProcessNamespace, so the task's program is not PID 1 (a shell or python as PID 1
ignores SIGTERM, and cancel would wait out the grace period); an init container unpacks the code
snapshot into the emptyDir /workspace (the code reaches the pod through the API server: no
registry, and the pod never reaches back to the user's machine): from the ConfigMap, or, for a
snapshot larger than a ConfigMap holds, from flowd, which execs UNPACK_STREAM in the waiting init
container with the archive on its stdin; the task container runs the
program in /workspace (or working_dir) with the GPUs as resource limits, the GPU model as a node
selector on GPU feature discovery's product label, memory_mb as the memory request and limit, and
max_run_time_hours as the pod's activeDeadlineSeconds (plus START_ALLOWANCE until the provider sees
the program start and sets it exactly: the pod's clock starts before the image and code are in).

A task's volumes are its PersistentVolumeClaims (flow.domain.kubernetes.volumes) mounted at their
mount paths; its s3:// data mounts are synced by a second init container (DATA_CONTAINER, the
task's image running flow.runtime.s3_sync from the ConfigMap, the credentials from the task's
Secret mounted only there) into emptyDirs the task container mounts read-only.

Kubernetes expands $(NAME) in env values, command and args; every user value is escaped ($$), so
it arrives verbatim.
"""

from __future__ import annotations

import base64
import math
import posixpath
from collections.abc import Mapping
from typing import Any, Final

from attrs import frozen

from flow.domain.daemon_config import KubernetesSettings
from flow.domain.kubernetes.output_end import DRAIN_WAIT_SECONDS, OUT_DIR, OUTPUT_IN, mark_format
from flow.domain.mithril.data_mounts import CREDENTIALS_FILE, SYNCER_FILE, DataMount
from flow.domain.task.config import TaskConfig, program_argv

TASK_LABEL: Final = "flow.dev/task"
PROVIDER_LABEL: Final = "flow.dev/provider"
NODE_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
CONTAINER: Final = "task"
CODE_CONTAINER: Final = "flow-code"
DATA_CONTAINER: Final = "flow-data"  # syncs the s3:// data mounts before the program starts
CREDENTIALS_DIR: Final = "/flow/credentials"  # the storage credentials, in the data container only
WORKSPACE: Final = "/workspace"
FILES_DIR: Final = "/flow/in"
CODE_ARCHIVE: Final = "code.tar.gz"
RUNNER: Final = "flow_runner.py"
INVOCATION: Final = "invocation.json"
RESULT: Final = f"{OUT_DIR}/result.json"
TERMINATION_LOG: Final = "/dev/termination-log"
MASTER_PORT: Final = 29500
START_ALLOWANCE: Final = 600  # seconds: see the module docstring
GRACE_SECONDS: Final = 10  # SIGTERM, then SIGKILL after this (cancel)
# What a ConfigMap can hold (1 MiB, base64 makes 4 bytes of 3), with room for the object itself.
MAX_FILES_BYTES: Final = 700 * 1024
CODE_IN_CONFIGMAP: Final = "configmap"
CODE_STREAMED: Final = "streamed"
CODE_ANNOTATION: Final = "flow.dev/code"  # on pods whose init container waits for a streamed snapshot
CODE_DELIVERED: Final = f"{WORKSPACE}/.flow-code-delivered"
# The init container of a streamed snapshot waits for flowd to exec this in it, the archive on stdin.
UNPACK_STREAM: Final = ("sh", "-c", f"tar -xzf - -C {WORKSPACE} && touch {CODE_DELIVERED}")


def job_name(task_id: str) -> str:
    """A DNS label from the task id (pod hostnames are <job>-<index>, at most 63 characters)."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in task_id.lower()).strip("-")
    return f"flow-{safe}"[:52].rstrip("-")


def escape(value: str) -> str:
    """A value Kubernetes passes verbatim: $(NAME) expansion undone by doubling every $."""
    return value.replace("$", "$$")


@frozen
class PodPlan:
    """What the provider decided for one task (the shell fills it in from the record)."""

    task_id: str
    task_name: str
    config: TaskConfig
    image: str
    gpus: int = 0  # per node
    gpu_product: str = ""  # the node label value to select ("" for CPU tasks)
    region_label: tuple[str, str] | None = None
    secret_names: tuple[str, ...] = ()
    code: str = ""  # how the code snapshot comes: "" none, CODE_IN_CONFIGMAP, CODE_STREAMED
    function_python: str | None = None  # a function call: the runner runs under this python
    claims: tuple[tuple[str, str], ...] = ()  # the task's volumes: (claim name, mount path)
    data_mounts: tuple[DataMount, ...] = ()  # s3:// sources: the task's Secret holds CREDENTIALS_FILE


def labels(task_id: str, provider: str) -> dict[str, str]:
    return {TASK_LABEL: task_id, PROVIDER_LABEL: provider}


# The program runs under this shell (output_end says why): its end marks follow the program's
# output, and the container ends once flowd has read them (or after DRAIN_WAIT_SECONDS; at once
# when it was stopped: a cancel or deadline does not wait). TERM and INT are passed on (the shell
# is the container's main process, the one the kubelet signals); the exit status is the program's;
# the shell's own messages (such as a signal's name when the program is killed by one) go
# nowhere, so the log holds only what the program wrote. A wait that a passed-on signal interrupts
# answers 128+N, not the program's status: the shell waits again (it keeps a job's status until a
# wait has answered it; 127 then means the interrupted wait already had). For a function call
# ($2: its result file) the runner's result is copied to the termination message, which the
# provider reads from the pod's status once the container has ended (the pod may be gone before
# anything could be fetched from it). The image needs a POSIX sh (it already does for the code).
WRAPPER: Final = (
    "t=$1; r=$2; shift 2; "
    "n=0; trap 'n=$((n+1)); kill -TERM \"$c\" 2>/dev/null' TERM; "
    "trap 'n=$((n+1)); kill -INT \"$c\" 2>/dev/null' INT; "
    'exec 3>&2; "$@" 3>&- & c=$!; exec 2>/dev/null; '
    'rc=; while :; do m=$n; wait "$c"; x=$?; '
    '[ "$x" = 127 ] && [ -n "$rc" ] && ! kill -0 "$c" 2>/dev/null && break; rc=$x; [ "$m" = "$n" ] && break; done; '
    f'if [ -n "$r" ] && [ -f "$r" ]; then cat "$r" > {TERMINATION_LOG}; fi; '
    f"printf '{mark_format()}' stdout \"$t\"; printf '{mark_format()}' stderr \"$t\" >&3; "
    f'i=0; while [ "$n" = 0 ] && [ ! -e {OUTPUT_IN} ] && [ "$i" -lt {DRAIN_WAIT_SECONDS * 10} ]; do '
    "sleep 0.1; i=$((i+1)); done; "
    'exit "$rc"'
)


def _argv(plan: PodPlan) -> list[str]:
    if plan.function_python is None:
        program, result = program_argv(plan.config), ""
    else:
        program = [plan.function_python, f"{FILES_DIR}/{RUNNER}", f"{FILES_DIR}/{INVOCATION}", RESULT]
        result = RESULT
    return ["sh", "-c", WRAPPER, "flow-task", plan.task_id, result, *program]


def workdir(config: TaskConfig) -> str:
    wanted = config.working_dir
    if not wanted:
        return WORKSPACE
    return posixpath.normpath(posixpath.join(WORKSPACE, wanted))


def _env(plan: PodPlan, name: str) -> list[dict[str, Any]]:
    cfg = plan.config
    env: list[dict[str, Any]] = [{"name": k, "value": escape(v)} for k, v in cfg.env.items()]
    env += [{"name": n, "valueFrom": {"secretKeyRef": {"name": name, "key": n}}} for n in plan.secret_names]
    env += [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "FLOW_TASK_ID", "value": escape(plan.task_id)},
        {"name": "FLOW_TASK_NAME", "value": escape(plan.task_name)},
    ]
    n = cfg.num_instances
    if n > 1:
        index = {"fieldRef": {"fieldPath": f"metadata.annotations['{NODE_INDEX_ANNOTATION}']"}}
        env += [{"name": "NODE_RANK", "valueFrom": index}]
        env += [{"name": k, "value": "$(NODE_RANK)"} for k in ("RANK", "GROUP_RANK", "FLOW_NODE_RANK")]
        master = f"{name}-0.{name}"
    else:
        env += [{"name": k, "value": "0"} for k in ("NODE_RANK", "RANK", "GROUP_RANK", "FLOW_NODE_RANK")]
        master = "127.0.0.1"
    env += [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "NNODES", "value": str(n)},
        {"name": "NUM_NODES", "value": str(n)},
        {"name": "WORLD_SIZE", "value": str(n)},
        {"name": "FLOW_NUM_NODES", "value": str(n)},
        {"name": "LOCAL_RANK", "value": "0"},
        {"name": "LOCAL_WORLD_SIZE", "value": "1"},
    ]
    return env


def deadline_seconds(config: TaskConfig) -> int | None:
    hours = config.max_run_time_hours
    if not hours:
        return None
    return max(1, math.ceil(float(hours) * 3600))


def pod_spec(plan: PodPlan, settings: KubernetesSettings) -> dict[str, Any]:
    name = job_name(plan.task_id)
    cfg = plan.config
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if plan.gpus:
        limits[settings.gpu_resource] = str(plan.gpus)
    if cfg.memory_mb:
        limits["memory"] = requests["memory"] = f"{cfg.memory_mb}Mi"
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE}]
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    files_mount = {"name": "flow-files", "mountPath": FILES_DIR, "readOnly": True}
    if plan.code == CODE_IN_CONFIGMAP or plan.function_python is not None or plan.data_mounts:
        volumes.append({"name": "flow-files", "configMap": {"name": name}})
        mounts.append(files_mount)
    volumes.append({"name": "flow-out", "emptyDir": {}})  # result.json, OUTPUT_IN
    mounts.append({"name": "flow-out", "mountPath": OUT_DIR})
    for i, path in enumerate(settings.node_paths):
        volumes.append({"name": f"node-path-{i}", "hostPath": {"path": path.source, "type": "Directory"}})
        mounts.append({"name": f"node-path-{i}", "mountPath": path.target})
    data_mounts = []
    for i, data in enumerate(plan.data_mounts):  # filled by the data container, read-only for the task
        volumes.append({"name": f"data-{i}", "emptyDir": {}})
        mounts.append({"name": f"data-{i}", "mountPath": data.target, "readOnly": True})
        data_mounts.append({"name": f"data-{i}", "mountPath": data.target})
    for i, (claim, mount_path) in enumerate(plan.claims):  # mountPath is not $(VAR)-expanded: as given
        volumes.append({"name": f"volume-{i}", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"volume-{i}", "mountPath": mount_path})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": plan.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [escape(a) for a in _argv(plan)],
        "workingDir": escape(workdir(cfg)),
        "env": _env(plan, name),
        "volumeMounts": mounts,
        "resources": {"limits": limits, "requests": requests} if limits or requests else {},
        "terminationMessagePolicy": "File",
    }
    selector = dict(settings.node_selector)
    if plan.gpu_product:
        selector[settings.gpu_product_label] = plan.gpu_product
    if plan.region_label is not None:
        selector[plan.region_label[0]] = plan.region_label[1]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "shareProcessNamespace": True,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
    }
    if plan.code:
        if plan.code == CODE_IN_CONFIGMAP:
            unpack = ["tar", "-xzf", f"{FILES_DIR}/{CODE_ARCHIVE}", "-C", WORKSPACE]
        else:
            wait = f"until [ -e {CODE_DELIVERED} ]; do sleep 0.1; done; rm -f {CODE_DELIVERED}"
            unpack = ["sh", "-c", wait]
        spec["initContainers"] = [
            {
                "name": CODE_CONTAINER,
                "image": plan.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": unpack,
                "volumeMounts": mounts,
            }
        ]
    if plan.data_mounts:
        volumes.append(
            {
                "name": "flow-credentials",
                "secret": {"secretName": name, "items": [{"key": CREDENTIALS_FILE, "path": CREDENTIALS_FILE}]},
            }
        )
        pairs = [part for data in plan.data_mounts for part in (data.source, data.target)]
        sync = ["python3", f"{FILES_DIR}/{SYNCER_FILE}", f"{CREDENTIALS_DIR}/{CREDENTIALS_FILE}", *pairs]
        credentials = {"name": "flow-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}
        spec.setdefault("initContainers", []).append(
            {
                "name": DATA_CONTAINER,
                "image": plan.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": [escape(a) for a in sync],
                "volumeMounts": [files_mount, credentials, *data_mounts],
                "terminationMessagePolicy": "FallbackToLogsOnError",  # its one line naming the source
            }
        )
    if selector:
        spec["nodeSelector"] = selector
    if settings.tolerations:
        spec["tolerations"] = [
            {k: v for k, v in (("key", t.key), ("operator", t.operator), ("value", t.value), ("effect", t.effect)) if v}
            for t in settings.tolerations
        ]
    deadline = deadline_seconds(cfg)
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline + START_ALLOWANCE
    if cfg.num_instances > 1:
        spec["subdomain"] = name
    return spec


def job_manifest(plan: PodPlan, settings: KubernetesSettings) -> dict[str, Any]:
    name = job_name(plan.task_id)
    tags = labels(plan.task_id, settings.name)
    job_labels = dict(tags)
    if settings.queue:
        job_labels[QUEUE_LABEL] = settings.queue
    n = plan.config.num_instances
    pod_meta: dict[str, Any] = {"labels": tags}
    annotations = dict(settings.pod_annotations)
    if plan.code == CODE_STREAMED:
        annotations[CODE_ANNOTATION] = CODE_STREAMED
    if annotations:
        pod_meta["annotations"] = annotations
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "completions": n,
        "parallelism": n,
        "template": {"metadata": pod_meta, "spec": pod_spec(plan, settings)},
    }
    if n > 1:
        spec["completionMode"] = "Indexed"
    if settings.queue:
        spec["suspend"] = True  # Kueue admits it
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": job_labels, "annotations": {"flow.dev/task-name": plan.task_name[:200]}},
        "spec": spec,
    }


def service_manifest(task_id: str, provider: str) -> dict[str, Any]:
    name = job_name(task_id)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels(task_id, provider)},
        "spec": {
            "clusterIP": "None",
            "selector": {TASK_LABEL: task_id},
            "publishNotReadyAddresses": True,  # names resolve while the pods start
        },
    }


def secret_manifest(task_id: str, provider: str, secrets: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": job_name(task_id), "labels": labels(task_id, provider)},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in secrets.items()},
    }


def files_manifest(task_id: str, provider: str, files: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": job_name(task_id), "labels": labels(task_id, provider)},
        "binaryData": {k: base64.b64encode(v).decode() for k, v in files.items()},
    }
