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
Instants are written as numbers, or as ISO-8601 with a zone ("2025-06-01T09:00:00Z", "...+02:00"):
a time without a zone means local time, which only the shell knows (`parse_begin` takes the
conversion as an argument, and a datetime converts itself).

Everything here takes the facts it needs (the states of the tasks depended on, `now`) as
arguments; the shell (flowd, or Slurm natively) gathers them and acts on the decision.
"""

from __future__ import annotations

import calendar
import enum
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, validation_error, violation
from flow.domain.task.states import TaskState

MAX_DEPENDENCIES: Final = 1000
MIN_PRIORITY: Final = -10_000
MAX_PRIORITY: Final = 10_000
TASK_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
MAX_TASK_ID: Final = 64
MAX_INSTANT: Final = 253402300800  # 10000-01-01T00:00:00Z: ISO-8601 has four-digit years


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
    reason: str = ""  # its state_reason: a dependent of a task doomed in turn says why (cascade)


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


# --- the shapes TaskConfig accepts ------------------------------------------------------------


def _as_dependency(item: object) -> object:
    if isinstance(item, Dependency):
        return item
    if isinstance(item, str):
        parsed = parse_after(item)
        return parsed.unwrap() if isinstance(parsed, Success) else item
    if isinstance(item, Mapping):  # YAML's long form: {task_id: t-abc, condition: afterany}
        task_id, condition = item.get("task_id", ""), item.get("condition", Condition.AFTER_OK.value)
        if set(item) <= {"task_id", "condition"} and isinstance(task_id, str) and isinstance(condition, str):
            text = "singleton" if condition == Condition.SINGLETON and not task_id else f"{task_id}:{condition}"
            parsed = parse_after(text)
            return parsed.unwrap() if isinstance(parsed, Success) else item
        return item
    task_id = getattr(item, "task_id", None)  # a flow.Task (or anything else that names a task)
    return Dependency(task_id) if isinstance(task_id, str) and task_id else item


def as_dependencies(value: object) -> Any:
    """TaskConfig.depends_on's converter: a list (or one alone) of Dependency values, "ID" and
    "ID:CONDITION" strings, "singleton", {task_id, condition} mappings, or objects with a
    `task_id` (the SDK's Task) becomes a tuple of Dependency; what is none of these is kept as
    given, for `dependency_violations` to name."""
    if isinstance(value, list | tuple):
        return tuple(_as_dependency(item) for item in value)
    if value is None:
        return ()
    one = _as_dependency(value)
    return (one,) if isinstance(one, Dependency) else value


def as_instant(value: object) -> Any:
    """TaskConfig.start_after's converter: seconds since the epoch from a number, an ISO-8601
    string with a zone, or a datetime (which converts itself: a naive one is local time, as
    Python's datetime.timestamp() has it). Anything else is kept as given, for validation."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) < 2**53:
        return float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        parsed = parse_instant(value)
        return parsed if parsed is not None else value
    stamp = getattr(value, "timestamp", None)
    if callable(stamp):
        try:
            seconds = stamp()
        except (OverflowError, ValueError, OSError, TypeError):
            return value
        return float(seconds) if isinstance(seconds, int | float) else value
    return value


# --- instants ------------------------------------------------------------------------------------

_ISO: Final = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?\s*"
)
_NUMBER: Final = re.compile(r"\s*\d{1,13}(\.\d{1,9})?\s*")


def _iso_fields(text: str) -> tuple[tuple[int, int, int, int, int, int], float, str | None] | None:
    """(Y, M, D, h, m, s), the fraction of a second and the zone ("Z", "+02:00", or None) of an
    ISO-8601 time, or None when it is not one (or names no real day)."""
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    year, month, day = (int(match.group(i)) for i in (1, 2, 3))
    hour, minute, second = (int(match.group(i) or 0) for i in (4, 5, 6))
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    return (year, month, day, hour, minute, second), float(match.group(7) or 0), match.group(8)


def _zone_seconds(zone: str) -> int:
    if zone in ("Z", "z"):
        return 0
    digits = zone[1:].replace(":", "")
    offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
    return -offset if zone[0] == "-" else offset


def parse_instant(text: str) -> float | None:
    """Seconds since the epoch of "1735689600" or an ISO-8601 time with a zone
    ("2025-06-01T09:00:00Z", "2025-06-01 09:00+02:00"); None otherwise (a time without a zone
    is local time, which only the shell can convert: `parse_begin`)."""
    if _NUMBER.fullmatch(text):
        return float(text)
    fields = _iso_fields(text)
    if fields is None:
        return None
    when, fraction, zone = fields
    if zone is None:
        return None
    return float(calendar.timegm(when)) + fraction - _zone_seconds(zone)


def format_instant(seconds: float) -> str:
    """An instant as ISO-8601 in UTC, e.g. "2025-06-01T09:00:00Z" (for reasons and YAML)."""
    whole = math.floor(seconds)
    days, rest = divmod(whole, 86400)
    # Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day number.
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04d}-{month:02d}-{day:02d}T{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}Z"


LocalTime = Callable[[tuple[int, int, int, int, int, int]], float]
_UNITS: Final = {"": 1, "seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
_NAMED_TIMES: Final = {"midnight": (0, 0), "noon": (12, 0), "elevenses": (11, 0), "fika": (15, 0), "teatime": (16, 0)}


def _unit(word: str) -> int | None:
    """sbatch's units, singular or plural, and their prefixes ("min", "h", "sec")."""
    if not word:
        return 1
    found = {seconds for name, seconds in _UNITS.items() if name and name.startswith(word.lower())}
    return found.pop() if len(found) == 1 else None


def parse_begin(text: str, now: float, local: LocalTime, field: str = "--begin") -> Result[float, DomainError]:
    """sbatch's --begin (and `flow run --begin`) as seconds since the epoch: "now", "now+N"
    with a unit (seconds by default; minutes, hours, days, weeks), "YYYY-MM-DD[THH:MM[:SS]]"
    (local time, or with a zone), "HH:MM[:SS]" and midnight/noon/fika/teatime (the next such
    time), today, tomorrow, or a number of seconds since the epoch. `local` converts a local
    (Y, M, D, h, m, s) to seconds since the epoch (the shell's time zone)."""
    fix = "give e.g. now+1hour, 2025-06-01T09:00, 18:30 or tomorrow"
    value = text.strip().lower()
    relative = re.fullmatch(r"now(?:\s*\+\s*(\d{1,9})\s*([a-z]*))?", value)
    if relative is not None:
        count, unit = relative.group(1), _unit(relative.group(2) or "")
        if unit is None:
            return Failure(
                validation_error([violation(field, text, f"has an unknown unit {relative.group(2)!r}", fix)])
            )
        return Success(now + int(count or 0) * unit)
    absolute = parse_instant(text)
    if absolute is not None:
        return Success(absolute)
    fields = _iso_fields(text)
    if fields is not None:
        return Success(local(fields[0]) + fields[1])
    today = _local_date(now, local)
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", value)
    hour_minute: tuple[int, int, int] | None = None
    if clock is not None and int(clock.group(1)) < 24 and int(clock.group(2)) < 60 and int(clock.group(3) or 0) < 60:
        hour_minute = (int(clock.group(1)), int(clock.group(2)), int(clock.group(3) or 0))
    elif value in _NAMED_TIMES:
        hour_minute = (*_NAMED_TIMES[value], 0)
    elif value in ("today", "tomorrow"):
        start = local((*today, 0, 0, 0))
        return Success(start if value == "today" else _next_day(today, local))
    if hour_minute is None:
        return Failure(validation_error([violation(field, text, "is not a time sbatch --begin knows", fix)]))
    at = local((*today, *hour_minute))
    if at <= now:  # sbatch: a time of day already past today means tomorrow
        year, month, day = _local_date(_next_day(today, local), local)
        at = local((year, month, day, *hour_minute))
    return Success(at)


def _local_date(seconds: float, local: LocalTime) -> tuple[int, int, int]:
    """The local calendar day of an instant, found through `local` alone (no time zone database
    in the core): the UTC day, or the one before or after it."""
    utc_day = format_instant(seconds)[:10]
    year, month, day = (int(p) for p in utc_day.split("-"))
    base = calendar.timegm((year, month, day, 0, 0, 0))
    for shift in (-1, 0, 1):
        y, m, d = (int(p) for p in format_instant(base + shift * 86400)[:10].split("-"))
        start = local((y, m, d, 0, 0, 0))
        if start <= seconds < _next_day((y, m, d), local):
            return y, m, d
    return year, month, day


def _next_day(date: tuple[int, int, int], local: LocalTime) -> float:
    """The start of the local day after `date`."""
    y, m, d = (int(p) for p in format_instant(calendar.timegm((*date, 12, 0, 0)) + 86400)[:10].split("-"))
    return local((y, m, d, 0, 0, 0))


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
            unparsed = parse_after(dep, path) if isinstance(dep, str) else None
            if isinstance(unparsed, Failure):  # what the converter kept as given: why it does not parse
                out.extend(unparsed.failure().violations)
            elif not isinstance(dep, Dependency):
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
    if isinstance(start_after, str) and _iso_fields(start_after) is not None:
        out.append(
            violation(
                "start_after",
                start_after,
                "has no time zone",
                f"add one, e.g. {start_after.strip()}Z for UTC or {start_after.strip()}+02:00",
            )
        )
    elif start_after is not None and (
        isinstance(start_after, bool)
        or not isinstance(start_after, (int, float))
        or not 0 <= start_after < MAX_INSTANT
        or math.isnan(start_after)
    ):
        out.append(
            violation(
                "start_after",
                start_after,
                "is not a time",
                "give seconds since the epoch, a datetime, or ISO-8601 with a zone (2025-06-01T09:00:00Z)",
            )
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
            if state is TaskState.CANCELLED and is_dependency_cancel(seen.reason):
                return Doomed(doomed_reason(dep.task_id, seen.reason))
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
        waiting.append(f"waiting until {format_instant(start_after)} (start_after)")
    if waiting:
        more = f" and {len(waiting) - 1} more" if len(waiting) > 1 else ""
        return Waiting(waiting[0] + more)
    return Ready()


DOOMED_PREFIX: Final = "dependency "


_CASCADE: Final = re.compile(r"dependency \S+ was cancelled: ")


def doomed_reason(cause_id: str, cause_reason: str) -> str:
    """The reason a dependent of a doomed task ends with (cascade): the dependency that was
    cancelled and the first cause, however long the chain (so reasons stay short)."""
    root = cause_reason
    while (found := _CASCADE.match(root)) is not None:
        root = root[found.end() :]
    return f"{DOOMED_PREFIX}{cause_id} was cancelled: {root}"


def is_dependency_cancel(reason: str) -> bool:
    """Whether a CANCELLED task's reason says a dependency doomed it (every Doomed reason
    starts so), so that its own dependents name the whole cascade."""
    return reason.startswith(DOOMED_PREFIX)


_HELD_REASON: Final = re.compile(
    r"waiting (for|until) .* \((afterok|afterany|afternotok|after|singleton|start_after)\)( and \d+ more)?"
)


def is_held_reason(reason: str) -> bool:
    """Whether a PENDING task's reason is one `readiness` gave (flowd holds it; it was never
    handed to its provider), as opposed to a provider's own ("syncing ...", a queue)."""
    return _HELD_REASON.fullmatch(reason) is not None


def split_native(
    deps: Sequence[Dependency], native_ids: Mapping[str, str]
) -> tuple[tuple[Dependency, ...], tuple[tuple[Dependency, str], ...]]:
    """Which conditions the provider enforces itself and which flowd holds. `native_ids` maps
    the tasks the provider can wait for natively (its own live tasks it has accepted, e.g. Slurm
    jobs of the same cluster) to its ids for them; conditions on those go to the provider, with
    the id; the rest (other providers' tasks, tasks not accepted yet, ended ones, singleton) are
    held by flowd."""
    held: list[Dependency] = []
    native: list[tuple[Dependency, str]] = []
    for dep in deps:
        found = native_ids.get(dep.task_id) if dep.condition is not Condition.SINGLETON else None
        if found:
            native.append((dep, found))
        else:
            held.append(dep)
    return tuple(held), tuple(native)


def start_order(waiting: Sequence[tuple[str, int, int]]) -> list[str]:
    """Task ids of (task_id, priority, seq) in the order they should get resources: higher
    priority first, then submission order."""
    return [t for t, _, _ in sorted(waiting, key=lambda w: (-w[1], w[2]))]
