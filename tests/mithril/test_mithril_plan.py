"""The pure planning of a Mithril bid: the catalog from the API's JSON, the offer through the core's
matcher, the region, the limit price and the bid's name."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import ErrorReason
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.mithril.bid import MARKET_MULTIPLIER, bid_name, bid_request, plan_bid, price_too_low
from flow.domain.mithril.catalog import catalog_of, limit_price_text, parse_dollars
from flow.domain.task.config import TaskConfig
from mithril.catalog_data import AVAILABILITY, TYPES

CATALOG = catalog_of(TYPES, AVAILABILITY, "mithril")


def test_catalog_reads_types_from_the_api_and_names_what_it_skips() -> None:
    names = {o.type_name for o in CATALOG.offers}
    assert names == {"a100-80gb.sxm.1x", "a100-80gb.sxm.4x", "h100-80gb.sxm.8x", "l4-24gb.pcie.1x"}
    h100 = next(o for o in CATALOG.offers if o.type_fid == "it_H8")
    assert format_instance_type(h100.offer.instance_type) == "h100-80gb.sxm.8x"
    l4 = next(o for o in CATALOG.offers if o.type_fid == "it_L4")
    assert l4.offer.instance_type.form_factor == "pcie"
    assert any("Z9000" in s for s in CATALOG.skipped)  # an unknown GPU is named, not guessed
    assert any("auc_8" in s for s in CATALOG.skipped)  # a malformed price too
    eu = next(o for o in CATALOG.offers if o.offer.offer_id == "auc_3")
    assert eu.offer.price_per_hour_micros == 1_001_000_000  # "$1,001.00"


def test_h100_alone_means_the_8_gpu_node_mithril_sells() -> None:
    assert CATALOG.provider_defaults() == {"h100": 8}
    plan = plan_bid(TaskConfig(instance_type="h100"), CATALOG, "job", "t-1").unwrap()
    assert plan.type_fid == "it_H8"
    assert plan.limit_price_micros == 24_000_000 * MARKET_MULTIPLIER  # an 8-GPU price, not a 1-GPU one


def test_cheapest_region_with_capacity_is_chosen_unless_one_is_set() -> None:
    plan = plan_bid(TaskConfig(instance_type="a100"), CATALOG, "job", "t-1").unwrap()
    assert (plan.type_fid, plan.region) == ("it_A1", "us-central1-a")  # us-central1-b is cheaper but full
    there = plan_bid(TaskConfig(instance_type="a100", region="eu-central1-a"), CATALOG, "job", "t-1").unwrap()
    assert there.region == "eu-central1-a"


def test_min_gpu_memory_goes_through_the_matcher() -> None:
    plan = plan_bid(TaskConfig(min_gpu_memory_gb=40), CATALOG, "job", "t-1").unwrap()
    assert plan.type_fid == "it_A1"  # the cheapest with >= 40 GB and capacity
    small = plan_bid(TaskConfig(min_gpu_memory_gb=16), CATALOG, "job", "t-1").unwrap()
    assert small.type_fid == "it_L4"


def test_no_instance_type_is_a_validation_error_naming_the_field() -> None:
    error = plan_bid(TaskConfig(command="true"), CATALOG, "job", "t-1").failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert error.violations[0].field == "instance_type"


def test_too_many_nodes_suggest_regions_with_room() -> None:
    config = TaskConfig(instance_type="a100", num_instances=3, region="eu-central1-a")  # 2 free there
    error = plan_bid(config, CATALOG, "job", "t-1").failure()
    assert error.reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    assert "num_instances=3" in error.message
    assert any("us-central1-a" in s and "4 free" in s for s in error.suggestions)


def test_a_max_price_below_the_market_is_refused_with_the_market_price() -> None:
    error = plan_bid(TaskConfig(instance_type="a100", max_price_per_hour=1.0), CATALOG, "job", "t-1").failure()
    assert error.reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    assert "max_price_per_hour" in error.message + " ".join(error.suggestions)


@given(st.floats(min_value=0.01, max_value=100_000, allow_nan=False))
def test_the_limit_price_never_exceeds_max_price_per_hour(max_price: float) -> None:
    config = TaskConfig(instance_type="l4", max_price_per_hour=max_price)
    planned = plan_bid(config, CATALOG, "job", "t-1")
    if isinstance(planned, Failure):
        assert planned.failure().reason is ErrorReason.RESOURCE_NOT_AVAILABLE  # below the market
        return
    plan = planned.unwrap()
    text = plan.limit_price
    assert re.fullmatch(r"\$[0-9]+\.[0-9]{2}", text)
    assert parse_dollars(text) == plan.limit_price_micros
    assert plan.limit_price_micros <= round(max_price * 1_000_000)
    assert round(max_price * 1_000_000) - plan.limit_price_micros < 10_000  # at most a cent less


@given(st.integers(min_value=0, max_value=10**12))
def test_limit_price_text_round_trips_and_rounds_down(micros: int) -> None:
    text = limit_price_text(micros)
    back = parse_dollars(text)
    assert back is not None and back <= micros and micros - back < 10_000
    assert re.fullmatch(r"\$[0-9]+\.[0-9]{2}", text)


@given(st.text(max_size=200), st.from_regex(r"t-[0-9a-z]{10}", fullmatch=True))
def test_bid_names_are_plain_and_carry_the_task_id(name: str, task_id: str) -> None:
    made = bid_name(name, task_id)
    assert re.fullmatch(r"flow-[a-z0-9-]+", made)
    assert made.endswith(task_id) and len(made) <= 5 + 40 + 1 + len(task_id)


def test_bid_request_is_the_spec_shape() -> None:
    plan = plan_bid(TaskConfig(instance_type="a100", max_price_per_hour=5), CATALOG, "Job 1", "t-abc").unwrap()
    body = bid_request(plan, "proj_1", ["sshkey_1"], [], "#!/bin/bash\n")
    assert body == {
        "project": "proj_1",
        "region": "us-central1-a",
        "instance_type": "it_A1",
        "limit_price": "$5.00",
        "instance_quantity": 1,
        "name": "flow-job-1-t-abc",
        "launch_specification": {"ssh_keys": ["sshkey_1"], "volumes": [], "startup_script": "#!/bin/bash\n"},
    }


def test_price_too_low_suggests_a_price_and_regions() -> None:
    plan = plan_bid(TaskConfig(instance_type="a100", max_price_per_hour=2), CATALOG, "job", "t-1").unwrap()
    error = price_too_low(plan, CATALOG, "limit price below minimum")
    assert error.reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    assert "max_price_per_hour to at least $3.60" in error.suggestions[0]
    assert "us-central1-a" in error.suggestions[1] and "eu-central1-a" in error.suggestions[1]


def test_parse_dollars_refuses_what_is_not_a_price() -> None:
    assert parse_dollars("$25.60") == 25_600_000
    for bad in ("", "$", "25 USD", None, 25, "$-1"):
        assert parse_dollars(bad) is None
    assert isinstance(plan_bid(TaskConfig(instance_type="a100"), CATALOG, "j", "t"), Success)
