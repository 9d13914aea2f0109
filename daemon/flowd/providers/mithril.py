"""The mithril provider: a task is a spot bid on Mithril's GPU cloud; its instances are reached
over SSH.

Placing plans the bid in the core (`flow.domain.mithril.bid`: instance type and region through
the matcher, a limit price within max_price_per_hour, a unique name) and asks the platform's
minimum price. Launching builds the startup script (`flow.domain.mithril.startup_script`) and
posts the bid once (`MithrilAPI.create_bid`): a bid created means accepted (`Queued`); anything
the platform refuses (a bad key, a quota, a 422, a price below the minimum) is `Refused` with its
own message. Then, asynchronously: the task stays PENDING while the bid is open, PROVISIONING
while its instances start, RUNNING once they answer over SSH and the task's files are uploaded.

One poller thread (remote_poller) follows every live bid with batched listings: the project's
bids (newest first, until every live one is seen) and the instances of the allocated ones
(`bid_fid_in`), so a poll costs the same few requests for 1 or 100 tasks. For each running task
one command over the instance's (kept-open) SSH connection reads the exit record and the log's
new bytes into the task's local log file. When the command has exited, Flow deletes the bid (so
nothing keeps running or billing) and only then reports COMPLETED or FAILED with its code.
Preemption -> PREEMPTED; a bid the platform ended without an exit record -> FAILED (CANCELLED
when the user asked).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import attrs
from attrs import define, frozen
from returns.result import Failure, Result, Success

from flow.domain.code.manifest import parse_manifest
from flow.domain.daemon_config import MithrilSettings
from flow.domain.errors import DomainError, validation_error, violation
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.instances.matching import Offer
from flow.domain.mithril.bid import BidPlan, bid_name, bid_request, memory_refusal, plan_bid, price_too_low
from flow.domain.mithril.catalog import Catalog, limit_price_text
from flow.domain.mithril.errors import is_price_too_low
from flow.domain.mithril.startup_script import StartupRequest, startup_plan
from flow.domain.mithril.status import Phase, observe
from flow.domain.mithril.volumes import check_regions
from flow.domain.task import task_files
from flow.domain.task.config import TaskConfig
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import (
    Exited,
    Lost,
    Preempted,
    Provisioning,
    Started,
    TaskEvent,
    TaskRecord,
    TaskState,
    TimedOut,
    deadline_of,
)
from flow.domain.volumes.rules import VolumeMount
from flow.runtime import runner
from flowd.blobs import BlobStore
from flowd.exec_session import ExecError, ExecSession
from flowd.providers.base import (
    Capabilities,
    ExecRequest,
    Launched,
    LaunchError,
    Placement,
    Queued,
    Recovered,
    Refused,
    Reporter,
    Running,
    StateType,
)
from flowd.providers.environment import public_env
from flowd.providers.mithril_account import MithrilAccount
from flowd.providers.mithril_api import MithrilAPI, MithrilError
from flowd.providers.mithril_instances import LOG_CHUNK, STAGED_DIR, InstanceShell
from flowd.providers.mithril_volumes import MithrilVolumes
from flowd.providers.remote_poller import RemotePoller
from flowd.providers.slurm_cluster import ClusterError
from flowd.providers.task_dir import TaskDir

log = logging.getLogger(__name__)

RUNNER_SOURCE: Final = Path(runner.__file__)
MAX_INSTANCES_PER_QUERY: Final = 50
# The instance stops a task at max_run_time_hours (`timeout`); flowd deletes the bid this much later
# if the instance did not (a wedged instance must not bill forever).
TIME_LIMIT_GRACE: Final = 120.0
SSH_WORKERS: Final = 8  # sshd's MaxSessions is 10 per connection


@frozen
class MithrilBid:
    """The runtime state of a task on Mithril: its bid (and, once running, its instance)."""

    bid_fid: str
    bid_name: str
    region: str = ""
    uploads_pending: bool = False
    destination: str | None = None


def _legacy(data: Mapping[str, Any]) -> MithrilBid | None:
    fid = data.get("bid_fid")
    if not isinstance(fid, str):
        return None  # stopped while posting: the bid is looked up by its name (from the task)
    return MithrilBid(
        bid_fid=fid,
        bid_name=str(data.get("bid_name", "")),
        region=str(data.get("region", "")),
        uploads_pending=bool(data.get("uploads_pending")),
        destination=data.get("destination"),
    )


MITHRIL_STATES: Final = StateType(classes=(MithrilBid,), legacy=_legacy)


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
    cancelling: bool = False  # the user cancelled: the bid is deleted (again, until it is gone)

    @property
    def state(self) -> MithrilBid:
        return MithrilBid(self.bid_fid, self.name, destination=self.destination)


class MithrilProvider:
    kind = "mithril"

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
        self.settings = settings
        self._tasks_root = tasks_root
        self._report = reporter
        self._blobs = blobs
        self.api = MithrilAPI(settings.api_url, settings.api_key, timeout=request_timeout)
        self._account = MithrilAccount(settings, self.api, clock)
        self._shell = InstanceShell(settings, state_root, self._account.key_file)
        self._poller: RemotePoller[_Bid] = RemotePoller(
            self.name, settings.poll_interval, self.poll, (MithrilError,), clock
        )
        self._volumes = MithrilVolumes(settings, self.api, self._account, self._holders)
        self._pool = ThreadPoolExecutor(max_workers=SSH_WORKERS, thread_name_prefix=f"mithril-ssh-{self.name}")
        self.capabilities = Capabilities(offers=self, exec=self, results=self, volumes=self._volumes)

    @property
    def state_type(self) -> StateType:
        return MITHRIL_STATES

    @property
    def polls(self) -> int:
        return self._poller.polls

    def _holders(self, bid_fids: set[str]) -> tuple[str, ...]:
        return tuple(b.task_id for b in self._poller.jobs() if b.bid_fid in bid_fids)

    def _local_dir(self, task_id: str) -> TaskDir:
        return TaskDir(self._tasks_root / task_id).create()

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        return [TaskDir(self._tasks_root / record.task_id).output]

    def read_result(self, task_id: str) -> bytes | None:
        return TaskDir(self._tasks_root / task_id).read(task_files.RESULT)

    # --- offers and placement --------------------------------------------------------------

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        try:
            return Success(tuple(o.offer for o in self._account.catalog(fresh=True).offers))
        except MithrilError as exc:
            return Failure(exc.error)

    def _plan(
        self, config: TaskConfig, name: str, task_id: str
    ) -> Result[tuple[BidPlan, Catalog, tuple[VolumeMount, ...]], DomainError]:
        fix = "fetch the data from your task (e.g. aws s3 cp) instead"
        problems = [
            violation(f"data_mounts[{i}]", m.source, "is not supported by the mithril provider", fix)
            for i, m in enumerate(config.data_mounts)
        ]
        if problems:
            return Failure(validation_error(problems, subject=f"task for provider {self.name}"))
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
        pricing = self.api.call("GET", "/v2/pricing/current", "read the current price", params=params)
        minimum = pricing.get("minimum_price_cents") if isinstance(pricing, dict) else None
        if isinstance(minimum, int) and not isinstance(minimum, bool) and plan.limit_price_micros < minimum * 10_000:
            return price_too_low(plan, catalog, f"the minimum is {limit_price_text(minimum * 10_000)}/h")
        return None

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        if self._account.key_file is None:
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
            self._account.project_fid()
            too_low = self._below_minimum(plan, catalog)
        except MithrilError as exc:
            return Failure(exc.error)
        if too_low is not None:
            return Failure(too_low)
        offer = plan.offer
        return Success(Placement(format_instance_type(offer.instance_type), offer.price_per_hour_micros))

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

    def launch(self, record: TaskRecord) -> Launched[MithrilBid]:
        """Posts the bid: created means accepted; a refusal comes back with Mithril's words."""
        try:
            state = self._post_bid(record)
        except MithrilError as exc:
            return Refused(exc.error)
        except (LaunchError, OSError) as exc:
            return (exc if isinstance(exc, LaunchError) else LaunchError(str(exc))).refused(self.name)
        return Queued(state)

    def _post_bid(self, record: TaskRecord) -> MithrilBid:
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
                ssh_user=self.settings.ssh_user,
                code_archive=self._code_archive(record.code_digest),
                secrets=dict(record.secrets),
                runner=RUNNER_SOURCE.read_bytes() if call is not None else None,
                invocation=json.dumps(invocation_document(call)).encode() if call is not None else None,
                python=(call.python if call is not None and call.python else "python3"),
                volumes=attached,
            )
        )
        if startup.needs_upload:  # kept in the task's (0700) directory until SSH answers
            staged = TaskDir(self._local_dir(record.task_id).path / STAGED_DIR)
            for name, data, _mode in startup.uploads:
                staged.write(name, data)
        fids = [a.volume_id for a in attached]
        keys = self._account.ssh_keys(project, record.config.ssh_keys)
        body = bid_request(plan, project, keys, fids, startup.startup_script)
        try:
            bid = self.api.create_bid(body)
        except MithrilError as exc:
            if exc.status is not None and is_price_too_low(exc.status, exc.body, exc.raw):
                raise MithrilError(price_too_low(plan, catalog, exc.error.message)) from None
            raise
        return MithrilBid(bid["fid"], plan.name, region=plan.region, uploads_pending=startup.needs_upload)

    def _follow(self, record: TaskRecord, state: MithrilBid) -> None:
        hours = record.config.max_run_time_hours
        running = record.state is TaskState.RUNNING
        bid = _Bid(
            task_id=record.task_id,
            bid_fid=state.bid_fid,
            name=state.bid_name,
            uploads_pending=state.uploads_pending,
            reported="running" if running else "",
            limit_s=float(hours) * 3600.0 if hours else None,
            function_call=record.function_call is not None,
            destination=state.destination,
        )
        started = deadline_of(record)
        if started is not None:
            bid.deadline = started + TIME_LIMIT_GRACE
        self._local_dir(record.task_id).touch(task_files.OUTPUT)
        self._poller.follow(record.task_id, bid)

    def watch(self, record: TaskRecord, state: MithrilBid) -> None:
        self._follow(record, state)

    def cancel(self, record: TaskRecord, state: MithrilBid) -> None:
        """Deletes the bid; the task ends (CANCELLED) once the poller sees that the platform has
        terminated its instances, as any end is reported."""
        followed = self._poller.get(record.task_id)
        if followed is not None:
            followed.cancelling = True
        try:
            self._delete_bid(state.bid_fid)
        except MithrilError as exc:  # still followed: tried again at the next poll
            log.warning(
                "provider %s: cannot cancel bid %s of task %s: %s", self.name, state.bid_fid, record.task_id, exc
            )
        self._poller.wake()

    def _delete_bid(self, fid: str) -> None:
        try:
            self.api.call("DELETE", f"/v2/spot/bids/{fid}", "cancel the bid")
        except MithrilError as exc:
            if exc.status != 404:
                raise

    def recover(self, record: TaskRecord, state: MithrilBid | None) -> Recovered[MithrilBid]:
        if state is None:  # flowd stopped while posting: the bid may exist under its name
            name = bid_name(record.name, record.task_id)
            try:
                found = self.api.find_bid(self._account.project_fid(), name)
            except MithrilError as exc:
                return Refused(exc.error)
            if found is None:
                return self.launch(record)
            state = MithrilBid(str(found["fid"]), name)
        return Running(state) if record.state is TaskState.RUNNING else Queued(state)

    def recovered(self) -> None:
        pass

    # --- the poller ------------------------------------------------------------------------

    def _listed_bids(self, wanted: set[str]) -> dict[str, dict[str, Any]]:
        """The project's bids, newest first, until every wanted one has been seen."""
        found: dict[str, dict[str, Any]] = {}
        params = {"project": self._account.project_fid(), "sort_by": "created_at", "sort_dir": "desc"}
        for bid in self.api.pages("/v2/spot/bids", "list your bids", params):
            fid = bid.get("fid")
            if fid in wanted:
                found[str(fid)] = bid
                if len(found) == len(wanted):
                    break
        return found

    def _instances(self, fids: list[str]) -> dict[str, list[dict[str, Any]]]:
        by_bid: dict[str, list[dict[str, Any]]] = {fid: [] for fid in fids}
        project = self._account.project_fid()
        for start in range(0, len(fids), MAX_INSTANCES_PER_QUERY):
            params = {"project": project, "bid_fid_in": ",".join(fids[start : start + MAX_INSTANCES_PER_QUERY])}
            for inst in self.api.pages("/v2/instances", "list the instances of your bids", params):
                owner = inst.get("bid")
                if isinstance(owner, str) and owner in by_bid:
                    by_bid[owner].append(inst)
        return by_bid

    def poll(self, bids: list[_Bid]) -> None:
        """One round: two batched listings, then SSH for the running ones, side by side."""
        wanted = {b.bid_fid for b in bids}
        listed = self._listed_bids(wanted)
        for fid in wanted - set(listed):  # older than the listing went: ask for it alone
            try:
                listed[fid] = self.api.call("GET", f"/v2/spot/bids/{fid}", "read a bid")
            except MithrilError:
                continue
        allocated = [fid for fid, bid in listed.items() if bid.get("instances")]
        instances = self._instances(allocated) if allocated else {}
        work = [(bid, listed[bid.bid_fid], instances.get(bid.bid_fid, [])) for bid in bids if bid.bid_fid in listed]
        if len(work) <= 1:
            for item in work:
                self._advance_logged(*item)
            return
        list(self._pool.map(lambda item: self._advance_logged(*item), work))

    def _advance_logged(self, bid: _Bid, seen: dict[str, Any], instances: list[dict[str, Any]]) -> None:
        try:
            self._advance(bid, seen, instances)
        except (ClusterError, MithrilError) as exc:
            log.info("provider %s: task %s: %s (retrying)", self.name, bid.task_id, exc)
        except Exception:
            log.exception("provider %s: task %s: cannot follow it this round", self.name, bid.task_id)

    def _advance(self, bid: _Bid, seen: dict[str, Any], instances: list[dict[str, Any]]) -> None:
        observed = observe(seen, instances)
        phase = observed.phase
        if bid.cancelling and phase not in (Phase.TERMINATED, Phase.FAILED, Phase.PREEMPTED):
            self._delete_bid(bid.bid_fid)  # the cancel's delete failed before: again
            return
        if phase is Phase.PROVISIONING and bid.reported == "":
            bid.reported = "provisioning"
            self._report(bid.task_id, Provisioning())
        elif phase is Phase.RUNNING:
            self._running(bid, observed.destinations[0])
        elif phase is Phase.PREEMPTED:
            self._end(bid, Preempted(reason=observed.detail))
        elif phase in (Phase.FAILED, Phase.TERMINATED):
            self._end(bid, Lost(reason=observed.detail))
        elif phase is Phase.UNKNOWN:
            log.info("provider %s: task %s: %s", self.name, bid.task_id, observed.detail)

    def _running(self, bid: _Bid, destination: str) -> None:
        bid.destination = destination
        local = self._local_dir(bid.task_id)
        if bid.deadline is not None and time.time() > bid.deadline:
            self._end(bid, TimedOut())  # the instance did not stop it in time: flowd does
            return
        if bid.uploads_pending:
            self._shell.upload(bid.task_id, local, destination)
            bid.uploads_pending = False
        if bid.reported != "running":
            bid.reported = "running"
            if bid.limit_s is not None:
                bid.deadline = time.time() + bid.limit_s + TIME_LIMIT_GRACE
            self._report(bid.task_id, Started(), bid.state)
        code, timed_out, chunk = self._shell.read(bid.task_id, local, destination)
        while code is not None and len(chunk) >= LOG_CHUNK:  # the rest of the log first
            _, _, chunk = self._shell.read(bid.task_id, local, destination)
        if code is not None:
            if bid.function_call:
                self._shell.fetch_result(bid.task_id, local, destination)
            self._end(bid, TimedOut(exit_code=code) if timed_out else Exited(exit_code=code))

    def _end(self, bid: _Bid, event: TaskEvent) -> None:
        """Deletes the bid, so nothing keeps running or billing, and then reports how the task
        ended. A delete that fails is retried next poll: the end waits for it."""
        self._delete_bid(bid.bid_fid)  # MithrilError: kept, and tried again next poll
        self._forget(bid.task_id)
        if bid.reported != "running" and isinstance(event, Exited | TimedOut):
            self._report(bid.task_id, Started(), bid.state)
        self._report(bid.task_id, event)

    def _forget(self, task_id: str) -> None:
        bid = self._poller.forget(task_id)
        in_use = {b.destination for b in self._poller.jobs()}
        if bid is not None and bid.destination is not None and bid.destination not in in_use:
            self._shell.drop(bid.destination)

    # --- exec --------------------------------------------------------------------------------

    def exec(self, record: TaskRecord, state: MithrilBid, request: ExecRequest) -> ExecSession:
        """A command in the task's code directory on its (first) instance, through ssh."""
        followed = self._poller.get(record.task_id)
        destination = (followed.destination if followed is not None else None) or state.destination or ""
        try:
            command = self._shell.ssh_command(record.task_id, destination, request.argv, request.tty)
        except ClusterError as exc:
            raise LaunchError(str(exc)) from None
        env = public_env(os.environ)
        if request.tty:
            env["TERM"] = request.term or "xterm-256color"
        try:
            return ExecSession(
                command, self._local_dir(record.task_id).path, env, request.tty, request.rows, request.columns
            )
        except ExecError as exc:
            raise LaunchError(str(exc)) from exc

    def close(self) -> None:
        self._poller.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._shell.close()
        self.api.close()
