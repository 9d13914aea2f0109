"""The converters of flow.wire, both directions: what flowd encodes, the SDK reads back unchanged,
through the bytes that cross the socket."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flow_strategies as fs
from flow.domain.task.function_call import FunctionResult, RemoteError
from flow.domain.volumes.rules import Volume
from flow.wire.calls import method_path
from flow.wire.daemon_codec import daemon_info_call, list_providers_call
from flow.wire.function_codec import Returned, result_from_proto, result_to_proto, task_result_call
from flow.wire.volume_codec import get_volume_call, volume_to_proto
from flowapi.v1 import daemon_service_pb2, task_service_pb2, volume_pb2

times = st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)


@given(
    st.builds(
        Volume,
        volume_id=fs.volume_ids(),
        name=fs.names(),
        size_gb=st.integers(1, 2**40),
        interface=st.sampled_from(["block", "file"]),
        region=fs.regions(),
        provider=st.sampled_from(["local", "mithril", "cluster"]),
        created_at=times,
        iops=st.none() | st.integers(1, 10**6),
    ),
    st.lists(st.text(max_size=12), max_size=3).map(tuple),
)
def test_a_volume_and_its_attachments_round_trip(volume: Volume, attached: tuple[str, ...]) -> None:
    reply = volume_pb2.GetVolumeResponse(volume=volume_to_proto(volume, attached)).SerializeToString()
    got, holders = get_volume_call(volume.volume_id).read(reply)
    assert holders == attached
    assert abs(got.created_at - volume.created_at) < 1e-6
    assert got == Volume(
        volume_id=volume.volume_id,
        name=volume.name,
        size_gb=volume.size_gb,
        interface=volume.interface,
        region=volume.region,
        provider=volume.provider,
        created_at=got.created_at,
        iops=volume.iops,
    )


# What a function's JSON result can hold (the task's runner refuses the rest): numbers travel as
# doubles, so integers within 2**53.
scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text()
json_results = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(json_results)
def test_a_json_result_round_trips(value: Any) -> None:
    reply = result_to_proto(FunctionResult(encoding="json", value=value))
    assert result_from_proto(reply) == FunctionResult(encoding="json", value=value)
    assert task_result_call("t-1").read(reply.SerializeToString()) == Returned(value, b"", None)


@given(st.binary(max_size=64), st.text(max_size=20), st.binary(max_size=16))
def test_pickled_results_and_errors_round_trip(pickled: bytes, message: str, exception: bytes) -> None:
    returned = FunctionResult(encoding="pickle", pickled=pickled or b"\x80")
    assert result_from_proto(result_to_proto(returned)) == returned
    assert task_result_call("t-1").read(result_to_proto(returned).SerializeToString()) == (None, returned.pickled, None)
    error = RemoteError(type="builtins.ValueError", message=message, traceback="tb", pickled=exception)
    raised = FunctionResult(encoding="json", error=error)
    assert result_from_proto(result_to_proto(raised)) == raised
    assert task_result_call("t-1").read(result_to_proto(raised).SerializeToString()) == (None, b"", error)


def test_daemon_info_and_providers_read_as_one_value() -> None:
    info = daemon_service_pb2.GetDaemonInfoResponse(
        version="1.2.3", api_version="flowapi.v1", pid=42, flow_home="/h", addresses=["unix:/h/flowd.sock"]
    )
    info.default_provider = "cluster"
    info.start_time.FromSeconds(1_700_000_000)
    providers = daemon_service_pb2.ListProvidersResponse(
        providers=[
            daemon_service_pb2.Provider(name="providers/cluster", kind="slurm", is_default=True),
            daemon_service_pb2.Provider(name="providers/local", kind="local"),
        ]
    )
    read = daemon_info_call().read(info.SerializeToString())
    read = read._replace(providers=list_providers_call().read(providers.SerializeToString()))
    assert (read.pid, read.addresses, read.started_at) == (42, ("unix:/h/flowd.sock",), 1_700_000_000.0)
    listed = [(p.name, p.kind, p.default) for p in read.providers]
    assert listed == [("cluster", "slurm", True), ("local", "local", False)]
    assert read.kind_of("cluster") == "slurm" and read.kind_of("gone") == ""


def test_method_paths_are_checked_against_the_contract() -> None:
    service = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"]
    assert method_path(service, "GetTask") == "/flowapi.v1.TaskService/GetTask"
    with pytest.raises(KeyError):
        method_path(service, "GetTasks")
