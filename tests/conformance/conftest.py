"""The provider set-ups (conformance.setups), each one real flowd shared by every scenario.

All the set-ups a test run selects are started together, at its first scenario, and each starts
its time-limit task then: the minute those take (Slurm counts whole minutes) passes once, while
the other scenarios run, instead of once per set-up. pytest runs every scenario against one set-up
before it moves on to the next; the last scenario of each looks at its time-limit task."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from fakes.fixtures import mithril_stack  # noqa: F401 - a session fixture the Mithril set-up needs
from k8s.fixtures import k8s_cluster  # noqa: F401 - a session fixture the Kubernetes set-up needs
from slurm.conftest import slurm_stack  # noqa: F401 - a session fixture the Slurm set-ups need

from conformance.setups import (
    SETUPS,
    TIME_LIMIT_HOURS,
    Setup,
    kubernetes_setup,
    local_setup,
    mithril_setup,
    slurm_setup,
)


def _start(name: str, request: pytest.FixtureRequest) -> contextlib.AbstractContextManager[Setup]:
    if name == "local":
        return local_setup()
    if name in ("slurm-local", "slurm-ssh"):
        return slurm_setup(request.getfixturevalue("slurm_stack"), name)
    if name == "kubernetes":
        return kubernetes_setup(request.getfixturevalue("k8s_cluster"))
    return mithril_setup(request.getfixturevalue("mithril_stack"))


@pytest.fixture(scope="session")
def started(request: pytest.FixtureRequest) -> Iterator[dict[str, Setup]]:
    wanted = {
        item.callspec.params["setup"]
        for item in request.session.items
        if hasattr(item, "callspec") and "setup" in item.callspec.params
    }
    with contextlib.ExitStack() as stack:
        setups = {name: stack.enter_context(_start(name, request)) for name in SETUPS if name in wanted}
        for ready in setups.values():
            ready.timed = ready.run("echo started; sleep 600", max_run_time_hours=TIME_LIMIT_HOURS)
        yield setups


@pytest.fixture(scope="module", params=SETUPS)
def setup(request: pytest.FixtureRequest, started: dict[str, Setup]) -> Setup:
    return started[request.param]
