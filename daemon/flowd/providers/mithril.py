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

The pieces: MithrilCloud (here) is the Provider surface and its health, and delegates to
mithril_launch (placing and posting a bid), mithril_tracker (following posted bids to their end),
mithril_volumes, mithril_account (project, catalog, SSH keys) and mithril_instances (SSH).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from returns.result import Failure, Result, Success

from flow.domain.daemon_config import MithrilSettings
from flow.domain.errors import DomainError, ErrorReason
from flow.domain.instances.matching import Offer
from flow.domain.mithril.bid import bid_name
from flow.domain.task import task_files
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import TaskRecord, TaskState
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
from flowd.providers.mithril_launch import BidLauncher
from flowd.providers.mithril_link import LinkError
from flowd.providers.mithril_state import MITHRIL_STATES, MithrilBid, earlier_output, local_logs
from flowd.providers.mithril_tracker import BidTracker
from flowd.providers.mithril_volumes import MithrilVolumes
from flowd.providers.task_dir import TaskDir

__all__ = ["MITHRIL_STATES", "MithrilBid", "MithrilCloud"]

log = logging.getLogger(__name__)

WORKERS: Final = 8  # uploads, ends (a delete, a result fetch) of several tasks at once


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
        self._lock = threading.RLock()
        self._api_problem: DomainError | None = None  # a rejected key, an unreachable API
        self._settings_problem: DomainError | None = None  # a project the key cannot see, an SSH key
        self.api = MithrilAPI(settings.api_url, settings.api_key, timeout=request_timeout, observer=self._observed)
        self._account = MithrilAccount(settings, self.api, keys_root or state_root / "keys", clock)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix=f"mithril-{self.name}")
        self._tracker = BidTracker(
            self.name, settings, self.api, self._account, tasks_root, state_root, reporter, self._pool, clock
        )
        self._shell = self._tracker.shell
        self._volumes = MithrilVolumes(settings, self.api, self._account, self._tracker.holders)
        self._launcher = BidLauncher(settings, self.api, self._account, self._volumes, blobs, tasks_root)
        self.capabilities = Capabilities(
            offers=self, exec=self, results=self, volumes=self._volumes, node_logs=True, health=self
        )
        self._pool.submit(self._check)

    @property
    def state_type(self) -> StateType:
        return MITHRIL_STATES

    @property
    def polls(self) -> int:
        return self._tracker.polls

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

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        return local_logs(self._tasks_root, record.task_id, record.config.num_instances)

    def read_result(self, task_id: str) -> bytes | None:
        return TaskDir(self._tasks_root / task_id).read(task_files.RESULT)

    # --- offers, placement, launching (mithril_launch) -------------------------------------------

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        try:
            return Success(tuple(o.offer for o in self._account.catalog(fresh=True).offers))
        except MithrilError as exc:
            return Failure(exc.error)

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        return self._launcher.place(config)

    def launch(self, record: TaskRecord) -> Launched[MithrilBid]:
        """Posts the bid: created means accepted; a refusal comes back with Mithril's words."""
        try:
            state = self._launcher.post(record)
        except MithrilError as exc:
            return Refused(exc.error)
        except (LaunchError, OSError) as exc:
            return (exc if isinstance(exc, LaunchError) else LaunchError(str(exc))).refused(self.name)
        return Queued(state)

    # --- following (mithril_tracker) -----------------------------------------------------------

    def watch(self, record: TaskRecord, state: MithrilBid) -> None:
        self._tracker.follow(record, state)

    def cancel(self, record: TaskRecord, state: MithrilBid) -> None:
        self._tracker.cancel(record, state)

    def recover(self, record: TaskRecord, state: MithrilBid | None) -> Recovered[MithrilBid]:
        if state is None:  # flowd stopped while posting (or relaunching): the bid may exist under its name
            name = bid_name(record.name, record.task_id)
            try:
                found = self.api.find_bid(self._account.project_fid(), name)
            except MithrilError as exc:
                return Refused(exc.error)
            if found is None:
                return self.launch(record)
            base = earlier_output(self.log_files(record))
            state = MithrilBid(str(found["fid"]), name, log_base=base)
        return Running(state) if record.state is TaskState.RUNNING else Queued(state)

    def recovered(self) -> None:
        pass

    # --- exec --------------------------------------------------------------------------------

    def exec(self, record: TaskRecord, state: MithrilBid, request: ExecRequest) -> ExecSession:
        """A command in the task's code directory on its (first) instance, through ssh."""
        destinations = self._tracker.destinations(record.task_id)
        destination = (destinations[0] if destinations else None) or state.destination or ""
        try:
            command = self._shell.ssh_command(record.task_id, destination, request.argv, request.tty)
        except LinkError as exc:
            raise LaunchError(str(exc)) from None
        env = public_env(os.environ)
        if request.tty:
            env["TERM"] = request.term or "xterm-256color"
        try:
            local = TaskDir(self._tasks_root / record.task_id).create()
            return ExecSession(command, local.path, env, request.tty, request.rows, request.columns)
        except ExecError as exc:
            raise LaunchError(str(exc)) from exc

    def close(self) -> None:
        self._tracker.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._shell.close()
        self.api.close()
