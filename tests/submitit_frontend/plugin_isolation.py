"""A pytest plugin (`-p plugin_isolation`, with this directory on sys.path) for running
submitit's own test files with Flow's plugin installed.

submitit 1.5.4's test_plugins.py::test_find_good_plugin and ::test_skip_bad_plugin assert the exact
set of executors {"good"|nothing, "slurm", "local", "debug"}: they assume no other plugin is
installed (1.5.3 isolated them with a private pkg_resources.WorkingSet; 1.5.4's importlib.metadata
discovery sees every installed distribution). For those two tests only, Flow's own entry points
are hidden from importlib.metadata, which restores the isolation they were written for; every
other test sees Flow's plugin.
"""

from __future__ import annotations

import importlib.metadata as metadata
from collections.abc import Iterator
from typing import Any

import pytest

ISOLATED = frozenset({"test_find_good_plugin", "test_skip_bad_plugin"})


@pytest.fixture(autouse=True)
def _hide_flow_plugin_where_isolation_is_assumed(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.module.__name__ != "submitit.core.test_plugins" or request.node.name not in ISOLATED:
        yield
        return
    real = metadata.entry_points

    def without_flow(**selection: Any) -> Any:
        found = real(**selection)
        flat = getattr(found, "_all", found)  # 3.11's SelectableGroups holds the flat list here
        return metadata.EntryPoints(
            ep for ep in flat if not (ep.group == "submitit" and ep.value.startswith("flow.submitit:"))
        )

    from submitit.core import plugins

    plugins._get_plugins.cache_clear()
    metadata.entry_points = without_flow  # type: ignore[assignment]
    try:
        yield
    finally:
        metadata.entry_points = real
        plugins._get_plugins.cache_clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leaves out the tests SUBMITIT_DESELECT names (comma-separated function names, matched
    exactly: `-k` matches substrings, and test_requeuing would take test_requeuing_checkpointable;
    `file::name` names one file's test where another file has one of the same name)."""
    import os

    names = {n for n in os.environ.get("SUBMITIT_DESELECT", "").split(",") if n}
    left_out = [
        item
        for item in items
        if getattr(item, "originalname", item.name) in names
        or any("::" in n and item.nodeid.endswith(n) for n in names)
    ]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]
