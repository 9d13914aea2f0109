"""Log cursors and line chunking: a reader that resumes from its last cursor sees every line
exactly once, never a line cut in two; `tail_start` finds where the last N lines begin."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import ErrorReason
from flow.domain.task.log_cursor import decode_cursor, emit_length, encode_cursor, tail_start

# Byte offsets of a real file: up to the largest file size (2**63 - 1).
offsets = st.integers(min_value=0, max_value=2**63 - 1)
# Log bytes with plenty of newlines, and every other byte (\r, NUL, invalid UTF-8) too.
log_bytes = st.lists(
    st.sampled_from([b"\n", b"a", b"\r", b"\x00", b"\xff", b"line\n", b"\n\n"]) | st.binary(max_size=4)
).map(b"".join)


def lines_of(data: bytes) -> list[bytes]:
    """The lines of a log, each with its newline; a last line without one counts as a line."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


@given(offsets)
def test_cursor_round_trip(offset: int) -> None:
    assert decode_cursor(encode_cursor(offset)) == Success(offset)


def test_empty_cursor_is_the_beginning() -> None:
    assert decode_cursor("") == Success(0)


def _refuses(text: str) -> None:
    result = decode_cursor(text)
    assert isinstance(result, Failure), (text, result)
    error = result.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert [v.field for v in error.violations] == ["cursor"]
    assert error.violations[0].fix


@pytest.mark.parametrize(
    "text",
    [
        "42",
        "c1.",
        "c1.-1",
        "c1.+1",
        "c1.1.5",
        "c1. 1",
        "c1.1 ",
        "c2.5",
        "C1.5",
        "c1.٣",
        "c1.¹",
        "c1." + "9" * 40,
        "p1.5",
    ],
)
def test_foreign_cursors_are_refused(text: str) -> None:
    _refuses(text)


@given(st.text())
def test_decode_never_raises(text: str) -> None:
    result = decode_cursor(text)
    if isinstance(result, Success):
        offset = result.unwrap()
        assert offset >= 0
        assert text == "" or (text.startswith("c1.") and int(text[3:]) == offset)
    else:
        _refuses(text)


@given(log_bytes, st.integers(min_value=1, max_value=64))
def test_emit_length_sends_whole_lines_unless_a_line_outgrows_the_chunk(data: bytes, limit: int) -> None:
    read = data[:limit]
    n = emit_length(read, final=False, limit=limit)
    assert 0 <= n <= len(read)
    if b"\n" in read:
        assert read[n - 1 : n] == b"\n"
        assert b"\n" not in read[n:]  # everything held back is one unfinished line
    elif len(read) == limit:
        assert n == len(read)  # a line longer than a chunk goes out in pieces: nothing stalls
    else:
        assert n == 0
    if len(read) < limit:  # the end of a finished task's output: all of it
        assert emit_length(read, final=True, limit=limit) == len(read)


def test_emit_length_examples() -> None:
    assert emit_length(b"", False, 8) == 0
    assert emit_length(b"partial", False, 8) == 0
    assert emit_length(b"one\ntwo", False, 8) == 4
    assert emit_length(b"one\ntwo\n", False, 8) == 8
    assert emit_length(b"one\ntwo", True, 8) == 7
    assert emit_length(b"01234567", False, 8) == 8  # one line longer than the chunk


@settings(max_examples=300)
@given(
    log_bytes,
    st.lists(st.integers(min_value=0, max_value=40), max_size=20),
    st.integers(min_value=1, max_value=16),
)
def test_resuming_reader_sees_every_byte_exactly_once(data: bytes, growth: list[int], limit: int) -> None:
    """The file grows in arbitrary steps (cutting lines anywhere); after each step the reader
    reads at most `limit` bytes from its cursor, sends what emit_length allows, and reconnects
    with the new cursor. Once the task is terminal, final reads drain the rest. Every byte
    arrives once, in order; a chunk ends mid-line only where a line outgrew the chunk."""
    written = 0
    cursor = ""
    emitted: list[bytes] = []
    for step in growth:
        written = min(len(data), written + step)
        offset = decode_cursor(cursor).unwrap()
        available = data[offset:written][:limit]
        n = emit_length(available, final=False, limit=limit)
        if n:
            assert available[:n].endswith(b"\n") or n == limit
            emitted.append(available[:n])
        cursor = encode_cursor(offset + n)
    offset = decode_cursor(cursor).unwrap()
    while offset < len(data):
        rest = data[offset : offset + limit]
        n = emit_length(rest, final=True, limit=limit)
        emitted.append(rest[:n])
        offset += n
    assert b"".join(emitted) == data
    if limit >= max((len(line) for line in data.split(b"\n")), default=0) + 1:
        assert [line for chunk in emitted for line in lines_of(chunk)] == lines_of(data)


def _reference_tail(data: bytes, lines: int) -> int:
    """Split the whole file into lines and take the last `lines` of them."""
    if lines <= 0:
        return len(data)
    kept = lines_of(data)[-lines:]
    return len(data) - sum(len(line) for line in kept)


@settings(max_examples=300)
@given(log_bytes, st.integers(min_value=-1, max_value=8), st.data())
def test_tail_start_matches_reference(data: bytes, lines: int, draw: st.DataObject) -> None:
    window_offset = draw.draw(st.integers(min_value=0, max_value=len(data)))
    window = data[window_offset:]
    expected = _reference_tail(data, lines)
    # The window can only show line starts inside it; before that the best answer is its start.
    assert tail_start(window, window_offset, lines) == max(expected, window_offset)


@given(log_bytes, st.integers(min_value=1, max_value=8))
def test_tail_of_the_whole_file_is_exactly_the_last_lines(data: bytes, lines: int) -> None:
    start = tail_start(data, 0, lines)
    assert lines_of(data[start:]) == lines_of(data)[-lines:]


def test_tail_start_examples() -> None:
    assert tail_start(b"a\nb\nc\n", 0, 1) == 4
    assert tail_start(b"a\nb\nc\n", 0, 2) == 2
    assert tail_start(b"a\nb\nc", 0, 1) == 4  # a last line without a newline is still a line
    assert tail_start(b"a\nb\nc\n", 0, 10) == 0
    assert tail_start(b"a\nb\nc\n", 0, 0) == 6
    assert tail_start(b"b\nc\n", 100, 1) == 102
    assert tail_start(b"", 7, 3) == 7
