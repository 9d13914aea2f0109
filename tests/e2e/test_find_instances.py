"""find_instances through the daemon, and placement through the same matcher."""

from __future__ import annotations

import pytest

from flow import Flow
from flow.errors import ResourceNotAvailableError, ValidationError


def test_the_local_machine_offers_its_cpus(flow: Flow) -> None:
    offers = flow.find_instances()
    cpu = next(o for o in offers if o["instance_type"] == "cpu")
    assert cpu["price_per_hour"] == 0.0 and cpu["provider"] == "local" and cpu["gpu_count"] == 0


def test_an_unmet_request_explains_the_closest_miss(flow: Flow) -> None:
    found = flow.find_instances({"gpu_memory_gb": 80, "max_price": 10.0, "region": "us-central1-b"})
    gpu_rows = [o for o in found if o["gpu_memory_gb"] >= 80]
    assert found == gpu_rows  # only offers that meet the request, if any
    if not found:
        assert "80" in found.explanation
        assert found.suggestions


def test_unknown_keys_are_refused_with_a_suggestion(flow: Flow) -> None:
    with pytest.raises(ValidationError) as caught:
        flow.find_instances({"gpu_mem": 80})
    assert "gpu_memory_gb" in str(caught.value)


def test_placement_uses_the_same_matcher(flow: Flow) -> None:
    offered = {o["gpu_memory_gb"] for o in flow.find_instances()}
    if max(offered) >= 4096:
        pytest.skip("this machine has a GPU with 4 TB")
    with pytest.raises(ResourceNotAvailableError) as caught:
        flow.run("true", min_gpu_memory_gb=4096, max_price_per_hour=10.0, upload_code=False)
    assert "This machine has" in caught.value.message
