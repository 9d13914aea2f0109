"""Which providers this daemon runs tasks on, built from $FLOW_HOME/config.yaml and the
environment. The local provider is always there (the embedded default).

A config file that is wrong in any way stops flowd from starting, with a message that names the
file, the line and the field of every problem (`flowd --detach` passes it to the SDK, so `flow`
shows it), with one exception: a Mithril provider whose own settings cannot be used (a malformed
or missing API key, an unknown setting, a key in a file others can read) is registered as
unusable instead (providers/unusable.py): it reports why through every call that needs it and
`flow daemon status`, and flowd and every other provider keep serving. Mithril providers a
client configures (ConfigureProvider) are told apart by their settings (see `configure`).

The file may name SSH keys and known_hosts files, so, like OpenSSH with ~/.ssh/config:
it must belong to you and must not be writable by anyone else (someone who could edit it could
point Flow at their own known_hosts and read your code and commands on the way to the cluster);
readable by others is allowed, and logged, since it holds paths, not secrets. A key file it names
must not be readable by others (OpenSSH's own rule for private keys).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from attrs import evolve
from returns.result import Failure, Result, Success

from flow.domain.daemon_config import (
    LOCAL,
    MITHRIL_ENV,
    MITHRIL_KEYS,
    PROVIDER_NAME,
    DaemonConfig,
    KubernetesSettings,
    MithrilSettings,
    SlurmSettings,
    UnusableSettings,
    daemon_config_from_dict,
    mithril_from_env,
    mithril_settings,
)
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, validation_error, violation
from flow.domain.slurm.sbatch import PLAIN_PATH
from flow.domain.source_lines import locate
from flow.home import FlowHome
from flowd.blobs import BlobStore
from flowd.gpu_discovery import discover_gpus
from flowd.providers.base import Provider, Reporter
from flowd.providers.local import LocalProvider
from flowd.providers.slurm import SlurmProvider
from flowd.providers.slurm_cluster import Cluster, LocalCluster, SshCluster
from flowd.providers.unusable import UnusableProvider
from flowd.volumes import VolumeManager

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
    from flow.yaml_document import load_yaml_with_lines  # the YAML reader that records lines

    path = home.config
    if not path.exists():
        return DaemonConfig(), {}
    _check_file_mode(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DaemonConfigError(f"cannot read {path}: {exc}") from None
    loaded = load_yaml_with_lines(text, str(path))
    if isinstance(loaded, Failure):
        raise DaemonConfigError(loaded.failure().message)
    data, lines = loaded.unwrap()
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
        cluster = LocalCluster(env, settings.slurm_conf, settings.bin_dir)
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


def _request_timeout(env: Mapping[str, str]) -> float:
    try:
        return max(0.1, min(float(env.get("FLOW_MITHRIL_TIMEOUT", "30")), 300.0))
    except ValueError:
        return 30.0


def _unusable(name: str, error: DomainError, suggestions: tuple[str, ...] = ()) -> UnusableSettings:
    """Mithril settings flowd cannot use: the provider is reported, the daemon serves on."""
    fixes = suggestions or tuple(v.fix for v in error.violations if v.fix)
    return UnusableSettings(
        name,
        "mithril",
        evolve(
            error,
            message=f"Provider {name} cannot be used: {error.message}",
            suggestions=(*fixes, "then restart flowd to use it: flow daemon stop (it starts again on the next call)"),
            metadata=(*error.metadata, ("provider", name)),
        ),
    )


def _no_key(name: str) -> UnusableSettings:
    return _unusable(
        name,
        validation_error(
            [violation("api_key", None, "is required", "set MITHRIL_API_KEY for flowd, or api_key in config.yaml")],
            subject=f"settings of provider {name}",
        ),
    )


MithrilConfigured = MithrilSettings | UnusableSettings


def _mithril_settings(
    config: DaemonConfig, home: FlowHome, env: Mapping[str, str], lines: Mapping[str, int]
) -> list[MithrilConfigured]:
    """The Mithril providers: those of the config file, with the MITHRIL_* variables overriding
    their settings, or one named "mithril" when only the variables configure it. Settings that
    cannot be used (wrong, no key, a key in a file others can read) come back as UnusableSettings
    with every problem and its line."""
    found = [
        s
        for s in config.providers
        if isinstance(s, MithrilSettings) or (isinstance(s, UnusableSettings) and s.kind == "mithril")
    ]
    overlay = {key: env[variable] for variable, key in reversed(list(MITHRIL_ENV.items())) if env.get(variable)}
    where = str(home.config)
    if not found:
        from_env = mithril_from_env(env)
        if isinstance(from_env, Failure):
            return [_unusable("mithril", from_env.failure())]
        settings = from_env.unwrap()
        return [settings] if settings is not None else []
    if overlay:  # the variables win over the file: each provider's settings read again, merged
        from flow.yaml_document import load_yaml_with_lines

        loaded = load_yaml_with_lines(home.config.read_text(), where)
        data = loaded.unwrap()[0] if not isinstance(loaded, Failure) else {}
        merged: list[MithrilConfigured] = []
        for s in found:
            raw = data["providers"][s.name] if isinstance(data, Mapping) else {}
            out: list[FieldViolation] = []
            again = mithril_settings(s.name, {**raw, **overlay}, f"providers.{s.name}", out)
            if any(k not in MITHRIL_KEYS for k in raw):
                merged.append(s)  # still wrong, whatever the variables say
            elif out:
                merged.append(UnusableSettings(s.name, "mithril", validation_error(out, subject=SUBJECT)))
            else:
                merged.append(again)
        found = merged
    private = not home.config.stat().st_mode & 0o077
    usable: list[MithrilConfigured] = []
    for s in found:
        if isinstance(s, UnusableSettings):
            usable.append(_unusable(s.name, locate(s.error, lines, where)))
        elif not s.api_key:
            usable.append(_no_key(s.name))
        elif not private and "api_key" not in overlay:
            readable = f"{home.config} holds its Mithril API key and other users can read that file"
            error = DomainError(reason=ErrorReason.VALIDATION_FAILED, message=readable)
            usable.append(_unusable(s.name, error, (f"make the file private: chmod 600 {home.config}",)))
        else:
            usable.append(s)
    return usable


RUNTIME_PROVIDERS: Final = "providers.d"  # under $FLOW_HOME: providers clients configured (0600 files)


def _typed_settings(settings: Mapping[str, str]) -> dict[str, object]:
    """ConfigureProvider's string settings with the types config.yaml would give them."""
    typed: dict[str, object] = dict(settings)
    if "host_key_checking" in typed:
        typed["host_key_checking"] = {"true": True, "false": False}.get(
            settings["host_key_checking"].lower(), settings["host_key_checking"]
        )
    if "poll_interval" in typed:
        with contextlib.suppress(ValueError):
            typed["poll_interval"] = float(settings["poll_interval"])
    return typed


def _runtime_settings(name: str, kind: str, settings: Mapping[str, str]) -> Result[MithrilSettings, DomainError]:
    out: list[FieldViolation] = []
    if kind != "mithril":
        out.append(
            violation("kind", kind, "cannot be configured by a client", "configure it in $FLOW_HOME/config.yaml")
        )
    if name == LOCAL or not PROVIDER_NAME.fullmatch(name):
        out.append(
            violation("name", name, "is not a name for a new provider", "use letters, digits, - and _, e.g. mithril")
        )
    if out:
        return Failure(validation_error(out, subject="provider settings"))
    found = mithril_settings(name, _typed_settings(settings), "settings", out)
    if not found.api_key and not out:
        out.append(violation("settings.api_key", None, "is required", "give the fkey_... key of your Mithril account"))
    if out:
        return Failure(validation_error(out, subject="provider settings"))
    return Success(found)


def _mithril_provider(
    settings: MithrilConfigured, home: FlowHome, reporter: Reporter, blobs: BlobStore, env: Mapping[str, str]
) -> Provider[Any]:
    if isinstance(settings, UnusableSettings):
        from flowd.providers.mithril_state import MITHRIL_STATES

        log.warning("%s", settings.error.message)
        return UnusableProvider(settings.name, settings.kind, settings.error, MITHRIL_STATES, home.tasks)
    from flowd.providers.mithril import MithrilCloud  # httpx only where Mithril is used

    return MithrilCloud(
        settings=settings,
        tasks_root=home.tasks,
        state_root=home.root / "mithril",
        keys_root=home.root / "keys",
        reporter=reporter,
        blobs=blobs,
        request_timeout=_request_timeout(env),
    )


def _kubernetes_provider(
    settings: KubernetesSettings, home: FlowHome, reporter: Reporter, blobs: BlobStore, env: Mapping[str, str]
) -> Provider[Any]:
    from flowd.providers.kubernetes import KubernetesProvider  # lightkube only where Kubernetes is used

    return KubernetesProvider(settings=settings, tasks_root=home.tasks, reporter=reporter, blobs=blobs, env=env)


def _save_runtime(home: FlowHome, name: str, kind: str, settings: Mapping[str, str]) -> None:
    folder = home.root / RUNTIME_PROVIDERS
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / f"{name}.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"name": name, "kind": kind, "settings": dict(settings)}, handle)


class ProviderRegistry:
    """The daemon's providers by name, each with the settings it was built from (to tell a
    client's ConfigureProvider that repeats them from one that conflicts), and the default."""

    def __init__(self, home: FlowHome, reporter: Reporter, blobs: BlobStore, default: str) -> None:
        self._home = home
        self._reporter = reporter
        self._blobs = blobs
        self._lock = threading.Lock()
        self._providers: dict[str, tuple[Provider[Any], object]] = {}
        self.default = default

    def add(self, provider: Provider[Any], settings: object) -> None:
        with self._lock:
            self._providers[provider.name] = (provider, settings)

    def get(self, name: str) -> Provider[Any] | None:
        with self._lock:
            found = self._providers.get(name)
        return found[0] if found is not None else None

    def all(self) -> dict[str, Provider[Any]]:
        with self._lock:
            return {name: provider for name, (provider, _) in self._providers.items()}

    def _same_settings(self, wanted: MithrilSettings) -> Provider[Any] | None:
        """A Mithril provider configured exactly so (whatever its name). Callers hold the lock."""
        for provider, settings in self._providers.values():
            if isinstance(settings, MithrilSettings) and evolve(settings, name=wanted.name) == wanted:
                return provider
        return None

    def _free_name(self, kind: str) -> str:
        """ "mithril", else "mithril-2", "mithril-3", ... Callers hold the lock."""
        taken = set(self._providers) | {p.stem for p in (self._home.root / RUNTIME_PROVIDERS).glob("*.json")}
        return next(n for n in (kind, *(f"{kind}-{i}" for i in range(2, 10_000))) if n not in taken)

    def configure(self, name: str, kind: str, settings: Mapping[str, str]) -> Result[Provider[Any], DomainError]:
        """Adds the provider a client configured (ConfigureProvider), and keeps its settings in a
        0600 file so that a restarted flowd finds its tasks again.

        Without a name the settings are the provider's identity: a provider configured exactly
        so (from config.yaml, or by another client) is the answer, else a new one under the
        first free name ("mithril", "mithril-2", ...); clients with different settings work
        side by side. With a name, the same settings again are a no-op, and other settings under
        a taken name are refused."""
        parsed = _runtime_settings(name or kind, kind, settings)
        if isinstance(parsed, Failure):
            return Failure(parsed.failure())
        wanted = parsed.unwrap()
        with self._lock:
            if not name:
                same = self._same_settings(wanted)
                if same is not None:
                    return Success(same)
                name = self._free_name(kind)
                wanted = evolve(wanted, name=name)
            existing = self._providers.get(name)
            if existing is not None:
                if existing[1] == wanted:
                    return Success(existing[0])
                return Failure(
                    DomainError(
                        reason=ErrorReason.ALREADY_EXISTS,
                        message=f"flowd already has a provider named {name!r}, configured differently",
                        suggestions=(
                            "leave name out: flowd then tells providers apart by their settings",
                            "or give this one another name, e.g. MithrilProvider(..., name='mithril-2')",
                        ),
                        metadata=(("provider", name),),
                    )
                )
            _save_runtime(self._home, name, kind, settings)
            provider = _mithril_provider(wanted, self._home, self._reporter, self._blobs, os.environ)
            self._providers[name] = (provider, wanted)
        return Success(provider)

    def close(self) -> None:
        for provider in self.all().values():
            provider.close()


def _runtime_providers(home: FlowHome, taken: set[str]) -> list[MithrilSettings]:
    """The providers clients configured before this start, unless the config now names them."""
    found: list[MithrilSettings] = []
    for path in sorted((home.root / RUNTIME_PROVIDERS).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            parsed = _runtime_settings(str(data["name"]), str(data["kind"]), dict(data["settings"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            continue
        if isinstance(parsed, Failure):
            log.warning("ignoring %s: %s", path, parsed.failure().message)
        elif parsed.unwrap().name not in taken:
            found.append(parsed.unwrap())
    return found


def build_providers(
    home: FlowHome,
    reporter: Reporter,
    blobs: BlobStore,
    env: Mapping[str, str],
    volumes: VolumeManager | None = None,
) -> ProviderRegistry:
    """The providers, and the default one ($FLOW_PROVIDER when it names a configured provider,
    else the file's default_provider, else local). Local tasks keep their volumes in `volumes`.
    A Mithril provider whose settings cannot be used is registered as such (it reports why);
    every other one serves."""
    config, lines = load_daemon_config(home)
    problems = [p for s in config.providers if isinstance(s, SlurmSettings) for p in _file_problems(s, home)]
    if problems:
        error = locate(validation_error(problems, subject=SUBJECT), lines, str(home.config))
        raise DaemonConfigError(error.message)
    gpus, source = discover_gpus(env)  # FLOW_LOCAL_GPUS, NVML, nvidia-smi, or none
    log.info("local GPUs (%s): %s", source, ", ".join(g.name for g in gpus) or "none")
    default = config.default_provider
    registry = ProviderRegistry(home, reporter, blobs, default)
    registry.add(LocalProvider(tasks_root=home.tasks, reporter=reporter, blobs=blobs, gpus=gpus, volumes=volumes), None)
    for settings in config.providers:
        if isinstance(settings, SlurmSettings):
            registry.add(_slurm(settings, home, reporter, blobs, env), settings)
        elif isinstance(settings, KubernetesSettings):
            registry.add(_kubernetes_provider(settings, home, reporter, blobs, env), settings)
    for mithril in _mithril_settings(config, home, env, lines):
        registry.add(_mithril_provider(mithril, home, reporter, blobs, env), mithril)
        if default == LOCAL and "default_provider" not in lines:
            default = mithril.name  # a configured Mithril key makes Mithril the default
    for runtime in _runtime_providers(home, set(registry.all())):
        registry.add(_mithril_provider(runtime, home, reporter, blobs, env), runtime)
    wanted = env.get("FLOW_PROVIDER", "")
    if wanted:
        if registry.get(wanted) is not None:
            default = wanted
        else:
            log.warning("FLOW_PROVIDER=%s names no configured provider; the default is %s", wanted, default)
    registry.default = default
    return registry
