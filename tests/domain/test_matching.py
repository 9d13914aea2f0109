from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import DomainError, ErrorReason
from flow.domain.instances.gpu_catalog import CATALOG
from flow.domain.instances.instance_types import CPU_INSTANCE, InstanceType, parse_instance_type
from flow.domain.instances.matching import (
    REQUIREMENT_KEYS,
    MatchResult,
    Miss,
    Offer,
    Requirements,
    explain_no_match,
    match_offers,
    offer_to_dict,
    rank_key,
    requirements_from_dict,
)
from flow.domain.money import dollars_to_micros, format_dollars, format_price

DOLLAR = 1_000_000


def it(text: str) -> InstanceType:
    return parse_instance_type(text).unwrap()


def offer(
    offer_id: str,
    instance_type: str = "a100",
    dollars: float = 1.0,
    region: str = "us-central1-b",
    available: int | None = 1,
    provider: str = "mithril",
) -> Offer:
    return Offer(
        offer_id=offer_id,
        provider=provider,
        instance_type=it(instance_type),
        price_per_hour_micros=round(dollars * DOLLAR),
        region=region,
        available=available,
    )


def refused(requirements: Mapping[object, object]) -> DomainError:
    result = requirements_from_dict(requirements)
    assert isinstance(result, Failure), result
    error: DomainError = result.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    return error


# ---------------------------------------------------------------------------------------------
# requirements_from_dict


def test_the_seed_example() -> None:
    result = requirements_from_dict({"gpu_memory_gb": 80, "max_price": 10.0, "region": "us-central1-b"})
    assert result == Success(Requirements(gpu_memory_gb=80, max_price_micros=10 * DOLLAR, region="us-central1-b"))


def test_every_key() -> None:
    result = requirements_from_dict(
        {
            "gpu_memory_gb": 40,
            "max_price": 12,
            "region": " us-east1-a ",
            "gpu_type": "A100",
            "min_gpu_count": 4,
            "instance_type": "8xa100",
        }
    )
    assert result == Success(
        Requirements(
            gpu_memory_gb=40,
            max_price_micros=12 * DOLLAR,
            region="us-east1-a",
            gpu_type="a100",
            min_gpu_count=4,
            instance_type=it("8xa100"),
        )
    )


def test_empty_and_none_values_mean_any() -> None:
    assert requirements_from_dict({}) == Success(Requirements())
    assert requirements_from_dict({"region": None, "max_price": None}) == Success(Requirements())


def test_whole_floats_are_integers_from_json_clients() -> None:
    result = requirements_from_dict({"gpu_memory_gb": 80.0, "min_gpu_count": 2.0})
    assert result == Success(Requirements(gpu_memory_gb=80, min_gpu_count=2))
    assert isinstance(result.unwrap().gpu_memory_gb, int)


def test_provider_defaults_reach_the_instance_type() -> None:
    result = requirements_from_dict({"instance_type": "h100"}, provider_defaults={"h100": 8})
    assert result.unwrap().instance_type == it("8xh100")


def test_max_price_is_kept_exactly_in_micros() -> None:
    assert requirements_from_dict({"max_price": 10.1}).unwrap().max_price_micros == 10_100_000
    assert requirements_from_dict({"max_price": 0}).unwrap().max_price_micros == 0


# (dict, field, words in the problem)
BAD_REQUIREMENTS = [
    ({"gpu_memory": 80}, "gpu_memory", "is not a known requirement"),
    ({"gpu_memory_gb": True}, "gpu_memory_gb", "must be a whole number"),
    ({"gpu_memory_gb": "80"}, "gpu_memory_gb", "must be a whole number"),
    ({"gpu_memory_gb": 80.5}, "gpu_memory_gb", "must be a whole number"),
    ({"gpu_memory_gb": math.nan}, "gpu_memory_gb", "must be a whole number"),
    ({"gpu_memory_gb": math.inf}, "gpu_memory_gb", "must be a whole number"),
    ({"gpu_memory_gb": -1}, "gpu_memory_gb", "is not between 0 and 10000"),
    ({"gpu_memory_gb": 10**5000}, "gpu_memory_gb", "is not between 0 and 10000"),
    ({"max_price": False}, "max_price", "must be a number"),
    ({"max_price": "10"}, "max_price", "must be a number"),
    ({"max_price": -0.5}, "max_price", "is negative"),
    ({"max_price": math.nan}, "max_price", "is not a finite number"),
    ({"max_price": -math.inf}, "max_price", "is not a finite number"),
    ({"max_price": 10**5000}, "max_price", "is above 1000000 dollars"),
    ({"region": ""}, "region", "must be a non-empty string"),
    ({"region": 5}, "region", "must be a non-empty string"),
    ({"gpu_type": "h1000"}, "gpu_type", "unknown GPU model"),
    ({"gpu_type": ["a100"]}, "gpu_type", "must be a string"),
    ({"min_gpu_count": 0}, "min_gpu_count", "is not between 1 and 64"),
    ({"min_gpu_count": 65}, "min_gpu_count", "is not between 1 and 64"),
    ({"instance_type": "0xa100"}, "instance_type", "GPU count 0"),
    ({"instance_type": 8}, "instance_type", "must be a string"),
    (
        {"instance_type": "a100", "gpu_type": "h100"},
        "gpu_type",
        "conflicts with instance_type",
    ),
    (
        {"instance_type": "a100-40gb", "gpu_memory_gb": 80},
        "gpu_memory_gb",
        "is more than",
    ),
    ({"instance_type": "2xa100", "min_gpu_count": 4}, "min_gpu_count", "is more than"),
    ({3: 1}, "requirements", "is not a known requirement"),
]


@pytest.mark.parametrize(("requirements", "field", "problem"), BAD_REQUIREMENTS)
def test_each_bad_value_is_named(requirements: dict[object, object], field: str, problem: str) -> None:
    (violation,) = refused(requirements).violations
    assert violation.field == field
    assert problem in violation.problem
    assert violation.fix
    assert len(violation.value) <= 80


def test_unknown_key_suggests_the_known_one() -> None:
    (violation,) = refused({"max_price_per_hour": 10.0}).violations
    assert violation.fix.startswith("did you mean 'max_price'?")


def test_every_problem_is_collected_at_once() -> None:
    error = refused(
        {
            "gpu_memory": 80,
            "gpu_memory_gb": -1,
            "max_price": True,
            "region": "",
            "gpu_type": "tpu",
            "min_gpu_count": 0.5,
            "instance_type": "a100-60gb",
        }
    )
    assert [v.field for v in error.violations] == [
        "gpu_memory",
        "gpu_memory_gb",
        "max_price",
        "region",
        "gpu_type",
        "min_gpu_count",
        "instance_type",
    ]
    assert error.message.startswith("Invalid instance requirements: 7 problems")


def test_a_non_mapping_is_refused() -> None:
    (violation,) = refused(["gpu_memory_gb", 80]).violations
    assert violation.field == "requirements"
    assert violation.problem == "must be a mapping"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
plausible_keys = st.sampled_from(REQUIREMENT_KEYS) | st.text(max_size=20)


@given(st.dictionaries(plausible_keys, json_values, max_size=8))
def test_requirements_never_raise_on_json(requirements: dict[str, object]) -> None:
    result = requirements_from_dict(requirements)
    if isinstance(result, Failure):
        assert result.failure().violations
    else:
        assert set(requirements) <= set(REQUIREMENT_KEYS)


# Whatever a Python caller might pass, well beyond what JSON can say.
anything = (
    json_values
    | st.binary()
    | st.complex_numbers()
    | st.decimals()
    | st.fractions()
    | st.datetimes()
    | st.frozensets(st.integers())
    | st.tuples(st.integers(), st.text())
    | st.integers(min_value=10**4400, max_value=10**4500)
    | st.builds(object)
    | st.sampled_from([Ellipsis, NotImplemented, int, float("nan"), -0.0, math.inf])
)
hashable = st.text() | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none()


@given(st.dictionaries(hashable, anything, max_size=6) | st.dictionaries(plausible_keys, anything, max_size=6))
def test_requirements_never_raise_on_anything(
    requirements: dict[object, object],
) -> None:
    result = requirements_from_dict(requirements)
    assert isinstance(result, Success | Failure)


def test_requirements_survive_values_that_cannot_be_printed() -> None:
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    error = refused({"region": nested, "gpu_type": 10**5000})
    assert [v.value for v in error.violations] == [
        "<unprintable list>",
        "<unprintable int>",
    ]


# ---------------------------------------------------------------------------------------------
# money


@pytest.mark.parametrize(
    ("amount", "micros"),
    [
        (10, 10 * DOLLAR),
        (10.1, 10_100_000),
        ("10.50", 10_500_000),
        ("$3", 3 * DOLLAR),
        (".5", 500_000),
        (0.0000015, 2),
        (0, 0),
    ],
)
def test_dollars_to_micros(amount: float | str, micros: int) -> None:
    assert dollars_to_micros(amount) == Success(micros)


@pytest.mark.parametrize(
    "amount",
    [
        *("", "abc", "1e3", "1_0", "\uff11\uff12", "nan", True, -1, math.inf),
        pytest.param(10**5000, id="huge-int"),
    ],
)
def test_dollars_to_micros_refuses(amount: float | str) -> None:
    (violation,) = dollars_to_micros(amount, field="max_price_per_hour").failure().violations
    assert violation.field == "max_price_per_hour"


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (12 * DOLLAR, "$12.00/h"),
        (5000, "$0.005/h"),
        (1_234_567, "$1.234567/h"),
        (0, "$0.00/h"),
    ],
)
def test_format_price(micros: int, text: str) -> None:
    assert format_price(micros) == text
    assert format_dollars(-micros) == ("-" if micros else "") + text.removesuffix("/h")


# ---------------------------------------------------------------------------------------------
# match_offers

SEED = Requirements(gpu_memory_gb=80, max_price_micros=10 * DOLLAR, region="us-central1-b")


def test_rejection_reasons_say_why() -> None:
    offers = [
        offer("pricey", "8xh100", 12.0),
        offer("small", "4xa100-40gb", 5.0),
        offer("far", "8xa100", 9.0, region="us-east-1"),
        offer("full", "8xa100", 8.0, available=0),
        offer("good", "a100", 2.0),
    ]
    result = match_offers(SEED, offers)
    assert result.matches == (offers[4],)
    reasons = {r.offer.offer_id: r.reasons for r in result.rejections}
    assert reasons == {
        "pricey": ("price $12.00/h is above max_price $10.00/h",),
        "small": ("GPU memory 40 GB is below 80 GB",),
        "far": ("region us-east-1 is not us-central1-b",),
        "full": ("no capacity",),
    }


def test_model_count_and_instance_type_reasons() -> None:
    requirements = Requirements(gpu_type="h100", min_gpu_count=4)
    result = match_offers(requirements, [offer("a", "2xa100")])
    (rejection,) = result.rejections
    assert rejection.reasons == ("model a100 is not h100", "2 GPUs is fewer than 4")
    assert rejection.misses == (Miss.GPU_TYPE, Miss.GPU_COUNT)
    single = match_offers(Requirements(min_gpu_count=4), [offer("b", "a100")])
    assert single.rejections[0].reasons == ("1 GPU is fewer than 4",)
    exact = match_offers(Requirements(instance_type=it("8xa100")), [offer("c", "4xa100")])
    assert exact.rejections[0].reasons == ("instance type a100-80gb.sxm.4x is not a100-80gb.sxm.8x",)


def test_an_offer_missing_everything_lists_every_reason() -> None:
    requirements = Requirements(
        gpu_memory_gb=100,
        max_price_micros=DOLLAR,
        region="eu-central1-a",
        gpu_type="h200",
        min_gpu_count=8,
        instance_type=it("8xh200"),
    )
    (rejection,) = match_offers(requirements, [offer("x", "t4", 2.0, available=0)]).rejections
    assert rejection.misses == (
        Miss.INSTANCE_TYPE,
        Miss.GPU_TYPE,
        Miss.GPU_MEMORY,
        Miss.GPU_COUNT,
        Miss.PRICE,
        Miss.REGION,
        Miss.CAPACITY,
    )
    assert len(rejection.reasons) == 7


def test_unknown_capacity_still_matches() -> None:
    result = match_offers(Requirements(), [offer("unknown", available=None)])
    assert [o.offer_id for o in result.matches] == ["unknown"]


def test_ranking_is_price_then_closest_fit_then_id() -> None:
    offers = [
        offer("b-big-memory", "a100-80gb", 2.0),
        offer("c-more-gpus", "2xa100-40gb", 2.0),
        offer("d-small", "a100-40gb", 2.0),
        offer("a-small", "a100-40gb", 2.0),
        offer("z-cheapest", "h100", 1.5),
    ]
    result = match_offers(Requirements(gpu_memory_gb=40), offers)
    assert [o.offer_id for o in result.matches] == [
        "z-cheapest",
        "a-small",
        "d-small",
        "c-more-gpus",
        "b-big-memory",
    ]


def test_a_cpu_offer_fails_any_gpu_requirement() -> None:
    cpu = Offer("cpu-1", "local", CPU_INSTANCE, 0, "local")
    assert match_offers(Requirements(), [cpu]).matches == (cpu,)
    (rejection,) = match_offers(Requirements(gpu_memory_gb=1), [cpu]).rejections
    assert rejection.reasons == ("GPU memory 0 GB is below 1 GB",)


def test_the_result_keeps_what_it_was_asked() -> None:
    offers = (offer("a"), offer("b", dollars=20.0))
    result = match_offers(SEED, list(offers))
    assert result == MatchResult(matches=(offers[0],), requirements=SEED, offers=offers)


# ---------------------------------------------------------------------------------------------
# explain_no_match


def test_explains_the_cheapest_offer_above_the_price() -> None:
    offers = [
        offer("pricey", "8xh100", 12.0),
        offer("pricier", "8xh100", 15.0),
        offer("small", "4xa100-40gb", 5.0),
    ]
    error = explain_no_match(SEED, match_offers(SEED, offers), price_field="max_price_per_hour")
    assert error.reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    assert error.message == (
        "No offer matches 80+ GB per GPU, at most $10.00/h, in us-central1-b: the cheapest "
        "offer that meets everything else, 8xh100 in us-central1-b, costs $12.00/h, above "
        "your max_price_per_hour $10.00/h."
    )
    assert error.suggestions == (
        "raise max_price_per_hour to $12.00 per hour to get 8xh100 in us-central1-b",
        "ask for less GPU memory: 4xa100-40gb in us-central1-b has 40 GB per GPU, at $5.00/h",
    )
    assert dict(error.metadata) == {"closest_offer": "pricey"}


def test_suggests_regions_where_a_match_exists() -> None:
    offers = [
        offer("west", dollars=3.0, region="us-west1-a"),
        offer("east", dollars=2.0, region="us-east1-a"),
        offer("east-2", dollars=2.5, region="us-east1-a"),
    ]
    error = explain_no_match(SEED, match_offers(SEED, offers))
    assert error.suggestions == ("try region us-east1-a or us-west1-a, where a match exists",)
    assert "region us-east1-a is not us-central1-b" in error.message


def test_suggests_fewer_gpus_and_waiting_for_capacity() -> None:
    requirements = Requirements(min_gpu_count=8)
    offers = [offer("four", "4xa100", 4.0), offer("full", "8xa100", 8.0, available=0)]
    error = explain_no_match(requirements, match_offers(requirements, offers))
    assert error.suggestions == (
        "ask for fewer GPUs: 4xa100 in us-central1-b has 4, at $4.00/h",
        "1 offer matches but has no capacity now: try again later",
    )
    assert "no capacity" in error.message


def test_suggests_a_smaller_instance_type_and_another_model() -> None:
    requirements = Requirements(instance_type=it("8xa100"))
    error = explain_no_match(requirements, match_offers(requirements, [offer("half", "4xa100")]))
    assert error.suggestions == ("try instance type 4xa100: 4xa100 in us-central1-b at $1.00/h",)
    by_model = Requirements(gpu_type="h100")
    error = explain_no_match(by_model, match_offers(by_model, [offer("a", "a100")]))
    assert error.suggestions == ("try gpu_type a100: a100 in us-central1-b at $1.00/h",)


def test_without_a_single_relaxable_requirement_it_lists_the_closest_reasons() -> None:
    offers = [offer("far-and-pricey", dollars=20.0, region="eu-central1-a")]
    error = explain_no_match(SEED, match_offers(SEED, offers))
    assert error.suggestions == (
        (
            "relax the requirements: price $20.00/h is above max_price $10.00/h; "
            "region eu-central1-a is not us-central1-b"
        ),
    )


def test_with_no_offers_at_all() -> None:
    error = explain_no_match(SEED, match_offers(SEED, []))
    assert error.reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    assert "offers nothing" in error.message


# ---------------------------------------------------------------------------------------------
# offer_to_dict


def test_offer_to_dict_is_what_find_instances_returns() -> None:
    assert offer_to_dict(offer("o-1", "4xa100-40gb", 7.25, available=None)) == {
        "instance_type": "4xa100-40gb",
        "canonical_instance_type": "a100-40gb.sxm.4x",
        "gpu_type": "a100",
        "gpu_count": 4,
        "gpu_memory_gb": 40,
        "price_per_hour": 7.25,
        "region": "us-central1-b",
        "provider": "mithril",
        "available": None,
    }
    one_h100 = offer_to_dict(offer("o-2", "1xh100"), provider_defaults={"h100": 8})
    assert one_h100["instance_type"] == "1xh100"


# ---------------------------------------------------------------------------------------------
# Properties

REGIONS = ("us-central1-a", "us-central1-b", "eu-central1-a")


@st.composite
def offers(draw: st.DrawFn) -> Offer:
    model = draw(st.sampled_from(CATALOG))
    instance_type = draw(
        st.just(CPU_INSTANCE)
        | st.builds(
            InstanceType,
            model=st.just(model.name),
            memory_gb=st.sampled_from(model.memory_variants_gb),
            form_factor=st.sampled_from(model.form_factors),
            count=st.sampled_from((1, 2, 4, 8)),
        )
    )
    return Offer(
        offer_id=draw(st.sampled_from(("o1", "o2", "o3", "o4"))),
        provider=draw(st.sampled_from(("mithril", "local"))),
        instance_type=instance_type,
        price_per_hour_micros=draw(st.integers(0, 40)) * DOLLAR // 2,
        region=draw(st.sampled_from(REGIONS)),
        available=draw(st.none() | st.integers(0, 2)),
        spot=draw(st.booleans()),
    )


requirements = st.builds(
    Requirements,
    gpu_memory_gb=st.none() | st.sampled_from((16, 40, 80, 141)),
    max_price_micros=st.none() | st.integers(0, 20).map(lambda d: d * DOLLAR),
    region=st.none() | st.sampled_from(REGIONS),
    gpu_type=st.none() | st.sampled_from(("a100", "h100", "t4")),
    min_gpu_count=st.none() | st.sampled_from((1, 2, 8)),
    instance_type=st.none() | st.sampled_from((it("a100"), it("8xh100"), CPU_INSTANCE)),
)


def meets(req: Requirements, o: Offer) -> bool:
    """The requirements, restated independently of the implementation."""
    t = o.instance_type
    return (
        (req.instance_type is None or t == req.instance_type)
        and (req.gpu_type is None or t.model == req.gpu_type)
        and (req.gpu_memory_gb is None or t.memory_gb >= req.gpu_memory_gb)
        and (req.min_gpu_count is None or t.count >= req.min_gpu_count)
        and (req.max_price_micros is None or o.price_per_hour_micros <= req.max_price_micros)
        and (req.region is None or o.region == req.region)
        and o.available != 0
    )


@given(requirements, st.lists(offers(), max_size=25))
def test_every_offer_is_matched_or_rejected_with_reasons(req: Requirements, catalog: list[Offer]) -> None:
    result = match_offers(req, catalog)
    assert sorted(map(id, result.matches)) == sorted(id(o) for o in catalog if meets(req, o))
    assert [r.offer for r in result.rejections] == [o for o in catalog if not meets(req, o)]
    for rejection in result.rejections:
        assert rejection.reasons and len(rejection.reasons) == len(rejection.misses)
        assert all(isinstance(reason, str) and reason for reason in rejection.reasons)


@given(requirements, st.lists(offers(), max_size=25), st.randoms(use_true_random=False))
def test_ranking_is_sorted_and_independent_of_input_order(
    req: Requirements, catalog: list[Offer], shuffler: object
) -> None:
    result = match_offers(req, catalog)
    keys = [rank_key(o) for o in result.matches]
    assert keys == sorted(keys)
    prices = [o.price_per_hour_micros for o in result.matches]
    assert prices == sorted(prices)
    shuffled = list(catalog)
    shuffler.shuffle(shuffled)
    again = match_offers(req, shuffled).matches
    # Offers equal in every ranked field are interchangeable; compare them as values.
    assert [rank_key(o) for o in again] == keys


@given(requirements, st.lists(offers(), min_size=1, max_size=25))
def test_explain_no_match_always_explains(req: Requirements, catalog: list[Offer]) -> None:
    result = match_offers(req, catalog)
    if result.matches:
        return
    error = explain_no_match(req, result)
    assert error.reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    assert error.message.startswith("No offer matches")
    assert error.suggestions
