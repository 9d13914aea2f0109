#!/usr/bin/env python3
"""`docker` on a fake Mithril instance (tests/fakes/mithril.py), which has no Docker engine.

Installed as `docker` in ~/.fake-mithril/bin of the instances' user; the startup script and SSH
commands find it first on PATH. Containers are plain host processes, run as that user. What it
emulates, exactly:

- `docker run [--rm] [-d] [--name N] [--gpus X] [-e K=V | -e K] [--env-file F] [-v SRC:DST[:ro]]
  [-w DIR] [--network/--net X] [-p A:B] [--restart X] [--log-driver X] [--log-opt X] [-l K=V]
  [--label K=V] [--shm-size X] [--ipc X] [--pull X] [--init] [-i] [-t] IMAGE CMD...` runs CMD
  directly on the host (the image is ignored: it needs a CMD), in its own session, with the
  caller's environment plus the -e values, and NVIDIA_VISIBLE_DEVICES=all when --gpus is given.
  `-v SRC:DST`: when DST does not exist and can be created as a symlink to SRC, it is; otherwise
  paths are left as they are. `-w DIR`: a DIR that is the DST of a -v runs in that SRC; a missing
  DIR is created (exit 125 when it cannot be). -p, --network, --restart, --log-*, labels, --shm-size
  and --ipc are accepted and ignored. Output (stdout and stderr together) goes to the container's
  log; a foreground run also copies it to the shim's stdout and exits with the command's code.
  `-d` prints a 64-hex id and returns at once. A name in use is an error (exit 125), as in Docker.
- `docker pull IMAGE`, `docker info`, `docker version`: succeed.
- `docker logs [-f] [--tail N] NAME`: the log (stdout and stderr together, on stdout); -f follows
  it until the container exits.
- `docker wait NAME...`: waits for each to exit, prints each exit code.
- `docker stop [-t S] NAME...` (TERM, KILL after S, default 10 s), `docker kill NAME...` (KILL),
  `docker rm [-f] NAME...` (-f kills a running one first; without it a running one is an error).
- `docker ps [-a] [-q]` and `docker inspect [-f TEMPLATE] NAME` (templates {{.State.Running}},
  {{.State.ExitCode}}, {{.State.Status}}, {{.Id}}, {{.Name}}; without -f, a JSON list).

Anything else exits 125 naming the unsupported command or option. State lives under
$FAKE_MITHRIL_DOCKER_DIR (default ~/.fake-mithril/docker): one directory per container with
meta.json, log and exit_code. Containers record $FAKE_MITHRIL_INSTANCE, so the fake can remove
an instance's containers when it terminates the instance. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("FAKE_MITHRIL_DOCKER_DIR") or Path.home() / ".fake-mithril" / "docker")

# Options of `docker run` that take a value, and those that do not.
_RUN_VALUED = {
    "--name", "--gpus", "-e", "--env", "--env-file", "-v", "--volume", "-w", "--workdir", "--network", "--net",
    "-p", "--publish", "--restart", "--log-driver", "--log-opt", "-l", "--label", "--shm-size", "--ipc", "--pull",
    "-u", "--user", "--entrypoint", "--cpus", "--memory", "-m", "--ulimit", "--hostname", "-h",
}  # fmt: skip
_RUN_FLAGS = {"--rm", "-d", "--detach", "--init", "-i", "--interactive", "-t", "--tty", "-it", "-ti", "--privileged"}
_RUN_UNSUPPORTED = {"-u", "--user", "--entrypoint"}


def die(message: str, code: int = 125) -> None:
    print(f"docker (fake Mithril shim): {message}", file=sys.stderr)
    sys.exit(code)


def container_dir(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        die(f"invalid container name {name!r}")
    return STATE / name


def read_meta(name: str) -> dict[str, Any]:
    path = container_dir(name) / "meta.json"
    if not path.exists():
        # Also accept an id (or its 12-character prefix).
        for meta_path in STATE.glob("*/meta.json") if STATE.exists() else []:
            meta = json.loads(meta_path.read_text())
            if len(name) >= 12 and str(meta["id"]).startswith(name):
                return dict(meta)
        die(f"Error response from daemon: No such container: {name}", 1)
    return dict(json.loads(path.read_text()))


def exit_code(name: str) -> int | None:
    path = container_dir(name) / "exit_code"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def running(meta: dict[str, Any]) -> bool:
    if exit_code(meta["name"]) is not None:
        return False
    pid = int(meta.get("pid") or 0)
    if pid <= 0:
        return True  # being started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parse_run(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"env": [], "volumes": [], "flags": set(), "name": None, "workdir": None, "gpus": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "--":
            i += 1
            break
        key, eq, inline = arg.partition("=")
        if key in _RUN_FLAGS and not eq:
            opts["flags"].add({"--detach": "-d", "-it": "-t", "-ti": "-t"}.get(key, key))
            i += 1
            continue
        if key not in _RUN_VALUED:
            die(f"unsupported option for run: {arg}")
        if key in _RUN_UNSUPPORTED:
            die(f"unsupported option for run: {key} (the shim runs commands as the instance's user)")
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(argv):
                die(f"flag needs an argument: {arg}")
            value = argv[i + 1]
            i += 2
        if key in ("-e", "--env"):
            opts["env"].append(value)
        elif key == "--env-file":
            for line in Path(value).read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    opts["env"].append(line)
        elif key in ("-v", "--volume"):
            opts["volumes"].append(value)
        elif key == "--name":
            opts["name"] = value
        elif key in ("-w", "--workdir"):
            opts["workdir"] = value
        elif key == "--gpus":
            opts["gpus"] = value
    if i >= len(argv):
        die('"docker run" requires at least 1 argument (IMAGE)')
    opts["image"] = argv[i]
    opts["cmd"] = argv[i + 1 :]
    if not opts["cmd"]:
        die(f"image {opts['image']}: the fake has no images, so `docker run` needs a command")
    return opts


def run(argv: list[str]) -> None:
    opts = parse_run(argv)
    env = dict(os.environ)
    if opts["gpus"] is not None:
        env.setdefault("NVIDIA_VISIBLE_DEVICES", "all")
    for item in opts["env"]:
        key, eq, value = item.partition("=")
        if eq:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    mounts: dict[str, str] = {}
    for spec in opts["volumes"]:
        parts = spec.split(":")
        if len(parts) < 2:
            continue  # an anonymous volume: nothing to map
        src, dst = parts[0], parts[1]
        mounts[dst.rstrip("/") or "/"] = src
        if src != dst and not os.path.lexists(dst):
            with contextlib.suppress(OSError):  # else left as it is (documented)
                os.symlink(src, dst)
    cwd = None
    if opts["workdir"]:
        cwd = mounts.get(opts["workdir"].rstrip("/") or "/", opts["workdir"])
        try:
            os.makedirs(cwd, exist_ok=True)
        except OSError as exc:
            die(f"cannot use working directory {opts['workdir']}: {exc}")
    name = opts["name"] or f"fake_{secrets.token_hex(4)}"
    cid = secrets.token_hex(32)
    STATE.mkdir(parents=True, exist_ok=True)
    cdir = container_dir(name)
    try:
        cdir.mkdir()
    except FileExistsError:
        holder = read_meta(name)
        die(
            f'Conflict. The container name "/{name}" is already in use by container "{holder["id"]}". '
            "You have to remove (or rename) that container to be able to reuse that name."
        )
    meta: dict[str, Any] = {
        "id": cid,
        "name": name,
        "image": opts["image"],
        "cmd": opts["cmd"],
        "pid": 0,
        "instance": os.environ.get("FAKE_MITHRIL_INSTANCE", ""),
        "created": time.time(),
        "rm": "--rm" in opts["flags"],
    }
    (cdir / "meta.json").write_text(json.dumps(meta))
    log_path = cdir / "log"
    detach = "-d" in opts["flags"]
    if detach:
        if os.fork() != 0:
            print(cid)
            sys.stdout.flush()
            os._exit(0)
        # The supervisor: lets go of the caller's streams so `$(docker run -d ...)` returns.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    with open(log_path, "ab", buffering=0) as log:
        try:
            proc = subprocess.Popen(
                opts["cmd"],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if not detach else log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            (cdir / "exit_code").write_text("127")
            if not detach:
                die(f"failed to start {opts['cmd'][0]!r}: {exc}", 127)
            os._exit(127)
        meta["pid"] = proc.pid
        tmp = cdir / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(cdir / "meta.json")
        if not detach:
            forward = signal.getsignal(signal.SIGTERM)

            def _term(signum: int, frame: object) -> None:
                del frame
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signum)
                signal.signal(signum, forward)

            signal.signal(signal.SIGTERM, _term)
            signal.signal(signal.SIGINT, _term)
            stdout = proc.stdout
            assert stdout is not None
            for chunk in iter(lambda: os.read(stdout.fileno(), 65536), b""):
                log.write(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        code = proc.wait()
    code = 128 - code if code < 0 else code
    (cdir / "exit_code").write_text(str(code))
    if meta["rm"]:
        remove_dir(cdir)
    if detach:
        os._exit(0)
    sys.exit(code)


def remove_dir(cdir: Path) -> None:
    for child in cdir.iterdir():
        child.unlink(missing_ok=True)
    cdir.rmdir()


def kill(meta: dict[str, Any], sig: int) -> None:
    pid = int(meta.get("pid") or 0)
    if pid > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


def stop(meta: dict[str, Any], grace: float) -> None:
    kill(meta, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running(meta) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running(meta):
        kill(meta, signal.SIGKILL)
    wait_exit(meta, 5.0)


def wait_exit(meta: dict[str, Any], timeout: float | None = None) -> int | None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        code = exit_code(meta["name"])
        if code is not None:
            return code
        if not running(meta) and meta.get("pid"):
            time.sleep(0.1)  # the supervisor writes exit_code right after
            code = exit_code(meta["name"])
            return 137 if code is None else code
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def logs(argv: list[str]) -> None:
    follow, tail, names = False, None, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-f", "--follow"):
            follow = True
        elif arg in ("-n", "--tail"):
            tail = argv[i + 1]
            i += 1
        elif arg.startswith("--tail="):
            tail = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            die(f"unsupported option for logs: {arg}")
        else:
            names.append(arg)
        i += 1
    if len(names) != 1:
        die('"docker logs" requires exactly 1 argument')
    meta = read_meta(names[0])
    path = container_dir(meta["name"]) / "log"
    data = path.read_bytes() if path.exists() else b""
    if tail not in (None, "all"):
        count = int(str(tail))
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-count:]) if count > 0 else b""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    if not follow:
        return
    offset = path.stat().st_size if path.exists() else 0
    while True:
        done = not running(meta)
        if path.exists():
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            if chunk:
                offset += len(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        if done:
            return
        time.sleep(0.1)


def inspect(argv: list[str]) -> None:
    template, names = None, []
    i = 0
    while i < len(argv):
        if argv[i] in ("-f", "--format"):
            template = argv[i + 1]
            i += 2
            continue
        if argv[i].startswith("--format="):
            template = argv[i].split("=", 1)[1]
        elif argv[i].startswith("-"):
            die(f"unsupported option for inspect: {argv[i]}")
        else:
            names.append(argv[i])
        i += 1
    out = []
    for name in names:
        meta = read_meta(name)
        alive = running(meta)
        code = exit_code(meta["name"])
        state = {"Running": alive, "ExitCode": 0 if code is None else code, "Status": "running" if alive else "exited"}
        if template is None:
            out.append(
                {"Id": meta["id"], "Name": "/" + meta["name"], "Config": {"Image": meta["image"]}, "State": state}
            )
            continue
        fields = {
            "{{.State.Running}}": str(alive).lower(),
            "{{.State.ExitCode}}": str(state["ExitCode"]),
            "{{.State.Status}}": str(state["Status"]),
            "{{.Id}}": meta["id"],
            "{{.Name}}": "/" + meta["name"],
        }
        text = template
        for key, value in fields.items():
            text = text.replace(key, value)
        if "{{" in text:
            die(f"unsupported inspect template: {template}")
        print(text)
    if template is None:
        print(json.dumps(out, indent=4))


def ps(argv: list[str]) -> None:
    show_all = "-a" in argv or "--all" in argv
    quiet = "-q" in argv or "--quiet" in argv
    for arg in argv:
        if arg not in ("-a", "--all", "-q", "--quiet"):
            die(f"unsupported option for ps: {arg}")
    if not quiet:
        print("CONTAINER ID   IMAGE   COMMAND   STATUS   NAMES")
    for meta_path in sorted(STATE.glob("*/meta.json")) if STATE.exists() else []:
        meta = json.loads(meta_path.read_text())
        alive = running(meta)
        if not alive and not show_all:
            continue
        if quiet:
            print(meta["id"][:12])
        else:
            status = "Up" if alive else f"Exited ({exit_code(meta['name'])})"
            print(f"{meta['id'][:12]}   {meta['image']}   {' '.join(meta['cmd'])[:20]!r}   {status}   {meta['name']}")


def main(argv: list[str]) -> None:
    if not argv:
        die("usage: docker COMMAND (fake Mithril shim: run, pull, logs, wait, stop, kill, rm, ps, inspect)")
    command, rest = argv[0], argv[1:]
    if command == "run":
        run(rest)
    elif command == "pull":
        print(f"fake docker: {rest[-1] if rest else ''}: nothing to pull (commands run on the host)")
    elif command in ("info", "version"):
        print("fake docker (tests/fakes/shims/docker.py): no engine; containers are host processes")
    elif command == "logs":
        logs(rest)
    elif command == "wait":
        for name in rest:
            print(wait_exit(read_meta(name)))
    elif command in ("stop", "kill", "rm"):
        force = False
        grace = 10.0
        names: list[str] = []
        i = 0
        while i < len(rest):
            arg = rest[i]
            if command == "rm" and arg in ("-f", "--force"):
                force = True
            elif command == "stop" and arg in ("-t", "--time"):
                grace = float(rest[i + 1])
                i += 1
            elif command == "kill" and arg in ("-s", "--signal"):
                die("unsupported option for kill: --signal")
            elif arg.startswith("-"):
                die(f"unsupported option for {command}: {arg}")
            else:
                names.append(arg)
            i += 1
        for name in names:
            meta = read_meta(name)
            if command == "stop":
                stop(meta, grace)
            elif command == "kill":
                if not running(meta):
                    die(f"Error response from daemon: container {name} is not running", 1)
                kill(meta, signal.SIGKILL)
                wait_exit(meta, 5.0)
            else:
                if running(meta):
                    if not force:
                        die(f"Error response from daemon: container {name} is running: stop it or use -f", 1)
                    kill(meta, signal.SIGKILL)
                    wait_exit(meta, 5.0)
                cdir = container_dir(meta["name"])
                if cdir.exists():
                    remove_dir(cdir)
            print(name)
    elif command == "ps":
        ps(rest)
    elif command == "inspect":
        inspect(rest)
    else:
        die(f"unsupported command: docker {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
