"""The httpx client against the fake Mithril server: Retry-After honoured, 5xx retried with a capped
backoff, a create whose answer is lost makes exactly one bid, errors mapped, the key never shown."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fakes.mithril import FakeMithril

from flow.domain.errors import ErrorReason
from flowd.providers.mithril_api import BACKOFF_CAP, MAX_ATTEMPTS, MithrilAPI, MithrilError


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def api(fake: FakeMithril, sleeps: Sleeps, key: str | None = None, timeout: float = 10.0) -> MithrilAPI:
    return MithrilAPI(fake.base_url, key or fake.api_key, timeout=timeout, sleep=sleeps)


def bid_body(fake: FakeMithril, name: str) -> dict[str, Any]:
    keys = MithrilAPI(fake.base_url, fake.api_key).call(
        "POST", "/v2/ssh-keys", "add a key", body={"project": fake.project_fid, "name": f"k-{name}"}
    )
    return {
        "project": fake.project_fid,
        "region": "us-central1-a",
        "instance_type": fake.instance_type_fid("a100-80gb.sxm.1x"),
        "limit_price": "$50.00",
        "instance_quantity": 1,
        "name": name,
        "launch_specification": {"ssh_keys": [keys["fid"]], "volumes": [], "startup_script": "#!/bin/bash\ntrue\n"},
    }


def test_429_waits_what_retry_after_says(fake_mithril: FakeMithril) -> None:
    sleeps = Sleeps()
    fake_mithril.inject("GET", "/v2/projects", status=429, count=3, headers={"Retry-After": "2"})
    projects = api(fake_mithril, sleeps).listing("/v2/projects", "list projects")
    assert fake_mithril.project_fid in {p["fid"] for p in projects}
    assert sleeps == [2.0, 2.0, 2.0]


def test_5xx_is_retried_with_a_capped_backoff_then_reported(fake_mithril: FakeMithril) -> None:
    sleeps = Sleeps()
    fake_mithril.inject("GET", "/v2/instance-types", status=503, count=2)
    assert api(fake_mithril, sleeps).listing("/v2/instance-types", "list types")
    assert len(sleeps) == 2 and sleeps[0] < sleeps[1]
    sleeps.clear()
    fake_mithril.inject("GET", "/v2/instance-types", status=502, count=MAX_ATTEMPTS + 5)
    with pytest.raises(MithrilError) as caught:
        api(fake_mithril, sleeps).listing("/v2/instance-types", "list types")
    assert caught.value.error.reason is ErrorReason.API_ERROR and "HTTP 502" in caught.value.error.message
    assert len(sleeps) == MAX_ATTEMPTS - 1 and max(sleeps) <= BACKOFF_CAP


def test_a_create_that_times_out_or_fails_makes_exactly_one_bid(fake_mithril: FakeMithril) -> None:
    sleeps = Sleeps()
    client = api(fake_mithril, sleeps, timeout=1.0)
    fake_mithril.inject("POST", "/v2/spot/bids", status=None, delay_s=2.0)  # created; the answer comes too late
    first = client.create_bid(bid_body(fake_mithril, "flow-a-t-1"))
    fake_mithril.inject("POST", "/v2/spot/bids", status=503)  # refused: nothing created, posted again
    second = client.create_bid(bid_body(fake_mithril, "flow-b-t-2"))
    fake_mithril.inject("POST", "/v2/spot/bids", status=429, count=5, headers={"Retry-After": "0"})
    third = client.create_bid(bid_body(fake_mithril, "flow-c-t-3"))
    names = sorted(b["name"] for b in fake_mithril.bids.values())
    assert names == ["flow-a-t-1", "flow-b-t-2", "flow-c-t-3"]
    assert {first["fid"], second["fid"], third["fid"]} == set(fake_mithril.bids)


def test_a_wrong_key_is_an_authentication_error_and_never_shown(
    fake_mithril: FakeMithril, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "fkey_" + "Z" * 30
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MithrilError) as caught:
        api(fake_mithril, Sleeps(), key=wrong).listing("/v2/projects", "list your projects")
    error = caught.value.error
    assert error.reason is ErrorReason.AUTHENTICATION_FAILED
    assert any("MITHRIL_API_KEY" in s for s in error.suggestions)
    assert wrong not in error.message and wrong not in caplog.text
    fake_mithril.inject("GET", "/v2/projects", status=503, count=1)
    api(fake_mithril, Sleeps()).listing("/v2/projects", "list")
    assert fake_mithril.api_key not in caplog.text


def test_no_server_is_a_network_error(fake_mithril: FakeMithril) -> None:
    sleeps = Sleeps()
    client = MithrilAPI("http://127.0.0.1:9", fake_mithril.api_key, timeout=1.0, sleep=sleeps)
    with pytest.raises(MithrilError) as caught:
        client.listing("/v2/projects", "list your projects")
    assert caught.value.error.reason is ErrorReason.NETWORK_ERROR
    assert len(sleeps) == MAX_ATTEMPTS - 1
