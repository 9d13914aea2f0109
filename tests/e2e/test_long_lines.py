"""Logs through a real flowd, whatever the line lengths: a line longer than a chunk reaches every
reader whole and once (issue 15 #1), and tail_lines costs flowd a constant amount of memory
(issue 15 #3: 848 MB for a 600 MB log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import Daemon
from flow import Flow, TaskStatus

MB = 1 << 20
# A tqdm bar drawn 2,000 times with "\r" and never a newline, one 1 MB JSON-like line, more lines.
PRODUCER = (
    "import sys, time\n"
    "w = sys.stdout.write\n"
    "w('start\\n')\n"
    "for i in range(2000):\n    w(f'\\r{i:5d}/2000 ' + '#' * (i // 20) + ' ' * 200)\n"
    "w('\\n' + 'j' * (1 << 20) + '\\nend\\n')\n"
)


def expected_output() -> str:
    bar = "".join(f"\r{i:5d}/2000 " + "#" * (i // 20) + " " * 200 for i in range(2000))
    return "start\n" + bar + "\n" + "j" * MB + "\nend\n"


def test_lines_longer_than_a_chunk_reach_every_reader_whole(flow: Flow) -> None:
    task: Any = flow.run(["python3", "-c", PRODUCER], upload_code=False)
    followed = list(task.logs(follow=True))
    assert task.wait(timeout=60).last_status is TaskStatus.COMPLETED
    want = expected_output()
    assert followed == want.split("\n")[:-1]  # the follower saw every line, each whole
    assert task.logs() == want
    assert task.logs(tail=2) == "j" * MB + "\nend\n"
    cursor, got = "", b""
    for chunk in task.log_chunks(follow=False):  # resumed after every chunk: every byte once
        got += chunk.data
        cursor = chunk.cursor
    assert got.decode() == want and list(task.log_chunks(cursor=cursor, follow=False)) == []


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_tail_lines_of_a_huge_line_costs_flowd_no_memory(daemon: Daemon) -> None:
    client: Any = daemon.client()
    size = 128 * MB
    writer = f"import sys; sys.stdout.buffer.write(b'n' * {size})"  # no newline at all
    task = client.run(["python3", "-c", writer], upload_code=False).wait(timeout=300)
    assert task.last_status is TaskStatus.COMPLETED
    assert daemon.pid is not None
    before = _rss_kb(daemon.pid, "VmRSS")
    assert len(task.logs(tail=10)) == size  # one (huge) line: all of it, streamed in chunks
    grown_mb = (_rss_kb(daemon.pid, "VmHWM") - before) / 1024
    assert grown_mb < 64, f"flowd grew by {grown_mb:.0f} MB for a {size // MB} MB log"
