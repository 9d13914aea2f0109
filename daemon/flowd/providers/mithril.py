"""The mithril provider: a task is a spot bid on Mithril's GPU cloud; its instances are reached
over SSH. (`MithrilCloud`; the SDK's flow.providers.mithril.MithrilProvider is its settings.)

Placing plans the bid in the core (`flow.domain.mithril.bid`: instance type and region through
the matcher, a limit price within max_price_per_hour, a unique name), asks the platform's
minimum price, and makes sure of the SSH key flowd reaches instances with (mithril_keys: made
and registered for the user when none is configured). Launching builds the startup script
(`flow.domain.mithril.startup_script`) and posts the bid once (`MithrilAPI.create_bid`): a bid
created means accepted (`Queued`); anything the platform refuses (a bad key, a quota, a 422, a
price below the minimum) is `Refused` with its own message. Then, asynchronously: the task stays
PENDING while the bid is open, PROVISIONING while its instances start, RUNNING once they answer
over SSH and the task's files (payload, code, secrets, data mounts' credentials) are uploaded
into each node's directory.

Two channels follow a task:
- the API, polled (remote_poller) with batched listings: the project's bids (newest first, until
  every live one is seen) and the instances of the allocated ones (`bid_fid_in`), so a poll costs
  the same two requests for 1 or 100 tasks. It sees provisioning, preemption and a bid the
  platform ended;
- SSH, pushed: one kept-open connection per instance address runs a watcher
  (flow.runtime.task_watch, through mithril_stream) that streams every node's log as it is
  written into the task's local copies (at exact offsets: a reconnect loses and repeats nothing)
  and reports each node's exit the moment it is recorded. A poll does no SSH work at all.

How a task ends (and only then is it reported: the bid is deleted first, so nothing keeps
running or billing):
- every node exited 0 -> COMPLETED; a node failed -> FAILED with the first failing node's code
  (the others are stopped with the bid), as on the local provider; the time limit -> TIMEOUT;
- a node could not start (a volume that did not appear, data that could not be synced) -> FAILED
  "could not start: ...";
- cancel: the task's command gets SIGTERM on its instances (its own script sends it), so its last
  lines arrive; the bid goes once it has exited, or after STOP_GRACE -> CANCELLED;
- preemption: while the platform gives notice the task keeps running; once an instance is gone,
  the last lines the instances still hold are drained, then PREEMPTED (which a task's
  max_preemption_retries may turn into a new attempt: the engine's relaunch);
- a bid the platform ended without an exit record -> FAILED (CANCELLED when the user asked).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import attrs
from attrs import define, field
from returns.result import Failure, Result, Success

from flow.domain.daemon_config import MithrilSettings
from flow.domain.errors import DomainError, ErrorReason, validation_error
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.instances.matching import Offer
from flow.domain.mithril.bid import BidPlan, bid_name, bid_request, memory_refusal, plan_bid, price_too_low
from flow.domain.mithril.catalog import Catalog, limit_price_text
from flow.domain.mithril.data_mounts import DataMountPlan, data_mount_violations, data_mounts_of
from flow.domain.mithril.errors import is_price_too_low
from flow.domain.mithril.startup_script import StartupRequest, startup_plan
from flow.domain.mithril.status import Phase, observe
from flow.domain.mithril.volumes import check_regions
from flow.domain.task import task_files
from flow.domain.task.config import TaskConfig
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import (
    Exited,
    LaunchFailed,
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
from flow.domain.task.multinode import group_outcome
from flow.domain.volumes.rules import VolumeMount
from flow.runtime import runner, s3_sync
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
from flowd.providers.code_archive import snapshot_archive
from flowd.providers.environment import public_env
from flowd.providers.mithril_account import MithrilAccount
from flowd.providers.mithril_api import MithrilAPI, MithrilError
from flowd.providers.mithril_instances import STAGED_DIR, InstanceShell
from flowd.providers.mithril_link import LinkError
from flowd.providers.mithril_state import MITHRIL_STATES, MithrilBid
from flowd.providers.mithril_volumes import MithrilVolumes
from flowd.providers.remote_poller import RemotePoller
from flowd.providers.s3_credentials import storage_credentials
from flowd.providers.task_dir import TaskDir

__all__ = ["MITHRIL_STATES", "MithrilBid", "MithrilCloud"]

log = logging.getLogger(__name__)

RUNNER_SOURCE: Final = Path(runner.__file__)
SYNCER_SOURCE: Final = Path(s3_sync.__file__)
MAX_INSTANCES_PER_QUERY: Final = 50
# The instance stops a task at max_run_time_hours (`timeout`); flowd deletes the bid this much later
# if the instance did not (a wedged instance must not bill forever).
TIME_LIMIT_GRACE: Final = 120.0
STOP_GRACE: Final = 15.0  # a cancelled command's time to end on SIGTERM before its bid goes
DRAIN_TIMEOUT: Final = 5.0  # waiting for the last lines of instances that may be gone
WORKERS: Final = 8  # uploads, ends (a delete, a result fetch) of several tasks at once


@define
class _Bid:
    """A bid the poller follows (its fields change under the provider's lock)."""

    task_id: str
    bid_fid: str
    name: str
    uploads_pending: bool
    nodes: int = 1
    reported: str = ""  # the last phase reported: "", "provisioning", "running"
    function_call: bool = False
    limit_s: float | None = None  # max_run_time_hours, in seconds
    deadline: float | None = None  # when flowd stops it, whatever the instance did (epoch seconds)
    destinations: tuple[str, ...] = ()  # one per instance, in the API's order
    following: bool = False  # its instances' streams follow it
    cancelling: bool = False  # the user cancelled: the command is stopped, then the bid deleted
    stop_deadline: float | None = None  # (cancelling a running task) the bid goes then at the latest
    exits: list[tuple[int, int | None]] = field(factory=list)  # (node, code), in the order seen
    timed_out: bool = False
    outcome: TaskEvent | None = None  # decided; reported once the bid is gone
    ending: bool = False  # an end is being carried out
    log_base: tuple[int, ...] = ()  # bytes of earlier attempts in each local log

    @property
    def state(self) -> MithrilBid:
        first = self.destinations[0] if self.destinations else None
        return MithrilBid(self.bid_fid, self.name, destination=first, log_base=self.log_base)


class MithrilCloud:
    """The mithril provider (the SDK's flow.providers.mithril.MithrilProvider is its settings)."""

    kind = "mithril"

    def __init__(
        self,
        settings: MithrilSettings,
        tasks_root: Path,
        state_root: Path,
        reporter: Reporter,
        blobs: BlobStore,
        keys_root: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 30.0,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self._tasks_root = tasks_root
        self._report = reporter
        self._blobs = blobs
        self._lock = threading.RLock()
        self._api_problem: DomainError | None = None  # a rejected key, an unreachable API
        self._settings_problem: DomainError | None = None  # a project the key cannot see, an SSH key
        self.api = MithrilAPI(settings.api_url, settings.api_key, timeout=request_timeout, observer=self._observed)
        self._account = MithrilAccount(settings, self.api, keys_root or state_root / "keys", clock)
        self._shell = InstanceShell(settings, state_root, self._account.key_file, self)
        self._poller: RemotePoller[_Bid] = RemotePoller(
            self.name, settings.poll_interval, self.poll, (MithrilError,), clock
        )
        self._volumes = MithrilVolumes(settings, self.api, self._account, self._holders)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix=f"mithril-{self.name}")
        self.capabilities = Capabilities(
            offers=self, exec=self, results=self, volumes=self._volumes, node_logs=True, health=self
        )
        self._pool.submit(self._check)

    @property
    def state_type(self) -> StateType:
        return MITHRIL_STATES

    @property
    def polls(self) -> int:
        return self._poller.polls

    @property
    def ssh_commands(self) -> int:
        """SSH channels opened so far (the benchmark reads it)."""
        return self._shell.commands

    # --- health ------------------------------------------------------------------------------

    def problem(self) -> DomainError | None:
        with self._lock:
            return self._settings_problem or self._api_problem

    def _observed(self, error: MithrilError | None) -> None:
        """How an API call ended: a rejected key or an unreachable API makes the provider
        unusable until a call succeeds again."""
        with self._lock:
            if error is None:
                self._api_problem = None
            elif error.error.reason in (ErrorReason.AUTHENTICATION_FAILED, ErrorReason.NETWORK_ERROR):
                self._api_problem = error.error

    def _check(self) -> None:
        """At start: whether the key is accepted and names the project (flow daemon status)."""
        try:
            self._account.project_fid()
        except MithrilError as exc:
            if exc.error.reason not in (ErrorReason.AUTHENTICATION_FAILED, ErrorReason.NETWORK_ERROR):
                with self._lock:
                    self._settings_problem = exc.error
            log.warning("provider %s cannot be used now: %s", self.name, exc.error.message)
            return
        with self._lock:
            self._settings_problem = None

    # --- files ---------------------------------------------------------------------------

    def _holders(self, bid_fids: set[str]) -> tuple[str, ...]:
        return tuple(b.task_id for b in self._poller.jobs() if b.bid_fid in bid_fids)

    def _local_dir(self, task_id: str) -> TaskDir:
        return TaskDir(self._tasks_root / task_id).create()

    def _outputs(self, task_id: str, nodes: int) -> list[Path]:
        """The task's local logs: one per node of a multi-node task, else output.log."""
        local = TaskDir(self._tasks_root / task_id)
        return [local.node(k).output for k in range(nodes)] if nodes > 1 else [local.output]

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        return self._outputs(record.task_id, record.config.num_instances)

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
        problems = data_mount_violations(config, self.name)
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
        if config.region is None and self.settings.region:  # the provider's region, where the task names none
            config = attrs.evolve(config, region=self.settings.region)
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
            return Failure(_no_storage_credentials(self.name))
        offer = plan.offer
        return Success(Placement(format_instance_type(offer.instance_type), offer.price_per_hour_micros))

    # --- launching -----------------------------------------------------------------------

    def _code_archive(self, digest: str | None) -> bytes | None:
        return snapshot_archive(self._blobs, digest, compresslevel=6)

    def _data_plan(self, config: TaskConfig) -> DataMountPlan | None:
        if not config.data_mounts:
            return None
        credentials = storage_credentials(os.environ)
        if credentials is None:
            raise LaunchError("no storage credentials", _no_storage_credentials(self.name))
        return DataMountPlan(
            mounts=data_mounts_of(config),
            credentials=json.dumps(credentials).encode(),
            syncer=SYNCER_SOURCE.read_bytes(),
        )

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
                data=self._data_plan(record.config),
            )
        )
        local = self._local_dir(record.task_id)
        if startup.needs_upload:  # kept in the task's (0700) directory until SSH answers
            staged = TaskDir(local.path / STAGED_DIR)
            for name, data, _mode in startup.uploads:
                staged.write(name, data)
        # An earlier attempt's log stays: this one's output follows it.
        base = tuple(_size(p) for p in self._outputs(record.task_id, record.config.num_instances))
        fids = [a.volume_id for a in attached]
        keys = self._account.ssh_keys(project, record.config.ssh_keys)
        body = bid_request(plan, project, keys, fids, startup.startup_script)
        try:
            bid = self.api.create_bid(body)
        except MithrilError as exc:
            if exc.status is not None and is_price_too_low(exc.status, exc.body, exc.raw):
                raise MithrilError(price_too_low(plan, catalog, exc.error.message)) from None
            raise
        return MithrilBid(
            bid["fid"],
            plan.name,
            region=plan.region,
            uploads_pending=startup.needs_upload,
            log_base=base if any(base) else (),
        )

    def _follow(self, record: TaskRecord, state: MithrilBid) -> None:
        hours = record.config.max_run_time_hours
        running = record.state is TaskState.RUNNING
        bid = _Bid(
            task_id=record.task_id,
            bid_fid=state.bid_fid,
            name=state.bid_name,
            uploads_pending=state.uploads_pending,
            nodes=record.config.num_instances,
            reported="running" if running else "",
            limit_s=float(hours) * 3600.0 if hours else None,
            function_call=record.function_call is not None,
            destinations=(state.destination,) if state.destination else (),
            log_base=state.log_base,
        )
        started = deadline_of(record)
        if started is not None:
            bid.deadline = started + TIME_LIMIT_GRACE
        for path in self._outputs(record.task_id, bid.nodes):
            TaskDir(path.parent).touch(path.name)
        self._poller.follow(record.task_id, bid)

    def watch(self, record: TaskRecord, state: MithrilBid) -> None:
        self._follow(record, state)

    def cancel(self, record: TaskRecord, state: MithrilBid) -> None:
        """A running command is asked to stop (SIGTERM from its own script on each instance), so
        its last lines arrive; its bid goes once it has exited, or after STOP_GRACE. A task not
        running yet has its bid deleted now. Either way the end is reported once the platform has
        terminated the instances, as any end is."""
        followed = self._poller.get(record.task_id)
        if followed is not None:
            with self._lock:
                followed.cancelling = True
                stopping = followed.following
                if stopping:
                    followed.stop_deadline = time.time() + STOP_GRACE
            if stopping:
                self._shell.stop(record.task_id, followed.destinations)
                self._poller.wake()
                return
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
        if state is None:  # flowd stopped while posting (or relaunching): the bid may exist under its name
            name = bid_name(record.name, record.task_id)
            try:
                found = self.api.find_bid(self._account.project_fid(), name)
            except MithrilError as exc:
                return Refused(exc.error)
            if found is None:
                return self.launch(record)
            base = tuple(_size(p) for p in self._outputs(record.task_id, record.config.num_instances))
            state = MithrilBid(str(found["fid"]), name, log_base=base if any(base) else ())
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
        """One round: two batched listings, then each task's next step (an upload, an end)."""
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
        except (LinkError, MithrilError) as exc:
            log.info("provider %s: task %s: %s (retrying)", self.name, bid.task_id, exc)
        except Exception:
            log.exception("provider %s: task %s: cannot follow it this round", self.name, bid.task_id)

    def _advance(self, bid: _Bid, seen: dict[str, Any], instances: list[dict[str, Any]]) -> None:
        if bid.outcome is not None:  # decided before (the delete failed): again
            self._end(bid, bid.outcome)
            return
        observed = observe(seen, instances)
        phase = observed.phase
        if bid.cancelling and not bid.following:
            if phase in (Phase.TERMINATED, Phase.FAILED, Phase.PREEMPTED):
                self._end(bid, Lost(reason="cancelled"))
            else:
                self._delete_bid(bid.bid_fid)  # the cancel's delete failed before: again
            return
        if bid.cancelling and bid.stop_deadline is not None and time.time() > bid.stop_deadline:
            self._end(bid, Lost(reason=f"the command did not stop within {STOP_GRACE:g} s of SIGTERM"))
            return
        if phase is Phase.PROVISIONING and bid.reported == "":
            bid.reported = "provisioning"
            self._report(bid.task_id, Provisioning())
        elif phase is Phase.RUNNING:
            self._running(bid, observed.destinations)
        elif phase is Phase.PREEMPTING:  # notice: it runs (and may checkpoint) until the capacity goes
            if observed.destinations:
                bid.destinations = observed.destinations
        elif phase is Phase.PREEMPTED:
            self._end(bid, Preempted(reason=observed.detail))
        elif phase in (Phase.FAILED, Phase.TERMINATED):
            self._end(bid, Lost(reason=observed.detail))
        elif phase is Phase.UNKNOWN:
            log.info("provider %s: task %s: %s", self.name, bid.task_id, observed.detail)

    def _running(self, bid: _Bid, destinations: tuple[str, ...]) -> None:
        bid.destinations = destinations
        if bid.deadline is not None and time.time() > bid.deadline:
            self._end(bid, TimedOut())  # the instance did not stop it in time: flowd does
            return
        if bid.uploads_pending:
            self._shell.upload(bid.task_id, self._local_dir(bid.task_id), destinations)
            bid.uploads_pending = False
        if bid.reported != "running":
            bid.reported = "running"
            if bid.limit_s is not None:
                bid.deadline = time.time() + bid.limit_s + TIME_LIMIT_GRACE
            self._report(bid.task_id, Started(), bid.state)
        if not bid.following:
            bid.following = True
            self._shell.follow(bid.task_id, destinations, bid.nodes)

    # --- what the streams push (on their threads) ---------------------------------------------

    def offsets(self, task_id: str) -> Sequence[int]:
        bid = self._poller.get(task_id)
        if bid is None:
            return []
        base = bid.log_base or (0,) * bid.nodes
        return [max(0, _size(p) - b) for p, b in zip(self._outputs(task_id, bid.nodes), base, strict=False)]

    def output(self, task_id: str, node: int, offset: int, data: bytes) -> None:
        bid = self._poller.get(task_id)
        if bid is None or not 0 <= node < bid.nodes:
            return
        path = self._outputs(task_id, bid.nodes)[node]
        base = bid.log_base[node] if node < len(bid.log_base) else 0
        TaskDir(path.parent).append_at(path.name, base + offset, data)

    def exited(self, task_id: str, node: int, code: int, timed_out: bool) -> None:
        bid = self._poller.get(task_id)
        if bid is None:
            return
        with self._lock:
            if bid.outcome is not None or any(n == node for n, _ in bid.exits):
                return
            bid.exits.append((node, code))
            bid.timed_out = bid.timed_out or timed_out
            outcome = group_outcome(bid.nodes, bid.exits)
            if not (outcome.finished or outcome.stop_others):
                return
            failed = next(((n, c) for n, c in bid.exits if c != 0), None)
            final = failed[1] if failed is not None and failed[1] is not None else 0
            bid.outcome = TimedOut(exit_code=final) if bid.timed_out else Exited(exit_code=final)
            if failed is not None and bid.nodes > 1:
                log.info("task %s: node %s ended with status %s; stopping the others", task_id, failed[0], final)
        self._pool.submit(self._end_logged, bid)

    def start_failed(self, task_id: str, node: int, reason: str) -> None:
        bid = self._poller.get(task_id)
        if bid is None:
            return
        with self._lock:
            if bid.outcome is not None:
                return
            where = f"node {node}: " if bid.nodes > 1 else ""
            bid.outcome = LaunchFailed(reason=where + (reason.removeprefix("flow: ") or "the node could not start"))
        self._pool.submit(self._end_logged, bid)

    def _end_logged(self, bid: _Bid) -> None:
        try:
            if bid.outcome is not None:
                self._end(bid, bid.outcome)
        except (LinkError, MithrilError) as exc:  # the poller tries again
            log.info("provider %s: task %s: cannot end it yet: %s", self.name, bid.task_id, exc)
        except Exception:
            log.exception("provider %s: task %s: cannot end it yet", self.name, bid.task_id)

    # --- the end -------------------------------------------------------------------------------

    def _end(self, bid: _Bid, event: TaskEvent) -> None:
        """Gets the last output the instances hold, deletes the bid (so nothing keeps running or
        billing), and only then reports how the task ended. A delete that fails is tried again
        at the next poll: the end waits for it."""
        with self._lock:
            if bid.ending:
                return
            bid.ending = True
            bid.outcome = event
        try:
            if bid.following and (bid.nodes > 1 or not isinstance(event, Exited | TimedOut)):
                self._shell.drain(bid.task_id, bid.destinations, DRAIN_TIMEOUT)
            if bid.function_call and isinstance(event, Exited | TimedOut):
                self._shell.fetch_result(bid.task_id, self._local_dir(bid.task_id), bid.destinations)
            self._delete_bid(bid.bid_fid)
        except BaseException:
            with self._lock:
                bid.ending = False
            raise
        self._forget(bid)
        if bid.reported != "running" and isinstance(event, Exited | TimedOut):
            self._report(bid.task_id, Started(), bid.state)
        self._report(bid.task_id, event)

    def _forget(self, bid: _Bid) -> None:
        self._poller.forget(bid.task_id)
        self._shell.unfollow(bid.task_id, bid.destinations)
        self._shell.release({d for b in self._poller.jobs() for d in b.destinations})

    # --- exec --------------------------------------------------------------------------------

    def exec(self, record: TaskRecord, state: MithrilBid, request: ExecRequest) -> ExecSession:
        """A command in the task's code directory on its (first) instance, through ssh."""
        followed = self._poller.get(record.task_id)
        destinations = followed.destinations if followed is not None else ()
        destination = (destinations[0] if destinations else None) or state.destination or ""
        try:
            command = self._shell.ssh_command(record.task_id, destination, request.argv, request.tty)
        except LinkError as exc:
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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _no_storage_credentials(provider: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.VALIDATION_FAILED,
        message=(
            f"s3:// data mounts on provider {provider} need storage credentials, and flowd finds none "
            "(its environment, AWS_PROFILE, ~/.aws)"
        ),
        suggestions=(
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible "
            "server) where flowd starts, then flow daemon stop",
            "or configure a profile in ~/.aws/credentials",
        ),
        metadata=(("provider", provider),),
    )
