"""$FLOW_HOME/config.yaml: every mistake is named with its field, line and a fix, and flowd refuses
to start on a bad file (so `flow` shows why) rather than run with half a configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from returns.result import Failure, Success

from conftest import BIN, Daemon, short_tmpdir
from flow.domain.daemon_config import LocalSettings, SlurmSettings, daemon_config_from_dict


def problems(data: object) -> dict[str, str]:
    parsed = daemon_config_from_dict(data)
    assert isinstance(parsed, Failure), parsed
    return {v.field: v.description for v in parsed.failure().violations}


def test_a_full_ssh_provider() -> None:
    parsed = daemon_config_from_dict(
        {
            "default_provider": "cluster",
            "providers": {
                "cluster": {
                    "kind": "slurm",
                    "mode": "ssh",
                    "host": "login.example.org",
                    "port": 2222,
                    "user": "alice",
                    "key_file": "~/.ssh/id_ed25519",
                    "known_hosts": "/home/alice/.ssh/known_hosts",
                    "partition": "gpu",
                    "account": "proj-1",
                    "qos": None,
                    "work_dir": "/home/alice/flow",
                    "slurm_conf": "/etc/slurm/slurm.conf",
                    "poll_interval": 0.5,
                    "gpu_type": "a100-40gb",
                },
                "local": {"kind": "local"},
            },
        }
    )
    assert isinstance(parsed, Success), parsed
    config = parsed.unwrap()
    assert config.default_provider == "cluster"
    cluster, laptop = config.providers
    assert isinstance(cluster, SlurmSettings) and isinstance(laptop, LocalSettings)
    assert cluster.mode == "ssh" and cluster.ssh is not None and cluster.ssh.host_key_checking
    assert (cluster.ssh.port, cluster.partition, cluster.poll_interval) == (2222, "gpu", 0.5)
    assert cluster.gpu is not None and (cluster.gpu.model, cluster.gpu.memory_gb) == ("a100", 40)


def test_no_file_and_an_empty_file_mean_local_only() -> None:
    assert daemon_config_from_dict(None).unwrap().providers == ()
    assert daemon_config_from_dict({}).unwrap().default_provider == "local"


def test_every_problem_is_named_with_its_path_and_a_fix() -> None:
    found = problems(
        {
            "default_provider": "clustr",
            "provders": {},
            "providers": {
                "cluster": {
                    "kind": "slurm",
                    "mode": "ssh",
                    "port": 99999,
                    "prot": 22,
                    "work_dir": "relative/dir",
                    "poll_interval": 0,
                    "gpu_type": "a1000",
                    "host_key_checking": "yes",
                },
                "login": {"kind": "slurm", "mode": "local", "host": "x", "partition": "bad name"},
                "other": {"kind": "nomad"},
                "laptop": {"kind": "local"},
                "local": {"kind": "slurm"},
                "bad name": {"kind": "slurm"},
            },
        }
    )
    assert "did you mean 'providers'?" in found["provders"]
    assert "did you mean 'cluster'?" in found["default_provider"]
    assert "is required in mode: ssh" in found["providers.cluster.host"]
    assert "is not a TCP port" in found["providers.cluster.port"]
    assert "did you mean 'port'?" in found["providers.cluster.prot"]
    assert "must be an absolute path" in found["providers.cluster.work_dir"]
    assert "must be between 0.05 and 300" in found["providers.cluster.poll_interval"]
    assert "unknown GPU model 'a1000'" in found["providers.cluster.gpu_type"]
    assert "must be true or false" in found["providers.cluster.host_key_checking"]
    assert "only applies in mode: ssh" in found["providers.login.host"]
    assert "is not valid here" in found["providers.login.partition"]
    assert "is not a provider kind" in found["providers.other.kind"]
    assert "cannot be used for the provider named 'local'" in found["providers.local.kind"]
    assert "is the kind of the one provider named 'local'" in found["providers.laptop.kind"]
    assert "is not a valid provider name" in found["providers.bad name"]


@pytest.mark.parametrize("work_dir", ["/home/my dir", "/tmp/%j", "/tmp/a#b", "/tmp/q'uote", "/a/../b"])
def test_work_dirs_must_be_safe_in_sbatch_lines(work_dir: str) -> None:
    found = problems({"providers": {"c": {"kind": "slurm", "work_dir": work_dir}}})
    assert "providers.c.work_dir" in found


def flowd_start(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowd", "--detach", "--home", str(home)], capture_output=True, text=True, timeout=60
    )


def write_config(home: Path, text: str, mode: int = 0o600) -> Path:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / "config.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_flowd_refuses_a_bad_config_naming_the_file_line_and_field() -> None:
    home = short_tmpdir("flow-c-")
    path = write_config(
        home,
        "providers:\n  cluster:\n    kind: slurm\n    mode: ssh\n    host: login\n    prot: 22\n    work_dir: /w\n",
    )
    done = flowd_start(home)
    assert done.returncode == 1
    assert str(path) in done.stderr
    assert "line 6: providers.cluster.prot: is not a known setting (got 'prot'); did you mean 'port'?" in done.stderr
    assert not (home / "flowd.sock").exists()
    # The CLI starts flowd on first use, and shows why it would not start.
    env = {**os.environ, "FLOW_HOME": str(home)}
    env.pop("FLOW_PROVIDER", None)
    cli = subprocess.run([str(BIN / "flow"), "status"], capture_output=True, text=True, env=env, timeout=60)
    assert cli.returncode == 69  # flowd could not be started (flow.cli.exit_status)
    assert "flowd could not be started" in cli.stderr and "line 6: providers.cluster.prot" in cli.stderr


def test_broken_yaml_names_the_line() -> None:
    home = short_tmpdir("flow-c-")
    write_config(home, "providers:\n  cluster:\n    kind: slurm\n   mode: [local\n")
    done = flowd_start(home)
    assert done.returncode == 1
    assert "Invalid YAML in" in done.stderr and "at line 4" in done.stderr


def test_a_config_others_can_write_is_refused_and_one_they_can_read_is_allowed() -> None:
    home = short_tmpdir("flow-c-")
    path = write_config(home, "providers: {}\n", mode=0o664)
    done = flowd_start(home)
    assert done.returncode == 1
    assert f"chmod 600 {path}" in done.stderr and "writable by other users" in done.stderr
    path.chmod(0o644)
    daemon = Daemon(home)
    daemon.start()
    try:
        assert "readable by other users" in daemon.home.daemon_log.read_text()
    finally:
        daemon.stop()


def test_key_files_others_can_read_and_missing_known_hosts_are_refused(tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    key.write_text("not really a key\n")
    key.chmod(0o644)
    home = short_tmpdir("flow-c-")
    write_config(
        home,
        "providers:\n"
        "  cluster:\n"
        "    kind: slurm\n"
        "    mode: ssh\n"
        "    host: 127.0.0.1\n"
        f"    key_file: {key}\n"
        f"    known_hosts: {tmp_path}/known_hosts\n"
        "    work_dir: /tmp/flow-work\n",
    )
    done = flowd_start(home)
    assert done.returncode == 1
    assert (
        f"line 6: providers.cluster.key_file: is readable by other users (got '{key}'); make it private" in done.stderr
    )
    assert "line 7: providers.cluster.known_hosts: does not exist" in done.stderr
    assert "ssh-keyscan -p 22 127.0.0.1" in done.stderr


def test_a_good_config_lists_its_providers_and_default(tmp_path: Path) -> None:
    home = short_tmpdir("flow-c-")
    write_config(
        home,
        "default_provider: cluster\n"
        "providers:\n"
        "  cluster: {kind: slurm, mode: local, work_dir: /tmp/flow-slurm-unused}\n"
        "  local: {kind: local}\n",
    )
    daemon = Daemon(home)
    daemon.start()
    try:
        info = daemon.client().daemon_info()
        kinds = {p.name: (p.kind, p.default) for p in info.providers}
        assert kinds == {"cluster": ("slurm", True), "local": ("local", False)}
    finally:
        daemon.stop()
