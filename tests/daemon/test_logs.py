"""flowd.logs.tail_offset scans a file backwards block by block; it must agree with the pure rule
(flow.domain.task.log_cursor.tail_start over the whole file) for any bytes and any block size."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from flow.domain.task.log_cursor import tail_start
from flowd.logs import tail_offset

log_bytes = st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"x" * 7]), max_size=60).map(b"".join)


@settings(max_examples=300)
@given(log_bytes, st.integers(min_value=0, max_value=12), st.integers(min_value=1, max_value=9))
def test_tail_offset_agrees_with_the_pure_rule(data: bytes, lines: int, block: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "output.log"
        path.write_bytes(data)
        assert tail_offset(path, lines, block=block) == tail_start(data, 0, lines)


def test_a_missing_file_has_no_tail(tmp_path: Path) -> None:
    assert tail_offset(tmp_path / "none", 10) == 0
