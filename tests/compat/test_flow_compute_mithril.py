"""flow-compute's documented usage that needs a GPU cloud, as written (a100, 8xa100, h100:8), run
against a real flowd whose mithril provider talks to the OpenAPI-validated fake Mithril (its
instances: the test stack's sshd, without Flow installed). Each runs unchanged or fails with its
documented refusal."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes.fixtures import fake_mithril, mithril_stack  # noqa: F401 - pytest finds fixtures by name
from fakes.mithril import FakeMithril
from mithril.conftest import StartDaemon, start_daemon  # noqa: F401 - pytest finds fixtures by name

from compat.example_runs import explain, make_project, outcome, run_example
from compat.flow_compute_examples import MITHRIL, Example
from conftest import REPO


def cheap_h100(fake: FakeMithril) -> None:
    """A market where 8xH100 goes for less than the guide's $3.50/h cap."""
    fake.set_min_price("h100-80gb.sxm.8x", "us-central1-b", 2.0)
    fake.set_price("h100-80gb.sxm.8x", "us-central1-b", 3.0)


def room_for_four(fake: FakeMithril) -> None:
    """A market where the cheapest region has the README's four 8xA100 nodes free."""
    fake.set_capacity("a100-80gb.sxm.8x", "us-central1-b", 4)


MARKETS: dict[str, Callable[[FakeMithril], None]] = {"M02": room_for_four, "M04": cheap_h100}


@pytest.mark.parametrize("example", MITHRIL, ids=lambda e: e.name)
def test_mithril_example(
    example: Example,
    fake_mithril: FakeMithril,  # noqa: F811 - the imported fixture, by name
    start_daemon: StartDaemon,  # noqa: F811 - the imported fixture, by name
    mithril_stack: dict[str, str],  # noqa: F811 - the imported fixture, by name
    tmp_path: Path,
) -> None:
    MARKETS.get(example.name, lambda _: None)(fake_mithril)
    daemon = start_daemon()
    mounts = Path(mithril_stack["FLOW_TEST_MITHRIL_SSH_HOME"]) / f"compat-{os.getpid()}-{tmp_path.name}"
    try:
        done = run_example(example, daemon.home.root, make_project(tmp_path / "project"), MOUNT_ROOT=str(mounts))
    finally:
        shutil.rmtree(mounts, ignore_errors=True)
    wanted = "refused" if example.refused else "unchanged"
    assert outcome(example, done) == wanted, explain(example, done)


def test_every_refusal_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Coming from flow-compute") :]
    assert all(e.name in section for e in MITHRIL if e.refused)
