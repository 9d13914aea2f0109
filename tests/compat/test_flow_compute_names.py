"""Every name the Mithril platform's SDK (flow-compute 3.28.2) exports is provided here, or refused
with its reason and the alternative, in the error and in the README."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flow
from conftest import REPO
from flow.flow_compute import ABSENT, TASK_ABSENT

# flow-compute 3.28.2's `flow.__all__` (read from the installed package).
FLOW_COMPUTE_ALL = [
    "APIError", "AuthenticationError", "AuthorizationError", "AvailableInstance", "CapacityChild",
    "CapacityRequest", "CapacityRequestSpec", "ConfigParserError", "Constraints", "CpuVmType", "Cron",
    "DEFAULT_ALLOCATION_ESTIMATED_SECONDS", "DEFAULT_PROVISION_MINUTES", "DEFAULT_REGION",
    "DEFAULT_UPLOAD_ESTIMATED_MINUTES", "Flow", "FlowApp", "FlowError", "FlowOperationError", "FlowTimeoutError",
    "GrabFamilyChoice", "GrabPlan", "Image", "Instance", "InstanceNotReadyError", "InstanceType",
    "InsufficientBidPriceError", "InvokeTask", "MarketRow", "MountPersistence", "MountSpec", "NameConflictError",
    "NetworkError", "Period", "ProviderCapabilityError", "ProviderError", "PublicAvailability", "Quota",
    "QuotaExceededError", "RateLimitError", "RemoteExecResult", "RemoteExecutionError", "Reservation",
    "ReservationSpec", "ResourceNotAvailableError", "ResourceNotFoundError", "Resources", "Retries", "Sandbox",
    "SandboxInstanceChoice", "Secret", "Task", "TaskConfig", "TaskDisplayStatus", "TaskExecutionError",
    "TaskNotFoundError", "TaskStatus", "TaskWaitOutcome", "TaskWaitResult", "TimeoutError", "User",
    "ValidationAPIError", "ValidationError", "Volume", "VolumeError", "VolumeSpec", "WaitUntil", "__version__",
    "batched", "concurrent", "invoke", "invoke_async", "on_build", "on_enter", "on_exit", "param", "remote", "run",
    "web_endpoint",
]  # fmt: skip


def readme_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Coming from flow-compute")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else None]


def test_every_flow_compute_name_is_provided_or_refused_with_a_reason() -> None:
    assert len(FLOW_COMPUTE_ALL) == 79
    provided = [name for name in FLOW_COMPUTE_ALL if name in flow.__all__]
    refused = [name for name in FLOW_COMPUTE_ALL if name not in flow.__all__]
    assert sorted(refused) == sorted(ABSENT)
    assert len(provided) == 79 - len(ABSENT) == 43
    assert set(flow.__all__) - set(FLOW_COMPUTE_ALL) == {"DaemonUnavailableError"}
    for name in provided:
        assert getattr(flow, name) is not None


@pytest.mark.parametrize("name", sorted(ABSENT))
def test_a_refused_name_says_why_and_what_to_use(name: str) -> None:
    with pytest.raises(AttributeError) as raised:
        getattr(flow, name)
    message = str(raised.value)
    assert f"flow-compute's {name} is not provided here" in message
    assert ABSENT[name] in message and "Coming from flow-compute" in message
    assert not hasattr(flow, name)


def test_other_missing_names_are_plain_attribute_errors() -> None:
    with pytest.raises(AttributeError, match=r"^module 'flow' has no attribute 'nope'$"):
        flow.nope  # noqa: B018 - the access is the test


def test_the_readme_lists_every_refused_name_and_task_attribute() -> None:
    section = readme_section()
    for name in [*ABSENT, *TASK_ABSENT]:
        assert f"`{name}`" in section, name


def test_the_flow_compute_names_keep_import_flow_free_of_grpc() -> None:
    probe = (
        "import sys, flow; flow.run; flow.Secret; flow.on_enter; flow.param; flow.WaitUntil; flow.FlowTimeoutError; "
        "flow.InvokeTask; flow.Volume; print('grpc' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False"], done.stderr


def test_the_readme_counts_are_the_examples() -> None:
    from collections import Counter

    from compat.flow_compute_examples import ALL, LOCAL, MITHRIL, ROOT

    before = Counter(e.before for e in ALL)
    refused = sum(1 for e in ALL if e.refused) - 2  # U31b and M03 fail as they do there (no such volume)
    section = " ".join(readme_section().split())
    assert f"runs {len(ALL)} usage examples" in section
    assert f"{len(LOCAL)} on the local provider, {len(ROOT)} more" in section and f"and {len(MITHRIL)} as" in section
    assert (
        f"Before this layer, {before['unchanged']} ran unchanged, {before['refused']} failed with the refusal they "
        f"still get, and {before['needs edits']} needed edits" in section
    )
    assert f"Now {len(ALL) - refused} run unchanged" in section and f"{refused} fail with a documented" in section
