"""The keeper's journals: which process each task was started as, for a flowd restarted before it
saved that. A real keeper starts real programs; its journal names them, and goes when the keeper
has recorded the end of everything it started."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import wait_until
from flowd.providers.local_keeper import Ends, Keeper, Spawned, forget_dead_journals, read_journals
from flowd.providers.local_monitor import process_start_ticks


def alive(started: Spawned) -> bool:
    return process_start_ticks(started.pid) == started.ticks


def ignore_ends(generation: int, fd: int, read_ends: Callable[[], Ends | None]) -> None:
    """The keeper reports ends on `fd`; these tests read the exit status files instead."""


def test_the_journal_names_each_started_process_and_goes_with_its_keeper(tmp_path: Path) -> None:
    journals = tmp_path / "keepers"
    keeper = Keeper(ignore_ends, journals)
    task = tmp_path / "task"
    work = task / "work"
    try:
        started, _ = keeper.start(
            "t-1", ["sleep", "30"], work, dict(os.environ), task / "out", task / "exit", dirs=(task, work)
        )
        assert work.is_dir()  # the keeper made the directories it was asked for before it started the program
        assert read_journals(journals, alive) == {"t-1": started}
        assert alive(started)
        missing, _ = keeper.start("t-2", ["no-such-program-xyz"], work, dict(os.environ), task / "out2", task / "exit2")
        wait_until(lambda: (task / "exit2").exists(), timeout=30)
        assert (task / "exit2").read_text() == "127\n"  # as a shell would say
        assert "no-such-program-xyz" in (task / "out2").read_text()
        assert read_journals(journals, alive)["t-2"] == missing
    finally:
        keeper.close()
    forget_dead_journals(journals)
    assert list(journals.glob("*.journal")), "a keeper with a running program keeps its journal"
    os.kill(started.pid, 9)
    wait_until(lambda: (task / "exit").exists(), timeout=30)
    assert (task / "exit").read_text() == "137\n"
    wait_until(lambda: not list(journals.glob("*.journal")), timeout=30)


def test_a_key_in_two_journals_is_the_start_whose_process_lives(tmp_path: Path) -> None:
    journals = tmp_path / "keepers"
    journals.mkdir()
    ended = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    dead = Spawned(int(ended.stdout), 12345)
    with subprocess.Popen(["sleep", "30"]) as running:
        try:
            live = Spawned(running.pid, process_start_ticks(running.pid))
            # Whichever journal is read first, the live start wins.
            for first, second in ((dead, live), (live, dead)):
                for name, started in (("1", first), ("9", second)):
                    (journals / f"{name}.journal").write_text(f"t-1 {started.pid} {started.ticks}\nt-2 7 None\n")
                assert read_journals(journals, alive) == {"t-1": live, "t-2": Spawned(7, None)}
            forget_dead_journals(journals)  # no keeper is alive as pid 1 or 9
            assert not list(journals.glob("*.journal"))
        finally:
            running.kill()


def test_programs_are_found_as_a_shell_finds_them(tmp_path: Path) -> None:
    """The first executable of that name on the task's PATH (not the first file); a file that
    is there but not executable fails with 126, as under a shell."""
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
    (first / "hello").write_text("#!/bin/sh\necho first\n")  # not executable: skipped
    (second / "hello").write_text("#!/bin/sh\necho second\n")
    (second / "hello").chmod(0o755)
    (second / "plain").write_text("#!/bin/sh\necho never\n")
    env = {**os.environ, "PATH": f"{first}:{second}:/usr/bin:/bin"}
    keeper = Keeper(ignore_ends, tmp_path / "keepers")
    try:
        keeper.start("t-1", ["hello"], tmp_path, env, tmp_path / "out1", tmp_path / "exit1")
        keeper.start("t-2", ["plain"], tmp_path, env, tmp_path / "out2", tmp_path / "exit2")
        keeper.start("t-3", ["./second/hello"], tmp_path, env, tmp_path / "out3", tmp_path / "exit3")
        for n in (1, 2, 3):
            wait_until(lambda n=n: (tmp_path / f"exit{n}").exists(), timeout=30)
    finally:
        keeper.close()
    assert ((tmp_path / "exit1").read_text(), (tmp_path / "out1").read_text()) == ("0\n", "second\n")
    assert (tmp_path / "exit2").read_text() == "126\n"
    assert "plain" in (tmp_path / "out2").read_text()
    assert ((tmp_path / "exit3").read_text(), (tmp_path / "out3").read_text()) == ("0\n", "second\n")
