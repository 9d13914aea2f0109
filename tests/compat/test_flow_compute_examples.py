"""The documented usage of the Mithril platform's SDK (flow-compute) runs here unchanged, or fails
with its documented refusal: each example (compat.flow_compute_examples) as a script, through a
real flowd and the local provider (`root`: with loop-mounted volumes and bind mounts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from volumes.conftest import vshared  # noqa: F401 - pytest finds fixtures by name

from compat.example_runs import explain, make_project, outcome, run_example
from compat.flow_compute_examples import LOCAL, ROOT, Example
from conftest import REPO, Daemon


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield make_project(tmp_path_factory.mktemp("flow-compute-project"))


def expect(example: Example, daemon: Daemon, project: Path) -> None:
    done = run_example(example, daemon.home.root, project)
    wanted = "refused" if example.refused else "unchanged"
    assert outcome(example, done) == wanted, explain(example, done)


@pytest.mark.parametrize("example", LOCAL, ids=lambda e: e.name)
def test_local_example(example: Example, shared_daemon: Daemon, project: Path) -> None:
    expect(example, shared_daemon, project)


@pytest.mark.parametrize("example", ROOT, ids=lambda e: e.name)
def test_example_with_volumes_and_mounts(example: Example, vshared: Daemon, project: Path) -> None:  # noqa: F811
    expect(example, vshared, project)


def test_every_refusal_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Coming from flow-compute") :]
    for example in [*LOCAL, *ROOT]:
        if example.refused:
            assert example.name in section, f"{example.name}'s refusal is not in the README"
