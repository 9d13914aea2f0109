"""The kubernetes provider's pure decisions: its settings, what nodes offer, the Job it plans, and
what pods say. (The provider itself runs against a real cluster in tests/k8s and tests/conformance.)"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from flow.domain.daemon_config import KubernetesSettings, Toleration, daemon_config_from_dict
from flow.domain.instances.instance_types import InstanceType, format_instance_type
from flow.domain.kubernetes.manifests import (
    CODE_IN_CONFIGMAP,
    CODE_STREAMED,
    PodPlan,
    escape,
    job_manifest,
    secret_manifest,
    service_manifest,
)
from flow.domain.kubernetes.nodes import gpu_of_product, node_facts, offers_of
from flow.domain.kubernetes.pods import Ending, pod_view, task_view
from flow.domain.task.config import TaskConfig

SETTINGS = KubernetesSettings(name="k8s", image="python:3.12")


def _expand(text: str) -> str:
    """What the kubelet makes of a value when no variable is defined: $$ is $, $(X) stays."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text) and text[i + 1] == "$":
            out.append("$")
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@given(st.text())
def test_escaped_values_reach_the_container_verbatim(value: str) -> None:
    assert _expand(escape(value)) == value
    assert not re.search(r"(?<!\$)\$\(", escape(value).replace("$$", ""))


def test_kubernetes_settings_read_every_key() -> None:
    parsed = daemon_config_from_dict(
        {
            "providers": {
                "k8s": {
                    "kind": "kubernetes",
                    "kubeconfig": "~/.kube/config",
                    "context": "prod",
                    "namespace": "ml",
                    "image": "nvcr.io/nvidia/pytorch:24.01-py3",
                    "image_pull_policy": "Always",
                    "gpu_resource": "nvidia.com/gpu",
                    "node_selector": {"pool": "gpu"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "queue": "team-a",
                    "node_paths": ["/mnt/shared", "/data:/inputs"],
                }
            }
        }
    )
    (k8s,) = parsed.unwrap().providers
    assert isinstance(k8s, KubernetesSettings)
    assert (k8s.context, k8s.namespace, k8s.queue, k8s.image_pull_policy) == ("prod", "ml", "team-a", "Always")
    assert k8s.tolerations == (Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),)
    assert [(p.source, p.target) for p in k8s.node_paths] == [("/mnt/shared", "/mnt/shared"), ("/data", "/inputs")]


def test_bad_kubernetes_settings_are_all_named_at_once() -> None:
    parsed = daemon_config_from_dict(
        {
            "providers": {
                "k8s": {
                    "kind": "kubernetes",
                    "namespace": "Not_A_Namespace",
                    "image_pull_policy": "Sometimes",
                    "tolerations": [{"key": "x", "operator": "Maybe"}],
                    "node_paths": ["relative/path"],
                    "contxt": "prod",
                }
            }
        }
    )
    assert isinstance(parsed, Failure)
    message = parsed.failure().message
    for field in ("namespace", "image_pull_policy", "tolerations[0].operator", "node_paths[0]", "contxt"):
        assert f"providers.k8s.{field}" in message, message
    assert "did you mean 'context'" in message


def test_gpu_models_are_read_from_feature_discovery_labels() -> None:
    def one(product: str, memory: int | None = None) -> str:
        found = gpu_of_product(product, memory)
        return format_instance_type(found) if found else "-"

    assert one("NVIDIA-A100-SXM4-80GB") == format_instance_type(InstanceType("a100", 80, "sxm", 1))
    assert one("NVIDIA-A100-PCIE-40GB") == format_instance_type(InstanceType("a100", 40, "pcie", 1))
    assert one("NVIDIA-H100-80GB-HBM3") == format_instance_type(InstanceType("h100", 80, "sxm", 1))
    assert one("Tesla-T4") == format_instance_type(InstanceType("t4", 16, "pcie", 1))
    assert one("NVIDIA-A100-SXM4", 40960) == format_instance_type(InstanceType("a100", 40, "sxm", 1))
    assert one("Some-Future-GPU") == "-"


def _node(name: str, gpus: int, product: str, taint: bool = False, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product, **labels}},
        "spec": {"taints": [{"key": "pool", "value": "fake", "effect": "NoSchedule"}]} if taint else {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"nvidia.com/gpu": str(gpus), "memory": "64Gi"},
        },
    }


def test_nodes_offer_one_to_all_their_gpus_and_tainted_ones_only_when_tolerated() -> None:
    nodes = [_node("a", 2, "NVIDIA-A100-SXM4-80GB"), _node("h", 8, "NVIDIA-H100-80GB-HBM3", taint=True)]
    facts = [f for n in nodes if (f := node_facts(n, SETTINGS, "prod")) is not None]
    offers = offers_of(facts, "k8s")
    assert sorted((o.offer.instance_type.model, o.gpus) for o in offers) == [("a100", 1), ("a100", 2), ("cpu", 0)]
    assert {o.offer.region for o in offers} == {"prod"}
    tolerant = KubernetesSettings(name="k8s", tolerations=(Toleration(key="pool", value="fake", effect="NoSchedule"),))
    facts = [f for n in nodes if (f := node_facts(n, tolerant, "prod")) is not None]
    assert max(o.gpus for o in offers_of(facts, "k8s")) == 8


def test_a_multi_node_job_is_indexed_and_its_nodes_find_rank_0_by_name() -> None:
    config = TaskConfig(command="python train.py", num_instances=2, max_run_time_hours=0.5, memory_mb=2048)
    plan = PodPlan(task_id="t-abc", task_name="train", config=config, image="img", gpus=4, gpu_product="NVIDIA-H100")
    job = job_manifest(plan, SETTINGS)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (
        "Indexed",
        2,
        2,
        0,
    )
    assert pod["subdomain"] == job["metadata"]["name"] == service_manifest("t-abc", "k8s")["metadata"]["name"]
    assert pod["shareProcessNamespace"] is True and pod["activeDeadlineSeconds"] >= 1800
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert (
        env["MASTER_ADDR"] == "flow-t-abc-0.flow-t-abc" and env["WORLD_SIZE"] == "2" and env["RANK"] == "$(NODE_RANK)"
    )
    assert "job-completion-index" in json.dumps(env["NODE_RANK"])
    assert pod["containers"][0]["resources"] == {
        "limits": {"nvidia.com/gpu": "4", "memory": "2048Mi"},
        "requests": {"memory": "2048Mi"},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100"}


def test_secret_values_are_only_in_the_secret() -> None:
    config = TaskConfig(command="train", secret_env=["TOKEN"])
    plan = PodPlan(task_id="t-s", task_name="s", config=config, image="img", secret_names=("TOKEN",))
    assert "canary-secret-value" not in json.dumps(job_manifest(plan, SETTINGS))
    assert "Y2FuYXJ5LXNlY3JldC12YWx1ZQ==" in json.dumps(secret_manifest("t-s", "k8s", {"TOKEN": "canary-secret-value"}))


def test_code_comes_from_the_configmap_or_waits_for_flowd_to_stream_it() -> None:
    config = TaskConfig(command="python train.py")
    small = job_manifest(
        PodPlan(task_id="t-c", task_name="c", config=config, image="img", code=CODE_IN_CONFIGMAP), SETTINGS
    )
    init = small["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"][:2] == ["tar", "-xzf"] and "annotations" not in small["spec"]["template"]["metadata"]
    assert any(v.get("configMap") for v in small["spec"]["template"]["spec"]["volumes"])
    large = job_manifest(
        PodPlan(task_id="t-c", task_name="c", config=config, image="img", code=CODE_STREAMED), SETTINGS
    )
    template = large["spec"]["template"]
    assert template["metadata"]["annotations"] == {"flow.dev/code": "streamed"}
    assert not any(v.get("configMap") for v in template["spec"]["volumes"])  # nothing to hold it
    init_state = {"name": "flow-code", "state": {"running": {}}}
    waiting = {**_pod(), "metadata": {**_pod()["metadata"], "annotations": template["metadata"]["annotations"]}}
    assert pod_view({**waiting, "status": {"initContainerStatuses": [init_state]}}).awaits_code
    unpacked = {"name": "flow-code", "state": {"terminated": {"exitCode": 0}}}
    assert not pod_view({**waiting, "status": {"initContainerStatuses": [unpacked]}}).awaits_code
    assert not pod_view({**_pod(), "status": {"initContainerStatuses": [init_state]}}).awaits_code


def _pod(node: int = 0, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p{node}", "annotations": {"batch.kubernetes.io/job-completion-index": str(node)}},
        "spec": {"containers": [{"name": "task", "image": "img:1"}]},
        "status": status,
    }


def _ended(code: int, reason: str = "Error", **status: Any) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "reason": reason, "startedAt": "2026-01-01T00:00:00Z"}}
    return {"containerStatuses": [{"name": "task", "state": state}], **status}


def test_what_pods_say_becomes_the_tasks_state() -> None:
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    waiting = task_view(
        1, [pod_view(_pod(conditions=[{**unschedulable, "message": "0/1 nodes: Insufficient nvidia.com/gpu"}]))]
    )
    assert (waiting.started, waiting.ended, waiting.pending_reason) == (
        False,
        None,
        "0/1 nodes: Insufficient nvidia.com/gpu",
    )
    oom = task_view(1, [pod_view(_pod(**_ended(137, "OOMKilled")))])
    assert (oom.ended, oom.exit_code) == (Ending.EXITED, 137) and oom.detail.startswith("OOMKilled")
    late = task_view(1, [pod_view(_pod(reason="DeadlineExceeded", phase="Failed", **_ended(137)))])
    assert late.ended is Ending.TIMED_OUT
    pull = {"name": "task", "image": "img:1", "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}
    missing = task_view(1, [pod_view(_pod(containerStatuses=[pull]))])
    assert missing.ended is Ending.COULD_NOT_START and "img:1" in missing.detail
    evicted = task_view(1, [pod_view(_pod(reason="Evicted", message="The node was low on memory.", phase="Failed"))])
    assert evicted.ended is Ending.PREEMPTED and "low on memory" in evicted.detail
    group = task_view(2, [pod_view(_pod(1, **_ended(3))), pod_view(_pod(0, **_ended(0)))])
    assert (group.ended, group.exit_code) == (Ending.EXITED, 3)
    half = task_view(2, [pod_view(_pod(0, **_ended(0)))])
    assert half.ended is None and half.started
