"""Matching a request against a provider's offers: which fit, in what order, and why not.

`match_offers` is total: every offer is either a match or a rejection with at least one reason.
Matches are ranked by price, then by closest fit (least GPU memory, fewest GPUs), then by ID, so
the same catalog always yields the same order whatever order it came in.
"""

from __future__ import annotations

import difflib
import enum
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import (
    DomainError,
    ErrorReason,
    FieldViolation,
    validation_error,
    violation,
)
from flow.domain.instances.gpu_catalog import lookup_model
from flow.domain.instances.instance_types import (
    MAX_GPUS_PER_INSTANCE,
    InstanceType,
    format_instance_type,
    parse_instance_type,
    short_name,
)
from flow.domain.money import (
    dollars_to_micros,
    format_dollars,
    format_price,
    micros_to_dollars,
)

# No GPU comes anywhere near this; a larger request is a mistake (and would make absurd messages).
MAX_GPU_MEMORY_GB = 10_000


@frozen
class Offer:
    """One thing a provider will rent now: an instance type, in a region, at an hourly price."""

    offer_id: str
    provider: str
    instance_type: InstanceType
    price_per_hour_micros: int
    region: str
    # Instances free now; None when the provider does not say (such offers still match).
    available: int | None = None
    spot: bool = False


@frozen
class Requirements:
    """What a request insists on; None means "any"."""

    gpu_memory_gb: int | None = None  # minimum per GPU
    max_price_micros: int | None = None  # per instance-hour
    region: str | None = None
    gpu_type: str | None = None  # catalog model name
    min_gpu_count: int | None = None
    instance_type: InstanceType | None = None  # exactly this, when given


class Miss(enum.Enum):
    """One way an offer falls short of the requirements."""

    INSTANCE_TYPE = "instance_type"
    GPU_TYPE = "gpu_type"
    GPU_MEMORY = "gpu_memory_gb"
    GPU_COUNT = "min_gpu_count"
    PRICE = "max_price"
    REGION = "region"
    CAPACITY = "capacity"


@frozen
class Rejection:
    """An offer left out, with one human reason per requirement it misses (same order)."""

    offer: Offer
    reasons: tuple[str, ...]
    misses: tuple[Miss, ...]


@frozen
class MatchResult:
    """The ranked matches of one request; `rejections` says why every other offer was left out."""

    matches: tuple[Offer, ...]
    requirements: Requirements
    offers: tuple[Offer, ...]  # every offer considered, in the order given

    @cached_property
    def rejections(self) -> tuple[Rejection, ...]:
        """The offers that are not matches, in the order given, each with at least one reason.

        Computed on first use: writing thousands of reasons costs far more than matching, and
        most callers only need the matches.
        """
        return _reject(self.requirements, self.offers)


# ---------------------------------------------------------------------------------------------
# Requirements from a user's dict (flow.find_instances)

REQUIREMENT_KEYS = (
    "gpu_memory_gb",
    "max_price",
    "region",
    "gpu_type",
    "min_gpu_count",
    "instance_type",
)
_SUBJECT = "instance requirements"


def requirements_from_dict(
    requirements: Mapping[str, object],
    *,
    provider_defaults: Mapping[str, int] | None = None,
) -> Result[Requirements, DomainError]:
    """Validate a `find_instances` dict, naming every problem at once.

    Keys: `gpu_memory_gb` (minimum per GPU), `max_price` (dollars per hour), `region`, `gpu_type`,
    `min_gpu_count`, `instance_type` (parsed with `provider_defaults`). None means "not given".
    Whole-valued floats are accepted for integer keys: JSON clients often send 80.0 for 80.
    """
    if not isinstance(requirements, Mapping):
        fix = f"pass a dict with some of the keys {', '.join(REQUIREMENT_KEYS)}"
        problem = "must be a mapping"
        return Failure(validation_error([violation("requirements", requirements, problem, fix)], _SUBJECT))
    violations: list[FieldViolation] = []
    for key in requirements:
        if key not in REQUIREMENT_KEYS:
            violations.append(_unknown_key(key))
    get = requirements.get
    memory = _whole_number(get("gpu_memory_gb"), "gpu_memory_gb", 0, MAX_GPU_MEMORY_GB, violations)
    price = _price(get("max_price"), violations)
    region = _region(get("region"), violations)
    gpu_type = _gpu_type(get("gpu_type"), violations)
    count = _whole_number(get("min_gpu_count"), "min_gpu_count", 1, MAX_GPUS_PER_INSTANCE, violations)
    instance_type = _instance_type(get("instance_type"), provider_defaults, violations)
    if instance_type is not None:
        violations.extend(_conflicts(instance_type, gpu_type, memory, count))
    if violations:
        return Failure(validation_error(violations, _SUBJECT))
    return Success(
        Requirements(
            gpu_memory_gb=memory,
            max_price_micros=price,
            region=region,
            gpu_type=gpu_type,
            min_gpu_count=count,
            instance_type=instance_type,
        )
    )


def _unknown_key(key: object) -> FieldViolation:
    field = key if isinstance(key, str) else "requirements"
    close = difflib.get_close_matches(key[:40], REQUIREMENT_KEYS, n=1) if isinstance(key, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    fix = f"{hint}known keys: {', '.join(REQUIREMENT_KEYS)}"
    return violation(field, key, "is not a known requirement", fix)


def _whole_number(value: object, field: str, least: int, most: int, violations: list[FieldViolation]) -> int | None:
    if value is None:
        return None
    fix = f"give a whole number from {least} to {most}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        violations.append(violation(field, value, "must be a whole number", fix))
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        violations.append(violation(field, value, "must be a whole number", fix))
        return None
    number = int(value)
    if not least <= number <= most:
        violations.append(violation(field, value, f"is not between {least} and {most}", fix))
        return None
    return number


def _price(value: object, violations: list[FieldViolation]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        fix = "give dollars per hour as a number, e.g. 10.0"
        violations.append(violation("max_price", value, "must be a number", fix))
        return None
    converted = dollars_to_micros(value, field="max_price")
    if isinstance(converted, Failure):
        violations.extend(converted.failure().violations)
        return None
    return converted.unwrap()


def _region(value: object, violations: list[FieldViolation]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        fix = 'give a region name, e.g. "us-central1-b"'
        violations.append(violation("region", value, "must be a non-empty string", fix))
        return None
    return value.strip()


def _gpu_type(value: object, violations: list[FieldViolation]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        fix = 'give a GPU model name, e.g. "a100"'
        violations.append(violation("gpu_type", value, "must be a string", fix))
        return None
    found = lookup_model(value, field="gpu_type")
    if isinstance(found, Failure):
        violations.extend(found.failure().violations)
        return None
    return found.unwrap().name


def _instance_type(
    value: object,
    provider_defaults: Mapping[str, int] | None,
    violations: list[FieldViolation],
) -> InstanceType | None:
    if value is None:
        return None
    if not isinstance(value, str):
        fix = 'give an instance type such as "a100" or "4xa100"'
        violations.append(violation("instance_type", value, "must be a string", fix))
        return None
    parsed = parse_instance_type(value, "instance_type", provider_defaults=provider_defaults)
    if isinstance(parsed, Failure):
        violations.extend(parsed.failure().violations)
        return None
    return parsed.unwrap()


def _conflicts(
    instance_type: InstanceType,
    gpu_type: str | None,
    memory: int | None,
    count: int | None,
) -> list[FieldViolation]:
    """Requirements that the named instance type can never meet."""
    name = short_name(instance_type)
    found: list[FieldViolation] = []
    if gpu_type is not None and gpu_type != instance_type.model:
        problem = f"conflicts with instance_type {name}, which is {instance_type.model}"
        found.append(violation("gpu_type", gpu_type, problem, "give only one of them"))
    if memory is not None and memory > instance_type.memory_gb:
        problem = f"is more than instance_type {name} has ({instance_type.memory_gb} GB per GPU)"
        found.append(violation("gpu_memory_gb", memory, problem, "give only one of them"))
    if count is not None and count > instance_type.count:
        problem = f"is more than instance_type {name} has ({instance_type.count} GPUs)"
        found.append(violation("min_gpu_count", count, problem, "give only one of them"))
    return found


# ---------------------------------------------------------------------------------------------
# Matching and ranking


@frozen
class _Check:
    """One requirement as a test on an offer, plus how to say why an offer fails it.

    `offending` picks the offer value the reason depends on, so equal reasons are written once.
    """

    miss: Miss
    passes: Callable[[Offer], bool]
    offending: Callable[[Offer], object]
    describe: Callable[[Offer], str]


def _checks(req: Requirements) -> tuple[_Check, ...]:
    """One check per requirement actually given, so an empty request costs nothing per offer."""
    checks: list[_Check] = []
    if (wanted := req.instance_type) is not None:
        wanted_name = format_instance_type(wanted)
        checks.append(
            _Check(
                Miss.INSTANCE_TYPE,
                passes=lambda o: o.instance_type == wanted,
                offending=lambda o: o.instance_type,
                describe=lambda o: f"instance type {format_instance_type(o.instance_type)} is not {wanted_name}",
            )
        )
    if (model := req.gpu_type) is not None:
        checks.append(
            _Check(
                Miss.GPU_TYPE,
                passes=lambda o: o.instance_type.model == model,
                offending=lambda o: o.instance_type.model,
                describe=lambda o: f"model {o.instance_type.model} is not {model}",
            )
        )
    if (memory := req.gpu_memory_gb) is not None:
        checks.append(
            _Check(
                Miss.GPU_MEMORY,
                passes=lambda o: o.instance_type.memory_gb >= memory,
                offending=lambda o: o.instance_type.memory_gb,
                describe=lambda o: f"GPU memory {o.instance_type.memory_gb} GB is below {memory} GB",
            )
        )
    if (count := req.min_gpu_count) is not None:
        checks.append(
            _Check(
                Miss.GPU_COUNT,
                passes=lambda o: o.instance_type.count >= count,
                offending=lambda o: o.instance_type.count,
                describe=lambda o: f"{_gpus(o.instance_type.count)} is fewer than {count}",
            )
        )
    if (price := req.max_price_micros) is not None:
        most = format_price(price)
        checks.append(
            _Check(
                Miss.PRICE,
                passes=lambda o: o.price_per_hour_micros <= price,
                offending=lambda o: o.price_per_hour_micros,
                describe=lambda o: f"price {format_price(o.price_per_hour_micros)} is above max_price {most}",
            )
        )
    if (region := req.region) is not None:
        checks.append(
            _Check(
                Miss.REGION,
                passes=lambda o: o.region == region,
                offending=lambda o: o.region,
                describe=lambda o: f"region {o.region} is not {region}",
            )
        )
    checks.append(
        _Check(
            Miss.CAPACITY,
            passes=lambda o: o.available != 0,
            offending=lambda o: None,
            describe=lambda o: "no capacity",
        )
    )
    return tuple(checks)


def _gpus(count: int) -> str:
    return "1 GPU" if count == 1 else f"{count} GPUs"


rank_key = operator.attrgetter(
    "price_per_hour_micros",
    "instance_type.memory_gb",
    "instance_type.count",
    "offer_id",
    "provider",
    "region",
    "instance_type.model",
    "instance_type.form_factor",
    "spot",
)
"""The ranking: cheapest first, then the closest fit (least memory per GPU, fewest GPUs), then
every other field, so the order never depends on the order offers came in. (An attrgetter: it
runs in C, and ranking 10,000 offers with a Python key function costs several milliseconds.)"""


def match_offers(req: Requirements, offers: Sequence[Offer]) -> MatchResult:
    """The offers that meet every requirement, ranked; the others, with reasons, on demand."""
    pool = list(offers)
    for check in _checks(req):  # each pass only sees what survived the previous ones
        passes = check.passes
        pool = [offer for offer in pool if passes(offer)]
    pool.sort(key=rank_key)
    return MatchResult(matches=tuple(pool), requirements=req, offers=tuple(offers))


def _reject(req: Requirements, offers: Sequence[Offer]) -> tuple[Rejection, ...]:
    # Catalogs repeat a handful of prices, regions and sizes across thousands of offers: each
    # check writes each distinct reason once.
    checks = [(check, dict[object, str]()) for check in _checks(req)]
    rejections = []
    for offer in offers:
        misses: list[Miss] = []
        reasons: list[str] = []
        for check, written in checks:
            if check.passes(offer):
                continue
            value = check.offending(offer)
            reason = written.get(value)
            if reason is None:
                reason = written[value] = check.describe(offer)
            misses.append(check.miss)
            reasons.append(reason)
        if misses:
            rejections.append(Rejection(offer=offer, reasons=tuple(reasons), misses=tuple(misses)))
    return tuple(rejections)


# ---------------------------------------------------------------------------------------------
# Explaining an empty result


def explain_no_match(req: Requirements, result: MatchResult, price_field: str = "max_price") -> DomainError:
    """Why nothing matched, told by the closest miss, with what to change to get a match.

    The closest offer is the one nearest along the constraint that failed: the 80 GB GPU for a
    100 GB request, 2xa100 for 3xa100; never a CPU instance for a request that needs GPUs.
    `price_field` names the price setting in the caller's vocabulary ("max_price_per_hour" for a
    TaskConfig, "max_price" for find_instances).
    """
    wanted = _describe_request(req)
    candidates = _candidates(req, result.rejections)
    if not candidates:
        nothing = "the provider offers nothing right now"
        if result.rejections:  # only CPU instances, for a request that needs GPUs
            nothing = "the provider offers no GPUs, only CPU instances"
        return DomainError(
            reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
            message=f"No offer matches {wanted}: {nothing}.",
            suggestions=("try again later, or another provider",),
        )
    closest = min(candidates, key=lambda r: _closeness(r, req))
    suggestions = _suggestions(_nearest_by_sole_miss(candidates, req), price_field)
    fallback = "relax the requirements: " + "; ".join(closest.reasons)
    return DomainError(
        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
        message=f"No offer matches {wanted}: {_describe_closest(closest, req, price_field)}.",
        suggestions=suggestions or (fallback,),
        metadata=(("closest_offer", closest.offer.offer_id),),
    )


# Price, region and capacity are preferences a user can relax; GPU type, memory and count are
# what the job needs. So the closest miss is the one with fewest misses, then the softest, then
# the nearest along what it misses.
_HARDNESS = {
    Miss.PRICE: 0,
    Miss.REGION: 1,
    Miss.CAPACITY: 2,
    Miss.GPU_COUNT: 3,
    Miss.GPU_MEMORY: 4,
    Miss.GPU_TYPE: 5,
    Miss.INSTANCE_TYPE: 6,
}


def _needs_gpus(req: Requirements) -> bool:
    wanted = req.instance_type
    return (
        (wanted is not None and not wanted.is_cpu)
        or req.gpu_type is not None
        or bool(req.gpu_memory_gb)
        or bool(req.min_gpu_count)
    )


def _candidates(req: Requirements, rejections: Sequence[Rejection]) -> list[Rejection]:
    """The offers that may be named as closest: no CPU instance for a request that needs GPUs."""
    if not _needs_gpus(req):
        return list(rejections)
    return [r for r in rejections if not r.offer.instance_type.is_cpu]


def _distance(miss: Miss, offer: Offer, req: Requirements) -> tuple[int, ...]:
    """How far an offer is from the request along one constraint (smaller is closer)."""
    it = offer.instance_type
    if miss is Miss.GPU_MEMORY and req.gpu_memory_gb is not None:
        return (abs(req.gpu_memory_gb - it.memory_gb),)
    if miss is Miss.GPU_COUNT and req.min_gpu_count is not None:
        return (abs(req.min_gpu_count - it.count),)
    if miss is Miss.INSTANCE_TYPE and req.instance_type is not None:
        wanted = req.instance_type
        return (
            int(it.model != wanted.model),
            abs(wanted.count - it.count),
            abs(wanted.memory_gb - it.memory_gb),
            int(it.form_factor != wanted.form_factor),
        )
    if miss is Miss.PRICE and req.max_price_micros is not None:
        return (offer.price_per_hour_micros - req.max_price_micros,)
    return ()


def _closeness(rejection: Rejection, req: Requirements) -> tuple[object, ...]:
    misses = rejection.misses
    hardest = max(misses, key=_HARDNESS.__getitem__)
    return (len(misses), _HARDNESS[hardest], _distance(hardest, rejection.offer, req), rank_key(rejection.offer))


def _describe_request(req: Requirements) -> str:
    parts = []
    if req.instance_type is not None:
        parts.append(short_name(req.instance_type))
    if req.gpu_type is not None:
        parts.append(req.gpu_type)
    if req.gpu_memory_gb is not None:
        parts.append(f"{req.gpu_memory_gb}+ GB per GPU")
    if req.min_gpu_count is not None:
        parts.append(f"{req.min_gpu_count}+ GPUs")
    if req.max_price_micros is not None:
        parts.append(f"at most {format_price(req.max_price_micros)}")
    if req.region is not None:
        parts.append(f"in {req.region}")
    return ", ".join(parts) if parts else "your request"


def _nearest_by_sole_miss(rejections: Sequence[Rejection], req: Requirements) -> dict[Miss, list[Offer]]:
    """Offers failing one requirement only, by that requirement, nearest first: relaxing it (by
    as little as possible) matches them."""
    found: dict[Miss, list[Rejection]] = {}
    for rejection in rejections:
        if len(rejection.misses) == 1:
            found.setdefault(rejection.misses[0], []).append(rejection)
    return {
        miss: [r.offer for r in sorted(group, key=lambda r: (_distance(miss, r.offer, req), rank_key(r.offer)))]
        for miss, group in found.items()
    }


def _offer_label(offer: Offer) -> str:
    return f"{short_name(offer.instance_type)} in {offer.region}"


def _describe_closest(closest: Rejection, req: Requirements, price_field: str) -> str:
    offer = closest.offer
    price = format_price(offer.price_per_hour_micros)
    if closest.misses == (Miss.PRICE,) and req.max_price_micros is not None:
        return (
            f"the cheapest offer that meets everything else, {_offer_label(offer)}, costs "
            f"{price}, above your {price_field} {format_price(req.max_price_micros)}"
        )
    return f"the closest offer, {_offer_label(offer)} at {price}, misses: " + "; ".join(closest.reasons)


def _suggestions(cheapest: Mapping[Miss, list[Offer]], price_field: str) -> tuple[str, ...]:
    found: list[str] = []
    if by_price := cheapest.get(Miss.PRICE):
        offer = by_price[0]
        found.append(
            f"raise {price_field} to {format_dollars(offer.price_per_hour_micros)} per hour "
            f"to get {_offer_label(offer)}"
        )
    if by_region := cheapest.get(Miss.REGION):
        regions = list(dict.fromkeys(offer.region for offer in by_region))[:3]
        found.append(f"try region {' or '.join(regions)}, where a match exists")
    if by_count := cheapest.get(Miss.GPU_COUNT):
        offer = by_count[0]
        found.append(
            f"ask for fewer GPUs: {_offer_label(offer)} has {offer.instance_type.count}, at "
            f"{format_price(offer.price_per_hour_micros)}"
        )
    if by_memory := cheapest.get(Miss.GPU_MEMORY):
        offer = by_memory[0]
        found.append(
            f"ask for less GPU memory: {_offer_label(offer)} has "
            f"{offer.instance_type.memory_gb} GB per GPU, at "
            f"{format_price(offer.price_per_hour_micros)}"
        )
    if by_model := cheapest.get(Miss.GPU_TYPE):
        offer = by_model[0]
        found.append(
            f"try gpu_type {offer.instance_type.model}: {_offer_label(offer)} at "
            f"{format_price(offer.price_per_hour_micros)}"
        )
    if by_type := cheapest.get(Miss.INSTANCE_TYPE):
        offer = by_type[0]
        found.append(
            f"try instance type {short_name(offer.instance_type)}: {_offer_label(offer)} at "
            f"{format_price(offer.price_per_hour_micros)}"
        )
    if by_capacity := cheapest.get(Miss.CAPACITY):
        count = len(by_capacity)
        offers = "1 offer matches but has" if count == 1 else f"{count} offers match but have"
        found.append(f"{offers} no capacity now: try again later")
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# What flow.find_instances returns


def offer_to_dict(offer: Offer, provider_defaults: Mapping[str, int] | None = None) -> dict[str, object]:
    """One row of `flow.find_instances`: the short and canonical names, the GPUs, dollars/hour."""
    it = offer.instance_type
    return {
        "instance_type": short_name(it, provider_defaults),
        "canonical_instance_type": format_instance_type(it),
        "gpu_type": it.model,
        "gpu_count": it.count,
        "gpu_memory_gb": it.memory_gb,
        "price_per_hour": micros_to_dollars(offer.price_per_hour_micros),
        "region": offer.region,
        "provider": offer.provider,
        "available": offer.available,
    }
