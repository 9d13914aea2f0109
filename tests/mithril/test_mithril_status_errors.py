"""Bid and instance statuses as task phases, SSH destinations, exit records, and HTTP errors as the
seed's exceptions with suggestions (through the one error table)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flow import errors
from flow.domain.errors import ErrorReason
from flow.domain.mithril.errors import api_error, is_price_too_low, network_error
from flow.domain.mithril.status import Phase, observe, parse_destination, parse_exit_code
from flow.wire.error_table import exception_from_domain_error


def inst(status: str, destination: str | None = "10.0.0.1:22") -> dict[str, Any]:
    return {"fid": "inst_1", "status": status, "ssh_destination": destination, "bid": "bid_1"}


def bid(status: str, quantity: int = 1) -> dict[str, Any]:
    return {"fid": "bid_1", "status": status, "instance_quantity": quantity}


def test_the_mapping_table() -> None:
    assert observe(bid("Open"), []).phase is Phase.PENDING
    assert observe(bid("Allocated"), [inst("STATUS_NEW", None)]).phase is Phase.PROVISIONING
    assert observe(bid("Allocated"), [inst("STATUS_RUNNING", None)]).phase is Phase.PROVISIONING  # no SSH yet
    running = observe(bid("Allocated"), [inst("STATUS_RUNNING")])
    assert running.phase is Phase.RUNNING and running.destinations == ("10.0.0.1:22",)
    two = [inst("STATUS_RUNNING"), inst("STATUS_STARTING", None)]
    assert observe(bid("Allocated", 2), two).phase is Phase.PROVISIONING
    assert observe(bid("Allocated", 2), [inst("STATUS_RUNNING")]).phase is Phase.PROVISIONING
    notice = observe(bid("Preempting"), [inst("STATUS_PREEMPTING")])  # it still runs: its last lines come
    assert notice.phase is Phase.PREEMPTING and notice.destinations == ("10.0.0.1:22",)
    assert observe(bid("Allocated"), [inst("STATUS_RELOCATING")]).phase is Phase.PREEMPTING
    preempted = observe(bid("Terminated"), [inst("STATUS_PREEMPTED", None)])
    assert preempted.phase is Phase.PREEMPTED and preempted.detail.startswith("PREEMPTED")
    assert observe(bid("Open"), [inst("STATUS_PREEMPTED", None)]).phase is Phase.PREEMPTED  # to be reallocated
    assert observe(bid("Allocated"), [inst("STATUS_ERROR")]).phase is Phase.FAILED
    assert observe(bid("Terminated"), [inst("STATUS_TERMINATED")]).phase is Phase.TERMINATED
    assert observe(bid("Paused"), [inst("STATUS_PAUSED")]).phase is Phase.PAUSED
    assert observe(bid("Sleeping"), []).phase is Phase.UNKNOWN  # never guessed


@given(st.text(max_size=50))
def test_destinations_parse_or_are_refused(text: str) -> None:
    parsed = parse_destination(text)
    if parsed is not None:
        host, port = parsed
        assert 1 <= port <= 65535 and host and " " not in host and ";" not in host


def test_destinations() -> None:
    assert parse_destination("1.2.3.4") == ("1.2.3.4", 22)
    assert parse_destination("127.0.0.1:2822") == ("127.0.0.1", 2822)
    assert parse_destination("host;rm -rf /") is None
    assert parse_destination("host:99999") is None
    assert parse_destination(None) is None


def test_exit_records() -> None:
    assert parse_exit_code("0\n") == 0 and parse_exit_code("137\n") == 137
    assert parse_exit_code("") is None and parse_exit_code("12a") is None and parse_exit_code("-1") is None


def test_wrong_key_is_an_authentication_error_with_a_suggestion() -> None:
    for status in (401, 403):
        exc = exception_from_domain_error(api_error(status, {"detail": "Invalid API key"}, "", "list", "req-1"))
        assert isinstance(exc, errors.AuthenticationError)
        assert any("MITHRIL_API_KEY" in s for s in exc.suggestions)
        assert "req-1" in exc.message


def test_422_lists_every_field_error() -> None:
    body = {
        "detail": [
            {"loc": ["body", "limit_price"], "msg": "invalid price", "type": "value_error"},
            {"loc": ["body", "launch_specification", "ssh_keys"], "msg": "field required", "type": "missing"},
        ]
    }
    error = api_error(422, body, "{}", "create the bid")
    exc = exception_from_domain_error(error)
    assert isinstance(exc, errors.ValidationAPIError)  # the seed's "422 errors" class
    assert [v.field for v in error.violations] == ["limit_price", "launch_specification.ssh_keys"]
    assert "invalid price" in exc.message and "field required" in exc.message
    assert is_price_too_low(422, body, "{}")


def test_quota_price_and_network() -> None:
    quota = api_error(400, {"detail": "Spot quota exceeded for project"}, '{"detail": "Spot quota exceeded"}', "bid")
    assert isinstance(exception_from_domain_error(quota), errors.QuotaExceededError)
    raw = '{"detail": "Limit price below minimum"}'
    assert is_price_too_low(400, {"detail": "Limit price below minimum"}, raw)
    assert not is_price_too_low(400, {"detail": "name already used"}, '{"detail": "name already used"}')
    net = exception_from_domain_error(network_error("http://127.0.0.1:1", "list", "ConnectError"))
    assert isinstance(net, errors.NetworkError) and net.suggestions
    other = exception_from_domain_error(api_error(500, None, "oops", "list"))
    assert isinstance(other, errors.APIError)
    assert api_error(404, {"detail": "nope"}, "", "read").reason is ErrorReason.RESOURCE_NOT_FOUND
