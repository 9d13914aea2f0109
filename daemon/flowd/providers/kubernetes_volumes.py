"""The kubernetes provider's volumes: PersistentVolumeClaims in its namespace (flow.domain.kubernetes
.volumes plans them), the provider's `volumes` capability, and the volumes of its tasks (reuse by
name, attach by id, create on first use: flow.domain.volumes.rules). Who holds a volume is read from
the provider's Jobs that have not ended, so a claim a live task mounts is never deleted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from returns.result import Failure, Result, Success

from flow.domain.daemon_config import KubernetesSettings
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, validation_error, violation
from flow.domain.kubernetes.manifests import PROVIDER_LABEL
from flow.domain.kubernetes.volumes import claim_holders, claim_manifest, claim_name, volume_of
from flow.domain.task.config import TaskConfig
from flow.domain.volumes.rules import (
    Volume,
    VolumeMount,
    check_attach,
    check_delete,
    listed_volume,
    name_taken,
    new_volume_violations,
    resolve_volumes,
)
from flow.domain.volumes.rules import volume_not_found as not_found
from flowd.providers.base import LaunchError
from flowd.providers.kubernetes_api import KubeApi, KubeError

log = logging.getLogger(__name__)
CLAIMS = "persistentvolumeclaims"


def _volume(claim: Mapping[str, Any], provider: str, namespace: str) -> Volume | None:
    stamp = str((claim.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        created = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        created = 0.0
    return volume_of(claim, provider, namespace, created)


class KubeVolumes:
    def __init__(self, settings: KubernetesSettings, api: Callable[[], KubeApi]) -> None:
        self._settings = settings
        self._name = settings.name
        self._api = api

    def _selector(self) -> str:
        return f"{PROVIDER_LABEL}={self._name}"

    def _volumes(self) -> list[Volume]:
        api = self._api()
        found = (_volume(c, self._name, api.namespace) for c in api.items(CLAIMS, self._selector()))
        return sorted((v for v in found if v is not None), key=lambda v: (v.created_at, v.name))

    def _holders(self, volumes: Sequence[Volume]) -> dict[str, tuple[str, ...]]:
        """volume id -> the live tasks whose Jobs mount it."""
        by_claim = claim_holders(self._api().items("jobs", self._selector()))
        return {
            v.volume_id: by_claim[claim_name(self._name, v.name)]
            for v in volumes
            if by_claim.get(claim_name(self._name, v.name))
        }

    # --- the capability ----------------------------------------------------------------------

    def list_volumes(self) -> Result[list[tuple[Volume, tuple[str, ...]]], DomainError]:
        try:
            volumes = self._volumes()
            holders = self._holders(volumes)
        except KubeError as exc:
            return Failure(exc.error)
        return Success([(v, holders.get(v.volume_id, ())) for v in volumes])

    def get_volume(self, volume_id: str) -> Result[tuple[Volume, tuple[str, ...]], DomainError]:
        return self.list_volumes().bind(lambda listed: listed_volume(listed, volume_id))

    def create_volume(
        self, name: object, size_gb: object, interface: object, iops: object, region: str | None = None
    ) -> Result[Volume, DomainError]:
        """A claim for the volume; a name in use is ALREADY_EXISTS (two creates meet at the claim's name)."""
        problems = list(new_volume_violations(name, size_gb, interface, None))
        if iops is not None:
            problems.append(violation("iops", iops, "cannot be set on Kubernetes", "leave iops out"))
        if problems:
            return Failure(validation_error(problems, subject="volume"))
        assert isinstance(name, str) and isinstance(size_gb, int) and isinstance(interface, str)
        try:
            api = self._api()
            taken = next((v for v in self._volumes() if v.name == name), None)
            if taken is not None:
                return Failure(name_taken(taken))
            manifest = claim_manifest(name, size_gb, interface, self._name, self._settings.storage_class)
            created = api.create(CLAIMS, manifest)
        except KubeError as exc:
            if exc.status == 409:
                again = next((v for v in self._volumes() if v.name == name), None)
                if again is not None:
                    return Failure(name_taken(again))
            return Failure(exc.error)
        volume = _volume(created, self._name, api.namespace) if isinstance(created, dict) else None
        if volume is None:
            return Failure(
                DomainError(
                    reason=ErrorReason.PROVIDER_ERROR,
                    message=f"provider {self._name}: the cluster's answer to creating the claim held no claim",
                    suggestions=("retry; see `flow volumes list`",),
                )
            )
        log.info("provider %s: created volume %s (%s, %s GB)", self._name, volume.volume_id, name, size_gb)
        return Success(volume)

    def delete_volume(self, volume_id: str) -> Result[Volume, DomainError]:
        """Deletes the claim (and, by the storage class's reclaim policy, its data); refused while a
        live task's Job mounts it."""
        found = self.get_volume(volume_id)
        if isinstance(found, Failure):
            return Failure(found.failure())
        volume, holders = found.unwrap()
        if holders:
            return check_delete(volume, {volume.volume_id: holders}).map(lambda _: volume)
        try:
            if not self._api().delete(CLAIMS, claim_name(self._name, volume.name)):
                return Failure(not_found(volume_id))
        except KubeError as exc:
            return Failure(exc.error)
        log.info("provider %s: deleted volume %s (%s)", self._name, volume.volume_id, volume.name)
        return Success(volume)

    # --- a task's volumes ----------------------------------------------------------------------

    def for_task(self, config: TaskConfig) -> Result[tuple[VolumeMount, ...], DomainError]:
        """The task's volumes against the namespace's claims, and a block volume another live task
        holds refused. Nothing is created here. Raises KubeError when the cluster cannot be asked."""
        problems: list[FieldViolation] = [
            violation(f"volumes[{i}].iops", spec.iops, "cannot be set on Kubernetes", "leave iops out")
            for i, spec in enumerate(config.volumes)
            if spec.iops is not None
        ]
        if problems:
            return Failure(validation_error(problems, subject=f"task for provider {self._name}"))
        existing = self._volumes()
        pending = (f"vol_pending{i}" for i in range(len(config.volumes)))
        resolved = resolve_volumes(config.volumes, existing, pending, 0.0, self._name)
        if isinstance(resolved, Failure):
            return resolved
        allowed = check_attach(resolved.unwrap(), self._holders(existing))
        if isinstance(allowed, Failure):
            return Failure(allowed.failure())
        return resolved

    def attach(self, mounts: Sequence[VolumeMount]) -> tuple[tuple[str, str], ...]:
        """The task's claims and where they are mounted: the new ones created now (one made
        meanwhile under the same name is used)."""
        out = []
        for mount in mounts:
            volume = mount.volume
            if mount.created:
                made = self.create_volume(volume.name, volume.size_gb, volume.interface, None)
                if isinstance(made, Failure) and made.failure().reason is not ErrorReason.ALREADY_EXISTS:
                    raise LaunchError(made.failure().message, made.failure())
            out.append((claim_name(self._name, volume.name), mount.mount_path))
        return tuple(out)
