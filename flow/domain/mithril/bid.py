"""What to bid for a task on Mithril: which instance type (through the core's matcher), in which
region, at what limit price, under what unique name.

- The instance type and region come from `choose_offer`, the matcher `find_instances` uses:
  cheapest first among the rows with capacity, in the task's region when it names one.
- The limit price is per instance-hour and never exceeds `max_price_per_hour` (rounded down to
  the cent). Without one, Flow bids MARKET_MULTIPLIER times the last clearing price: a spot bid
  at the market price is outbid at once.
- Bid names must be unique on the platform and let Flow find a bid again after a create whose
  answer was lost: "flow-<task name>-<random suffix from the shell>".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.instances.instance_types import short_name
from flow.domain.instances.matching import Offer
from flow.domain.instances.placement import choose_offer
from flow.domain.mithril.catalog import CENT_MICROS, Catalog, MithrilOffer, limit_price_text
from flow.domain.money import format_price, price_to_micros
from flow.domain.task.config import TaskConfig

MARKET_MULTIPLIER: Final = 2
_NAME_UNSAFE: Final = re.compile(r"[^a-z0-9-]+")
MAX_NAME_STEM: Final = 40


@frozen
class BidPlan:
    type_fid: str
    type_name: str
    region: str
    offer: Offer
    limit_price_micros: int
    quantity: int
    name: str

    @property
    def limit_price(self) -> str:
        return limit_price_text(self.limit_price_micros)


def bid_name(task_name: str, suffix: str) -> str:
    """A bid name from the task's name and a random suffix: lowercase letters, digits and '-'."""
    stem = _NAME_UNSAFE.sub("-", task_name.lower()).strip("-")[:MAX_NAME_STEM].strip("-") or "task"
    return f"flow-{stem}-{suffix}"


def _regions_with_capacity(offers: Sequence[MithrilOffer], chosen: Offer, quantity: int) -> list[str]:
    same = [
        o.offer
        for o in offers
        if o.offer.instance_type == chosen.instance_type and (o.offer.available or 0) >= quantity
    ]
    same.sort(key=lambda o: (o.price_per_hour_micros, o.region))
    return [f"{o.region} ({format_price(o.price_per_hour_micros)}, {o.available} free)" for o in same]


def plan_bid(config: TaskConfig, catalog: Catalog, task_name: str, suffix: str) -> Result[BidPlan, DomainError]:
    """The bid for a (valid) task, or why none can be made."""
    defaults = catalog.provider_defaults()
    if config.instance_type is None and config.min_gpu_memory_gb is None:
        fix = 'give instance_type (e.g. "a100", "8xh100") or min_gpu_memory_gb (e.g. 40)'
        return Failure(
            validation_error(
                [violation("instance_type", None, "is required on the mithril provider (it rents GPU nodes)", fix)],
                subject="task configuration",
            )
        )
    offers = [o.offer for o in catalog.offers]
    chosen = choose_offer(config, offers, provider_defaults=defaults)
    if isinstance(chosen, Failure):
        return Failure(chosen.failure())
    offer = chosen.unwrap()
    found = next(o for o in catalog.offers if o.offer.offer_id == offer.offer_id)
    quantity = config.num_instances
    if (offer.available or 0) < quantity:
        elsewhere = _regions_with_capacity(catalog.offers, offer, quantity)
        suggestions = [f"ask for at most num_instances={offer.available}"]
        if elsewhere:
            suggestions.append(f"regions with room for {quantity}: {', '.join(elsewhere)}")
        return Failure(
            DomainError(
                reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                message=(
                    f"Region {offer.region} has {offer.available} free {short_name(offer.instance_type, defaults)} "
                    f"instance(s); the task asks for num_instances={quantity}"
                ),
                suggestions=tuple(suggestions),
                metadata=(("region", offer.region),),
            )
        )
    if config.max_price_per_hour is not None:
        limit = price_to_micros(config.max_price_per_hour)
        limit -= limit % CENT_MICROS
        if limit < CENT_MICROS:
            fix = "give at least 0.01 dollars per hour (Mithril prices are in cents)"
            return Failure(
                validation_error(
                    [violation("max_price_per_hour", config.max_price_per_hour, "is below one cent", fix)],
                    subject="task configuration",
                )
            )
    else:
        limit = max(offer.price_per_hour_micros * MARKET_MULTIPLIER, CENT_MICROS)
        limit -= limit % CENT_MICROS
    return Success(
        BidPlan(
            type_fid=found.type_fid,
            type_name=found.type_name,
            region=offer.region,
            offer=offer,
            limit_price_micros=limit,
            quantity=quantity,
            name=bid_name(task_name, suffix),
        )
    )


def bid_request(
    plan: BidPlan, project_fid: str, ssh_keys: Sequence[str], volumes: Sequence[str], startup_script: str
) -> dict[str, object]:
    """The body of POST /v2/spot/bids (CreateBidRequest)."""
    return {
        "project": project_fid,
        "region": plan.region,
        "instance_type": plan.type_fid,
        "limit_price": plan.limit_price,
        "instance_quantity": plan.quantity,
        "name": plan.name,
        "launch_specification": {
            "ssh_keys": list(ssh_keys),
            "volumes": list(volumes),
            "startup_script": startup_script,
        },
    }


def price_too_low(plan: BidPlan, catalog: Catalog, detail: str) -> DomainError:
    """The platform refused the limit price: say what the market asks, and where there is room."""
    market = plan.offer.price_per_hour_micros
    suggested = max(market * MARKET_MULTIPLIER, market + CENT_MICROS)
    suggestions = [
        f"set max_price_per_hour to at least {limit_price_text(suggested)} "
        f"(the last price of {plan.type_name} in {plan.region} was {format_price(market)})"
    ]
    elsewhere = _regions_with_capacity(catalog.offers, plan.offer, plan.quantity)
    if elsewhere:
        suggestions.append(f"regions with capacity: {', '.join(elsewhere)}")
    return DomainError(
        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
        message=(
            f"Mithril refused the limit price {plan.limit_price}/h for {plan.type_name} in {plan.region}: {detail}"
        ),
        suggestions=tuple(suggestions),
        metadata=(("region", plan.region), ("limit_price", plan.limit_price)),
    )


def memory_refusal(config: TaskConfig, plan: BidPlan, catalog: Catalog) -> DomainError | None:
    """memory_mb against the RAM of the planned instance type (per node, as everywhere)."""
    ram = next((t.ram_gb for t in catalog.types if t.fid == plan.type_fid), None)
    if config.memory_mb is None or ram is None or config.memory_mb <= ram * 1024:
        return None
    bigger = sorted({t.name for t in catalog.types if t.ram_gb is not None and t.ram_gb * 1024 >= config.memory_mb})
    return DomainError(
        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
        message=(f"The task needs {config.memory_mb} MB of RAM per node; instance type {plan.type_name} has {ram} GB"),
        suggestions=(
            f"choose an instance type with more RAM: {', '.join(bigger[:5])}" if bigger else "ask for less memory_mb",
        ),
        metadata=(("instance_type", plan.type_name),),
    )
