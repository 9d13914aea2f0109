"""Dependencies and scheduling constraints in the core: Slurm's conditions, cycles, cascades."""

from __future__ import annotations

import calendar
import itertools

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.task.dependencies import (
    MAX_INSTANT,
    SINGLETON,
    Condition,
    Dependency,
    Doomed,
    Node,
    Observed,
    Ready,
    Waiting,
    as_dependencies,
    as_instant,
    dependency_violations,
    edges_of,
    find_cycle,
    format_instant,
    parse_after,
    parse_begin,
    parse_instant,
    parse_slurm_dependency,
    readiness,
    render_slurm_dependency,
    start_order,
    unknown_dependencies,
)
from flow.domain.task.states import TaskState

task_ids = st.text(alphabet="abcdefghjkmnpqrstvwxyz0123456789-", min_size=1, max_size=20)
conditions = st.sampled_from([c for c in Condition if c is not Condition.SINGLETON])
dependencies = st.builds(Dependency, task_id=task_ids, condition=conditions)


@given(dependencies)
def test_a_dependency_reads_back_as_written(dep: Dependency) -> None:
    assert parse_after(dep.render()) == Success(dep)


@given(task_ids)
def test_a_bare_id_means_afterok(task_id: str) -> None:
    assert parse_after(task_id) == Success(Dependency(task_id, Condition.AFTER_OK))


def test_singleton_reads_back() -> None:
    assert parse_after("singleton") == Success(SINGLETON)
    assert parse_slurm_dependency("singleton") == Success((SINGLETON,))


@given(st.lists(dependencies, min_size=1, max_size=8, unique=True))
def test_slurm_form_round_trips_through_job_ids(deps: list[Dependency]) -> None:
    jobs = {d.task_id: d.task_id for d in deps}
    text = render_slurm_dependency(deps, jobs)
    assert sorted(parse_slurm_dependency(text).unwrap(), key=Dependency.render) == sorted(deps, key=Dependency.render)


def test_slurm_dependency_with_several_jobs_per_condition() -> None:
    assert parse_slurm_dependency("afterok:12:13,afterany:14") == Success(
        (
            Dependency("12", Condition.AFTER_OK),
            Dependency("13", Condition.AFTER_OK),
            Dependency("14", Condition.AFTER_ANY),
        )
    )


def test_slurm_forms_flow_cannot_honour_are_refused_by_name() -> None:
    for text, words in [
        ("afterok:1?afterok:2", "'?'"),
        ("aftercorr:1", "aftercorr"),
        ("after:1+5", "+time"),
        ("afterok", "names no job"),
        ("", "is empty"),
        ("expand:3", "unknown type"),
    ]:
        result = parse_slurm_dependency(text)
        assert isinstance(result, Failure), text
        assert words in result.failure().message, (text, result.failure().message)
        assert result.failure().violations[0].field == "--dependency"


@given(st.text(max_size=30))
def test_parse_after_never_raises(text: str) -> None:
    result = parse_after(text)
    if isinstance(result, Failure):
        assert result.failure().violations[0].field == "after"


@given(st.text(max_size=40))
def test_parse_slurm_dependency_never_raises(text: str) -> None:
    parse_slurm_dependency(text)


def test_unknown_condition_is_named() -> None:
    error = parse_after("t-1:afterbad").failure()
    assert "afterbad" in error.message and "afterok" in error.violations[0].fix


# --- validation -------------------------------------------------------------------------------


def test_shape_checks_name_each_field() -> None:
    assert dependency_violations((), None, 0) == ()
    found = dependency_violations(
        (Dependency("t-1"), Dependency("t-1"), Dependency("bad id!"), Dependency("x", Condition.SINGLETON), "t-2"),
        "tomorrow",
        10**9,
    )
    assert [v.field for v in found] == [
        "depends_on[1]",
        "depends_on[2].task_id",
        "depends_on[3]",
        "depends_on[4]",
        "start_after",
        "priority",
    ]


def test_unknown_ids_are_named_by_position() -> None:
    known = {"t-a"}
    found = unknown_dependencies([Dependency("t-a"), SINGLETON, Dependency("t-zz")], known.__contains__)
    assert [(v.field, v.value) for v in found] == [("depends_on[2]", "'t-zz'")]


# --- cycles -----------------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> list[Node]:
    count = draw(st.integers(1, 30))
    nodes = []
    for i in range(count):
        targets = draw(st.lists(st.integers(0, i - 1), max_size=4, unique=True)) if i else []
        nodes.append(Node(task_id=f"t{i}", name=f"n{i}", seq=i, depends_on=tuple(Dependency(f"t{j}") for j in targets)))
    return nodes


@given(dags())
def test_tasks_depending_only_on_earlier_tasks_never_form_a_cycle(nodes: list[Node]) -> None:
    assert find_cycle(nodes) is None


@given(dags(), st.data())
def test_a_back_edge_is_found_and_the_cycle_is_real(nodes: list[Node], data: st.DataObject) -> None:
    # Make an early task wait for a later one that (transitively) waits for it, or for itself.
    edges = edges_of(nodes)
    late = data.draw(st.integers(0, len(nodes) - 1))
    reachable = {nodes[late].task_id}
    frontier = [nodes[late].task_id]
    while frontier:
        for nxt in edges[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    early = data.draw(st.sampled_from(sorted(reachable)))
    index = int(early[1:])
    nodes[index] = Node(
        task_id=early,
        name=early,
        seq=index,
        depends_on=(*nodes[index].depends_on, Dependency(nodes[late].task_id)),
    )
    cycle = find_cycle(nodes)
    assert cycle is not None and cycle[0] == cycle[-1]
    edges = edges_of(nodes)
    assert all(b in edges[a] for a, b in itertools.pairwise(cycle))


def test_a_cycle_through_singleton_is_found() -> None:
    # a (named "x") waits for b; b is a singleton named "x", so it waits for the earlier a.
    nodes = [
        Node("a", "x", seq=1, depends_on=(Dependency("b"),)),
        Node("b", "x", seq=2, depends_on=(SINGLETON,)),
    ]
    assert find_cycle(nodes) == ("a", "b", "a")
    # Once a has ended, b's singleton no longer waits for it.
    nodes[0] = Node("a", "x", seq=1, depends_on=(Dependency("b"),), live=False)
    assert find_cycle(nodes) is None


def test_a_100000_task_chain_is_checked_without_recursion() -> None:
    nodes = [Node(f"t{i}", "n", seq=i, depends_on=(Dependency(f"t{i - 1}"),) if i else ()) for i in range(100_000)]
    assert find_cycle(nodes) is None


# --- readiness --------------------------------------------------------------------------------

STATES = list(TaskState)
EXPECTED = {
    Condition.AFTER_OK: {TaskState.COMPLETED: Ready, TaskState.FAILED: Doomed, TaskState.CANCELLED: Doomed},
    Condition.AFTER_ANY: {TaskState.COMPLETED: Ready, TaskState.FAILED: Ready, TaskState.CANCELLED: Ready},
    Condition.AFTER_NOT_OK: {TaskState.COMPLETED: Doomed, TaskState.FAILED: Ready, TaskState.PREEMPTED: Ready},
    Condition.AFTER: {TaskState.RUNNING: Ready, TaskState.COMPLETED: Ready},
}


@given(conditions, st.sampled_from(STATES), st.booleans())
def test_each_condition_means_what_slurm_means(condition: Condition, state: TaskState, started: bool) -> None:
    started = started or state in (TaskState.RUNNING, TaskState.COMPLETED)
    decided = readiness([Dependency("t-a", condition)], {"t-a": Observed("t-a", state, started)}, [], None, 0.0)
    expected = EXPECTED[condition].get(state)
    if expected is None:  # not covered by the table: it follows from the definitions
        if condition is Condition.AFTER and started:
            expected = Ready
        elif not state.is_terminal:
            expected = Waiting
        elif condition is Condition.AFTER_OK:
            expected = Doomed
        else:
            expected = Ready
    assert isinstance(decided, expected), (condition, state, decided)
    if isinstance(decided, Waiting):
        assert "t-a" in decided.reason and str(condition) in decided.reason
    if isinstance(decided, Doomed):
        assert "t-a" in decided.reason


def test_one_doomed_condition_dooms_the_task_even_if_others_wait() -> None:
    deps = [Dependency("t-a"), Dependency("t-b")]
    seen = {"t-a": Observed("t-a", TaskState.RUNNING, True), "t-b": Observed("t-b", TaskState.FAILED, True)}
    assert isinstance(readiness(deps, seen, [], None, 0.0), Doomed)


def test_a_vanished_dependency_counts_as_ended_without_completing() -> None:
    assert isinstance(readiness([Dependency("t-gone")], {}, [], None, 0.0), Doomed)
    assert isinstance(readiness([Dependency("t-gone", Condition.AFTER_ANY)], {}, [], None, 0.0), Ready)


def test_singleton_waits_for_earlier_live_tasks_of_the_same_name() -> None:
    waiting = readiness([SINGLETON], {}, ["t-1", "t-2"], None, 0.0)
    assert isinstance(waiting, Waiting) and "t-1" in waiting.reason and "singleton" in waiting.reason
    assert isinstance(readiness([SINGLETON], {}, [], None, 0.0), Ready)


@given(st.floats(0, 1e10), st.floats(0, 1e10))
def test_start_after_holds_until_its_instant(start_after: float, now: float) -> None:
    decided = readiness([], {}, [], start_after, now)
    assert isinstance(decided, Ready) == (now >= start_after)


@given(st.lists(st.tuples(task_ids, st.integers(-5, 5)), unique_by=lambda t: t[0], max_size=20))
def test_higher_priority_first_then_submission_order(tasks: list[tuple[str, int]]) -> None:
    waiting = [(t, p, seq) for seq, (t, p) in enumerate(tasks)]
    order = start_order(waiting)
    ranks = {t: (-p, seq) for t, p, seq in waiting}
    assert [ranks[t] for t in order] == sorted(ranks.values())


def test_a_cascade_names_the_cancelled_dependency_and_the_first_cause() -> None:
    first = readiness([Dependency("t-a")], {"t-a": Observed("t-a", TaskState.FAILED, True)}, [], None, 0.0)
    assert isinstance(first, Doomed) and first.reason == "dependency t-a ended FAILED (afterok)"
    reason = first.reason
    for upstream in [f"t-{i}" for i in range(49)]:
        seen = {upstream: Observed(upstream, TaskState.CANCELLED, False, reason=reason)}
        decided = readiness([Dependency(upstream)], seen, [], None, 0.0)
        assert isinstance(decided, Doomed)
        reason = decided.reason
    # However long the chain, the reason names the last dependency and the first cause only.
    assert reason == "dependency t-48 was cancelled: dependency t-a ended FAILED (afterok)"
    # A task the user cancelled is not a cascade: its dependents say it ended CANCELLED.
    seen = {"t-u": Observed("t-u", TaskState.CANCELLED, False, reason="cancelled before it started")}
    user = readiness([Dependency("t-u")], seen, [], None, 0.0)
    assert isinstance(user, Doomed) and user.reason == "dependency t-u ended CANCELLED (afterok)"


# --- the shapes TaskConfig accepts ------------------------------------------------------------


class _HasId:
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id


def test_depends_on_accepts_ids_conditions_tasks_and_mappings() -> None:
    got = as_dependencies(
        ["t-a", "t-b:afterany", _HasId("t-c"), {"task_id": "t-d", "condition": "after"}, "singleton", SINGLETON]
    )
    assert got == (
        Dependency("t-a"),
        Dependency("t-b", Condition.AFTER_ANY),
        Dependency("t-c"),
        Dependency("t-d", Condition.AFTER),
        SINGLETON,
        SINGLETON,
    )
    assert as_dependencies(_HasId("t-e")) == (Dependency("t-e"),)  # one alone is a list of one
    assert as_dependencies("t-f:afternotok") == (Dependency("t-f", Condition.AFTER_NOT_OK),)
    assert as_dependencies(None) == ()
    assert as_dependencies(42) == 42  # kept, for validation to name


@given(st.lists(st.text(max_size=12) | st.integers() | st.none(), max_size=4))
def test_whatever_depends_on_holds_validation_names_each_bad_entry(items: list[object]) -> None:
    converted = as_dependencies(items)
    found = dependency_violations(converted, None, 0)
    bad = {
        f"depends_on[{i}]"
        for i, item in enumerate(converted)
        if not isinstance(item, Dependency) or (item.condition is not Condition.SINGLETON and not item.task_id)
    }
    assert bad <= {v.field.split(".")[0] for v in found}


@given(st.integers(0, MAX_INSTANT - 1))
def test_an_instant_reads_back_from_its_iso_form(seconds: int) -> None:
    text = format_instant(seconds)
    assert text.endswith("Z") and parse_instant(text) == seconds
    assert as_instant(text) == seconds


def test_iso_times_need_a_zone_and_numbers_are_seconds() -> None:
    assert parse_instant("2025-06-01T09:00:00Z") == 1748768400
    assert parse_instant("2025-06-01 11:00+02:00") == 1748768400
    assert parse_instant("2025-06-01T09:00:00.25Z") == 1748768400.25
    assert parse_instant("1748768400") == 1748768400
    assert parse_instant("2025-06-01T09:00:00") is None  # local time: the shell's to convert
    assert parse_instant("2025-02-30T09:00:00Z") is None
    found = dependency_violations((), "2025-06-01T09:00", 0)
    assert [(v.field, v.problem) for v in found] == [("start_after", "has no time zone")]
    assert "2025-06-01T09:00Z" in found[0].fix


def _utc(fields: tuple[int, int, int, int, int, int]) -> float:
    return float(calendar.timegm(fields))


def _plus_two(fields: tuple[int, int, int, int, int, int]) -> float:
    return float(calendar.timegm(fields)) - 7200


NOW = 1748768400.0  # 2025-06-01T09:00:00Z


def test_begin_reads_what_sbatch_reads() -> None:
    cases = {
        "now": NOW,
        "now+60": NOW + 60,
        "now+1hour": NOW + 3600,
        "now+2days": NOW + 2 * 86400,
        "now + 3 minutes": NOW + 180,
        "2025-06-02T10:30": _utc((2025, 6, 2, 10, 30, 0)),
        "2025-06-02": _utc((2025, 6, 2, 0, 0, 0)),
        "2025-06-02T10:30:00Z": _utc((2025, 6, 2, 10, 30, 0)),
        "18:30": _utc((2025, 6, 1, 18, 30, 0)),
        "08:00": _utc((2025, 6, 2, 8, 0, 0)),  # already past today: tomorrow
        "noon": _utc((2025, 6, 1, 12, 0, 0)),
        "midnight": _utc((2025, 6, 2, 0, 0, 0)),
        "tomorrow": _utc((2025, 6, 2, 0, 0, 0)),
        "today": _utc((2025, 6, 1, 0, 0, 0)),
    }
    for text, expected in cases.items():
        assert parse_begin(text, NOW, _utc) == Success(expected), text
    # In another zone, local times move with it (09:00Z is 11:00 there).
    assert parse_begin("18:30", NOW, _plus_two) == Success(_plus_two((2025, 6, 1, 18, 30, 0)))
    assert parse_begin("10:00", NOW, _plus_two) == Success(_plus_two((2025, 6, 2, 10, 0, 0)))


def test_begin_refuses_what_it_cannot_read_by_name() -> None:
    for text in ("later", "now+3fortnights", "25:00", "2025-13-01"):
        result = parse_begin(text, NOW, _utc)
        assert isinstance(result, Failure), text
        assert result.failure().violations[0].field == "--begin"


@given(st.text(max_size=30))
def test_parse_begin_never_raises(text: str) -> None:
    parse_begin(text, NOW, _utc)
