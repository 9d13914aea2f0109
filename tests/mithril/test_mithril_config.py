"""Mithril's settings in $FLOW_HOME/config.yaml and the MITHRIL_* variables: validated with the
field and a fix, the key never shown, a file holding a key kept private; settings that cannot be
used make that provider unusable (and say why), never the daemon."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from returns.result import Failure

from conftest import Daemon, _cleanup, short_tmpdir
from flow import TaskStatus, errors
from flow.domain.daemon_config import MithrilSettings, UnusableSettings, daemon_config_from_dict, mithril_from_env

KEY = "fkey_" + "A1b2C3d4E5" * 3


def problems(data: object) -> str:
    found = daemon_config_from_dict(data)
    assert isinstance(found, Failure)
    return found.failure().message


def test_a_full_mithril_provider() -> None:
    data = {
        "default_provider": "cloud",
        "providers": {
            "cloud": {
                "kind": "mithril",
                "api_key": KEY,
                "project": "my-project",
                "region": "us-central1-b",
                "api_url": "http://127.0.0.1:8080/",
                "ssh_key_file": "~/.ssh/id_ed25519",
                "ssh_keys": ["team-key"],
                "ssh_user": "ubuntu",
                "poll_interval": 1.5,
            }
        },
    }
    config = daemon_config_from_dict(data).unwrap()
    (settings,) = config.providers
    assert isinstance(settings, MithrilSettings)
    assert settings.api_url == "http://127.0.0.1:8080" and settings.ssh_keys == ("team-key",)
    assert KEY not in repr(config)  # the key is never shown


def test_mistakes_are_named_and_the_key_is_never_echoed() -> None:
    bad_key = "mithril-" + "x" * 30  # the design doc's wrong prefix
    data = {"providers": {"m": {"kind": "mithril", "api_key": bad_key, "regoin": "x", "poll_interval": 0}}}
    (unusable,) = daemon_config_from_dict(data).unwrap().providers  # the file itself is fine
    assert isinstance(unusable, UnusableSettings) and (unusable.name, unusable.kind) == ("m", "mithril")
    text = unusable.error.message
    assert "providers.m.api_key: is not a Mithril API key" in text
    assert bad_key not in text and bad_key not in repr(unusable)
    assert "providers.m.regoin: is not a known setting (got 'regoin'); did you mean 'region'?" in text
    assert "providers.m.poll_interval" in text


def test_other_mistakes_of_the_file_still_stop_it() -> None:
    assert "default_provider" in problems({"default_provider": "nope", "providers": {}})
    assert "providers.m.kind" in problems({"providers": {"m": {"kind": "mithrill", "api_key": KEY}}})


def test_the_environment_configures_a_provider() -> None:
    assert mithril_from_env({}).unwrap() is None
    settings = mithril_from_env(
        {"MITHRIL_API_KEY": KEY, "MITHRIL_DEFAULT_PROJECT": "p", "MITHRIL_SSH_KEYS": "a, b", "MITHRIL_REGION": "r-1"}
    ).unwrap()
    assert settings is not None
    assert (settings.name, settings.project, settings.ssh_keys, settings.region) == ("mithril", "p", ("a", "b"), "r-1")
    bad = mithril_from_env({"MITHRIL_API_KEY": "nope"})
    assert isinstance(bad, Failure) and "environment.api_key" in bad.failure().message


def _start(home: Path, config: str, mode: int = 0o600) -> Daemon:
    path = home / "config.yaml"
    path.write_text(config)
    path.chmod(mode)
    daemon = Daemon(home)
    daemon.start()
    return daemon


def _status(daemon: Daemon) -> dict[str, Any]:
    done = daemon.flow_cli("daemon", "status", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return {p["name"]: p for p in data["providers"]}


@pytest.fixture
def no_mithril_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("MITHRIL_")]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_mithril_env")
def test_a_broken_mithril_config_leaves_flowd_and_local_tasks_running() -> None:
    bad_key = "fkey_short"
    home = short_tmpdir("flow-c-")
    daemon = _start(home, f"providers:\n  mithril:\n    kind: mithril\n    api_key: {bad_key}\n    project: p\n")
    try:
        local = daemon.client(provider="local").run("echo still-here", upload_code=False).wait(timeout=60)
        assert local.status is TaskStatus.COMPLETED and local.logs() == "still-here\n"
        broken = _status(daemon)["mithril"]
        assert broken["kind"] == "mithril" and "line 4: providers.mithril.api_key" in broken["problem"]
        text = daemon.flow_cli("daemon", "status").stdout
        assert "provider mithril (mithril, the default): cannot be used" in text and "provider local" in text
        flow = daemon.client(provider="mithril")
        with pytest.raises(errors.ValidationError) as caught:
            flow.run("true", instance_type="a100", upload_code=False)
        assert "Provider mithril cannot be used" in caught.value.message and caught.value.suggestions
        with pytest.raises(errors.ValidationError):
            flow.find_instances({"instance_type": "a100"})
        assert [t.task_id for t in flow.list_tasks()] == [local.task_id]
        for text in (str(broken), (home / "flowd.log").read_text()):
            assert bad_key not in text
    finally:
        _cleanup(daemon)


@pytest.mark.usefixtures("no_mithril_env")
def test_a_key_others_can_read_makes_the_provider_unusable_with_the_fix() -> None:
    home = short_tmpdir("flow-c-")
    daemon = _start(home, f"providers:\n  mithril:\n    kind: mithril\n    api_key: {KEY}\n", mode=0o644)
    try:
        problem = _status(daemon)["mithril"]["problem"]
        assert f"chmod 600 {home / 'config.yaml'}" in problem and KEY not in problem
        assert KEY not in (home / "flowd.log").read_text()
    finally:
        _cleanup(daemon)


@pytest.mark.usefixtures("no_mithril_env")
def test_no_key_anywhere_makes_the_provider_unusable() -> None:
    home = short_tmpdir("flow-c-")
    daemon = _start(home, "providers:\n  mithril:\n    kind: mithril\n    project: p\n")
    try:
        problem = _status(daemon)["mithril"]["problem"]
        assert "api_key: is required" in problem and "MITHRIL_API_KEY" in problem
    finally:
        _cleanup(daemon)
