"""What a Mithril provider knows about its account: the project, the catalog (instance types and
spot availability), and the SSH keys a bid names. Each is asked once and kept (the catalog for
CATALOG_TTL, except when asked fresh, as find_instances does)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import paramiko

from flow.domain.daemon_config import MithrilSettings
from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.mithril.catalog import Catalog, catalog_of
from flowd.providers.mithril_api import MithrilAPI, MithrilError

log = logging.getLogger(__name__)

CATALOG_TTL: Final = 30.0


def default_key_file(configured: str | None) -> str | None:
    """The private key flowd logs in to instances with: the configured one, else the user's
    usual ones (as ssh would try them)."""
    if configured is not None:
        return str(Path(configured).expanduser())
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        candidate = Path.home() / ".ssh" / name
        if candidate.is_file():
            return str(candidate)
    return None


class MithrilAccount:
    def __init__(self, settings: MithrilSettings, api: MithrilAPI, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._api = api
        self._clock = clock
        self._lock = threading.Lock()
        self._catalog: tuple[Catalog, float] | None = None
        self._project: str | None = None
        self._ssh_key_fids: list[str] | None = None
        self.key_file = default_key_file(settings.ssh_key_file)

    def project_fid(self) -> str:
        with self._lock:
            if self._project is not None:
                return self._project
        wanted = self._settings.project
        projects = self._api.listing("/v2/projects", "list your projects")
        names = ", ".join(str(p.get("name")) for p in projects) or "none"
        if wanted is None:
            if len(projects) != 1:
                raise MithrilError(
                    DomainError(
                        reason=ErrorReason.VALIDATION_FAILED,
                        message=f"Your Mithril account has {len(projects)} projects ({names}): which one?",
                        suggestions=("set MITHRIL_PROJECT (or project in $FLOW_HOME/config.yaml) to one of them",),
                    )
                )
            found = projects[0]
        else:
            match = [p for p in projects if wanted in (p.get("fid"), p.get("name"))]
            if not match:
                raise MithrilError(
                    DomainError(
                        reason=ErrorReason.RESOURCE_NOT_FOUND,
                        message=f"Mithril has no project {wanted!r} for this API key (it has: {names})",
                        suggestions=(f"set MITHRIL_PROJECT to one of: {names}",),
                    )
                )
            found = match[0]
        fid = str(found.get("fid"))
        with self._lock:
            self._project = fid
        return fid

    def catalog(self, fresh: bool = False) -> Catalog:
        with self._lock:
            if not fresh and self._catalog is not None and self._clock() - self._catalog[1] < CATALOG_TTL:
                return self._catalog[0]
        types = self._api.listing("/v2/instance-types", "list the instance types")
        availability = self._api.listing("/v2/spot/availability", "list spot availability")
        catalog = catalog_of(types, availability, self._settings.name)
        for skipped in catalog.skipped:
            log.info("provider %s: %s", self._settings.name, skipped)
        with self._lock:
            self._catalog = (catalog, self._clock())
        return catalog

    def _public_key(self) -> str | None:
        if self.key_file is None:
            return None
        pub = Path(self.key_file + ".pub")
        if pub.is_file():
            return " ".join(pub.read_text().split()[:2])
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            with contextlib.suppress(paramiko.SSHException, ValueError):
                key = kind.from_private_key_file(self.key_file)
                return f"{key.get_name()} {key.get_base64()}"
        return None

    def _keys(self, project: str) -> list[dict[str, Any]]:
        return self._api.listing("/v2/ssh-keys", "list the project's SSH keys", params={"project": project})

    def ssh_keys(self, project: str, wanted: Sequence[str] = ()) -> list[str]:
        """The key fids for a bid: the provider's configured names/fids, the task's own
        (TaskConfig.ssh_keys, `wanted`), the key flowd logs in with (registered once if the
        project lacks it), and the project's required keys. Raises MithrilError (a named key the
        project lacks is VALIDATION_FAILED, naming the field)."""
        with self._lock:
            base = self._ssh_key_fids
        keys = self._keys(project) if base is None or wanted else []
        if base is None:
            base = self._base_keys(project, keys)
            with self._lock:
                self._ssh_key_fids = base
        extra = [
            self._named(keys, name, "ssh_keys", "give names (or sshkey_ fids) of the project's SSH keys")
            for name in wanted
        ]
        return list(dict.fromkeys([*base, *extra]))

    @staticmethod
    def _named(keys: list[dict[str, Any]], wanted: str, field: str, fix: str) -> str:
        match = [k for k in keys if wanted in (k.get("fid"), k.get("name"))]
        if match:
            return str(match[0]["fid"])
        names = ", ".join(str(k.get("name")) for k in keys) or "none"
        raise MithrilError(
            validation_error(
                [violation(field, wanted, f"is not an SSH key of the Mithril project (it has: {names})", fix)]
            )
        )

    def _base_keys(self, project: str, keys: list[dict[str, Any]]) -> list[str]:
        chosen = [
            self._named(keys, wanted, "ssh_keys (provider setting)", "fix ssh_keys (MITHRIL_SSH_KEYS) for the provider")
            for wanted in self._settings.ssh_keys
        ]
        public = self._public_key()
        if public is not None:
            match = [k for k in keys if " ".join(str(k.get("public_key", "")).split()[:2]) == public]
            if match:
                chosen.append(str(match[0]["fid"]))
            else:
                fingerprint = hashlib.sha256(public.encode()).hexdigest()[:10]
                created = self._api.call(
                    "POST",
                    "/v2/ssh-keys",
                    "register flowd's SSH key",
                    body={
                        "project": project,
                        "name": f"flow-{self._settings.name}-{fingerprint}",
                        "public_key": public,
                    },
                    retry=False,
                )
                chosen.append(str(created["fid"]))
        chosen += [str(k["fid"]) for k in keys if k.get("required") is True]
        return list(dict.fromkeys(chosen))
