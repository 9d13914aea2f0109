"""The provider contract: what flowd asks of every engine that runs tasks (local, slurm, mithril,
and the next ones). A provider is done when it implements `Provider` and passes the conformance
suite (tests/conformance): one list of black-box scenarios run against every provider set-up.

Providers speak domain types only (no protobuf, no gRPC, no flow.wire). They never change task
state themselves: they answer with values (`launch` -> `Running` | `Queued` | `Refused`) and
report what they observe later (`Started`, `Exited`, `Lost`, ...) through the `Reporter` the
daemon gives them at construction; the daemon applies both through the pure state machine
(flow.domain.task.lifecycle), so a task's state has one writer whatever happens.

Runtime state
-------------
What a provider needs to find a task again (a pid, a Slurm job id, a Mithril bid) is its own
frozen attrs class (or a union of them), declared in `Provider.state_type`. flowd stores it with
the task, as JSON through one cattrs converter (flowd.providers.runtime_state), and hands it back
to `watch`, `cancel`, `recover` and `exec`. States are values: a change (a task that waited for
GPUs got them) is a new state reported with the event (`reporter(task_id, Started(), state)`).
`StateType.legacy` reads the untagged dicts older flowds stored, so existing homes keep working.

Threads and blocking
--------------------
- `place` and `launch` run on the RPC thread of the CreateTask that asked, while the client
  waits: they may block on the provider (an sbatch, a POST), for seconds, never for minutes. They
  run concurrently for different tasks: guard shared state.
- `watch`, `cancel`, `recover`, `recovered`, `log_files` and the capabilities' methods may be
  called from any thread. `watch` and `log_files` must not block: following a task is the work
  of the provider's own thread (a monitor, a poller). `cancel` runs on the CancelTask RPC's
  thread and may block on the provider for seconds (an scancel, a DELETE), not longer; the end
  it causes is reported later, as any end. `recover` runs at start-up, before any RPC is served,
  once per unfinished task in submission order, and may block.
- The `Reporter` may be called from any thread, at any time after `launch` returned or after the
  provider reported Started itself; it never blocks on I/O other than flowd's own database.
  A report about a task that is terminal (or not live) is dropped: reporting twice is harmless.
- A provider may touch only its own files: the task directories flowd gives it
  (`$FLOW_HOME/tasks/<task_id>`), its own state directory, and the cluster or cloud it drives.

Accepted means accepted
-----------------------
CreateTask returns once `launch` answered. `Running` and `Queued` mean the provider has accepted
the task (a process started or waiting for its GPUs, a Slurm job id, a Mithril bid): from then
on the task exists and ends with a terminal state reported later. `Refused` carries the seed's
error (AuthenticationError, QuotaExceededError, ValidationAPIError, ResourceNotAvailableError,
ValidationError ... through the DomainError's reason), with the provider's own message and a
suggestion; flowd then deletes the task's record, as sbatch gives no job id: no task exists, and
an idempotent retry (the same request_id) tries again. What stays asynchronous after acceptance
is the provider's to report: copying s3:// data mounts in (local), waiting in a queue (local GPUs,
Slurm), provisioning instances and uploading the task's files over SSH (Mithril); a failure
there ends the task FAILED with the reason ("could not start: ...").

Terminal means gone
-------------------
A provider reports a task's end (`Exited`, `TimedOut`, `Lost`, `Preempted`) only when every
process of every node of it is gone and its resources (GPUs, an instance, a bid) are free for
the next task; cancel likewise (CANCELLED is reported through the same end).

Optional capabilities
---------------------
Declared in `Provider.capabilities` (a frozen value), never probed: `offers` (find_instances),
`exec` (flow ssh), `results` (.remote() results), `volumes` (volumes kept on the provider's own
platform rather than by flowd), `node_logs` (one output file per node), `health` (why the
provider cannot be used now: settings that are wrong or rejected, a platform out of reach; shown
by `flow daemon status`), `dependencies` (the provider schedules dependencies among its own
tasks, start_after and priority itself: Slurm's --dependency, --begin, --nice;
flowd.dependency_holds holds the rest) and `dry_run` (a dry run asks the platform too). A
capability left out
is refused by flowd with a clear error, so a new provider can start with the required protocol
alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from attrs import frozen
from returns.result import Result

from flow.domain.errors import DomainError, ErrorReason
from flow.domain.instances.matching import Offer
from flow.domain.task.config import TaskConfig
from flow.domain.task.dependencies import Dependency
from flow.domain.task.lifecycle import TaskEvent, TaskRecord
from flow.domain.volumes.rules import Volume
from flowd.exec_session import ExecChannel

S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


class Reporter(Protocol):
    """How providers tell flowd what they observed. `state` replaces the runtime state stored
    for the task (e.g. the pid of a task that waited for GPUs and has just started)."""

    def __call__(self, task_id: str, event: TaskEvent, state: object | None = None) -> None: ...


@frozen
class Placement:
    """Where a task will run: the canonical instance type and its price."""

    instance_type: str
    cost_per_hour_micros: int = 0


# --- what launch and recover answer ------------------------------------------------------------


@frozen
class Running(Generic[S]):
    """The task's program is running now (the task becomes RUNNING)."""

    state: S


@frozen
class Queued(Generic[S]):
    """Accepted, and waiting (for GPUs, in Slurm's queue, for a bid's instances): the task stays
    PENDING until the provider reports Started (with the state it runs under)."""

    state: S


@frozen
class Refused:
    """Not accepted: nothing was started and nothing is left behind. `error` is what run()
    raises (its reason selects the seed's exception)."""

    error: DomainError


@frozen
class Ended:
    """(recover only) The task ended while flowd was down; the provider has reported how."""


@frozen
class Forgotten:
    """(launch_after only) The provider no longer knows a task the launch was to wait for (Slurm
    forgets an ended job after MinJobAge): nothing was submitted, and flowd holds the task until
    it has learnt how that task ended."""


Launched = Running[S] | Queued[S] | Refused
Recovered = Running[S] | Queued[S] | Refused | Ended


class LaunchError(Exception):
    """Inside a provider: the task cannot be started; the message says why in words a user can
    act on. Providers turn it into `Refused` (at launch, with `error`, else a PROVIDER_ERROR) or
    `LaunchFailed` (later)."""

    def __init__(self, message: str, error: DomainError | None = None) -> None:
        super().__init__(message)
        self.error = error

    def refused(self, provider: str) -> Refused:
        if self.error is not None:
            return Refused(self.error)
        return Refused(
            DomainError(
                reason=ErrorReason.PROVIDER_ERROR,
                message=f"Provider {provider} could not start the task: {self}",
                suggestions=("fix what the message names, then run the task again",),
                metadata=(("provider", provider),),
            )
        )


# --- requests ------------------------------------------------------------------------------------


@frozen
class ExecRequest:
    """A command to run inside a running task (flow ssh): `argv` empty means a login shell."""

    argv: tuple[str, ...] = ()
    tty: bool = False
    rows: int = 24
    columns: int = 80
    term: str = ""


@frozen
class StateType:
    """How a provider's runtime state is stored: its classes (each stored with its class name as
    a tag), and how an untagged dict written by an older flowd reads (None: no state)."""

    classes: tuple[type, ...]
    legacy: Callable[[Mapping[str, Any]], object | None]


# --- capabilities --------------------------------------------------------------------------------


class Offers(Protocol):
    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        """What the provider can run now, asked now (find_instances matches against these). A
        provider that cannot be asked (bad credentials, unreachable) answers the error
        (AUTHENTICATION_FAILED, NETWORK_ERROR, PROVIDER_ERROR), never an empty list: an empty
        list means "nothing right now"."""
        ...


class Exec(Protocol[S_contra]):
    def exec(self, record: TaskRecord, state: S_contra, request: ExecRequest) -> ExecChannel:
        """Starts the command in the running task's environment (its first node); raises
        LaunchError when it cannot. Called on the ExecTask RPC's thread; may block briefly."""
        ...


class Results(Protocol):
    def read_result(self, task_id: str) -> bytes | None:
        """The result document a finished function-call task wrote, if it wrote one."""
        ...


class DryRun(Protocol):
    def dry_run(self, record: TaskRecord) -> Result[None, DomainError]:
        """(validate_only) Whether the provider's platform would accept the placed task, asked
        without starting anything (Slurm: sbatch --test-only): the refusal `launch` would give."""
        ...


class OwnVolumes(Protocol):
    """Volumes kept on the provider's platform (Mithril's /v2/volumes). Tasks of such a provider
    name them in TaskConfig.volumes and the provider resolves them itself; flowd's own volumes
    (VolumeManager) are not used. An id flowd's own volumes do not know is looked up in each such
    provider (`get_volume`), never told apart by its spelling."""

    def create_volume(
        self, name: object, size_gb: object, interface: object, iops: object, region: str | None = None
    ) -> Result[Volume, DomainError]: ...

    def list_volumes(self) -> Result[list[tuple[Volume, tuple[str, ...]]], DomainError]: ...

    def get_volume(self, volume_id: str) -> Result[tuple[Volume, tuple[str, ...]], DomainError]: ...

    def delete_volume(self, volume_id: str) -> Result[Volume, DomainError]: ...


class Health(Protocol):
    def problem(self) -> DomainError | None:
        """Why the provider cannot be used now (its settings are invalid or were rejected, its
        platform cannot be reached), with a fix; None when nothing is known to be wrong. Must
        not block: it answers what the provider last saw."""
        ...


class NativeDependencies(Protocol[S_contra]):
    """A provider that schedules, among its own tasks, what TaskConfig.depends_on, start_after and
    priority ask (Slurm: --dependency, --begin, --nice). Its `launch` honours start_after and
    priority; flowd holds only conditions the provider cannot see (tasks of other providers,
    tasks it has not accepted yet, singleton) and hands the others to `launch_after`."""

    def native_id(self, state: S_contra) -> str | None:
        """The provider's own id of an accepted task (a Slurm job id), which others can wait for."""
        ...

    def launch_after(self, record: TaskRecord, after: Sequence[tuple[Dependency, str]]) -> Launched[Any] | Forgotten:
        """`launch`, the provider itself holding the task until these conditions on its own
        tasks (given by native id) hold. Forgotten when it no longer knows one of them."""
        ...


@frozen(eq=False)
class Capabilities:
    """What a provider can do beyond the required protocol: each is the object that does it
    (usually the provider itself), or None when the provider cannot."""

    offers: Offers | None = None
    exec: Exec[Any] | None = None
    results: Results | None = None
    volumes: OwnVolumes | None = None
    node_logs: bool = False  # a multi-node task has one output file per node
    health: Health | None = None
    dependencies: NativeDependencies[Any] | None = None
    dry_run: DryRun | None = None


# --- the required protocol -------------------------------------------------------------------------


class Provider(Protocol[S]):
    """One engine that runs tasks. See the module docstring for threads, blocking and states."""

    @property
    def name(self) -> str:
        """The name tasks and clients use (config.yaml's key): "local", "slurm-ssh", ..."""
        ...

    @property
    def kind(self) -> str:
        """What it is ("local", "slurm", "mithril"): shown to users, never used for routing."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def state_type(self) -> StateType: ...

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        """Decides, before anything is created, whether and where the task can run (pure
        placement in flow.domain over what the provider knows). Refusals are the same errors
        `launch` would give; `region` is honoured or refused the same way as by `offers`."""
        ...

    def launch(self, record: TaskRecord) -> Launched[S]:
        """Starts (or submits) a placed task: Running, Queued, or Refused with the seed's error.
        Must not raise for a refusal; an exception is reported to the user as PROVIDER_ERROR."""
        ...

    def watch(self, record: TaskRecord, state: S) -> None:
        """Begins observing an accepted task; its start and end are reported later."""
        ...

    def cancel(self, record: TaskRecord, state: S) -> None:
        """Asks the task to stop (SIGTERM, then SIGKILL after a grace; scancel; delete the bid);
        its end is reported as usual once everything is gone."""
        ...

    def recover(self, record: TaskRecord, state: S | None) -> Recovered[S]:
        """After a daemon restart, for an unfinished task: `Running`/`Queued` with the state to
        watch (found running, still waiting, or launched now because it never was), `Ended`
        once the provider has reported how it ended meanwhile, or `Refused` for a task that
        was never accepted and cannot be now (flowd forgets it). `state` is None when flowd
        stopped before it stored one (during launch)."""
        ...

    def recovered(self) -> None:
        """Called once every unfinished task has been through `recover` after a restart."""
        ...

    def log_files(self, record: TaskRecord) -> Sequence[Path]:
        """The task's output on this machine, append-only files flowd streams with byte cursors:
        one per node with `capabilities.node_logs`, else one. Files may not exist yet."""
        ...

    def close(self) -> None:
        """The daemon stops: stop threads, close connections; never stop running tasks."""
        ...
