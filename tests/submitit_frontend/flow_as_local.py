"""A pytest plugin (`-p flow_as_local`) that runs submitit's own executor tests through Flow: the
`executor` fixture of submitit's conftest.py and the executor submitit/local/test_local.py builds
become FlowExecutor (jobs: FlowJob), against the flowd that FLOW_HOME names. Nothing of submitit is
copied: its test functions run as shipped, with Flow in LocalExecutor's place.
"""

from __future__ import annotations

import types
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _flow_in_place_of_local_executor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import submitit.conftest
    import submitit.local.local

    from flow.submitit import FlowExecutor, FlowJob

    monkeypatch.setattr(submitit.conftest, "LocalExecutor", FlowExecutor)
    module = request.node.module
    if module.__name__ == "submitit.local.test_local":
        namespace = types.SimpleNamespace(
            **{**vars(submitit.local.local), "LocalExecutor": FlowExecutor, "LocalJob": FlowJob}
        )
        monkeypatch.setattr(module, "local", namespace)
    yield
