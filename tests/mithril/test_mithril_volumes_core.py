"""flow.domain.mithril.volumes: the API's name and size rules, request bodies, VolumeModel ->
Volume."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import ErrorReason
from flow.domain.mithril.volumes import (
    MAX_MITHRIL_VOLUME_GB,
    check_regions,
    checked_create_body,
    name_violations,
    new_mithril_volume_violations,
    volume_of,
)
from flow.domain.volumes.rules import Volume

API_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # the platform doc's rule, written out again


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_A.", max_size=70))
def test_the_name_rule_is_exactly_the_apis(name: str) -> None:
    ok = len(name) <= 64 and API_NAME.match(name) is not None
    assert (not name_violations(name)) == ok


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_A.", min_size=1, max_size=70))
def test_a_refused_name_names_the_field_and_suggests_a_name_the_api_accepts(name: str) -> None:
    problems = name_violations(name)
    if not problems:
        return
    (problem,) = problems
    assert problem.field == "name" and name in problem.value
    suggested = re.search(r"use e\.g\. '([^']*)'", problem.fix)
    assert suggested is not None
    assert not name_violations(suggested.group(1))


def test_a_leading_digit_is_refused_before_any_request() -> None:
    (problem,) = new_mithril_volume_violations("1data", 10, "block")
    assert problem.field == "name" and "starting with a letter" in problem.problem


@given(st.integers(min_value=-5, max_value=MAX_MITHRIL_VOLUME_GB + 5))
def test_sizes_are_whole_gb_from_1_to_the_platform_cap(size: int) -> None:
    problems = new_mithril_volume_violations("data", size, "block")
    assert (not problems) == (1 <= size <= MAX_MITHRIL_VOLUME_GB)
    assert all(p.field == "size_gb" for p in problems)


@given(
    name=st.from_regex(API_NAME, fullmatch=True).filter(lambda n: len(n) <= 64),
    size=st.integers(min_value=1, max_value=MAX_MITHRIL_VOLUME_GB),
    interface=st.sampled_from(["block", "file"]),
)
def test_a_create_body_round_trips_through_the_volume_model(name: str, size: int, interface: str) -> None:
    made = checked_create_body(name, size, interface, None, "us-central1-a", "proj_x")
    assert isinstance(made, Success)
    body = made.unwrap()
    assert body == {
        "name": name,
        "project": "proj_x",
        "disk_interface": interface.capitalize(),
        "region": "us-central1-a",
        "size_gb": size,
    }
    model = {
        "fid": "vol_abc",
        "name": body["name"],
        "region": body["region"],
        "created_at": "2026-01-02T03:04:05Z",
        "deleted_at": None,
        "capacity_gb": body["size_gb"],
        "project": "proj_x",
        "interface": body["disk_interface"],
        "bids": [],
        "reservations": [],
        "attachments": {},
    }
    volume = volume_of(model, "mithril")
    assert volume == Volume(
        volume_id="vol_abc",
        name=name,
        size_gb=size,
        interface=interface,
        region="us-central1-a",
        provider="mithril",
        created_at=1767323045.0,
    )


def test_every_bad_field_is_reported_at_once_and_nothing_is_built() -> None:
    made = checked_create_body("Bad_Name", 0, "tape", 3000, "r", "p")
    assert isinstance(made, Failure)
    error = made.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert {v.field for v in error.violations} == {"name", "size_gb", "interface", "iops"}


def test_deleted_or_malformed_models_are_not_volumes() -> None:
    assert volume_of({"fid": "vol_a", "name": "a", "capacity_gb": 1, "deleted_at": "2026-01-01T00:00:00Z"}, "m") is None
    assert volume_of({"fid": "vol_a", "name": "a", "capacity_gb": "1"}, "m") is None
    assert volume_of({"name": "a", "capacity_gb": 1}, "m") is None


def test_a_volume_of_another_region_is_refused_naming_the_field() -> None:
    vol = Volume(volume_id="vol_a", name="a", size_gb=1, region="eu-west1-a", provider="m")
    checked = check_regions([("volumes[0]", vol)], "us-central1-a")
    assert isinstance(checked, Failure)
    (problem,) = checked.failure().violations
    assert problem.field == "volumes[0]" and "eu-west1-a" in problem.problem and "region=" in problem.fix
    assert isinstance(check_regions([("volumes[0]", vol)], "eu-west1-a"), Success)


@given(st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5, minutes=-30))])))
def test_created_at_is_read_as_the_api_writes_it(when: dt.datetime) -> None:
    model = {"fid": "vol_a", "name": "a", "capacity_gb": 1, "created_at": when.isoformat().replace("+00:00", "Z")}
    volume = volume_of(model, "mithril")
    assert volume is not None and volume.created_at == pytest.approx(when.timestamp(), abs=1e-6)
