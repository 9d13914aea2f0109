"""The keeper: the parent of every local task's processes, which outlives flowd.

flowd (flowd.providers.local_keeper) starts this file with its own interpreter (`-I -S`: the
standard library only, nothing of the user's or of Flow's) in a session of its own, and asks it
over a socket to start each task's program: directly, without a shell in between. The keeper
records how each one ended, as the /bin/sh wrapper it replaces did:

- On a start request it creates the task's directories, opens the output file, starts the
  program (posix_spawn) in a new session (its own process group) with the task's argv, cwd and
  environment, appends `<task> <pid> <start ticks>` to its journal (which process the task is,
  for a flowd restarted before it saved that), and answers with the pid.
- When a program ends, it writes the exit status file (128+N for signal N, as a shell says)
  while the process is still a zombie, then reaps it and tells flowd. So for anyone who watches
  the pid (a restarted flowd, through a pidfd): a process fully gone has its status on disk.
- SIGHUP is ignored here, so programs start with it ignored (the wrapper's `trap "" HUP`); every
  other signal has its default disposition in the program.
- A program that cannot be started (not found, not executable) ends as a shell's would: its
  output says why and its status is 127 (or 126).

flowd stopping or dying closes the socket; the keeper then only waits for the programs it
started, recording how each ends, and exits after the last (removing its journal). A restarted flowd starts a new
keeper and watches the old keeper's programs by pid. Frames are a 4-byte big-endian length and
a JSON object, both ways; exits go to a second, non-blocking pipe (a flowd that stopped reading
loses nothing: the files have it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import stat
import sys

TYPE_CHECKING = False  # typing costs start-up; mypy reads this name
if TYPE_CHECKING:
    from typing import Any

NOT_STARTED = 'printf "flow: cannot run %s: %s\\n" "$1" "$2" >&2; exit "$3"'


def read_frame(fd: int, pending: bytearray) -> list[Any] | None:
    """The complete frames that arrived (None at EOF); keeps a partial one in `pending`."""
    data = os.read(fd, 1 << 20)
    if not data:
        return None
    pending += data
    return split_frames(pending)


def split_frames(pending: bytearray) -> list[Any]:
    """The complete frames at the start of `pending`, taken out of it (flowd reads the keeper's
    answers with this too: one framing, both ends)."""
    frames = []
    while len(pending) >= 4:
        size = int.from_bytes(pending[:4], "big")
        if len(pending) < 4 + size:
            break
        frames.append(json.loads(pending[4 : 4 + size]))
        del pending[: 4 + size]
    return frames


def frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message).encode()
    return len(data).to_bytes(4, "big") + data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def start_ticks(pid: int) -> int | None:
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, 1024)
        finally:
            os.close(fd)
        return int(raw[raw.rfind(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def executable(program: str, env: dict[str, str]) -> str:
    """The file to run for `program`, as a shell finds it: itself when it names a directory,
    else the first executable file of that name in the task's PATH (relative entries against
    the cwd), else the first such file at all (it then fails to start: 126). Looked up before
    the one spawn: a failed spawn per PATH entry would create a process each time."""
    if "/" in program:
        return program
    found: str | None = None
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", program)
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            continue
        if regular and os.access(path, os.X_OK):
            return path
        found = found or path
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", program)
    return found


def spawn(argv: list[str], env: dict[str, str], output: int) -> int:
    """posix_spawn (a vfork and an exec: no Python runs in the child) of argv in a new session,
    stdin from /dev/null, stdout and stderr to `output`, SIGPIPE and SIGXFSZ back to their
    defaults (Python ignores them; programs expect them); in the keeper's cwd."""
    return os.posix_spawn(
        executable(argv[0], env),
        argv,
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, output, 1),
            (os.POSIX_SPAWN_DUP2, output, 2),
        ],
        setsid=True,
        setsigmask=(),
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
    )


class Keeper:
    def __init__(self, requests: int, exits: int, journals: str) -> None:
        self.requests = requests
        self.exits = exits
        self.connected = True
        # Which process each task is, for a flowd restarted before it saved that: one line per
        # start, "<task key> <pid> <start ticks>", appended (no file per task).
        self.journal_path = os.path.join(journals, f"{os.getpid()}.journal")
        self.journal = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.children: dict[int, tuple[str, int | None]] = {}  # pid -> (its exit status file, start ticks)

    def start(self, request: dict[str, Any]) -> dict[str, Any]:
        for directory in request.get("dirs", ()):
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory, 0o700)
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        argv = [str(a) for a in request["argv"]]
        env = request["env"]
        try:
            os.chdir(request["cwd"])
            try:
                pid = spawn(argv, env, output)
            except OSError as exc:  # as a shell: 127 not found, 126 found but not runnable
                code = 127 if isinstance(exc, FileNotFoundError | NotADirectoryError) else 126
                why = exc.strerror or str(exc)
                pid = spawn(["/bin/sh", "-c", NOT_STARTED, "sh", argv[0] if argv else "", why, str(code)], env, output)
        finally:
            os.close(output)
            os.chdir("/")
        ticks = start_ticks(pid)
        self.children[pid] = (request["exit_file"], ticks)
        os.write(self.journal, f"{request['key']} {pid} {ticks}\n".encode())
        return {"pid": pid, "ticks": ticks}

    def reap(self) -> None:
        """Records and reaps every child that ended (status written while it is a zombie)."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            code = info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status
            exit_file, ticks = self.children.pop(pid, ("", None))
            if exit_file:
                with contextlib.suppress(OSError):  # its directory is gone: nobody will ask
                    write_file(exit_file, f"{code}\n")
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            if self.connected:
                try:
                    os.write(self.exits, frame({"pid": pid, "ticks": ticks, "code": code}))
                except BlockingIOError:
                    pass  # flowd is not reading: it finds the status in the file
                except OSError:
                    self.connected = False

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        pending = bytearray()
        while self.connected or self.children:
            watched = [wake_r, self.requests] if self.connected else [wake_r]
            try:
                ready, _, _ = select.select(watched, [], [], 5.0)
            except InterruptedError:
                ready = []
            if wake_r in ready:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            self.reap()
            if self.requests in ready:
                try:
                    frames = read_frame(self.requests, pending)
                except OSError:
                    frames = None
                if frames is None:
                    self.connected = False
                    continue
                for request in frames:
                    try:
                        answer = self.start(request)
                    except Exception as exc:  # noqa: BLE001 - told to flowd, which fails the launch
                        answer = {"error": f"{type(exc).__name__}: {exc}"}
                    answer["id"] = request.get("id")
                    try:
                        write_all(self.requests, frame(answer))
                    except OSError:
                        self.connected = False
                        break


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # inherited by every program, as under nohup
    requests, exits = int(argv[1]), int(argv[2])
    for fd in (requests, exits):  # not inherited by the programs
        os.set_inheritable(fd, False)
    os.set_blocking(exits, False)
    os.chdir("/")
    keeper = Keeper(requests, exits, argv[3])
    keeper.serve()
    os.unlink(keeper.journal_path)  # every program it started has ended, its status recorded
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
