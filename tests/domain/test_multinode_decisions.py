"""The pure decisions of multi-node tasks: node environments, GPU shares, the one task state
from many node exits, and the merged log stream's labels and cursors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.instances.gpu_inventory import Gpu
from flow.domain.instances.gpu_scheduler import GpuRequest, next_starts
from flow.domain.task.multinode import (
    check_node,
    decode_merged_cursor,
    encode_merged_cursor,
    group_outcome,
    label_lines,
    node_env,
    split_gpus,
    unlabel_lines,
)

nodes_st = st.integers(min_value=1, max_value=64)


@given(nodes_st, st.integers(min_value=1, max_value=65535))
def test_every_node_gets_a_consistent_distributed_environment(n: int, port: int) -> None:
    envs = [node_env(k, n, port) for k in range(n)]
    assert sorted(int(e["RANK"]) for e in envs) == list(range(n))  # ranks are 0..n-1, once each
    for k, env in enumerate(envs):
        assert env["NODE_RANK"] == env["RANK"] == str(k)
        assert env["WORLD_SIZE"] == env["NNODES"] == str(n)
        assert (env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == ("0", "1")
        assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("127.0.0.1", str(port))


@given(st.integers(min_value=1, max_value=8), st.integers(min_value=1, max_value=8), st.randoms())
def test_gpu_shares_are_disjoint_equal_and_cover_the_assignment(n: int, per_node: int, rng: object) -> None:
    gpus = list(range(n * per_node))
    rng.shuffle(gpus)
    shares = split_gpus(gpus, n)
    assert len(shares) == n and all(len(s) == per_node for s in shares)
    assert sorted(i for s in shares for i in s) == sorted(gpus)
    assert [list(s) for s in shares] == [sorted(gpus)[k * per_node : (k + 1) * per_node] for k in range(n)]


@given(st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=4), st.integers(0, 8))
def test_a_multi_node_request_is_all_or_nothing_on_the_scheduler(n: int, per_node: int, taken: int) -> None:
    inventory = [Gpu(i, f"GPU-{i}", "a100", 80, "sxm", "A100") for i in range(8)]
    busy = {"other": tuple(range(taken))}
    starts = next_starts(inventory, busy, [GpuRequest("group", n * per_node, "a100", 80)])
    if n * per_node <= 8 - taken:
        assert len(starts) == 1 and len(starts[0][1]) == n * per_node
        assert not set(starts[0][1]) & set(busy["other"])
    else:
        assert starts == ()  # never a partial group


exits_st = st.lists(st.tuples(st.integers(min_value=0, max_value=7), st.one_of(st.none(), st.integers(0, 255))))


@given(st.integers(min_value=1, max_value=8), exits_st)
def test_the_task_ends_once_every_node_has_and_takes_the_first_failure(
    n: int, exits: list[tuple[int, int | None]]
) -> None:
    outcome = group_outcome(n, exits)
    first_seen: dict[int, int | None] = {}
    for node, code in exits:
        if 0 <= node < n:
            first_seen.setdefault(node, code)
    assert outcome.finished == (len(first_seen) == n)
    failures = [(node, code) for node, code in first_seen.items() if code != 0]
    if failures:
        assert (outcome.failed_node, outcome.exit_code) == failures[0]
        assert outcome.stop_others == (not outcome.finished)
    else:
        assert not outcome.stop_others and outcome.failed_node is None
        assert outcome.exit_code == (0 if outcome.finished else None)


@given(st.integers(min_value=2, max_value=8), st.integers(min_value=1, max_value=255), st.data())
def test_one_failure_fails_the_task_whatever_order_the_others_end_in(n: int, code: int, data: st.DataObject) -> None:
    bad = data.draw(st.integers(min_value=0, max_value=n - 1))
    others = data.draw(st.permutations([k for k in range(n) if k != bad]))
    # The failing node ends first: the others must be stopped, and the code is the failure's
    # even though the stopped nodes then end with 143 (SIGTERM).
    assert group_outcome(n, [(bad, code)]).stop_others
    final = group_outcome(n, [(bad, code), *((k, 143) for k in others)])
    assert (final.finished, final.exit_code, final.failed_node) == (True, code, bad)


@given(st.lists(st.integers(min_value=0, max_value=2**62), min_size=1, max_size=16))
def test_merged_cursors_round_trip(offsets: list[int]) -> None:
    assert decode_merged_cursor(encode_merged_cursor(offsets), len(offsets)) == Success(tuple(offsets))


@given(st.text(max_size=60), nodes_st)
def test_any_text_is_a_cursor_or_a_clear_error_naming_the_cursor(text: str, n: int) -> None:
    decoded = decode_merged_cursor(text, n)
    if isinstance(decoded, Failure):
        error = decoded.failure()
        assert error.violations[0].field == "cursor" and f"{n}-node" in error.message
    else:
        assert len(decoded.unwrap()) == n and all(o >= 0 for o in decoded.unwrap())


def test_a_cursor_for_another_node_count_is_refused() -> None:
    assert isinstance(decode_merged_cursor(encode_merged_cursor([1, 2, 3]), 2), Failure)
    assert isinstance(decode_merged_cursor("c1.10", 2), Failure)  # a single-node cursor
    assert decode_merged_cursor("", 3) == Success((0, 0, 0))


lines_st = st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=10)


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=5), lines_st), max_size=8))
def test_labelled_lines_give_back_each_nodes_output(pieces: list[tuple[int, list[bytes]]]) -> None:
    merged = b"".join(label_lines(b"".join(line + b"\n" for line in lines), node) for node, lines in pieces)
    expected: dict[int, bytes] = {}
    for node, lines in pieces:
        if lines:
            expected[node] = expected.get(node, b"") + b"".join(line + b"\n" for line in lines)
    assert unlabel_lines(merged) == expected


def test_a_final_line_without_newline_is_ended_so_the_next_node_starts_fresh() -> None:
    assert label_lines(b"a\nb", 3) + label_lines(b"c\n", 0) == b"[node 3] a\n[node 3] b\n[node 0] c\n"
    assert label_lines(b"", 1) == b""


@given(st.one_of(st.none(), st.integers(min_value=-5, max_value=20)), nodes_st)
def test_node_must_name_one_of_the_tasks_nodes(node: int | None, n: int) -> None:
    checked = check_node(node, n)
    if node is None or 0 <= node < n:
        assert checked == Success(node)
    else:
        error = checked.failure()
        assert error.violations[0].field == "node" and str(node) in error.violations[0].value
        assert f"0..{n - 1}" in error.message
