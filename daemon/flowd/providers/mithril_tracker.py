"""How a Mithril provider follows its bids once posted (flowd.providers.mithril describes the
whole): the API's batched listings on the poller, the instances' streams pushed over SSH
(mithril_instances, which reports to the tracker), and each task's end: the last lines drained,
the bid deleted, and only then the outcome reported.

A class of its own: everything here works on the followed bids (`_Bid`) under one lock, apart
from placing and posting a bid (mithril_launch) and the provider's own surface (MithrilCloud).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from attrs import define, field

from flow.domain.daemon_config import MithrilSettings
from flow.domain.mithril.status import Phase, observe
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
from flowd.providers.base import Reporter
from flowd.providers.mithril_account import MithrilAccount
from flowd.providers.mithril_api import MithrilAPI, MithrilError
from flowd.providers.mithril_instances import InstanceShell
from flowd.providers.mithril_link import LinkError
from flowd.providers.mithril_state import MithrilBid, file_size, local_logs
from flowd.providers.remote_poller import RemotePoller
from flowd.providers.task_dir import TaskDir

log = logging.getLogger(__name__)

MAX_INSTANCES_PER_QUERY: Final = 50
# The instance stops a task at max_run_time_hours (`timeout`); flowd deletes the bid this much later
# if the instance did not (a wedged instance must not bill forever).
TIME_LIMIT_GRACE: Final = 120.0
STOP_GRACE: Final = 15.0  # a cancelled command's time to end on SIGTERM before its bid goes
DRAIN_TIMEOUT: Final = 5.0  # waiting for the last lines of instances that may be gone


@define
class _Bid:
    """A bid the poller follows (its fields change under the tracker's lock)."""

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


class BidTracker:
    """The followed bids: polled through the API, pushed to by the instances' streams (it is the
    shell's StreamSink), ended here."""

    def __init__(
        self,
        name: str,
        settings: MithrilSettings,
        api: MithrilAPI,
        account: MithrilAccount,
        tasks_root: Path,
        state_root: Path,
        reporter: Reporter,
        pool: ThreadPoolExecutor,
        clock: Callable[[], float],
    ) -> None:
        self._name = name
        self._api = api
        self._account = account
        self._tasks_root = tasks_root
        self._report = reporter
        self._pool = pool  # the provider's: polls' steps and ends run there
        self._lock = threading.RLock()
        # Built here: the streams report to the tracker, which owns the bids they belong to.
        self.shell = InstanceShell(settings, state_root, account.key_file, self)
        self._poller: RemotePoller[_Bid] = RemotePoller(name, settings.poll_interval, self.poll, (MithrilError,), clock)

    @property
    def polls(self) -> int:
        return self._poller.polls

    def holders(self, bid_fids: set[str]) -> tuple[str, ...]:
        """The followed tasks among the given bids (a volume's holders)."""
        return tuple(b.task_id for b in self._poller.jobs() if b.bid_fid in bid_fids)

    def destinations(self, task_id: str) -> tuple[str, ...]:
        followed = self._poller.get(task_id)
        return followed.destinations if followed is not None else ()

    def _local_dir(self, task_id: str) -> TaskDir:
        return TaskDir(self._tasks_root / task_id).create()

    def _outputs(self, task_id: str, nodes: int) -> list[Path]:
        return local_logs(self._tasks_root, task_id, nodes)

    def follow(self, record: TaskRecord, state: MithrilBid) -> None:
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
                self.shell.stop(record.task_id, followed.destinations)
                self._poller.wake()
                return
        try:
            self._delete_bid(state.bid_fid)
        except MithrilError as exc:  # still followed: tried again at the next poll
            log.warning(
                "provider %s: cannot cancel bid %s of task %s: %s", self._name, state.bid_fid, record.task_id, exc
            )
        self._poller.wake()

    def _delete_bid(self, fid: str) -> None:
        try:
            self._api.call("DELETE", f"/v2/spot/bids/{fid}", "cancel the bid")
        except MithrilError as exc:
            if exc.status != 404:
                raise

    # --- the poller ------------------------------------------------------------------------

    def _listed_bids(self, wanted: set[str]) -> dict[str, dict[str, Any]]:
        """The project's bids, newest first, until every wanted one has been seen."""
        found: dict[str, dict[str, Any]] = {}
        params = {"project": self._account.project_fid(), "sort_by": "created_at", "sort_dir": "desc"}
        for bid in self._api.pages("/v2/spot/bids", "list your bids", params):
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
            for inst in self._api.pages("/v2/instances", "list the instances of your bids", params):
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
                listed[fid] = self._api.call("GET", f"/v2/spot/bids/{fid}", "read a bid")
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
            log.info("provider %s: task %s: %s (retrying)", self._name, bid.task_id, exc)
        except Exception:
            log.exception("provider %s: task %s: cannot follow it this round", self._name, bid.task_id)

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
            log.info("provider %s: task %s: %s", self._name, bid.task_id, observed.detail)

    def _running(self, bid: _Bid, destinations: tuple[str, ...]) -> None:
        bid.destinations = destinations
        if bid.deadline is not None and time.time() > bid.deadline:
            self._end(bid, TimedOut())  # the instance did not stop it in time: flowd does
            return
        if bid.uploads_pending:
            self.shell.upload(bid.task_id, self._local_dir(bid.task_id), destinations)
            bid.uploads_pending = False
        if bid.reported != "running":
            bid.reported = "running"
            if bid.limit_s is not None:
                bid.deadline = time.time() + bid.limit_s + TIME_LIMIT_GRACE
            self._report(bid.task_id, Started(), bid.state)
        if not bid.following:
            bid.following = True
            self.shell.follow(bid.task_id, destinations, bid.nodes)

    # --- what the streams push (on their threads) ---------------------------------------------

    def offsets(self, task_id: str) -> Sequence[int]:
        bid = self._poller.get(task_id)
        if bid is None:
            return []
        base = bid.log_base or (0,) * bid.nodes
        return [max(0, file_size(p) - b) for p, b in zip(self._outputs(task_id, bid.nodes), base, strict=False)]

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
            log.info("provider %s: task %s: cannot end it yet: %s", self._name, bid.task_id, exc)
        except Exception:
            log.exception("provider %s: task %s: cannot end it yet", self._name, bid.task_id)

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
                self.shell.drain(bid.task_id, bid.destinations, DRAIN_TIMEOUT)
            if bid.function_call and isinstance(event, Exited | TimedOut):
                self.shell.fetch_result(bid.task_id, self._local_dir(bid.task_id), bid.destinations)
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
        self.shell.unfollow(bid.task_id, bid.destinations)
        self.shell.release({d for b in self._poller.jobs() for d in b.destinations})

    def close(self) -> None:
        """Stops polling (the provider then stops the pool and the shell, in that order)."""
        self._poller.close()
