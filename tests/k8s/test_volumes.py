"""Volumes on the kubernetes provider, on the real test cluster, through a real flowd and the SDK:
a VolumeSpec is a PersistentVolumeClaim in the provider's storage class, its data outlives the task
that wrote it, a claim a live task mounts is not deleted, and a claim nothing can bind leaves the
task PENDING with a reason naming it. s3:// data mounts are synced by an init container before the
program starts (from a real S3-compatible server the pods reach on the node's address).

The test cluster has no storage provisioner: each test module gives its provider a storage class
of its own and makes, as the administrator, a static hostPath PersistentVolume of that class for
the claim to bind (what a provisioner does on a real cluster)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conformance.setups import kubernetes_yaml

from conftest import REPO, Daemon, _cleanup, short_tmpdir, wait_until
from flow import Flow, MountSpec, TaskStatus, VolumeSpec, errors
from k8s.fixtures import Cluster

GATE = "while [ ! -e /tmp/go ]; do sleep 0.1; done"
NO_CODE = {"upload_code": False}


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"namespace": f"flow-v-{tag}", "class": f"flow-test-{tag}", "unbindable": f"flow-none-{tag}", "tag": tag}


@pytest.fixture(scope="module")
def namespace(k8s_cluster: Cluster, names: dict[str, str]) -> Iterator[str]:
    c, name = k8s_cluster, names["namespace"]
    c.kubectl("create", "namespace", name)
    c.kubectl("-n", name, "wait", "--for=create", "serviceaccount/default", "--timeout=60s", timeout=90)
    yield name
    c.kubectl("delete", "namespace", name, "--wait=false", check=False)
    c.kubectl("delete", "pv", "-l", f"flow-test={names['tag']}", "--wait=false", check=False)


@pytest.fixture(scope="module")
def daemon(k8s_cluster: Cluster, namespace: str, names: dict[str, str]) -> Iterator[Daemon]:
    d = Daemon(short_tmpdir("flow-kv-"))
    d.home.root.mkdir(parents=True, exist_ok=True)
    providers = kubernetes_yaml(k8s_cluster, namespace) + f"    storage_class: {names['class']}\n"
    providers += kubernetes_yaml(k8s_cluster, namespace, name="nopv") + f"    storage_class: {names['unbindable']}\n"
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


def _persistent_volume(c: Cluster, names: dict[str, str], gigabytes: int) -> str:
    """A hostPath PersistentVolume of the provider's class, as a provisioner would make."""
    name = f"flow-pv-{uuid.uuid4().hex[:8]}"
    c.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"flow-test": names["tag"]}},
            "spec": {
                "capacity": {"storage": f"{gigabytes}Gi"},
                "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                "storageClassName": names["class"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": f"/tmp/{name}", "type": "DirectoryOrCreate"},
            },
        },
        "default",
        admin=True,
    )
    return name


def _claims(c: Cluster, ns: str) -> list[str]:
    return c.kubectl("-n", ns, "get", "pvc", "-o", "name").stdout.split()


def test_a_volume_keeps_its_data_across_tasks_and_is_not_deleted_while_a_task_holds_it(
    flow: Flow, k8s_cluster: Cluster, namespace: str, names: dict[str, str]
) -> None:
    c = k8s_cluster
    _persistent_volume(c, names, 2)
    spec = VolumeSpec(name="data", size_gb=1, interface="file", mount_path="/data")
    writer = flow.run("echo written > /data/x", volumes=[spec], **NO_CODE)
    assert writer.wait(timeout=180).last_status is TaskStatus.COMPLETED, writer.logs()

    (volume,) = [v for v in flow.list_volumes() if v.provider == "k8s"]
    assert (volume.name, volume.size_gb, volume.interface) == ("data", 1, "file")
    (claim,) = _claims(c, namespace)
    pvc = c.get("pvc", claim.split("/")[1], namespace)
    assert pvc["spec"]["storageClassName"] == names["class"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["labels"]["flow.dev/provider"] == "k8s"

    # Another task, the same volume by name: the data is there.
    reader = flow.run("cat /data/x", volumes=[VolumeSpec(name="data", mount_path="/data")], **NO_CODE)
    assert reader.wait(timeout=180).last_status is TaskStatus.COMPLETED
    assert reader.logs() == "written\n"

    holder = flow.run(GATE, volumes=[VolumeSpec(volume_id=volume.volume_id, mount_path="/mnt/v")], **NO_CODE)
    try:
        wait_until(lambda: flow.get_task(holder.task_id).status is TaskStatus.RUNNING, 180, 0.2)
        with pytest.raises(errors.VolumeError) as in_use:
            flow.delete_volume(volume.volume_id)
        assert holder.task_id in in_use.value.message and "intact" in in_use.value.message
        listed = next(v for v in flow.list_volumes() if v.volume_id == volume.volume_id)
        assert listed.attachments == (holder.task_id,)
        assert _claims(c, namespace) == [claim]
    finally:
        holder.cancel()
    holder.wait(timeout=120)
    wait_until(lambda: not next(v for v in flow.list_volumes() if v.volume_id == volume.volume_id).attachments, 60)
    assert flow.delete_volume(volume.volume_id)
    wait_until(lambda: _claims(c, namespace) == [], 60, 0.2)
    assert all(v.volume_id != volume.volume_id for v in flow.list_volumes())
    with pytest.raises(errors.ResourceNotFoundError):
        flow.delete_volume(volume.volume_id)


def test_a_claim_nothing_binds_leaves_the_task_pending_naming_the_claim(daemon: Daemon, namespace: str) -> None:
    nopv: Flow = daemon.client(provider="nopv")  # type: ignore[assignment]
    try:
        task = nopv.run("true", volumes=[VolumeSpec(name="unbound", size_gb=1)], **NO_CODE)
        try:
            wait_until(lambda: "flow-vol-unbound-" in nopv.get_task(task.task_id).state_reason, 120, 0.2)
            seen = nopv.get_task(task.task_id)
            assert seen.status is TaskStatus.PENDING, seen.state_reason
            assert "PersistentVolumeClaim" in seen.state_reason
        finally:
            task.cancel()
        task.wait(timeout=120)
        (volume,) = [v for v in nopv.list_volumes() if v.provider == "nopv"]
        wait_until(lambda: not next(v for v in nopv.list_volumes() if v.name == "unbound").attachments, 60)
        assert nopv.delete_volume(volume.volume_id)
    finally:
        nopv.close()


def test_bad_volumes_and_data_mounts_are_refused_at_submit_naming_the_field(flow: Flow, namespace: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "zero", "size_gb": 0}, "size_gb"),  # refused by the SDK as the spec is made
        ({"name": "bad name!", "size_gb": 1}, "name"),
        ({"name": "fast", "size_gb": 1, "iops": 3000}, "volumes[0].iops"),  # by the provider
    ]
    for fields, field in cases:
        with pytest.raises(errors.ValidationError) as bad:
            flow.run("true", volumes=[VolumeSpec(**fields)], **NO_CODE)
        assert field in [v.field for v in bad.value.violations], bad.value
    with pytest.raises(errors.ValidationError) as zero:
        flow.create_volume(size_gb=0, name="zero")
    assert [v.field for v in zero.value.violations] == ["size_gb"]
    with pytest.raises(errors.ResourceNotFoundError):
        flow.run("true", volumes=[VolumeSpec(name="never-made")], **NO_CODE)
    with pytest.raises(errors.ValidationError) as mounts:
        flow.run("true", data_mounts=[MountSpec(source="/srv/train", target="/train")], **NO_CODE)
    assert [v.field for v in mounts.value.violations] == ["data_mounts[0].source"]
    assert not [v for v in flow.list_volumes() if v.provider == "k8s"]


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAFLOWTESTKEY00001",
    "AWS_SECRET_ACCESS_KEY": "flow-test-secret-do-not-log-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def node_s3(k8s_cluster: Cluster) -> Iterator[str]:
    """tools/s3-server listening on the node's address, which the pods reach."""
    node = k8s_cluster.get("node", k8s_cluster.node, "default")
    address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    where = short_tmpdir("flow-ks3-")
    server = [sys.executable, str(REPO / "tools" / "s3-server")]
    started = subprocess.run([*server, "start", str(where), address], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([*server, "stop", str(where)], check=False, timeout=60)
        shutil.rmtree(where, ignore_errors=True)


def test_s3_data_mounts_are_synced_read_only_by_an_init_container(
    k8s_cluster: Cluster, namespace: str, node_s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    s3: Any = boto3.session.Session(
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=node_s3)
    bucket = f"k8s-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="train/a.txt", Body=b"alpha\n")
    s3.put_object(Bucket=bucket, Key="train/sub/b.txt", Body=b"beta\n")
    s3.put_object(Bucket=bucket, Key="other/c.txt", Body=b"not mine\n")
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": node_s3}.items():
        monkeypatch.setenv(name, value)
    d = Daemon(short_tmpdir("flow-kd-"))
    d.home.root.mkdir(parents=True, exist_ok=True)
    d.home.config.write_text("providers:\n" + kubernetes_yaml(k8s_cluster, namespace))
    d.home.config.chmod(0o600)
    d.start()
    try:
        flow: Any = d.client(provider="k8s")
        t = "/data/train"
        command = (
            f"cat {t}/a.txt {t}/sub/b.txt; find {t} -type f | sort; "
            f"if touch {t}/new 2>/dev/null; then echo writable; else echo read-only; fi"
        )
        task = flow.run(command, data_mounts=[MountSpec(source=f"s3://{bucket}/train", target=t)], **NO_CODE)
        final = task.wait(timeout=180)
        assert final.last_status is TaskStatus.COMPLETED, (final.state_reason, task.logs())
        assert task.logs() == f"alpha\nbeta\n{t}/a.txt\n{t}/sub/b.txt\nread-only\n"

        missing = flow.run(
            "echo must-not-run", data_mounts=[MountSpec(source="s3://no-such-bucket-flow/x", target=t)], **NO_CODE
        )
        failed = missing.wait(timeout=180)
        assert failed.last_status is TaskStatus.FAILED
        seen = flow.get_task(missing.task_id)
        assert "s3://no-such-bucket-flow/x" in seen.state_reason and "must-not-run" not in missing.logs()
        shown = (d.home.root / "flowd.log").read_text() + task.logs() + repr(seen.to_dict()) + seen.state_reason
        assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in shown and S3_ENV["AWS_ACCESS_KEY_ID"] not in shown
        flow.close()
    finally:
        _cleanup(d)
