"""find_instances at the wire: requirement dicts <-> FindInstancesRequest, Offer -> InstanceOffer
(read back as the seed's offer dicts), and the FindInstances call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from flow.domain.instances.instance_types import format_instance_type, short_name
from flow.domain.instances.matching import Offer
from flow.domain.money import micros_to_dollars, price_to_micros
from flow.wire.calls import Call, method_path
from flowapi.v1 import instance_service_pb2

_SERVICE: Final = instance_service_pb2.DESCRIPTOR.services_by_name["InstanceService"]
FIND_INSTANCES: Final = method_path(_SERVICE, "FindInstances")


class FoundOffers(NamedTuple):
    """FindInstances' answer: the offers, best first; when there are none, why and what to change."""

    offers: tuple[dict[str, object], ...]
    explanation: str
    suggestions: tuple[str, ...]


def requirements_to_proto(
    requirements: Mapping[str, Any], provider: str, page_size: int
) -> instance_service_pb2.FindInstancesRequest:
    """A request from an already validated `find_instances` dict (see requirements_from_dict)."""
    msg = instance_service_pb2.FindInstancesRequest(provider=provider, page_size=page_size)
    if requirements.get("gpu_memory_gb") is not None:
        msg.gpu_memory_gb = int(requirements["gpu_memory_gb"])
    if requirements.get("max_price") is not None:
        msg.max_price_micros = price_to_micros(float(requirements["max_price"]))
    if requirements.get("min_gpu_count") is not None:
        msg.min_gpu_count = int(requirements["min_gpu_count"])
    for key in ("region", "gpu_type", "instance_type"):
        if requirements.get(key) is not None:
            setattr(msg, key, str(requirements[key]))
    return msg


def requirements_from_proto(msg: instance_service_pb2.FindInstancesRequest) -> dict[str, object]:
    """The request as the dict that requirements_from_dict validates (only the fields set)."""
    found: dict[str, object] = {}
    if msg.HasField("gpu_memory_gb"):
        found["gpu_memory_gb"] = msg.gpu_memory_gb
    if msg.HasField("max_price_micros"):
        found["max_price"] = micros_to_dollars(msg.max_price_micros)
    if msg.HasField("min_gpu_count"):
        found["min_gpu_count"] = msg.min_gpu_count
    for key in ("region", "gpu_type", "instance_type"):
        value = getattr(msg, key)
        if value:
            found[key] = value
    return found


def offer_to_proto(offer: Offer) -> instance_service_pb2.InstanceOffer:
    it = offer.instance_type
    msg = instance_service_pb2.InstanceOffer(
        offer_id=offer.offer_id,
        provider=offer.provider,
        instance_type=short_name(it),
        canonical_instance_type=format_instance_type(it),
        gpu_type=it.model,
        gpu_count=it.count,
        gpu_memory_gb=it.memory_gb,
        price_per_hour_micros=offer.price_per_hour_micros,
        region=offer.region,
    )
    if offer.available is not None:
        msg.available = offer.available
    return msg


def offer_dict_from_proto(msg: instance_service_pb2.InstanceOffer) -> dict[str, object]:
    """One row of flow.find_instances, as the seed shows it (`inst['instance_type']`, ...)."""
    return {
        "instance_type": msg.instance_type,
        "canonical_instance_type": msg.canonical_instance_type,
        "gpu_type": msg.gpu_type,
        "gpu_count": msg.gpu_count,
        "gpu_memory_gb": msg.gpu_memory_gb,
        "price_per_hour": micros_to_dollars(msg.price_per_hour_micros),
        "region": msg.region,
        "provider": msg.provider,
        "available": msg.available if msg.HasField("available") else None,
        "offer_id": msg.offer_id,
    }


def find_instances_call(requirements: Mapping[str, Any], provider: str, page_size: int) -> Call[FoundOffers]:
    def read(raw: bytes) -> FoundOffers:
        reply = instance_service_pb2.FindInstancesResponse.FromString(raw)
        return FoundOffers(
            tuple(offer_dict_from_proto(o) for o in reply.offers), reply.explanation, tuple(reply.suggestions)
        )

    return Call(FIND_INSTANCES, requirements_to_proto(requirements, provider, page_size).SerializeToString(), read)
