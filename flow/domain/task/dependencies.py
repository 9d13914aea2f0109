"""Task dependencies and scheduling constraints, decided purely.

Conditions mean what Slurm's `--dependency` means (sbatch(1)), so a Slurm user's script and a
Flow pipeline agree:

    afterok:ID     ID COMPLETED (exit 0)          -- the default
    afterany:ID    ID ended, however it ended
    afternotok:ID  ID ended and did not complete (FAILED, CANCELLED, PREEMPTED)
    after:ID       ID started (or ended without starting)
    singleton      every earlier task with the same name (of this flowd) has ended

A dependency that can no longer be met (afterok of a task that FAILED, afternotok of one that
COMPLETED) dooms the dependent: it ends CANCELLED, with a reason naming the dependency, and so do
its own dependents, transitively. CANCELLED rather than FAILED because the dependent never ran:
like Slurm with `kill_invalid_depend`, and unlike Slurm's default of pending forever with reason
DependencyNeverSatisfied, which a launcher's user would only discover by looking.

`start_after` holds a task until an instant (seconds since the epoch, like `--begin`), and
`priority` orders a user's waiting tasks (higher first; equal priorities keep submission order).

Everything here takes the facts it needs (the states of the tasks depended on, `now`) as
arguments; the shell (flowd, or Slurm natively) gathers them and acts on the decision.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, validation_error, violation
from flow.domain.task.states import TaskState

MAX_DEPENDENCIES: Final = 1000
MIN_PRIORITY: Final = -10_000
MAX_PRIORITY: Final = 10_000
TASK_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
MAX_TASK_ID: Final = 64


class Condition(enum.StrEnum):
    AFTER_OK = "afterok"
    AFTER_ANY = "afterany"
    AFTER_NOT_OK = "afternotok"
    AFTER = "after"
    SINGLETON = "singleton"


CONDITION_MEANING: Final = {
    Condition.AFTER_OK: "to complete",
    Condition.AFTER_ANY: "to end",
    Condition.AFTER_NOT_OK: "to fail",
    Condition.AFTER: "to start",
    Condition.SINGLETON: "to end (singleton)",
}


@frozen
class Dependency:
    """One condition on one task (`task_id` is "" for singleton, which names no task)."""

    task_id: str
    condition: Condition = Condition.AFTER_OK

    def render(self) -> str:
        return "singleton" if self.condition is Condition.SINGLETON else f"{self.task_id}:{self.condition}"


SINGLETON: Final = Dependency(task_id="", condition=Condition.SINGLETON)


@frozen
class Observed:
    """What the shell knows of a task that is depended on."""

    task_id: str
    state: TaskState
    started: bool  # it ran (started_at is set), whatever its state now
    name: str = ""


# --- parsing ----------------------------------------------------------------------------------


def _is_task_id(text: str) -> bool:
    return 0 < len(text) <= MAX_TASK_ID and all(c in TASK_ID_CHARS for c in text)


def _fix(field: str) -> str:
    return f"give {field} as ID or ID:CONDITION (CONDITION one of afterok, afterany, afternotok, after), or 'singleton'"


def parse_after(text: str, field: str = "after") -> Result[Dependency, DomainError]:
    """`flow run --after` and YAML's short form: "ID", "ID:afterok" ... or "singleton"."""
    if text == Condition.SINGLETON:
        return Success(SINGLETON)
    task_id, _, cond = text.partition(":")
    condition = Condition.AFTER_OK
    if cond:
        try:
            condition = Condition(cond)
        except ValueError:
            problem = f"has an unknown condition {cond!r}"
            return Failure(validation_error([violation(field, text, problem, _fix(field))]))
        if condition is Condition.SINGLETON:
            problem = "singleton names no task"
            return Failure(validation_error([violation(field, text, problem, "give just 'singleton'")]))
    if not _is_task_id(task_id):
        return Failure(validation_error([violation(field, text, "does not name a task id", _fix(field))]))
    return Success(Dependency(task_id=task_id, condition=condition))


def parse_slurm_dependency(text: str, field: str = "--dependency") -> Result[tuple[Dependency, ...], DomainError]:
    """sbatch's `--dependency=afterok:1:2,afterany:3` (all must hold) and `singleton`. Slurm's
    '?' (any may hold) and the `+time` suffix of after have no Flow meaning: refused by name."""
    fix = "use TYPE:ID[:ID...] joined by ',' (all must hold), TYPE one of after, afterok, afterany, afternotok"
    if not text:
        return Failure(validation_error([violation(field, text, "is empty", fix)]))
    if "?" in text:
        return Failure(
            validation_error(
                [violation(field, text, "uses '?' (any of), which Flow cannot wait for", "join conditions with ','")]
            )
        )
    found: list[Dependency] = []
    for part in text.split(","):
        kind, _, ids = part.partition(":")
        if kind == Condition.SINGLETON and not ids:
            found.append(SINGLETON)
            continue
        try:
            condition = Condition(kind)
        except ValueError:
            extra = " (aftercorr and aftersuccess have no Flow meaning)" if kind.startswith("after") else ""
            return Failure(validation_error([violation(field, text, f"has an unknown type {kind!r}{extra}", fix)]))
        if condition is Condition.SINGLETON or not ids:
            return Failure(validation_error([violation(field, text, f"{part!r} names no job", fix)]))
        for job in ids.split(":"):
            if "+" in job:
                return Failure(
                    validation_error(
                        [violation(field, text, f"{job!r} has a +time delay, which Flow does not support", fix)]
                    )
                )
            if not _is_task_id(job):
                return Failure(validation_error([violation(field, text, f"{job!r} is not a job or task id", fix)]))
            found.append(Dependency(task_id=job, condition=condition))
    return Success(tuple(found))


def render_slurm_dependency(deps: Sequence[Dependency], job_id_of: Mapping[str, str]) -> str:
    """The `--dependency` value for deps whose tasks are Slurm jobs of the same cluster
    (`job_id_of` maps task ids to job ids); conditions of one type share one clause."""
    clauses: dict[Condition, list[str]] = {}
    singleton = False
    for dep in deps:
        if dep.condition is Condition.SINGLETON:
            singleton = True
            continue
        clauses.setdefault(dep.condition, []).append(job_id_of[dep.task_id])
    parts = [f"{cond.value}:{':'.join(jobs)}" for cond, jobs in clauses.items()]
    if singleton:
        parts.append("singleton")
    return ",".join(parts)


# --- validation -------------------------------------------------------------------------------


def dependency_violations(deps: object, start_after: object, priority: object) -> tuple[FieldViolation, ...]:
    """Shape checks of TaskConfig.depends_on, start_after and priority (no lookups)."""
    out: list[FieldViolation] = []
    if not isinstance(deps, tuple):
        out.append(violation("depends_on", deps, "must be a list", "give e.g. ['t-abc', 't-def:afterany']"))
    else:
        if len(deps) > MAX_DEPENDENCIES:
            out.append(
                violation("depends_on", f"{len(deps)} entries", f"has more than {MAX_DEPENDENCIES}", "depend on fewer")
            )
        seen: set[Dependency] = set()
        for i, dep in enumerate(deps):
            path = f"depends_on[{i}]"
            if not isinstance(dep, Dependency):
                out.append(violation(path, dep, "is not a dependency", _fix(path)))
            elif not isinstance(dep.condition, Condition):
                out.append(violation(f"{path}.condition", dep.condition, "is not a condition", _fix(path)))
            elif dep.condition is Condition.SINGLETON:
                if dep.task_id:
                    out.append(violation(path, dep.render(), "singleton names no task", "give just 'singleton'"))
            elif not isinstance(dep.task_id, str) or not _is_task_id(dep.task_id):
                out.append(violation(f"{path}.task_id", dep.task_id, "is not a task id", _fix(path)))
            elif dep in seen:
                out.append(violation(path, dep.render(), "is given twice", "list each dependency once"))
            if isinstance(dep, Dependency):
                seen.add(dep)
    if start_after is not None and (
        isinstance(start_after, bool) or not isinstance(start_after, (int, float)) or not 0 <= start_after < 2**40
    ):
        out.append(
            violation("start_after", start_after, "is not a time", "give seconds since the epoch, or an ISO-8601 time")
        )
    if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        out.append(
            violation(
                "priority",
                priority,
                f"must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}",
                "give e.g. 10 to run before tasks of priority 0",
            )
        )
    return tuple(out)


def unknown_dependencies(
    deps: Sequence[Dependency], known: Callable[[str], bool], field: str = "depends_on"
) -> tuple[FieldViolation, ...]:
    """Dependencies on task ids that `known` does not recognise."""
    return tuple(
        violation(f"{field}[{i}]", dep.task_id, "names no task", "give the id of a task of this flowd (flow status)")
        for i, dep in enumerate(deps)
        if dep.condition is not Condition.SINGLETON and not known(dep.task_id)
    )


@frozen
class Node:
    """A task in a dependency graph: its explicit dependencies and its name (for singleton),
    in submission order (`seq`)."""

    task_id: str
    name: str
    seq: int
    depends_on: tuple[Dependency, ...] = ()
    live: bool = True  # not terminal: singleton waits only for live tasks


def edges_of(nodes: Sequence[Node]) -> dict[str, tuple[str, ...]]:
    """Who waits for whom: explicit dependencies, plus for a singleton every earlier live task of
    the same name."""
    by_name: dict[str, list[Node]] = {}
    for node in nodes:
        by_name.setdefault(node.name, []).append(node)
    ids = {n.task_id for n in nodes}
    edges: dict[str, tuple[str, ...]] = {}
    for node in nodes:
        targets = [d.task_id for d in node.depends_on if d.condition is not Condition.SINGLETON and d.task_id in ids]
        if any(d.condition is Condition.SINGLETON for d in node.depends_on):
            targets += [o.task_id for o in by_name[node.name] if o.seq < node.seq and o.live]
        edges[node.task_id] = tuple(dict.fromkeys(targets))
    return edges


def find_cycle(nodes: Sequence[Node]) -> tuple[str, ...] | None:
    """A cycle of waits among `nodes` (task ids, the first repeated at the end), or None.
    Iterative, so a 100,000-task chain is no problem for the stack."""
    edges = edges_of(nodes)
    done: set[str] = set()
    for root in edges:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        pending: list[Iterator[str]] = [iter(edges[root])]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                pending.pop()
            elif nxt in on_path:
                return (*path[path.index(nxt) :], nxt)
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                pending.append(iter(edges[nxt]))
    return None


def cycle_error(cycle: Sequence[str]) -> DomainError:
    shown = " -> ".join(cycle)
    return validation_error(
        [violation("depends_on", shown, "forms a cycle: none of these tasks could ever start", "remove one dependency")]
    )


# --- deciding ---------------------------------------------------------------------------------


@frozen
class Ready:
    """Every condition holds: the task may start."""


@frozen
class Waiting:
    """Not yet; `reason` says for what ("waiting for t-abc to complete (afterok)")."""

    reason: str


@frozen
class Doomed:
    """A condition can never hold any more: the task ends CANCELLED with this reason."""

    reason: str


Readiness = Ready | Waiting | Doomed


def _one(dep: Dependency, seen: Observed) -> Readiness:
    state = seen.state
    ended = state.is_terminal
    what = f"{dep.task_id} {CONDITION_MEANING[dep.condition]} ({dep.condition})"
    match dep.condition:
        case Condition.AFTER_OK:
            if state is TaskState.COMPLETED:
                return Ready()
            if ended:
                return Doomed(f"dependency {dep.task_id} ended {state} ({dep.condition})")
        case Condition.AFTER_ANY:
            if ended:
                return Ready()
        case Condition.AFTER_NOT_OK:
            if state is TaskState.COMPLETED:
                return Doomed(f"dependency {dep.task_id} COMPLETED ({dep.condition})")
            if ended:
                return Ready()
        case Condition.AFTER:
            if seen.started or ended:
                return Ready()
    return Waiting(f"waiting for {what}")


def readiness(
    deps: Sequence[Dependency],
    observed: Mapping[str, Observed],
    earlier_same_name_live: Sequence[str],
    start_after: float | None,
    now: float,
) -> Readiness:
    """Whether a PENDING task held for its conditions may start now.

    `observed` has every task of `deps` (a dependency the shell can no longer find, e.g. one
    purged from its store, counts as ended without completing); `earlier_same_name_live` lists
    the live tasks of the same name submitted before it (for singleton)."""
    waiting: list[str] = []
    for dep in deps:
        if dep.condition is Condition.SINGLETON:
            if earlier_same_name_live:
                shown = ", ".join(earlier_same_name_live[:3]) + (" ..." if len(earlier_same_name_live) > 3 else "")
                waiting.append(f"waiting for {shown} to end (singleton)")
            continue
        seen = observed.get(dep.task_id) or Observed(dep.task_id, TaskState.CANCELLED, started=False)
        decided = _one(dep, seen)
        if isinstance(decided, Doomed):
            return decided
        if isinstance(decided, Waiting):
            waiting.append(decided.reason)
    if start_after is not None and now < start_after:
        waiting.append(f"waiting until {start_after:.0f} (start_after)")
    if waiting:
        more = f" and {len(waiting) - 1} more" if len(waiting) > 1 else ""
        return Waiting(waiting[0] + more)
    return Ready()


def doomed_reason(cause_id: str, cause_reason: str) -> str:
    """The reason a dependent of a doomed task ends with (cascade)."""
    return f"dependency {cause_id} was cancelled: {cause_reason}"


def start_order(waiting: Sequence[tuple[str, int, int]]) -> list[str]:
    """Task ids of (task_id, priority, seq) in the order they should get resources: higher
    priority first, then submission order."""
    return [t for t, _, _ in sorted(waiting, key=lambda w: (-w[1], w[2]))]
