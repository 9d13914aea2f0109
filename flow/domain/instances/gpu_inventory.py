"""A machine's GPUs as values, and the instance types it can serve.

The shell discovers devices (NVML, or nvidia-smi) and passes their raw names and sizes here;
this module maps them onto the catalog ("NVIDIA A100-SXM4-40GB" -> a100, 40 GB, sxm) and turns an
inventory into offers: for each kind of GPU the machine has n of, the instance types 1x..nx.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from attrs import frozen

from flow.domain.instances.gpu_catalog import CATALOG, PCIE, SXM
from flow.domain.instances.instance_types import CPU_INSTANCE, InstanceType
from flow.domain.instances.matching import Offer

LOCAL_REGION: Final = "local"
_NAME_WORDS: Final = re.compile(r"[a-z0-9]+")
# Longest first, so "a10g" wins over "a10" and "l40s" over "l40".
_MODELS_BY_LENGTH: Final = sorted(CATALOG, key=lambda m: -len(m.name))


@frozen
class Gpu:
    index: int
    uuid: str
    model: str  # catalog name, or the raw name lower-cased when the catalog does not know it
    memory_gb: int
    form_factor: str
    name: str  # as the driver reports it, e.g. "NVIDIA H200"

    @property
    def label(self) -> str:
        return f"GPU {self.index}: {self.name} ({self.memory_gb} GB)"


def gpu_from_device(index: int, uuid: str, name: str, memory_mib: int) -> Gpu:
    """A discovered device as a Gpu. Memory is rounded to the catalog size it is closest to
    (drivers report a little less than the marketing number: 81559 MiB for an 80 GB A100)."""
    words = _NAME_WORDS.findall(name.lower())
    joined = "".join(words)
    model = next((m for m in _MODELS_BY_LENGTH if m.name in words or any(w.startswith(m.name) for w in words)), None)
    if model is None:
        model = next((m for m in _MODELS_BY_LENGTH if m.name in joined), None)
    reported_gb = memory_mib / 1024
    if model is None:
        return Gpu(index, uuid, (words[-1] if words else "gpu"), round(reported_gb), PCIE, name)
    memory = min(model.memory_variants_gb, key=lambda size: abs(size - reported_gb))
    if PCIE in model.form_factors and ("pcie" in words or "nvl" in words or SXM not in model.form_factors):
        form = PCIE
    elif SXM in model.form_factors:
        form = SXM
    else:
        form = model.default_form_factor
    return Gpu(index, uuid, model.name, memory, form, name)


def gpu_kinds(gpus: Sequence[Gpu]) -> dict[tuple[str, int, str], list[Gpu]]:
    """The GPUs grouped by (model, memory, form factor), in index order."""
    kinds: dict[tuple[str, int, str], list[Gpu]] = {}
    for gpu in sorted(gpus, key=lambda g: g.index):
        kinds.setdefault((gpu.model, gpu.memory_gb, gpu.form_factor), []).append(gpu)
    return kinds


def local_offers(gpus: Sequence[Gpu], provider: str) -> tuple[Offer, ...]:
    """What this machine can run, free: its CPUs, and 1..n of each kind of GPU it has n of."""
    offers = [Offer(f"{provider}-cpu", provider, CPU_INSTANCE, 0, LOCAL_REGION, 1)]
    for (model, memory, form), members in gpu_kinds(gpus).items():
        for count in range(1, len(members) + 1):
            offers.append(
                Offer(
                    offer_id=f"{provider}-{model}-{memory}gb-{count}x",
                    provider=provider,
                    instance_type=InstanceType(model=model, memory_gb=memory, form_factor=form, count=count),
                    price_per_hour_micros=0,
                    region=LOCAL_REGION,
                    available=len(members) // count,
                )
            )
    return tuple(offers)


def describe_inventory(gpus: Sequence[Gpu]) -> str:
    """ "2x a100-40gb (GPUs 0, 1), 1x t4-16gb (GPU 2)" or "no GPUs"."""
    if not gpus:
        return "no GPUs"
    parts = []
    for (model, memory, _), members in gpu_kinds(gpus).items():
        indexes = ", ".join(str(g.index) for g in members)
        noun = "GPU" if len(members) == 1 else "GPUs"
        parts.append(f"{len(members)}x {model}-{memory}gb ({noun} {indexes})")
    return ", ".join(parts)
