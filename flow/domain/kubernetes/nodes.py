"""What a Kubernetes cluster offers, from its nodes: a pure function of the node objects.

A node offers 1..N GPUs of its model, where N is its allocatable GPU resource (nvidia.com/gpu)
and the model is read from GPU feature discovery's labels (nvidia.com/gpu.product, e.g.
NVIDIA-A100-SXM4-80GB, and nvidia.com/gpu.memory in MiB). Every usable node also offers "cpu".
Nodes the provider's pods cannot land on (cordoned, not Ready, a taint its tolerations do not
tolerate, a node_selector they do not match) offer nothing. Price 0: it is your cluster. Region:
the node's topology.kubernetes.io/region label, else the cluster's name from the kubeconfig.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from attrs import frozen

from flow.domain.daemon_config import KubernetesSettings, Toleration
from flow.domain.instances.gpu_catalog import CATALOG, find_model
from flow.domain.instances.instance_types import CPU_INSTANCE, InstanceType
from flow.domain.instances.matching import Offer

REGION_LABEL: Final = "topology.kubernetes.io/region"
GPU_MEMORY_LABEL: Final = "nvidia.com/gpu.memory"


@frozen
class NodeFacts:
    name: str
    gpus: int
    product: str  # the GPU model label's value ("" without one)
    gpu: InstanceType | None  # one GPU of the node's model, when Flow knows the model
    region: str
    memory_mib: int  # allocatable RAM


@frozen
class KubeOffer:
    """An offer and what a pod needs to get it: the GPU product label to select."""

    offer: Offer
    product: str
    gpus: int


def _quantity_mib(text: object) -> int:
    """A memory quantity ("16Gi", "1Ti", "123456Ki", "2G") in MiB; 0 when unreadable."""
    match = re.fullmatch(r"([0-9]+)([KMGTPE]i?)?", str(text or ""))
    if match is None:
        return 0
    value, unit = int(match.group(1)), match.group(2) or ""
    powers = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
    base = 1024 if unit.endswith("i") else 1000
    scaled: int = value * base ** powers[unit.rstrip("i")]
    return scaled // 2**20


def gpu_of_product(product: str, memory_mib: int | None = None) -> InstanceType | None:
    """One GPU of the model a product label names ("NVIDIA-A100-SXM4-80GB" -> a100 80 GB sxm);
    None for a model Flow does not know."""
    words = [w for w in re.split(r"[^a-z0-9]+", product.lower()) if w]
    models = [m for w in words if (m := find_model(w)) is not None]
    if not models:
        joined = "".join(words)
        models = [m for m in CATALOG if m.name in joined][:1]
    if not models:
        return None
    model = models[0]
    memory = next((int(w[:-2]) for w in words if re.fullmatch(r"[0-9]+gb", w)), None)
    if memory is None and memory_mib:
        memory = round(memory_mib / 1024)
    if memory is not None:
        given = memory
        memory = min(model.memory_variants_gb, key=lambda v: abs(v - given))
    form = next((f for f in model.form_factors if any(w.startswith(f) for w in words)), model.default_form_factor)
    return InstanceType(model.name, memory or model.memory_gb, form, 1)


def _tolerated(taint: Mapping[str, Any], tolerations: Sequence[Toleration]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for t in tolerations:
        if t.effect and t.effect != taint.get("effect"):
            continue
        if t.operator == "Exists" and (not t.key or t.key == taint.get("key")):
            return True
        if t.operator == "Equal" and t.key == taint.get("key") and t.value == str(taint.get("value", "")):
            return True
    return False


def node_facts(node: Mapping[str, Any], settings: KubernetesSettings, cluster: str) -> NodeFacts | None:
    """What a node offers the provider's pods, or None when they cannot land on it."""
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    labels = meta.get("labels") or {}
    if spec.get("unschedulable"):
        return None
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    if not ready or not all(_tolerated(t, settings.tolerations) for t in spec.get("taints") or []):
        return None
    if any(labels.get(k) != v for k, v in settings.node_selector):
        return None
    allocatable = status.get("allocatable") or {}
    try:
        gpus = int(str(allocatable.get(settings.gpu_resource, "0")))
    except ValueError:
        gpus = 0
    product = str(labels.get(settings.gpu_product_label, ""))
    try:
        gpu_memory: int | None = int(str(labels.get(GPU_MEMORY_LABEL, "")))
    except ValueError:
        gpu_memory = None
    return NodeFacts(
        name=str(meta.get("name", "")),
        gpus=gpus,
        product=product,
        gpu=gpu_of_product(product, gpu_memory) if gpus and product else None,
        region=str(labels.get(REGION_LABEL) or cluster),
        memory_mib=_quantity_mib(allocatable.get("memory")),
    )


def offers_of(nodes: Iterable[NodeFacts], provider: str) -> tuple[KubeOffer, ...]:
    """Every instance type the usable nodes run, once per (type, region), with how many nodes fit."""
    found: dict[tuple[str, str, int, str], tuple[InstanceType, str, int, int]] = {}
    for node in nodes:
        kinds: list[tuple[InstanceType, str, int]] = [(CPU_INSTANCE, "", 0)]
        if node.gpu is not None:
            one = node.gpu
            kinds += [
                (InstanceType(one.model, one.memory_gb, one.form_factor, n), node.product, n)
                for n in range(1, node.gpus + 1)
            ]
        for kind, product, count in kinds:
            key = (product, node.region, count, kind.model)
            _, _, _, fits = found.get(key, (kind, product, count, 0))
            found[key] = (kind, product, count, fits + 1)
    offers = []
    for (product, region, count, _), (kind, _, _, fits) in sorted(found.items()):
        label = product or "cpu"
        offers.append(
            KubeOffer(
                offer=Offer(
                    offer_id=f"{region}/{label}/{count}",
                    provider=provider,
                    instance_type=kind,
                    price_per_hour_micros=0,
                    region=region,
                    available=fits,
                ),
                product=product,
                gpus=count,
            )
        )
    return tuple(offers)
