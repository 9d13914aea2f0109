"""IdentityMemo: a conversion is made once per object, never shared between distinct objects."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flow.domain.identity_memo import IdentityMemo
from flow.domain.task.config import TaskConfig


def test_each_object_is_converted_once_and_equal_objects_apart() -> None:
    seen: list[object] = []

    def convert(value: TaskConfig) -> str:
        seen.append(value)
        return f"converted {value.name}"

    memo = IdentityMemo(convert)
    first, twin = TaskConfig(name="a"), TaskConfig(name="a")
    assert memo(first) == memo(first) == "converted a"
    assert len(seen) == 1
    assert memo(twin) == "converted a"
    assert seen == [first, twin]  # equal, but another object: converted on its own


@given(st.lists(st.integers(0, 30), max_size=200), st.integers(1, 8))
def test_a_full_memo_still_answers_what_convert_answers(picks: list[int], size: int) -> None:
    """Whatever was evicted, every answer is the conversion of the object asked about."""
    values = [TaskConfig(name=f"n{i}") for i in range(31)]
    memo = IdentityMemo[TaskConfig, str](lambda v: str(v.name), size=size)
    for i in picks:
        assert memo(values[i]) == f"n{i}"
    assert len(memo._entries) <= size
