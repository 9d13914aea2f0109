"""Mithril's settings in $FLOW_HOME/config.yaml and the MITHRIL_* variables: validated with the
field and a fix, the key never shown, a file holding a key kept private."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from returns.result import Failure

from conftest import short_tmpdir
from flow.domain.daemon_config import MithrilSettings, daemon_config_from_dict, mithril_from_env

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
    text = problems({"providers": {"m": {"kind": "mithril", "api_key": bad_key, "regoin": "x", "poll_interval": 0}}})
    assert "providers.m.api_key: is not a Mithril API key" in text
    assert bad_key not in text
    assert "providers.m.regoin: is not a known setting (got 'regoin'); did you mean 'region'?" in text
    assert "providers.m.poll_interval" in text


def test_the_environment_configures_a_provider() -> None:
    assert mithril_from_env({}).unwrap() is None
    settings = mithril_from_env(
        {"MITHRIL_API_KEY": KEY, "MITHRIL_DEFAULT_PROJECT": "p", "MITHRIL_SSH_KEYS": "a, b", "MITHRIL_REGION": "r-1"}
    ).unwrap()
    assert settings is not None
    assert (settings.name, settings.project, settings.ssh_keys, settings.region) == ("mithril", "p", ("a", "b"), "r-1")
    bad = mithril_from_env({"MITHRIL_API_KEY": "nope"})
    assert isinstance(bad, Failure) and "environment.api_key" in bad.failure().message


def test_flowd_refuses_a_key_others_can_read() -> None:
    home = short_tmpdir("flow-c-")
    try:
        path = home / "config.yaml"
        path.write_text(f"providers:\n  mithril:\n    kind: mithril\n    api_key: {KEY}\n")
        path.chmod(0o644)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MITHRIL_")}
        done = subprocess.run(
            [sys.executable, "-m", "flowd", "--detach", "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 1
        assert f"chmod 600 {path}" in done.stderr
        assert KEY not in done.stderr
        assert not (home / "flowd.sock").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_no_key_anywhere_refuses_to_start(tmp_path: Path) -> None:
    home = short_tmpdir("flow-c-")
    try:
        path = home / "config.yaml"
        path.write_text("providers:\n  mithril:\n    kind: mithril\n    project: p\n")
        path.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MITHRIL_")}
        done = subprocess.run(
            [sys.executable, "-m", "flowd", "--detach", "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 1 and "has no API key" in done.stderr and "MITHRIL_API_KEY" in done.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)
