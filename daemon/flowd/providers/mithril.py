"""The mithril provider: a task is a spot bid on Mithril's GPU cloud; its instances are reached
over SSH.

Submitting plans the bid in the core (`flow.domain.mithril.bid`: instance type and region through
the matcher, a limit price within max_price_per_hour, a unique name) and the startup script
(`flow.domain.mithril.startup_script`), then posts the bid once (`MithrilAPI.create_bid`). The task stays
PENDING while the bid is open, PROVISIONING while its instances start, RUNNING once they answer.

One thread per provider polls every live bid with batched listings: the project's bids (newest
first, until every live one is seen) and the instances of the allocated ones (`bid_fid_in`), so a
poll costs the same few requests for 1 or 100 tasks. For each running task one command over the
instance's (kept-open) SSH connection reads the exit record and the log's new bytes into the
task's local log file, which the engine streams with its usual cursors. When the command has
exited, Flow reports COMPLETED or FAILED with its code and deletes the bid, so nothing keeps
billing. Preemption -> PREEMPTED; a bid the platform ended without an exit record -> FAILED
(CANCELLED when the user asked).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shlex
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import attrs
import paramiko
from attrs import define
from returns.result import Failure, Result, Success

from flow.domain.code.manifest import parse_manifest
from flow.domain.daemon_config import MithrilSettings, SshSettings
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, validation_error, violation
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.instances.matching import Offer
from flow.domain.mithril.bid import BidPlan, bid_name, bid_request, plan_bid, price_too_low
from flow.domain.mithril.catalog import Catalog, catalog_of, limit_price_text
from flow.domain.mithril.errors import detail_text, is_price_too_low, network_error
from flow.domain.mithril.startup_script import (
    EXIT_FILE,
    OUTPUT_FILE,
    READY_FILE,
    RESULT_FILE,
    TIMED_OUT_FILE,
    StartupRequest,
    startup_plan,
    task_dir,
)
from flow.domain.mithril.status import Phase, observe, parse_destination, parse_exit_code
from flow.domain.mithril.volumes import (
    VolumeAttachment,
    attached_error,
    check_regions,
    checked_create_body,
    live_bids_of,
    name_violations,
    new_mithril_volume_violations,
    size_violations,
    volume_of,
    volumes_of,
)
from flow.domain.task.config import TaskConfig
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import (
    Exited,
    Lost,
    Preempted,
    Provisioning,
    Started,
    TaskRecord,
    TaskState,
    TimedOut,
    deadline_of,
)
from flow.domain.volumes.rules import (
    Volume,
    VolumeMount,
    check_attach,
    check_delete,
    name_taken,
    resolve_volumes,
    volume_not_found,
)
from flow.runtime import runner
from flowd.blobs import BlobStore
from flowd.exec_session import ExecError, ExecSession
from flowd.providers.base import LaunchError, Placement, Reporter, Runtime
from flowd.providers.mithril_api import MithrilAPI, MithrilError
from flowd.providers.slurm_cluster import PRIVATE_ENV, ClusterError, SshCluster

log = logging.getLogger(__name__)

RUNNER_SOURCE: Final = Path(runner.__file__)

CATALOG_TTL: Final = 30.0
WARN_EVERY: Final = 60.0
LOG_CHUNK: Final = 4 * 1024 * 1024
SEPARATOR: Final = b"\n@@flow@@\n"
MAX_INSTANCES_PER_QUERY: Final = 50
# The instance stops a task at max_run_time_hours (`timeout`); flowd deletes the bid this much later
# if the instance did not (a wedged instance must not bill forever).
TIME_LIMIT_GRACE: Final = 120.0
SSH_WORKERS: Final = 8  # sshd's MaxSessions is 10 per connection


@define
class _Bid:
    """A bid the poller follows."""

    task_id: str
    bid_fid: str
    name: str
    uploads_pending: bool
    reported: str = ""  # the last phase reported: "", "provisioning", "running"
    function_call: bool = False
    limit_s: float | None = None  # max_run_time_hours, in seconds
    deadline: float | None = None  # when flowd stops it, whatever the instance did (epoch seconds)
    destination: str | None = None
    cancel_requested: bool = False


class MithrilProvider:
    kind = "mithril"
    own_volumes = True  # TaskConfig volumes are Mithril's (/v2/volumes), resolved here, not by flowd

    def __init__(
        self,
        settings: MithrilSettings,
        tasks_root: Path,
        state_root: Path,
        reporter: Reporter,
        blobs: BlobStore,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 30.0,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._tasks_root = tasks_root
        self._state_root = state_root
        self._report = reporter
        self._blobs = blobs
        self._clock = clock
        self.api = MithrilAPI(settings.api_url, settings.api_key, timeout=request_timeout)
        self._catalog: tuple[Catalog, float] | None = None
        self._project: str | None = None
        self._ssh_key_fids: list[str] | None = None
        self._lock = threading.Lock()
        self._bids: dict[str, _Bid] = {}
        self._bids_lock = threading.Lock()
        self._ssh: dict[str, SshCluster] = {}
        self._ssh_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.polls = 0
        self._last_warning = -WARN_EVERY
        self._key_file = self._default_key_file(settings.ssh_key_file)
        self._pool = ThreadPoolExecutor(max_workers=SSH_WORKERS, thread_name_prefix=f"mithril-ssh-{self.name}")
        self._thread = threading.Thread(target=self._poll_loop, name=f"mithril-poll-{self.name}", daemon=True)
        self._thread.start()

    @property
    def settings(self) -> MithrilSettings:
        return self._settings

    # --- account and catalog -------------------------------------------------------------

    def _project_fid(self) -> str:
        with self._lock:
            if self._project is not None:
                return self._project
        wanted = self._settings.project
        projects = self.api.listing("/v2/projects", "list your projects")
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

    def _catalog_now(self, fresh: bool = False) -> Catalog:
        with self._lock:
            if not fresh and self._catalog is not None and self._clock() - self._catalog[1] < CATALOG_TTL:
                return self._catalog[0]
        types = self.api.listing("/v2/instance-types", "list the instance types")
        availability = self.api.listing("/v2/spot/availability", "list spot availability")
        catalog = catalog_of(types, availability, self.name)
        for skipped in catalog.skipped:
            log.info("provider %s: %s", self.name, skipped)
        with self._lock:
            self._catalog = (catalog, self._clock())
        return catalog

    def offers(self) -> tuple[Offer, ...]:
        try:
            return tuple(o.offer for o in self._catalog_now().offers)
        except MithrilError as exc:
            log.warning("provider %s: cannot list offers: %s", self.name, exc)
            return ()

    # --- volumes (/v2/volumes) -------------------------------------------------------------

    def _volume_region(self) -> str:
        """Where a volume made outside a task goes: the configured region, else the region of the
        cheapest offer (where a task without a region would most likely run)."""
        if self._settings.region:
            return self._settings.region
        offers = sorted(self._catalog_now().offers, key=lambda o: (o.offer.price_per_hour_micros, o.offer.region))
        if not offers:
            raise MithrilError(
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message="Mithril lists no region with spot capacity to put the volume in",
                    suggestions=("set region (MITHRIL_REGION) for the provider",),
                )
            )
        return offers[0].offer.region

    def _volume_models(self) -> list[dict[str, Any]]:
        return self.api.listing("/v2/volumes", "list volumes", params={"project": self._project_fid()})

    def _holders(self, model: dict[str, Any]) -> tuple[str, ...]:
        bids = set(live_bids_of(model))
        with self._bids_lock:
            return tuple(b.task_id for b in self._bids.values() if b.bid_fid in bids)

    def list_volumes(self) -> Result[list[tuple[Volume, tuple[str, ...]]], DomainError]:
        """Every volume of the project, with the ids of the live tasks whose bids hold it."""
        try:
            models = self._volume_models()
        except MithrilError as exc:
            return Failure(exc.error)
        out = []
        for model in models:
            volume = volume_of(model, self.name)
            if volume is not None:
                out.append((volume, self._holders(model)))
        return Success(out)

    def get_volume(self, volume_id: str) -> Result[tuple[Volume, tuple[str, ...]], DomainError]:
        listed = self.list_volumes()
        if isinstance(listed, Failure):
            return listed
        found = next((pair for pair in listed.unwrap() if pair[0].volume_id == volume_id), None)
        return Success(found) if found is not None else Failure(volume_not_found(volume_id))

    def create_volume(
        self, name: object, size_gb: object, interface: object, iops: object, region: str | None = None
    ) -> Result[Volume, DomainError]:
        """POST /v2/volumes once: a name already in use is ALREADY_EXISTS (asked first), and a
        create whose answer was lost (timeout, 5xx) is looked up by name before anything else."""
        problems = new_mithril_volume_violations(name, size_gb, interface, iops)
        if problems:
            return Failure(validation_error(problems, subject="volume"))
        try:
            existing = volumes_of(self._volume_models(), self.name)
            taken = next((v for v in existing if v.name == name), None)
            if taken is not None:
                return Failure(name_taken(taken))
            made = checked_create_body(
                name, size_gb, interface, iops, region or self._volume_region(), self._project_fid()
            )
            if isinstance(made, Failure):
                return Failure(made.failure())
            try:
                created = self.api.call("POST", "/v2/volumes", "create the volume", body=made.unwrap(), retry=False)
            except MithrilError as exc:
                if not exc.retryable:
                    raise
                again = next((v for v in volumes_of(self._volume_models(), self.name) if v.name == name), None)
                if again is None:
                    raise
                return Success(again)
        except MithrilError as exc:
            return Failure(exc.error)
        volume = volume_of(created, self.name) if isinstance(created, dict) else None
        if volume is None:
            return Failure(network_error(self.api.base_url, "create the volume", "the answer held no volume"))
        log.info("provider %s: created volume %s (%s, %s GB)", self.name, volume.volume_id, volume.name, volume.size_gb)
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
            self.api.call("DELETE", f"/v2/volumes/{volume_id}", "delete the volume")
        except MithrilError as exc:
            if exc.status == 404:
                return Failure(volume_not_found(volume_id))
            if exc.status == 400 and "attached" in exc.raw.lower():
                return Failure(attached_error(volume.volume_id, volume.name, detail_text(exc.body, exc.raw)))
            return Failure(exc.error)
        log.info("provider %s: deleted volume %s (%s)", self.name, volume.volume_id, volume.name)
        return Success(volume)

    # --- placement -----------------------------------------------------------------------

    def _unsupported(self, config: TaskConfig) -> list[Any]:
        found = []
        for i, mount in enumerate(config.data_mounts):
            fix = "fetch the data from your task (e.g. aws s3 cp) instead"
            found.append(violation(f"data_mounts[{i}]", mount.source, "is not supported by the mithril provider", fix))
        return found

    def _task_volumes(self, config: TaskConfig) -> Result[tuple[VolumeMount, ...], DomainError]:
        """The task's volumes against the project's (reuse by name, attach by id, create on first
        use: the core's rules), Mithril's name and size rules for the new ones, and a block volume
        held by another live bid refused. Nothing is created here."""
        problems: list[FieldViolation] = []
        for i, spec in enumerate(config.volumes):
            if spec.volume_id is None:
                problems += name_violations(spec.name, f"volumes[{i}].name")
                problems += size_violations(spec.size_gb, f"volumes[{i}].size_gb")
            if spec.iops is not None:
                problems.append(violation(f"volumes[{i}].iops", spec.iops, "cannot be set on Mithril", "leave out"))
        if problems:
            return Failure(validation_error(problems, subject=f"task for provider {self.name}"))
        models = self._volume_models()
        existing = volumes_of(models, self.name)
        pending = (f"vol_pending{i}" for i in range(len(config.volumes)))
        resolved = resolve_volumes(config.volumes, existing, pending, 0.0, self.name)
        if isinstance(resolved, Failure):
            return resolved
        holders: dict[str, tuple[str, ...]] = {}
        for model in models:
            live = live_bids_of(model)
            if live:
                ours = self._holders(model)
                holders[str(model.get("fid"))] = ours or live
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
                return Failure(validation_error(blocks, subject=f"task for provider {self.name}"))
        return resolved

    def _plan(
        self, config: TaskConfig, name: str, task_id: str
    ) -> Result[tuple[BidPlan, Catalog, tuple[VolumeMount, ...]], DomainError]:
        problems = self._unsupported(config)
        if problems:
            return Failure(validation_error(problems, subject=f"task for provider {self.name}"))
        mounts: tuple[VolumeMount, ...] = ()
        if config.volumes:
            resolved = self._task_volumes(config)
            if isinstance(resolved, Failure):
                return Failure(resolved.failure())
            mounts = resolved.unwrap()
            # Existing volumes pin the bid to their region (a volume attaches only there).
            pinned = sorted({m.volume.region for m in mounts if not m.created and m.volume.region})
            if config.region is None and len(pinned) == 1:
                config = attrs.evolve(config, region=pinned[0])
        catalog = self._catalog_now()
        planned = plan_bid(config, catalog, name, task_id)
        if isinstance(planned, Failure):
            return Failure(planned.failure())
        plan = planned.unwrap()
        paths = [(f"volumes[{i}]", m.volume) for i, m in enumerate(mounts) if not m.created]
        in_region = check_regions(paths, plan.region)
        if isinstance(in_region, Failure):
            return Failure(in_region.failure())
        return Success((plan, catalog, mounts))

    def _attach(self, mounts: Sequence[VolumeMount], region: str) -> tuple[VolumeAttachment, ...]:
        """The task's volumes as the bid attaches them: the new ones created now, in its region."""
        out = []
        for mount in mounts:
            volume = mount.volume
            if mount.created:
                made = self.create_volume(volume.name, volume.size_gb, volume.interface, None, region)
                if isinstance(made, Failure):
                    error = made.failure()
                    if error.reason is not ErrorReason.ALREADY_EXISTS:  # made meanwhile: reuse it
                        raise LaunchError(error.message)
                    again = self.get_volume(dict(error.metadata).get("volume_id", ""))
                    if isinstance(again, Failure):
                        raise LaunchError(error.message)
                    made = Success(again.unwrap()[0])
                volume = made.unwrap()
            out.append(VolumeAttachment(volume.volume_id, volume.interface, volume.size_gb, mount.mount_path))
        return tuple(out)

    def _check_minimum(self, plan: BidPlan, catalog: Catalog) -> DomainError | None:
        """The platform's minimum price for the chosen type and region, asked before submitting."""
        pricing = self.api.call(
            "GET",
            "/v2/pricing/current",
            "read the current price",
            params={"instance_type": plan.type_fid, "region": plan.region, "instance_quantity": plan.quantity},
        )
        minimum = pricing.get("minimum_price_cents") if isinstance(pricing, dict) else None
        if isinstance(minimum, int) and not isinstance(minimum, bool) and plan.limit_price_micros < minimum * 10_000:
            return price_too_low(plan, catalog, f"the minimum is {limit_price_text(minimum * 10_000)}/h")
        return None

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        if self._key_file is None:
            fix = "set ssh_key_file (MITHRIL_SSH_KEY) to a private key, e.g. ~/.ssh/id_ed25519 (ssh-keygen -t ed25519)"
            problem = "is needed: flowd reads logs and exit codes from instances over SSH"
            return Failure(
                validation_error([violation("ssh_key_file", None, problem, fix)], subject=f"provider {self.name}")
            )
        try:
            planned = self._plan(config, config.name or "task", "check")
            if isinstance(planned, Failure):
                return Failure(planned.failure())
            plan, catalog, _ = planned.unwrap()
            self._project_fid()
            too_low = self._check_minimum(plan, catalog)
        except MithrilError as exc:
            return Failure(exc.error)
        if too_low is not None:
            return Failure(too_low)
        return Success(
            Placement(
                instance_type=format_instance_type(plan.offer.instance_type),
                cost_per_hour_micros=plan.offer.price_per_hour_micros,
            )
        )

    # --- launching -----------------------------------------------------------------------

    def _code_archive(self, digest: str | None) -> bytes | None:
        if not digest:
            return None
        parsed = parse_manifest(self._blobs.read(digest))
        if isinstance(parsed, Failure):
            raise LaunchError(f"the code snapshot {digest} is unreadable: {parsed.failure().message}")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
            for entry in parsed.unwrap().entries:
                info = tarfile.TarInfo(entry.path)
                info.size = entry.size
                info.mode = 0o755 if entry.executable else 0o644
                with open(self._blobs.path(entry.digest), "rb") as handle:
                    tar.addfile(info, handle)
        return buffer.getvalue()

    @staticmethod
    def _default_key_file(configured: str | None) -> str | None:
        """The private key flowd logs in to instances with: the configured one, else the user's
        usual ones (as ssh would try them)."""
        if configured is not None:
            return os.path.expanduser(configured)
        for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
            candidate = Path.home() / ".ssh" / name
            if candidate.is_file():
                return str(candidate)
        return None

    def _public_key(self) -> str | None:
        key_path = self._key_file
        if key_path is None:
            return None
        pub = Path(key_path + ".pub")
        if pub.is_file():
            return " ".join(pub.read_text().split()[:2])
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            with contextlib.suppress(paramiko.SSHException, ValueError):
                key = kind.from_private_key_file(key_path)
                return f"{key.get_name()} {key.get_base64()}"
        return None

    def _ssh_keys(self, project: str) -> list[str]:
        """The key fids for the bid: the configured names/fids, the key flowd logs in with
        (registered once if the project lacks it), and the project's required keys."""
        with self._lock:
            if self._ssh_key_fids is not None:
                return self._ssh_key_fids
        keys = self.api.listing("/v2/ssh-keys", "list the project's SSH keys", params={"project": project})
        chosen: list[str] = []
        for wanted in self._settings.ssh_keys:
            match = [k for k in keys if wanted in (k.get("fid"), k.get("name"))]
            if not match:
                raise LaunchError(f"the project has no SSH key {wanted!r} (ssh_keys / MITHRIL_SSH_KEYS)")
            chosen.append(str(match[0]["fid"]))
        public = self._public_key()
        if public is not None:
            match = [k for k in keys if " ".join(str(k.get("public_key", "")).split()[:2]) == public]
            if match:
                chosen.append(str(match[0]["fid"]))
            else:
                created = self.api.call(
                    "POST",
                    "/v2/ssh-keys",
                    "register flowd's SSH key",
                    body={"project": project, "name": f"flow-{self.name}-{_fingerprint(public)}", "public_key": public},
                    retry=False,
                )
                chosen.append(str(created["fid"]))
        chosen += [str(k["fid"]) for k in keys if k.get("required") is True]
        fids = list(dict.fromkeys(chosen))
        with self._lock:
            self._ssh_key_fids = fids
        return fids

    def launch(self, record: TaskRecord) -> Runtime:
        try:
            return self._launch(record)
        except MithrilError as exc:
            raise LaunchError(exc.error.message) from None

    def _launch(self, record: TaskRecord) -> Runtime:
        planned = self._plan(record.config, record.name, record.task_id)
        if isinstance(planned, Failure):
            raise LaunchError(planned.failure().message)
        plan, catalog, mounts = planned.unwrap()
        project = self._project_fid()
        attached = self._attach(mounts, plan.region)
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
            )
        )
        if startup.needs_upload:
            self._stage_uploads(record.task_id, startup.uploads)
        fids = [a.volume_id for a in attached]
        body = bid_request(plan, project, self._ssh_keys(project), fids, startup.startup_script)
        try:
            bid = self.api.create_bid(body)
        except MithrilError as exc:
            if exc.status is not None and is_price_too_low(exc.status, exc.body, exc.raw):
                raise LaunchError(price_too_low(plan, catalog, exc.error.message).message) from None
            raise
        runtime: Runtime = {
            "bid_fid": bid["fid"],
            "bid_name": plan.name,
            "region": plan.region,
            "uploads_pending": startup.needs_upload,
            "queued": True,
        }
        self._follow(record, runtime)
        return runtime

    def _local_dir(self, task_id: str) -> Path:
        path = self._tasks_root / task_id
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def _stage_uploads(self, task_id: str, uploads: Sequence[tuple[str, bytes, int]]) -> None:
        """Keeps what goes over SFTP in the task's (0700) directory until SSH answers."""
        staged = self._local_dir(task_id) / "upload"
        staged.mkdir(exist_ok=True, mode=0o700)
        for name, data, _mode in uploads:
            path = staged / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)

    def _follow(self, record: TaskRecord, runtime: Runtime, reported: str = "") -> None:
        task_id = record.task_id
        hours = record.config.max_run_time_hours
        limit = float(hours) * 3600.0 if hours else None
        bid = _Bid(
            task_id=task_id,
            bid_fid=str(runtime["bid_fid"]),
            name=str(runtime.get("bid_name", "")),
            uploads_pending=bool(runtime.get("uploads_pending")),
            reported=reported,
            limit_s=limit,
            function_call=record.function_call is not None,
        )
        started = deadline_of(record)
        if started is not None:
            bid.deadline = started + TIME_LIMIT_GRACE
        self.log_path(task_id).touch(mode=0o600, exist_ok=True)
        with self._bids_lock:
            self._bids.setdefault(task_id, bid)
        self._wake.set()

    def watch(self, record: TaskRecord, runtime: Runtime) -> None:
        self._follow(record, runtime, "running" if record.state is TaskState.RUNNING else "")

    def cancel(self, record: TaskRecord, runtime: Runtime) -> None:
        fid = runtime.get("bid_fid")
        if not isinstance(fid, str):
            return
        with self._bids_lock:
            followed = self._bids.get(record.task_id)
            if followed is not None:
                followed.cancel_requested = True
        try:
            self._delete_bid(fid)
        except MithrilError as exc:
            log.warning("provider %s: cannot cancel bid %s of task %s: %s", self.name, fid, record.task_id, exc)
            return
        with self._bids_lock:
            self._bids.pop(record.task_id, None)
        self._report(record.task_id, Lost(reason="the bid was cancelled"))

    def _delete_bid(self, fid: str) -> None:
        try:
            self.api.call("DELETE", f"/v2/spot/bids/{fid}", "cancel the bid")
        except MithrilError as exc:
            if exc.status != 404:
                raise

    def recover(self, record: TaskRecord, runtime: Runtime) -> Runtime | None:
        runtime = runtime or {}
        fid = runtime.get("bid_fid")
        if not isinstance(fid, str):
            # flowd stopped while posting: the bid may exist under its name (made from the task id)
            name = str(runtime.get("bid_name") or bid_name(record.name, record.task_id))
            runtime = {**runtime, "bid_name": name}
            try:
                found = self.api.find_bid(self._project_fid(), name)
            except MithrilError as exc:
                raise LaunchError(exc.error.message) from None
            if found is None:
                return self.launch(record)
            runtime = {**runtime, "bid_fid": found["fid"], "queued": True}
        again: Runtime = dict(runtime)
        if record.state is not TaskState.RUNNING:
            again["queued"] = True
        self._follow(record, again, "running" if record.state is TaskState.RUNNING else "")
        return again

    def recovered(self) -> None:
        pass

    def log_path(self, task_id: str) -> Path:
        return self._local_dir(task_id) / OUTPUT_FILE

    def read_result(self, task_id: str) -> bytes | None:
        try:
            return (self._local_dir(task_id) / RESULT_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def _fetch_result(self, bid: _Bid, destination: str) -> None:
        """A function call's result.json, copied here before the bid (and the instance) goes."""
        data = self._cluster(destination).read_file(f"{task_dir(bid.task_id)}/{RESULT_FILE}")
        if data is not None:
            path = self._local_dir(bid.task_id) / RESULT_FILE
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)

    # --- SSH -------------------------------------------------------------------------------

    def _known_hosts(self, host: str, port: int) -> str:
        """The known_hosts file to check `host` against: the configured one, else Flow's own,
        where an instance's key is recorded the first time Flow sees it (OpenSSH's accept-new:
        every later connection must present the same key)."""
        if self._settings.known_hosts is not None:
            return os.path.expanduser(self._settings.known_hosts)
        path = self._state_root / "known_hosts"
        known = paramiko.HostKeys()
        with contextlib.suppress(FileNotFoundError):
            known.load(str(path))
        entry = host if port == 22 else f"[{host}]:{port}"
        if known.lookup(entry) is None:
            transport = paramiko.Transport((host, port))
            try:
                transport.start_client(timeout=10)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
            known.add(entry, key.get_name(), key)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w"):
                pass
            known.save(str(path))
        return str(path)

    def _cluster(self, destination: str) -> SshCluster:
        with self._ssh_lock:
            found = self._ssh.get(destination)
            if found is not None:
                return found
        parsed = parse_destination(destination)
        if parsed is None:
            raise ClusterError(f"the instance's SSH destination {destination!r} is not host[:port]")
        host, port = parsed
        try:
            known_hosts = self._known_hosts(host, port)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise ClusterError(f"cannot reach {destination} over SSH yet: {exc}") from None
        ssh = SshSettings(
            host=host,
            port=port,
            user=self._settings.ssh_user,
            key_file=self._key_file,
            known_hosts=known_hosts,
            host_key_checking=self._settings.host_key_checking,
            connect_timeout=10.0,
        )
        cluster = SshCluster(ssh, user=self._settings.ssh_user, known_hosts=known_hosts)
        with self._ssh_lock:
            return self._ssh.setdefault(destination, cluster)

    def _upload(self, bid: _Bid, destination: str) -> None:
        """Sends the staged files (payload, code, secrets) and then `ready`."""
        staged = self._tasks_root / bid.task_id / "upload"
        cluster = self._cluster(destination)
        remote = task_dir(bid.task_id)
        # The startup script makes the directory; wait for it (it runs as the instance boots).
        done = cluster.run(
            f"for i in $(seq 600); do [ -d {shlex.quote(remote)} ] && exit 0; sleep 0.1; done; exit 1", 90
        )
        if done.rc != 0:
            raise ClusterError(f"the task directory {remote} did not appear on {destination}")
        for path in sorted(staged.iterdir()):
            cluster.put_file(path, f"{remote}/{path.name}")
        done = cluster.run(f"touch {shlex.quote(remote + '/' + READY_FILE)}", 30)
        if done.rc != 0:
            raise ClusterError(f"cannot mark the upload ready: {done.error_text}")
        for path in staged.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staged.rmdir()
        bid.uploads_pending = False

    def _read_remote(self, bid: _Bid, destination: str) -> tuple[int | None, bool, bytes]:
        """The exit record, whether the time limit stopped it, and the log's new bytes."""
        offset = _size(self.log_path(bid.task_id))
        remote = shlex.quote(task_dir(bid.task_id))
        sep = "printf '\\n@@flow@@\\n'"
        script = (
            f"cat {remote}/{EXIT_FILE} 2>/dev/null; {sep}; "
            f"[ -e {remote}/{TIMED_OUT_FILE} ] && echo T; {sep}; "
            f"tail -c +{offset + 1} {remote}/{OUTPUT_FILE} 2>/dev/null | head -c {LOG_CHUNK}"
        )
        done = self._cluster(destination).run(script, 60)
        parts = done.stdout.split(SEPARATOR, 2)
        if len(parts) != 3:
            raise ClusterError(f"unreadable answer from {destination}")
        code = parse_exit_code(parts[0].decode("utf-8", "replace"))
        with open(self.log_path(bid.task_id), "ab") as handle:
            if handle.tell() == offset:
                handle.write(parts[2])
        return code, parts[1].strip() == b"T", parts[2]

    # --- the poller ------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        interval = self._settings.poll_interval
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._bids_lock:
                bids = list(self._bids.values())
            if not bids:
                continue
            try:
                self.poll(bids)
            except MithrilError as exc:
                now = self._clock()
                if now - self._last_warning >= WARN_EVERY:  # once a minute while Mithril is unreachable
                    self._last_warning = now
                    log.warning("provider %s: status query failed (retrying): %s", self.name, exc)
            except Exception:
                log.exception("provider %s: status query failed", self.name)

    def _listed_bids(self, wanted: set[str]) -> dict[str, dict[str, Any]]:
        """The project's bids, newest first, until every wanted one has been seen."""
        found: dict[str, dict[str, Any]] = {}
        params = {"project": self._project_fid(), "sort_by": "created_at", "sort_dir": "desc"}
        for bid in self.api.pages("/v2/spot/bids", "list your bids", params):
            fid = bid.get("fid")
            if fid in wanted:
                found[str(fid)] = bid
                if len(found) == len(wanted):
                    break
        return found

    def _instances(self, fids: list[str]) -> dict[str, list[dict[str, Any]]]:
        by_bid: dict[str, list[dict[str, Any]]] = {fid: [] for fid in fids}
        project = self._project_fid()
        for start in range(0, len(fids), MAX_INSTANCES_PER_QUERY):
            chunk = fids[start : start + MAX_INSTANCES_PER_QUERY]
            params = {"project": project, "bid_fid_in": ",".join(chunk)}
            for inst in self.api.pages("/v2/instances", "list the instances of your bids", params):
                owner = inst.get("bid")
                if isinstance(owner, str) and owner in by_bid:
                    by_bid[owner].append(inst)
        return by_bid

    def poll(self, bids: list[_Bid]) -> None:
        """One round: two batched listings, then SSH for the running ones."""
        self.polls += 1
        wanted = {b.bid_fid for b in bids}
        listed = self._listed_bids(wanted)
        for fid in wanted - set(listed):  # older than the listing went: ask for it alone
            with contextlib.suppress(MithrilError):
                listed[fid] = self.api.call("GET", f"/v2/spot/bids/{fid}", "read a bid")
        allocated = [fid for fid, bid in listed.items() if bid.get("instances")]
        instances = self._instances(allocated) if allocated else {}
        work = [(bid, listed[bid.bid_fid]) for bid in bids if bid.bid_fid in listed]
        if len(work) <= 1:
            for bid, seen in work:
                self._advance_logged(bid, seen, instances.get(bid.bid_fid, []))
            return
        # Each running task costs one SSH command on its own instance: run them side by side.
        list(self._pool.map(lambda w: self._advance_logged(w[0], w[1], instances.get(w[0].bid_fid, [])), work))

    def _advance_logged(self, bid: _Bid, seen: dict[str, Any], instances: list[dict[str, Any]]) -> None:
        try:
            self._advance(bid, seen, instances)
        except ClusterError as exc:
            log.info("provider %s: task %s: %s (retrying)", self.name, bid.task_id, exc)
        except Exception:
            log.exception("provider %s: task %s: cannot follow it this round", self.name, bid.task_id)

    def _advance(self, bid: _Bid, seen: dict[str, Any], instances: list[dict[str, Any]]) -> None:
        observed = observe(seen, instances)
        phase = observed.phase
        if phase is Phase.PROVISIONING and bid.reported == "":
            bid.reported = "provisioning"
            self._report(bid.task_id, Provisioning())
        elif phase is Phase.RUNNING:
            destination = observed.destinations[0]
            bid.destination = destination
            if bid.deadline is not None and time.time() > bid.deadline:
                self._end(bid, TimedOut())  # the instance did not stop it in time: flowd does
                return
            if bid.uploads_pending:
                self._upload(bid, destination)
            if bid.reported != "running":
                bid.reported = "running"
                if bid.limit_s is not None:
                    bid.deadline = time.time() + bid.limit_s + TIME_LIMIT_GRACE
                self._report(bid.task_id, Started(), self._runtime(bid))
            code, timed_out, chunk = self._read_remote(bid, destination)
            while code is not None and len(chunk) >= LOG_CHUNK:  # the rest of the log first
                _, _, chunk = self._read_remote(bid, destination)
            if code is not None:
                if bid.function_call:
                    self._fetch_result(bid, destination)
                self._end(bid, TimedOut(exit_code=code) if timed_out else Exited(exit_code=code))
        elif phase is Phase.PREEMPTED:
            self._end(bid, Preempted(reason=observed.detail))
        elif phase in (Phase.FAILED, Phase.TERMINATED):
            self._end(bid, Lost(reason=observed.detail))
        elif phase is Phase.UNKNOWN:
            log.info("provider %s: task %s: %s", self.name, bid.task_id, observed.detail)

    def _end(self, bid: _Bid, event: Any) -> None:
        """Reports how the task ended and deletes its bid, so nothing keeps running or billing."""
        with contextlib.suppress(MithrilError):
            self._delete_bid(bid.bid_fid)
        with self._bids_lock:
            self._bids.pop(bid.task_id, None)
        if bid.reported != "running" and isinstance(event, (Exited, TimedOut)):
            self._report(bid.task_id, Started(), self._runtime(bid))
        self._report(bid.task_id, event)
        if bid.destination is not None:
            with self._ssh_lock:
                cluster = self._ssh.pop(bid.destination, None)
            if cluster is not None and not any(b.destination == bid.destination for b in self._live()):
                cluster.close()
            elif cluster is not None:
                with self._ssh_lock:
                    self._ssh.setdefault(bid.destination, cluster)

    def _live(self) -> list[_Bid]:
        with self._bids_lock:
            return list(self._bids.values())

    @staticmethod
    def _runtime(bid: _Bid) -> Runtime:
        return {"bid_fid": bid.bid_fid, "bid_name": bid.name, "destination": bid.destination}

    # --- exec --------------------------------------------------------------------------------

    def exec(
        self, record: TaskRecord, runtime: Runtime, argv: Sequence[str], tty: bool, rows: int, columns: int, term: str
    ) -> ExecSession:
        """A command in the task's code directory on its (first) instance, through ssh."""
        destination = runtime.get("destination")
        with self._bids_lock:
            followed = self._bids.get(record.task_id)
        if followed is not None and followed.destination:
            destination = followed.destination
        parsed = parse_destination(destination)
        if parsed is None:
            raise LaunchError(f"task {record.task_id} has no instance to run commands on yet")
        host, port = parsed
        try:
            known = self._known_hosts(host, port)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise LaunchError(f"cannot reach the instance over SSH: {exc}") from None
        remote = f"cd {shlex.quote(task_dir(record.task_id))}/code 2>/dev/null; exec " + (
            " ".join(shlex.quote(a) for a in argv) if argv else "bash -l"
        )
        key = ["-i", self._key_file, "-o", "IdentitiesOnly=yes"] if self._key_file else []
        command = [
            "ssh",
            "-q",
            "-p",
            str(port),
            *key,
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-tt" if tty else "-T",
            f"{self._settings.ssh_user}@{host}",
            "--",
            remote,
        ]
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        if tty:
            env["TERM"] = term or "xterm-256color"
        try:
            return ExecSession(command, self._local_dir(record.task_id), env, tty, rows, columns)
        except ExecError as exc:
            raise LaunchError(str(exc)) from exc

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._ssh_lock:
            clusters = list(self._ssh.values())
            self._ssh.clear()
        for cluster in clusters:
            cluster.close()
        self.api.close()


def _fingerprint(public_key: str) -> str:
    return hashlib.sha256(public_key.encode()).hexdigest()[:10]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
