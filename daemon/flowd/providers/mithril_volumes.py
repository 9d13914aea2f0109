"""Mithril's own volumes (/v2/volumes): the mithril provider's `volumes` capability, and the
volumes of its tasks (reuse by name, attach by id, create on first use: the core's rules in
flow.domain.volumes.rules and flow.domain.mithril.volumes)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from returns.result import Failure, Result, Success

from flow.domain.daemon_config import MithrilSettings
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, validation_error, violation
from flow.domain.mithril.errors import detail_text, network_error
from flow.domain.mithril.volumes import (
    VolumeAttachment,
    attached_error,
    checked_create_body,
    live_bids_of,
    name_violations,
    new_mithril_volume_violations,
    size_violations,
    volume_of,
    volumes_of,
)
from flow.domain.task.config import TaskConfig
from flow.domain.volumes.rules import (
    Volume,
    VolumeMount,
    check_attach,
    check_delete,
    listed_volume,
    name_taken,
    resolve_volumes,
)
from flow.domain.volumes.rules import volume_not_found as not_found
from flowd.providers.base import LaunchError
from flowd.providers.mithril_account import MithrilAccount
from flowd.providers.mithril_api import MithrilAPI, MithrilError

log = logging.getLogger(__name__)


class MithrilVolumes:
    def __init__(
        self,
        settings: MithrilSettings,
        api: MithrilAPI,
        account: MithrilAccount,
        holders_of: Callable[[set[str]], tuple[str, ...]],
    ) -> None:
        self._settings = settings
        self._name = settings.name
        self._api = api
        self._account = account
        self._holders_of = holders_of  # bid fids -> the ids of the live tasks whose bids they are

    def _region(self) -> str:
        """Where a volume made outside a task goes: the configured region, else the region of the
        cheapest offer (where a task without a region would most likely run)."""
        if self._settings.region:
            return self._settings.region
        offers = sorted(self._account.catalog().offers, key=lambda o: (o.offer.price_per_hour_micros, o.offer.region))
        if not offers:
            raise MithrilError(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message="Mithril lists no region with spot capacity to put the volume in",
                    suggestions=("set region (MITHRIL_REGION) for the provider",),
                )
            )
        return offers[0].offer.region

    def _models(self) -> list[dict[str, Any]]:
        return self._api.listing("/v2/volumes", "list volumes", params={"project": self._account.project_fid()})

    def _holders(self, model: dict[str, Any]) -> tuple[str, ...]:
        return self._holders_of(set(live_bids_of(model)))

    # --- the capability ----------------------------------------------------------------------

    def list_volumes(self) -> Result[list[tuple[Volume, tuple[str, ...]]], DomainError]:
        """Every volume of the project, with the ids of the live tasks whose bids hold it."""
        try:
            models = self._models()
        except MithrilError as exc:
            return Failure(exc.error)
        out = []
        for model in models:
            volume = volume_of(model, self._name)
            if volume is not None:
                out.append((volume, self._holders(model)))
        return Success(out)

    def get_volume(self, volume_id: str) -> Result[tuple[Volume, tuple[str, ...]], DomainError]:
        return self.list_volumes().bind(lambda listed: listed_volume(listed, volume_id))

    def create_volume(
        self, name: object, size_gb: object, interface: object, iops: object, region: str | None = None
    ) -> Result[Volume, DomainError]:
        """POST /v2/volumes once: a name already in use is ALREADY_EXISTS (asked first), and a
        create whose answer was lost (timeout, 5xx) is looked up by name before anything else."""
        problems = new_mithril_volume_violations(name, size_gb, interface, iops)
        if problems:
            return Failure(validation_error(problems, subject="volume"))
        try:
            existing = volumes_of(self._models(), self._name)
            taken = next((v for v in existing if v.name == name), None)
            if taken is not None:
                return Failure(name_taken(taken))
            made = checked_create_body(
                name, size_gb, interface, iops, region or self._region(), self._account.project_fid()
            )
            if isinstance(made, Failure):
                return Failure(made.failure())
            try:
                created = self._api.call("POST", "/v2/volumes", "create the volume", body=made.unwrap(), retry=False)
            except MithrilError as exc:
                if not exc.retryable:
                    raise
                again = next((v for v in volumes_of(self._models(), self._name) if v.name == name), None)
                if again is None:
                    raise
                return Success(again)
        except MithrilError as exc:
            return Failure(exc.error)
        volume = volume_of(created, self._name) if isinstance(created, dict) else None
        if volume is None:
            return Failure(network_error(self._api.base_url, "create the volume", "the answer held no volume"))
        log.info(
            "provider %s: created volume %s (%s, %s GB)", self._name, volume.volume_id, volume.name, volume.size_gb
        )
        return Success(volume)

    def delete_volume(self, volume_id: str) -> Result[Volume, DomainError]:
        """DELETE /v2/volumes/{fid}; one a live bid holds is refused (VOLUME_ERROR, data intact)."""
        found = self.get_volume(volume_id)
        if isinstance(found, Failure):
            return Failure(found.failure())
        volume, holders = found.unwrap()
        if holders:
            return check_delete(volume, {volume.volume_id: holders}).map(lambda _: volume)
        try:
            self._api.call("DELETE", f"/v2/volumes/{volume_id}", "delete the volume")
        except MithrilError as exc:
            if exc.status == 404:
                return Failure(not_found(volume_id))
            if exc.status == 400 and "attached" in exc.raw.lower():
                return Failure(attached_error(volume.volume_id, volume.name, detail_text(exc.body, exc.raw)))
            return Failure(exc.error)
        log.info("provider %s: deleted volume %s (%s)", self._name, volume.volume_id, volume.name)
        return Success(volume)

    # --- a task's volumes ----------------------------------------------------------------------

    def for_task(self, config: TaskConfig) -> Result[tuple[VolumeMount, ...], DomainError]:
        """The task's volumes against the project's, Mithril's name and size rules for the new
        ones, and a block volume held by another live bid refused. Nothing is created here.
        Raises MithrilError when Mithril cannot be asked."""
        problems: list[FieldViolation] = []
        for i, spec in enumerate(config.volumes):
            if spec.volume_id is None:
                problems += name_violations(spec.name, f"volumes[{i}].name")
                problems += size_violations(spec.size_gb, f"volumes[{i}].size_gb")
            if spec.iops is not None:
                problems.append(violation(f"volumes[{i}].iops", spec.iops, "cannot be set on Mithril", "leave out"))
        if problems:
            return Failure(validation_error(problems, subject=f"task for provider {self._name}"))
        models = self._models()
        existing = volumes_of(models, self._name)
        pending = (f"vol_pending{i}" for i in range(len(config.volumes)))
        resolved = resolve_volumes(config.volumes, existing, pending, 0.0, self._name)
        if isinstance(resolved, Failure):
            return resolved
        holders: dict[str, tuple[str, ...]] = {}
        for model in models:
            live = live_bids_of(model)
            if live:
                holders[str(model.get("fid"))] = self._holders(model) or live
        allowed = check_attach(resolved.unwrap(), holders)
        if isinstance(allowed, Failure):
            return Failure(allowed.failure())
        if config.num_instances > 1:  # a Block volume attaches to one instance
            blocks = [
                violation(
                    f"volumes[{i}].interface",
                    m.volume.interface,
                    f"is a block volume, which Mithril attaches to one instance, and the task has "
                    f"{config.num_instances} (num_instances)",
                    "use a volume with interface='file' for multi-node tasks",
                )
                for i, m in enumerate(resolved.unwrap())
                if m.volume.interface == "block"
            ]
            if blocks:
                return Failure(validation_error(blocks, subject=f"task for provider {self._name}"))
        return resolved

    def attach(self, mounts: Sequence[VolumeMount], region: str) -> tuple[VolumeAttachment, ...]:
        """The task's volumes as the bid attaches them: the new ones created now, in its region."""
        out = []
        for mount in mounts:
            volume = mount.volume
            if mount.created:
                made = self.create_volume(volume.name, volume.size_gb, volume.interface, None, region)
                if isinstance(made, Failure):
                    error = made.failure()
                    if error.reason is not ErrorReason.ALREADY_EXISTS:  # made meanwhile: reuse it
                        raise LaunchError(error.message, error)
                    again = self.get_volume(dict(error.metadata).get("volume_id", ""))
                    if isinstance(again, Failure):
                        raise LaunchError(error.message, error)
                    made = Success(again.unwrap()[0])
                volume = made.unwrap()
            out.append(VolumeAttachment(volume.volume_id, volume.interface, volume.size_gb, mount.mount_path))
        return tuple(out)
