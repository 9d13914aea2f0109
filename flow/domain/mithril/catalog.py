"""Mithril's catalog as the core's offers: instance types and spot availability from the API,
read from the JSON the API returned (plain dicts), never from a table of fids shipped with Flow.

`/v2/instance-types` says what each `it_` fid is (GPU model, memory per GPU, socket, count);
`/v2/spot/availability` says, per (type, region), the capacity and the last clearing price as a
dollar string ("$25.60"). Each availability row becomes one `Offer` for the core's matcher, so
`find_instances`, `instance_type` and `min_gpu_memory_gb` select exactly as they do elsewhere.
Rows Flow cannot read (an unknown GPU model, a malformed price) are left out and named, never
guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from attrs import frozen
from returns.result import Failure

from flow.domain.instances.gpu_catalog import find_model
from flow.domain.instances.instance_types import CPU_INSTANCE, InstanceType
from flow.domain.instances.matching import Offer
from flow.domain.money import MICROS_PER_DOLLAR, dollars_to_micros, format_dollars

_SOCKET: Final = re.compile(r"([a-z]+)")
_GPU_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]{0,31}")
CENT_MICROS: Final = MICROS_PER_DOLLAR // 100


@frozen
class MithrilType:
    """One `/v2/instance-types` row Flow understands."""

    fid: str
    name: str
    instance_type: InstanceType
    ram_gb: int | None = None  # the instance's RAM, where the API says


@frozen
class MithrilOffer:
    """One availability row as an offer, with the fids a bid needs."""

    offer: Offer
    type_fid: str
    type_name: str


@frozen
class Catalog:
    types: tuple[MithrilType, ...]
    offers: tuple[MithrilOffer, ...]
    skipped: tuple[str, ...] = ()  # rows left out, and why (for the log)

    def provider_defaults(self) -> dict[str, int]:
        """The GPU count a bare model name means here: the smallest node sold. (H100 comes only
        as 8-GPU nodes on Mithril, so "h100" means 8xh100, and its price is an 8-GPU price.)"""
        least: dict[str, int] = {}
        for t in self.types:
            it = t.instance_type
            if not it.is_cpu:
                least[it.model] = min(least.get(it.model, it.count), it.count)
        return {model: count for model, count in least.items() if count > 1}


def parse_dollars(text: object) -> int | None:
    """ "$1,234.50" -> micro-dollars, or None when it is not a price."""
    if not isinstance(text, str):
        return None
    parsed = dollars_to_micros(text.replace(",", ""), field="price")
    return None if isinstance(parsed, Failure) else parsed.unwrap()


def limit_price_text(micros: int) -> str:
    """A limit price as the API wants it: dollars with exactly two decimals, rounded DOWN to the
    cent, so it never exceeds the micros it came from."""
    return format_dollars(micros - micros % CENT_MICROS)


def _str(row: Mapping[str, object], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) and value else None


def _int(row: Mapping[str, object], key: str) -> int | None:
    value = row.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def type_of(row: Mapping[str, object]) -> MithrilType | str:
    """A `/v2/instance-types` row as an instance type, or why it cannot be one."""
    fid, name = _str(row, "fid"), _str(row, "name")
    count, memory = _int(row, "num_gpus"), _int(row, "gpu_memory_gb")
    gpu, socket = _str(row, "gpu_type"), _str(row, "gpu_socket") or ""
    if fid is None or name is None or count is None or count < 0:
        return f"instance type row {fid or '?'} lacks fid, name or num_gpus"
    if count == 0:
        return MithrilType(fid=fid, name=name, instance_type=CPU_INSTANCE, ram_gb=_int(row, "ram_gb"))
    if gpu is None or not _GPU_TYPE.fullmatch(gpu) or memory is None or memory <= 0:
        return f"instance type {name} ({fid}) has no usable gpu_type/gpu_memory_gb"
    model = find_model(gpu.strip().lower().replace(" ", "-"))
    if model is None:
        return f"instance type {name} ({fid}): GPU model {gpu!r} is not in Flow's catalog"
    found = _SOCKET.match(socket.lower())
    form = found.group(1) if found else model.default_form_factor
    if form not in model.form_factors:
        form = model.default_form_factor
    kind = InstanceType(model.name, memory, form, count)
    return MithrilType(fid=fid, name=name, instance_type=kind, ram_gb=_int(row, "ram_gb"))


def catalog_of(
    types: Sequence[Mapping[str, object]], availability: Sequence[Mapping[str, object]], provider: str
) -> Catalog:
    """The offers of one provider from the two listings (bare JSON arrays of objects)."""
    skipped: list[str] = []
    known: dict[str, MithrilType] = {}
    for row in types:
        found = type_of(row) if isinstance(row, Mapping) else "an instance type row is not an object"
        if isinstance(found, str):
            skipped.append(found)
        else:
            known[found.fid] = found
    offers: list[MithrilOffer] = []
    for row in availability:
        if not isinstance(row, Mapping):
            skipped.append("an availability row is not an object")
            continue
        fid, type_fid, region = _str(row, "fid"), _str(row, "instance_type"), _str(row, "region")
        capacity, price = _int(row, "capacity"), parse_dollars(row.get("last_instance_price"))
        kind = known.get(type_fid or "")
        if fid is None or region is None or capacity is None or price is None:
            skipped.append(f"availability row {fid or '?'} lacks region, capacity or a price")
            continue
        if kind is None:
            skipped.append(f"availability row {fid} names an instance type Flow cannot use ({type_fid})")
            continue
        offer = Offer(
            offer_id=fid,
            provider=provider,
            instance_type=kind.instance_type,
            price_per_hour_micros=price,
            region=region,
            available=max(capacity, 0),
            spot=True,
        )
        offers.append(MithrilOffer(offer=offer, type_fid=kind.fid, type_name=kind.name))
    return Catalog(types=tuple(known.values()), offers=tuple(offers), skipped=tuple(skipped))
