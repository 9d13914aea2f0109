"""The upload progress bar: redraws in a terminal, two plain lines in a log or pipe."""

from __future__ import annotations

import io
import time

from flow.cli.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drive(out: io.StringIO) -> str:
    draw = progress_bar(out)
    draw(0, 4_000_000)  # under 0.5 s: a quick upload shows nothing
    time.sleep(0.55)
    for sent in (1_000_000, 2_000_000, 3_000_000, 4_000_000, 4_000_000, 4_000_000):
        draw(sent, 4_000_000)
    return out.getvalue()


def test_quick_uploads_show_nothing() -> None:
    out = io.StringIO()
    draw = progress_bar(out)
    draw(1, 2)
    draw(2, 2)
    assert out.getvalue() == ""


def test_a_pipe_gets_one_line_at_start_and_one_at_the_end() -> None:
    text = _drive(io.StringIO())
    assert "\r" not in text
    assert text.splitlines() == ["uploading code: 1.0 MB / 4.0 MB", "uploading code: 4.0 MB / 4.0 MB"]


def test_a_terminal_gets_a_redrawn_bar_that_ends_with_one_newline() -> None:
    text = _drive(_Terminal())
    assert text.count("\r") == 4 and text.endswith("4.0 MB / 4.0 MB\n") and text.count("\n") == 1
