"""Placement: which of a provider's offers a task gets. The same matcher as find_instances, so
`TaskConfig(min_gpu_memory_gb=40, max_price_per_hour=10)` selects exactly what
`find_instances({"gpu_memory_gb": 40, "max_price": 10})` lists first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError
from flow.domain.instances.instance_types import parse_instance_type
from flow.domain.instances.matching import Offer, Requirements, explain_no_match, match_offers
from flow.domain.money import price_to_micros
from flow.domain.task.config import TaskConfig


def requirements_of(
    config: TaskConfig, provider_defaults: Mapping[str, int] | None = None
) -> Result[Requirements, DomainError]:
    """What a (valid) config insists on, in the matcher's terms."""
    wanted = None
    if config.instance_type is not None:
        parsed = parse_instance_type(config.instance_type, provider_defaults=provider_defaults)
        if isinstance(parsed, Failure):
            return Failure(parsed.failure())
        wanted = parsed.unwrap()
    price = config.max_price_per_hour
    return Success(
        Requirements(
            gpu_memory_gb=config.min_gpu_memory_gb,
            max_price_micros=None if price is None else price_to_micros(price),
            region=config.region,
            instance_type=wanted,
        )
    )


def choose_offer(
    config: TaskConfig,
    offers: Sequence[Offer],
    provider_defaults: Mapping[str, int] | None = None,
) -> Result[Offer, DomainError]:
    """The best offer for the task (cheapest, then closest fit), or why there is none."""
    required = requirements_of(config, provider_defaults)
    if isinstance(required, Failure):
        return Failure(required.failure())
    req = required.unwrap()
    result = match_offers(req, offers)
    if result.matches:
        return Success(result.matches[0])
    return Failure(explain_no_match(req, result, price_field="max_price_per_hour"))
