"""A real flowd configured with a mithril provider that talks to the fake Mithril server, whose
instances are the test stack's real sshd. Every test ends with the fake's spec check (in
`fake_mithril`'s teardown)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes.fixtures import fake_mithril, mithril_stack  # noqa: F401 - pytest finds fixtures by name
from fakes.mithril import FakeMithril

from conftest import Daemon, _cleanup, short_tmpdir


def mithril_yaml(fake: FakeMithril, stack: dict[str, str], api_key: str | None = None, extra: str = "") -> str:
    return f"""\
providers:
  mithril:
    kind: mithril
    api_key: {api_key or fake.api_key}
    project: {fake.project_name}
    api_url: {fake.base_url}
    ssh_key_file: {stack["FLOW_TEST_SSH_KEY"]}
    ssh_user: {stack["FLOW_TEST_MITHRIL_SSH_USER"]}
    known_hosts: {stack["FLOW_TEST_SSH_KNOWN_HOSTS"]}
    poll_interval: 0.2
{extra}"""


StartDaemon = Callable[..., Daemon]


@pytest.fixture
def start_daemon(
    fake_mithril: FakeMithril,  # noqa: F811 - the imported fixture, by name
    mithril_stack: dict[str, str],  # noqa: F811 - the imported fixture, by name
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[StartDaemon]:
    """Starts a flowd whose config names the fake (`config=False`: none), with extra environment."""
    started: list[Daemon] = []
    for name in [n for n in os.environ if n.startswith("MITHRIL_")]:
        monkeypatch.delenv(name)

    def start(config: bool = True, api_key: str | None = None, env: dict[str, str] | None = None) -> Daemon:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        d = Daemon(short_tmpdir("flow-mi-"))
        d.home.root.mkdir(parents=True, exist_ok=True)
        if config:
            path: Path = d.home.config
            path.write_text(mithril_yaml(fake_mithril, mithril_stack, api_key))
            path.chmod(0o600)
        d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        _cleanup(d)


@pytest.fixture
def mithril_daemon(start_daemon: StartDaemon) -> Daemon:
    return start_daemon()
