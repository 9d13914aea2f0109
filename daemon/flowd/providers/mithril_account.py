"""What a Mithril provider knows about its account: the project, the catalog (instance types and
spot availability), and the SSH keys a bid names (with the one flowd reaches instances with:
flowd.providers.mithril_keys). Each is asked once and kept (the catalog for CATALOG_TTL, except
when asked fresh, as find_instances does)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from flow.domain.daemon_config import MithrilSettings
from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.mithril.catalog import Catalog, catalog_of
from flowd.providers.mithril_api import MithrilAPI, MithrilError
from flowd.providers.mithril_keys import SshIdentity

log = logging.getLogger(__name__)

CATALOG_TTL: Final = 30.0


class MithrilAccount:
    def __init__(
        self,
        settings: MithrilSettings,
        api: MithrilAPI,
        keys_root: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._api = api
        self._clock = clock
        self._lock = threading.Lock()
        self._keys_lock = threading.Lock()
        self._catalog: tuple[Catalog, float] | None = None
        self._project: str | None = None
        self._ssh_key_fids: list[str] | None = None
        self.identity = SshIdentity(settings.name, settings.ssh_key_file, api, keys_root)

    @property
    def key_file(self) -> str:
        return self.identity.key_file

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

    def _keys(self, project: str) -> list[dict[str, Any]]:
        return self._api.listing("/v2/ssh-keys", "list the project's SSH keys", params={"project": project})

    def ssh_keys(self, project: str, wanted: Sequence[str] = ()) -> list[str]:
        """The key fids for a bid: the provider's configured names/fids, the task's own
        (TaskConfig.ssh_keys, `wanted`), the key flowd reaches instances with (made and
        registered once if needed: mithril_keys), and the project's required keys. Raises
        MithrilError (a named key the project lacks is VALIDATION_FAILED, naming the field)."""
        with self._keys_lock:  # one registration of flowd's key, whatever asks at once
            base = self._ssh_key_fids
            keys = self._keys(project) if base is None or wanted else []
            if base is None:
                base = self._base_keys(project, keys)
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
        chosen.append(self.identity.fid(project, keys))
        chosen += [str(k["fid"]) for k in keys if k.get("required") is True]
        return list(dict.fromkeys(chosen))
