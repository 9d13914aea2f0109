"""Flow's volumes on Kubernetes as data: the claim a volume becomes, the volume a claim is, a
task's claims in its pod, who holds a claim, and the pending reason that names them. (The provider
runs them against a real cluster in tests/k8s/test_volumes.py.)"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flow.domain.daemon_config import KubernetesSettings
from flow.domain.kubernetes.manifests import PodPlan, escape, job_manifest
from flow.domain.kubernetes.pods import pod_view
from flow.domain.kubernetes.volumes import (
    claim_holders,
    claim_manifest,
    claim_name,
    quantity_bytes,
    volume_of,
)
from flow.domain.mithril.data_mounts import DataMount
from flow.domain.task.config import NAME_PATTERN, TaskConfig

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
names = st.from_regex(NAME_PATTERN, fullmatch=True)


def _made(manifest: dict[str, Any], uid: str = "0b8e51c2-4f7e-4b1a-9d0e-1234567890ab") -> dict[str, Any]:
    """What the API server answers for a created claim."""
    return {**manifest, "metadata": {**manifest["metadata"], "uid": uid, "creationTimestamp": "2026-01-01T00:00:00Z"}}


@given(names)
def test_a_claim_name_is_a_dns_label_that_tells_every_volume_name_apart(name: str) -> None:
    claim = claim_name("k8s", name)
    assert DNS_LABEL.fullmatch(claim) and len(claim) <= 63
    assert claim_name("k8s", name.swapcase()) != claim or name.swapcase() == name
    assert claim_name("k8s", name + "x") != claim
    assert claim_name("other", name) != claim


@given(names, st.integers(1, 100_000), st.sampled_from(["file", "block"]))
def test_a_volume_round_trips_through_its_claim(name: str, size: int, interface: str) -> None:
    manifest = claim_manifest(name, size, interface, "k8s", "fast")
    assert manifest["spec"]["storageClassName"] == "fast"
    assert manifest["spec"]["accessModes"] == [{"file": "ReadWriteMany", "block": "ReadWriteOnce"}[interface]]
    volume = volume_of(_made(manifest), "k8s", "ns", 5.0)
    assert volume is not None
    assert (volume.name, volume.size_gb, volume.interface, volume.provider, volume.created_at) == (
        name,
        size,
        interface,
        "k8s",
        5.0,
    )
    assert volume.volume_id == "vol-0b8e51c24f7e"


def test_no_storage_class_leaves_the_choice_to_the_cluster() -> None:
    assert "storageClassName" not in claim_manifest("data", 1, "file", "k8s", None)["spec"]


def test_claims_of_another_provider_or_not_flows_are_not_volumes() -> None:
    made = _made(claim_manifest("data", 1, "file", "k8s", None))
    assert volume_of(made, "other", "ns") is None
    foreign = {"metadata": {"name": "x", "uid": "u", "labels": {}}, "spec": {}}
    assert volume_of(foreign, "k8s", "ns") is None
    going = {**made, "metadata": {**made["metadata"], "deletionTimestamp": "2026-01-01T00:00:01Z"}}
    assert volume_of(going, "k8s", "ns") is None


@given(st.integers(0, 10**6), st.sampled_from(["", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"]))
def test_quantities_are_read_in_bytes(number: int, suffix: str) -> None:
    factor = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    factor["Ti"] = 2**40
    assert quantity_bytes(f"{number}{suffix}") == number * factor[suffix]


@given(st.text(max_size=20) | st.none() | st.integers())
def test_anything_else_is_no_quantity_rather_than_a_crash(text: object) -> None:
    got = quantity_bytes(text)
    assert got is None or got >= 0


def test_a_tasks_volumes_are_claims_mounted_in_its_container() -> None:
    plan = PodPlan(
        task_id="t-1",
        task_name="n",
        config=TaskConfig(command="true"),
        image="img",
        claims=(("flow-vol-data-1", "/data"), ("flow-vol-b-2", "/volumes/b")),
    )
    spec = job_manifest(plan, KubernetesSettings(name="k8s"))["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
    }
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert {claims[n]: mounts[n] for n in claims} == {"flow-vol-data-1": "/data", "flow-vol-b-2": "/volumes/b"}


def _job(task: str, claims: list[str], ended: str | None = None) -> dict[str, Any]:
    volumes = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]
    status = {"conditions": [{"type": ended, "status": "True"}]} if ended else {}
    return {
        "metadata": {"labels": {"flow.dev/task": task}},
        "spec": {"template": {"spec": {"volumes": [{"name": "w", "emptyDir": {}}, *volumes]}}},
        "status": status,
    }


def test_a_claim_is_held_by_the_jobs_that_have_not_ended() -> None:
    jobs = [
        _job("a", ["c1", "c2"]),
        _job("b", ["c1"]),
        _job("c", ["c2"], ended="Complete"),
        _job("d", ["c3"], "Failed"),
    ]
    assert claim_holders(jobs) == {"c1": ("a", "b"), "c2": ("a",)}


def test_a_pod_waiting_for_its_claims_names_them() -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "flow-vol-data-1"}}]},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "message": "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
                }
            ]
        },
    }
    assert "flow-vol-data-1" in pod_view(pod).pending_reason


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30))
def test_data_mounts_are_synced_by_an_init_container_and_read_only_for_the_task(key: str) -> None:
    source = f"s3://bucket/{key}"
    plan = PodPlan(
        task_id="t-1",
        task_name="n",
        config=TaskConfig(command="true"),
        image="img",
        data_mounts=(DataMount(source, "/data/train"),),
    )
    spec = job_manifest(plan, KubernetesSettings(name="k8s"))["spec"]["template"]["spec"]
    (sync,) = [c for c in spec["initContainers"] if c["name"] == "flow-data"]
    assert sync["command"][-2:] == [escape(source), "/data/train"]  # $(VAR) expansion undone
    task_mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert task_mounts["/data/train"]["readOnly"] is True
    sync_mounts = {m["mountPath"]: m for m in sync["volumeMounts"]}
    assert sync_mounts["/data/train"]["name"] == task_mounts["/data/train"]["name"]
    # The credentials come from the task's Secret, as a file only the sync container sees.
    (secret,) = [v for v in spec["volumes"] if "secret" in v]
    assert secret["secret"]["secretName"] == "flow-t-1"
    assert secret["name"] in {m["name"] for m in sync["volumeMounts"]}
    assert secret["name"] not in {m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert any(v.get("configMap") for v in spec["volumes"])  # the syncer comes in the ConfigMap


def test_a_failed_sync_is_a_start_error_naming_the_source() -> None:
    said = "synced s3://b/ok to /x: 1 file, 0.0 MB\ncould not read s3://b/missing: NoSuchBucket"
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Failed",
            "initContainerStatuses": [{"name": "flow-data", "state": {"terminated": {"exitCode": 1, "message": said}}}],
        },
    }
    assert pod_view(pod).start_error == "syncing the data mounts failed: could not read s3://b/missing: NoSuchBucket"
