"""Placing and posting a Mithril bid (flowd.providers.mithril describes the whole): the bid
planned in the core, checked against the platform's minimum price, and posted once with its
startup script (the task's code, secrets, volumes and data mounts). Apart from the tracker
(mithril_tracker): nothing here follows a bid once it is posted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

import attrs
from returns.result import Failure, Result, Success

from flow.domain.daemon_config import MithrilSettings
from flow.domain.errors import DomainError, validation_error
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.mithril.bid import BidPlan, bid_request, memory_refusal, plan_bid, price_too_low
from flow.domain.mithril.catalog import Catalog, limit_price_text
from flow.domain.mithril.data_mounts import DataMountPlan, data_mount_violations, data_mounts_of
from flow.domain.mithril.errors import is_price_too_low
from flow.domain.mithril.startup_script import StartupRequest, startup_plan
from flow.domain.mithril.volumes import check_regions
from flow.domain.task.config import TaskConfig
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import TaskRecord
from flow.domain.volumes.rules import VolumeMount
from flow.runtime import runner, s3_sync
from flowd.blobs import BlobStore
from flowd.providers.base import LaunchError, Placement
from flowd.providers.code_archive import snapshot_archive
from flowd.providers.mithril_account import MithrilAccount
from flowd.providers.mithril_api import MithrilAPI, MithrilError
from flowd.providers.mithril_instances import STAGED_DIR
from flowd.providers.mithril_state import MithrilBid, earlier_output, local_logs
from flowd.providers.mithril_volumes import MithrilVolumes
from flowd.providers.s3_credentials import no_storage_credentials, storage_credentials
from flowd.providers.task_dir import TaskDir

RUNNER_SOURCE: Final = Path(runner.__file__)
SYNCER_SOURCE: Final = Path(s3_sync.__file__)


class BidLauncher:
    def __init__(
        self,
        settings: MithrilSettings,
        api: MithrilAPI,
        account: MithrilAccount,
        volumes: MithrilVolumes,
        blobs: BlobStore,
        tasks_root: Path,
    ) -> None:
        self._name = settings.name
        self._settings = settings
        self._api = api
        self._account = account
        self._volumes = volumes
        self._blobs = blobs
        self._tasks_root = tasks_root

    def _plan(
        self, config: TaskConfig, name: str, task_id: str
    ) -> Result[tuple[BidPlan, Catalog, tuple[VolumeMount, ...]], DomainError]:
        problems = data_mount_violations(config, self._name)
        if problems:
            return Failure(validation_error(problems, subject=f"task for provider {self._name}"))
        mounts: tuple[VolumeMount, ...] = ()
        if config.volumes:
            resolved = self._volumes.for_task(config)
            if isinstance(resolved, Failure):
                return Failure(resolved.failure())
            mounts = resolved.unwrap()
            # Existing volumes pin the bid to their region (a volume attaches only there).
            pinned = sorted({m.volume.region for m in mounts if not m.created and m.volume.region})
            if config.region is None and len(pinned) == 1:
                config = attrs.evolve(config, region=pinned[0])
        if config.region is None and self._settings.region:  # the provider's region, where the task names none
            config = attrs.evolve(config, region=self._settings.region)
        catalog = self._account.catalog()
        planned = plan_bid(config, catalog, name, task_id)
        if isinstance(planned, Failure):
            return Failure(planned.failure())
        plan = planned.unwrap()
        too_little = memory_refusal(config, plan, catalog)
        if too_little is not None:
            return Failure(too_little)
        paths = [(f"volumes[{i}]", m.volume) for i, m in enumerate(mounts) if not m.created]
        in_region = check_regions(paths, plan.region)
        if isinstance(in_region, Failure):
            return Failure(in_region.failure())
        return Success((plan, catalog, mounts))

    def _below_minimum(self, plan: BidPlan, catalog: Catalog) -> DomainError | None:
        """The platform's minimum price for the chosen type and region, asked before submitting."""
        params = {"instance_type": plan.type_fid, "region": plan.region, "instance_quantity": plan.quantity}
        pricing = self._api.call("GET", "/v2/pricing/current", "read the current price", params=params)
        minimum = pricing.get("minimum_price_cents") if isinstance(pricing, dict) else None
        if isinstance(minimum, int) and not isinstance(minimum, bool) and plan.limit_price_micros < minimum * 10_000:
            return price_too_low(plan, catalog, f"the minimum is {limit_price_text(minimum * 10_000)}/h")
        return None

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        try:
            planned = self._plan(config, config.name or "task", "check")
            if isinstance(planned, Failure):
                return Failure(planned.failure())
            plan, catalog, _ = planned.unwrap()
            project = self._account.project_fid()
            self._account.ssh_keys(project, config.ssh_keys)  # the key flowd reaches instances with
            too_low = self._below_minimum(plan, catalog)
        except MithrilError as exc:
            return Failure(exc.error)
        if too_low is not None:
            return Failure(too_low)
        if config.data_mounts and storage_credentials(os.environ) is None:
            return Failure(no_storage_credentials(self._name))
        offer = plan.offer
        return Success(Placement(format_instance_type(offer.instance_type), offer.price_per_hour_micros))

    def _code_archive(self, digest: str | None) -> bytes | None:
        return snapshot_archive(self._blobs, digest, compresslevel=6)

    def _data_plan(self, config: TaskConfig) -> DataMountPlan | None:
        if not config.data_mounts:
            return None
        credentials = storage_credentials(os.environ)
        if credentials is None:
            raise LaunchError("no storage credentials", no_storage_credentials(self._name))
        return DataMountPlan(
            mounts=data_mounts_of(config),
            credentials=json.dumps(credentials).encode(),
            syncer=SYNCER_SOURCE.read_bytes(),
        )

    def post(self, record: TaskRecord) -> MithrilBid:
        """Posts the task's bid once: created means accepted. Raises MithrilError (the platform's
        refusal), LaunchError or OSError."""
        planned = self._plan(record.config, record.name, record.task_id)
        if isinstance(planned, Failure):
            raise LaunchError(planned.failure().message, planned.failure())
        plan, catalog, mounts = planned.unwrap()
        project = self._account.project_fid()
        attached = self._volumes.attach(mounts, plan.region)
        call = record.function_call
        startup = startup_plan(
            StartupRequest(
                task_id=record.task_id,
                task_name=record.name,
                config=record.config,
                ssh_user=self._settings.ssh_user,
                code_archive=self._code_archive(record.code_digest),
                secrets=dict(record.secrets),
                runner=RUNNER_SOURCE.read_bytes() if call is not None else None,
                invocation=json.dumps(invocation_document(call)).encode() if call is not None else None,
                python=(call.python if call is not None and call.python else "python3"),
                volumes=attached,
                data=self._data_plan(record.config),
            )
        )
        local = TaskDir(self._tasks_root / record.task_id).create()
        if startup.needs_upload:  # kept in the task's (0700) directory until SSH answers
            staged = TaskDir(local.path / STAGED_DIR)
            for name, data, _mode in startup.uploads:
                staged.write(name, data)
        # An earlier attempt's log stays: this one's output follows it.
        base = earlier_output(local_logs(self._tasks_root, record.task_id, record.config.num_instances))
        fids = [a.volume_id for a in attached]
        keys = self._account.ssh_keys(project, record.config.ssh_keys)
        body = bid_request(plan, project, keys, fids, startup.startup_script)
        try:
            bid = self._api.create_bid(body)
        except MithrilError as exc:
            if exc.status is not None and is_price_too_low(exc.status, exc.body, exc.raw):
                raise MithrilError(price_too_low(plan, catalog, exc.error.message)) from None
            raise
        return MithrilBid(
            bid["fid"],
            plan.name,
            region=plan.region,
            uploads_pending=startup.needs_upload,
            log_base=base,
        )
