"""The code-upload progress bar: the CLI's rendering of the SDK's progress callback
(flow.code_upload.Progress; the SDK itself prints nothing)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from flow.code_upload import Progress


def progress_bar(stream: TextIO | None = None) -> Progress:
    """A progress callback that draws a bar on stderr once an upload has taken 0.5 s. Where
    stderr is not a terminal (CI logs, pipes) it writes one line when the upload starts to show
    and one when it ends, instead of a redraw per message."""
    out = stream or sys.stderr
    live = out.isatty()
    began = time.monotonic()
    shown = [False]
    finished = [False]

    def draw(sent: int, total: int) -> None:
        if finished[0] or (time.monotonic() - began < 0.5 and not shown[0]):
            return
        from flow.code_upload import mb  # only when there is something to show

        done_now = sent >= total
        if live:
            width = 30
            done = int(width * sent / total) if total else width
            out.write(f"\ruploading code [{'#' * done}{'.' * (width - done)}] {mb(sent)} / {mb(total)}")
            if done_now:
                out.write("\n")
        elif not shown[0] or done_now:
            out.write(f"uploading code: {mb(sent)} / {mb(total)}\n")
        shown[0] = True
        finished[0] = done_now
        out.flush()

    return draw


__all__ = ["progress_bar"]
