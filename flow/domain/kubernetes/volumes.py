"""Flow's volumes on Kubernetes, planned as data: one PersistentVolumeClaim per volume.

    PVC  flow-vol-<name>-<hash>   labels flow.dev/provider=<provider>, flow.dev/volume=<the PVC's name>;
                                  annotations flow.dev/volume-name (the volume's exact name) and
                                  flow.dev/interface; storageClassName the provider's storage_class
                                  (none set: the cluster's default class)

The claim's name follows from the volume's name (lower-cased, '_' as '-', and a hash of the
provider's name and the exact name, so "Data" and "data" stay apart): two creates of one name
meet at the API server (409) instead of making two claims. The volume id is "vol-" and the
claim's uid (its first 12 hex digits): a claim deleted and made again under the same name is
another volume. Access modes: interface "file" is ReadWriteMany (any number of pods, on any
nodes), "block" ReadWriteOnce (the pods of one node; Flow lets one live task hold it,
flow.domain.volumes.rules). Sizes are requested in decimal gigabytes ("100G"), as Flow sizes
volumes.

A task's volumes become pod volumes naming the claim (persistentVolumeClaim.claimName), mounted at
the spec's mount_path in the task container. Who holds a claim is read from the provider's Jobs
that have not ended (`claim_holders`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from flow.domain.kubernetes.manifests import PROVIDER_LABEL, TASK_LABEL
from flow.domain.volumes.rules import GB, Volume

VOLUME_LABEL: Final = "flow.dev/volume"
NAME_ANNOTATION: Final = "flow.dev/volume-name"
INTERFACE_ANNOTATION: Final = "flow.dev/interface"
ACCESS_MODES: Final = {"file": "ReadWriteMany", "block": "ReadWriteOnce"}
ID_PREFIX: Final = "vol-"
_QUANTITY: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|m)?")
_FACTORS: Final = {
    None: 1,
    "m": 1e-3,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def claim_name(provider: str, volume_name: str) -> str:
    """A DNS label (at most 58 characters) for the claim of provider's volume named `volume_name`
    (two providers may share a namespace)."""
    safe = "".join(c if c.isascii() and c.isalnum() else "-" for c in volume_name.lower()).strip("-")[:40]
    digest = hashlib.sha256(f"{provider}/{volume_name}".encode()).hexdigest()[:8]
    return f"flow-vol-{safe}-{digest}" if safe else f"flow-vol-{digest}"


def claim_manifest(name: str, size_gb: int, interface: str, provider: str, storage_class: str | None) -> dict[str, Any]:
    claim = claim_name(provider, name)
    spec: dict[str, Any] = {
        "accessModes": [ACCESS_MODES.get(interface, "ReadWriteOnce")],
        "resources": {"requests": {"storage": f"{size_gb}G"}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
            "labels": {PROVIDER_LABEL: provider, VOLUME_LABEL: claim},
            "annotations": {NAME_ANNOTATION: name, INTERFACE_ANNOTATION: interface},
        },
        "spec": spec,
    }


def quantity_bytes(text: object) -> int | None:
    """A Kubernetes quantity ("100G", "5Gi", "1500M", "2e9" is not) in bytes, rounded up; None
    when it is not one."""
    if not isinstance(text, str):
        return None
    found = _QUANTITY.fullmatch(text.strip())
    if found is None:
        return None
    number, suffix = found.groups()
    return math.ceil(float(number) * _FACTORS[suffix])


def volume_id_of(uid: str) -> str:
    return ID_PREFIX + uid.replace("-", "")[:12]


def volume_of(claim: Mapping[str, Any], provider: str, region: str, created_at: float = 0.0) -> Volume | None:
    """The Flow volume a claim Flow made is; None for any other claim. `created_at`: the claim's
    creationTimestamp in seconds since the epoch (the shell reads it)."""
    meta, spec = claim.get("metadata") or {}, claim.get("spec") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    name, uid = annotations.get(NAME_ANNOTATION), meta.get("uid")
    if labels.get(PROVIDER_LABEL) != provider or not isinstance(name, str) or not isinstance(uid, str) or not uid:
        return None
    if meta.get("deletionTimestamp"):  # being deleted: gone as far as Flow is concerned
        return None
    size = quantity_bytes(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
    interface = annotations.get(INTERFACE_ANNOTATION)
    if interface not in ACCESS_MODES:
        interface = "file" if "ReadWriteMany" in (spec.get("accessModes") or []) else "block"
    return Volume(
        volume_id=volume_id_of(uid),
        name=name,
        size_gb=math.ceil(size / GB) if size else 0,
        interface=str(interface),
        region=region,
        provider=provider,
        created_at=created_at,
    )


def claims_of(pod_spec: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        str(v["persistentVolumeClaim"].get("claimName", ""))
        for v in pod_spec.get("volumes") or []
        if isinstance(v, Mapping) and isinstance(v.get("persistentVolumeClaim"), Mapping)
    )


def _ended(job: Mapping[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def claim_holders(jobs: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """claim name -> the task ids of the Jobs that name it and have not ended."""
    out: dict[str, list[str]] = {}
    for job in jobs:
        if _ended(job) or (job.get("metadata") or {}).get("deletionTimestamp"):
            continue
        task = ((job.get("metadata") or {}).get("labels") or {}).get(TASK_LABEL)
        template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        for claim in claims_of(template):
            if isinstance(task, str) and task not in out.setdefault(claim, []):
                out[claim].append(task)
    return {k: tuple(v) for k, v in out.items()}
