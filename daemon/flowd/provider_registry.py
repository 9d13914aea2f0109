"""Which providers this daemon runs tasks on, built from $FLOW_HOME/config.yaml and the
environment. The local provider is always there (the embedded default).

A config file that is wrong in any way stops flowd from starting, with a message that names the
file, the line and the field of every problem (`flowd --detach` passes it to the SDK, so `flow`
shows it). The file may name SSH keys and known_hosts files, so, like OpenSSH with ~/.ssh/config:
it must belong to you and must not be writable by anyone else (someone who could edit it could
point Flow at their own known_hosts and read your code and commands on the way to the cluster);
readable by others is allowed, and logged, since it holds paths, not secrets. A key file it names
must not be readable by others (OpenSSH's own rule for private keys).
"""

from __future__ import annotations

import getpass
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from returns.result import Failure

from flow.domain.daemon_config import (
    LOCAL,
    DaemonConfig,
    SlurmSettings,
    daemon_config_from_dict,
)
from flow.domain.errors import FieldViolation, validation_error, violation
from flow.domain.sbatch import PLAIN_PATH
from flow.domain.source_lines import locate
from flow.home import FlowHome
from flowd.blobs import BlobStore
from flowd.gpu_discovery import discover_gpus
from flowd.providers.base import Provider, Reporter
from flowd.providers.local import LocalProvider
from flowd.providers.slurm import SlurmProvider
from flowd.providers.slurm_cluster import Cluster, LocalCluster, SshCluster

log = logging.getLogger(__name__)

SUBJECT: Final = "daemon configuration"


class DaemonConfigError(Exception):
    """$FLOW_HOME/config.yaml cannot be used; the message says where and how to fix it."""


def _check_file_mode(path: Path) -> None:
    info = path.stat()
    if info.st_uid != os.getuid():
        raise DaemonConfigError(
            f"{path} belongs to another user (uid {info.st_uid}); flowd only reads a config file you own: "
            f"chown it, or set FLOW_HOME to a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise DaemonConfigError(
            f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}), who could point Flow at "
            f"their own hosts and keys; fix it with: chmod 600 {path}"
        )
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users (it names your key files); chmod 600 %s", path, path)


def load_daemon_config(home: FlowHome) -> tuple[DaemonConfig, dict[str, int]]:
    """The validated settings of $FLOW_HOME/config.yaml (defaults when there is none), and the
    line of each setting."""
    from flow.config import load_yaml_with_lines  # the YAML reader that records lines
    from flow.errors import ValidationError

    path = home.config
    if not path.exists():
        return DaemonConfig(), {}
    _check_file_mode(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DaemonConfigError(f"cannot read {path}: {exc}") from None
    try:
        data, lines = load_yaml_with_lines(text, str(path))
    except ValidationError as exc:
        raise DaemonConfigError(exc.message) from None
    parsed = daemon_config_from_dict(data)
    if isinstance(parsed, Failure):
        raise DaemonConfigError(locate(parsed.failure(), lines, str(path)).message)
    return parsed.unwrap(), lines


def _file_problems(settings: SlurmSettings, home: FlowHome) -> list[FieldViolation]:
    """What only the file system can say about a provider's settings."""
    path = f"providers.{settings.name}"
    found: list[FieldViolation] = []
    ssh = settings.ssh
    if ssh is not None:
        if ssh.key_file is not None:
            key = Path(os.path.expanduser(ssh.key_file))
            if not key.is_file():
                fix = "give the private key you log in to the cluster with, e.g. ~/.ssh/id_ed25519"
                found.append(violation(f"{path}.key_file", ssh.key_file, "does not exist", fix))
            elif key.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
                fix = f"make it private: chmod 600 {key} (OpenSSH refuses such keys too)"
                found.append(violation(f"{path}.key_file", ssh.key_file, "is readable by other users", fix))
        if ssh.host_key_checking:
            known = Path(os.path.expanduser(ssh.known_hosts or "~/.ssh/known_hosts"))
            if not known.is_file():
                fix = (
                    f"add the login node's key to it (ssh-keyscan -p {ssh.port} {ssh.host} >> {known}, after "
                    "checking the fingerprint), or name another file with known_hosts"
                )
                found.append(violation(f"{path}.known_hosts", str(known), "does not exist", fix))
    else:
        work_dir = settings.work_dir or str(home.root / "slurm" / settings.name)
        if not PLAIN_PATH.fullmatch(work_dir):
            fix = "set work_dir to a directory of letters, digits and / . _ - (it goes into #SBATCH lines)"
            found.append(violation(f"{path}.work_dir", work_dir, "is not a plain absolute path", fix))
    return found


def _slurm(
    settings: SlurmSettings, home: FlowHome, reporter: Reporter, blobs: BlobStore, env: Mapping[str, str]
) -> SlurmProvider:
    cluster: Cluster
    if settings.ssh is None:
        cluster = LocalCluster(env)
        work_dir = settings.work_dir or str(home.root / "slurm" / settings.name)
    else:
        ssh = settings.ssh
        known_hosts = os.path.expanduser(ssh.known_hosts or "~/.ssh/known_hosts")
        cluster = SshCluster(ssh, user=ssh.user or getpass.getuser(), known_hosts=known_hosts)
        assert settings.work_dir is not None  # required in mode: ssh
        work_dir = settings.work_dir
    return SlurmProvider(
        settings=settings,
        cluster=cluster,
        work_dir=work_dir,
        tasks_root=home.tasks,
        reporter=reporter,
        blobs=blobs,
    )


def build_providers(
    home: FlowHome, reporter: Reporter, blobs: BlobStore, env: Mapping[str, str]
) -> tuple[dict[str, Provider], str]:
    """The providers by name, and the name of the default one ($FLOW_PROVIDER when it names a
    configured provider, else the file's default_provider, else local)."""
    config, lines = load_daemon_config(home)
    problems = [p for s in config.providers if isinstance(s, SlurmSettings) for p in _file_problems(s, home)]
    if problems:
        error = locate(validation_error(problems, subject=SUBJECT), lines, str(home.config))
        raise DaemonConfigError(error.message)
    gpus, source = discover_gpus(env)  # FLOW_LOCAL_GPUS, NVML, nvidia-smi, or none
    log.info("local GPUs (%s): %s", source, ", ".join(g.name for g in gpus) or "none")
    providers: dict[str, Provider] = {
        LOCAL: LocalProvider(tasks_root=home.tasks, reporter=reporter, blobs=blobs, gpus=gpus)
    }
    for settings in config.providers:
        if isinstance(settings, SlurmSettings):
            providers[settings.name] = _slurm(settings, home, reporter, blobs, env)
    default = config.default_provider
    wanted = env.get("FLOW_PROVIDER", "")
    if wanted:
        if wanted in providers:
            default = wanted
        else:
            log.warning("FLOW_PROVIDER=%s names no configured provider; the default is %s", wanted, default)
    return providers, default
