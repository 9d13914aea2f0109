"""Slurm's batch environment for an sbatch script running on a provider that is not Slurm.

This file is written into the task by the wrapper `flow slurm submit` gives such a task
(flow.domain.slurm.emulation) and run by the task's own python3, so it imports nothing but the
standard library.

    python3 flow_slurm.py batch DIR        run DIR/job.sbatch as sbatch runs a batch script
    python3 flow_slurm.py srun [OPTIONS] COMMAND [ARGS...]
    python3 flow_slurm.py scontrol show hostnames|hostlist|job [ARG]

`batch` runs on every node of the task: on the first it sets what only the running task knows
(SLURM_JOB_ID, SLURM_NODEID, SLURM_PROCID, SLURM_JOB_NODELIST, SLURM_SUBMIT_DIR, ...; the static
variables come with the task's env), puts `srun` and `scontrol` first on PATH and runs the
script's body once; on the other nodes it ends at once, as their share of a Slurm allocation
waits for srun. Its exit status is the script's.

`srun` runs COMMAND once per task of the step, with Slurm's rank variables (SLURM_PROCID,
SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_*), waits for all of them and exits with the highest
status, as srun does. The tasks of all nodes run on this machine, which is right where every node
of the task is a process of this machine (the local provider: MASTER_ADDR is a loopback address);
where the nodes are separate machines, a step may use the first node only. Options honoured:
-N/--nodes, -n/--ntasks, --ntasks-per-node, -c/--cpus-per-task, -l/--label, -D/--chdir,
--export, -J/--job-name, -o/--output, -e/--error, -i/--input (none), -K/--kill-on-bad-exit,
--gpus-per-task. Accepted and without effect outside Slurm: the binding, memory, time,
partition, account, MPI and scheduling options (see IGNORED); any other option is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import zlib

TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import IO

SHIM_FILE = "flow_slurm.py"
JOB_FILE = "job.sbatch"
STEPS_FILE = "steps"
DIR_VAR = "FLOW_SLURM_DIR"
NODES_VAR = "SLURM_JOB_NODELIST"

# srun's options: long name -> (short letter, takes a value)
HONOURED = {
    "nodes": ("N", True),
    "ntasks": ("n", True),
    "ntasks-per-node": (None, True),
    "cpus-per-task": ("c", True),
    "label": ("l", False),
    "chdir": ("D", True),
    "export": (None, True),
    "job-name": ("J", True),
    "output": ("o", True),
    "error": ("e", True),
    "input": ("i", True),
    "kill-on-bad-exit": ("K", None),  # an optional value: -K, --kill-on-bad-exit[=0|1]
    "gpus-per-task": (None, True),
}
IGNORED = {
    "account": ("A", True),
    "partition": ("p", True),
    "qos": ("q", True),
    "time": ("t", True),
    "mem": (None, True),
    "mem-per-cpu": (None, True),
    "mem-per-gpu": (None, True),
    "mem-bind": (None, True),
    "cpu-bind": (None, True),
    "gpu-bind": (None, True),
    "accel-bind": (None, True),
    "distribution": ("m", True),
    "mpi": (None, True),
    "gres": (None, True),
    "gpus": ("G", True),
    "gpus-per-node": (None, True),
    "cpus-per-gpu": (None, True),
    "constraint": ("C", True),
    "exclusive": (None, None),
    "overlap": (None, False),
    "oversubscribe": ("s", False),
    "overcommit": ("O", False),
    "unbuffered": ("u", False),
    "quiet": ("Q", False),
    "verbose": ("v", False),
    "wait": ("W", True),
    "hint": (None, True),
    "threads-per-core": (None, True),
    "network": (None, True),
    "propagate": (None, None),
    "container": (None, True),
    "container-image": (None, True),
    "container-mounts": (None, True),
    "container-workdir": (None, True),
    "no-container-mount-home": (None, False),
    "pty": (None, False),
}
OPTIONS = {**HONOURED, **IGNORED}
SHORT = {short: name for name, (short, _) in OPTIONS.items() if short}


class SrunError(Exception):
    """A step that cannot run as asked (exit status 1, as srun's)."""


# --- what the task is ------------------------------------------------------------------------


def job_number(key: str) -> int:
    """A Slurm-like job id (seven digits) for a Flow task or array id: the same key, the same id."""
    return zlib.crc32(key.encode()) % 9_000_000 + 1_000_000


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


def node_rank() -> int:
    return _int("FLOW_NODE_RANK", _int("NODE_RANK", 0))


def node_count() -> int:
    return _int("SLURM_NNODES", _int("FLOW_NUM_NODES", _int("NNODES", 1)))


def same_machine() -> bool:
    """Whether every node of the task runs on this machine (the local provider's nodes)."""
    return node_count() == 1 or os.environ.get("MASTER_ADDR", "127.0.0.1").startswith("127.")


def node_names(count: int) -> list[str]:
    """The nodes' names: this host for one node; loopback addresses for nodes on this machine
    (each resolves here); the first node's address where they are separate machines."""
    if count == 1:
        return [socket.gethostname().split(".")[0] or "localhost"]
    if same_machine():
        return [f"127.0.0.{k + 1}" for k in range(count)]
    return [os.environ.get("MASTER_ADDR", "localhost")]


# --- host lists ------------------------------------------------------------------------------


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (part.strip() for part in parts) if p]


def expand_hostlist(text: str) -> list[str]:
    """Slurm's host list syntax ('node[1-3,7],gpu[01-02]') as names, in order."""
    names: list[str] = []
    for item in _split_top(text):
        match = re.match(r"([^\[]*)\[([^\]]*)\](.*)$", item)
        if match is None:
            names.append(item)
            continue
        head, ranges, tail = match.groups()
        for part in ranges.split(","):
            low, dash, high = part.partition("-")
            if not low.isdigit() or (dash and not high.isdigit()):
                raise ValueError(f"{item!r} is not a host list")
            for number in range(int(low), int(high if dash else low) + 1):
                names += expand_hostlist(f"{head}{str(number).zfill(len(low))}{tail}")
    return names


def compress_hostlist(names: Sequence[str]) -> str:
    """Names as one host list: runs of numbered names with a common prefix become ranges."""
    groups: list[tuple[str, list[tuple[int, str]]]] = []
    for name in names:
        match = re.match(r"(.*?)(\d+)$", name)
        if match is None:
            groups.append((name, []))
            continue
        head, digits = match.groups()
        if groups and groups[-1][0] == head and groups[-1][1]:
            groups[-1][1].append((int(digits), digits))
        else:
            groups.append((head, [(int(digits), digits)]))
    out = []
    for head, numbers in groups:
        if not numbers:
            out.append(head)
            continue
        if len(numbers) == 1:
            out.append(head + numbers[0][1])
            continue
        runs: list[list[tuple[int, str]]] = []
        for number in numbers:
            if runs and number[0] == runs[-1][-1][0] + 1 and len(number[1]) == len(runs[-1][-1][1]):
                runs[-1].append(number)
            else:
                runs.append([number])
        shown = ",".join(r[0][1] if len(r) == 1 else f"{r[0][1]}-{r[-1][1]}" for r in runs)
        out.append(f"{head}[{shown}]")
    return ",".join(out)


# --- batch -----------------------------------------------------------------------------------


def _forwarding(children: Callable[[], Sequence[subprocess.Popen[bytes]]]) -> None:
    """TERM, INT and HUP reach the children (the script; a step's tasks) instead of ending us
    first: they end, and we report how."""

    def forward(signum: int, _frame: object) -> None:
        for child in children():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


def batch(directory: str) -> int:
    try:
        if node_rank() != 0:
            return 0  # the body runs on the first node; srun there starts this node's tasks
        env = dict(os.environ)
        count = node_count()
        nodes = node_names(count)
        job_id = str(job_number(env.get("FLOW_TASK_ID", "") or directory))
        host = socket.gethostname()
        env.update(
            {
                "SLURM_JOB_ID": job_id,
                "SLURM_JOBID": job_id,
                NODES_VAR: ",".join(nodes),
                "SLURM_NODELIST": ",".join(nodes),
                "SLURM_NNODES": str(count),
                "SLURM_JOB_NUM_NODES": str(count),
                "SLURM_NODEID": "0",
                "SLURM_PROCID": "0",
                "SLURM_LOCALID": "0",
                "SLURMD_NODENAME": nodes[0],
                "SLURM_TOPOLOGY_ADDR": nodes[0],
                "SLURM_SUBMIT_DIR": os.getcwd(),
                "SLURM_SUBMIT_HOST": host,
                "SLURM_CLUSTER_NAME": "flow",
                "SLURM_CPUS_ON_NODE": str(os.cpu_count() or 1),
                "ENVIRONMENT": "BATCH",
                DIR_VAR: directory,
            }
        )
        env.setdefault("SLURM_NTASKS", str(count))
        env.setdefault("SLURM_NPROCS", env["SLURM_NTASKS"])
        env.setdefault("SLURM_JOB_NAME", JOB_FILE)
        array = env.get("FLOW_ARRAY_ID")
        if array and env.get("SLURM_ARRAY_TASK_ID"):
            env["SLURM_ARRAY_JOB_ID"] = str(job_number(array))
        bin_dir = os.path.join(directory, "bin")
        os.makedirs(bin_dir, exist_ok=True)
        shim = os.path.join(directory, SHIM_FILE)
        for command in ("srun", "scontrol"):
            path = os.path.join(bin_dir, command)
            with open(path, "w") as handle:
                handle.write(f'#!/bin/sh\nexec "{sys.executable}" "{shim}" {command} "$@"\n')
            os.chmod(path, 0o700)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        child = subprocess.Popen([os.path.join(directory, JOB_FILE)], env=env)
        _forwarding(lambda: [child])
        return _status(child.wait())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- srun ------------------------------------------------------------------------------------


def parse_srun(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """srun's options (long names -> values; "" for flags) and the command after them (option
    parsing stops at the first argument that is not an option, as srun's does)."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return options, list(argv[i + 1 :])
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name not in OPTIONS:
                raise SrunError(f"unrecognized option '--{name}' (Flow's srun outside Slurm: see `srun --help`)")
            takes = OPTIONS[name][1]
            if takes is True and not eq:
                if i + 1 >= len(argv):
                    raise SrunError(f"option '--{name}' requires an argument")
                i += 1
                value = argv[i]
            elif takes is False and eq:
                raise SrunError(f"option '--{name}' doesn't allow an argument")
            options[name] = value
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                name = SHORT.get(arg[j], "")
                if not name:
                    raise SrunError(f"invalid option -- '{arg[j]}'")
                takes = OPTIONS[name][1]
                if takes is True:
                    value = arg[j + 1 :]
                    if not value:
                        if i + 1 >= len(argv):
                            raise SrunError(f"option requires an argument -- '{arg[j]}'")
                        i += 1
                        value = argv[i]
                    options[name] = value
                    break
                options[name] = arg[j + 1 :] if takes is None else ""
                if takes is None:
                    break
                j += 1
        else:
            return options, list(argv[i:])
        i += 1
    return options, []


def _count_option(options: dict[str, str], name: str) -> int | None:
    if name not in options:
        return None
    value = options[name].split("-")[0]  # "-N 2-4": a range; the step takes its least
    if not value.isdigit() or int(value) < 1:
        raise SrunError(f"--{name}={options[name]} is not a count above 0")
    return int(value)


def step_layout(options: dict[str, str], env: dict[str, str]) -> list[int]:
    """How many of the step's tasks each of its nodes runs (block distribution, as srun's
    default): tasks from -n, else nodes x --ntasks-per-node, else the job's own count."""
    job_nodes = _int("SLURM_JOB_NUM_NODES", node_count())
    nodes = _count_option(options, "nodes")
    ntasks = _count_option(options, "ntasks")
    per_node = _count_option(options, "ntasks-per-node")
    if nodes is not None and nodes > job_nodes:
        raise SrunError(f"Only allocated {job_nodes} nodes asked for {nodes}")
    if ntasks is None:
        if per_node is not None:
            ntasks = (nodes or job_nodes) * per_node
        elif nodes is not None:
            ntasks = nodes
        else:
            job_tasks = env.get("SLURM_NTASKS", "")
            ntasks = int(job_tasks) if job_tasks.isdigit() else job_nodes
    if nodes is None:
        nodes = min(job_nodes, ntasks)
        if per_node is not None:
            nodes = min(job_nodes, -(-ntasks // per_node))
    nodes = min(nodes, ntasks)
    base, extra = divmod(ntasks, nodes)
    return [base + (1 if k < extra else 0) for k in range(nodes)]


def _gpu_share(env: dict[str, str], node: int, nodes: int, local: int, per_task: int | None) -> str | None:
    """The GPUs a task of the step sees: its node's share of the task's GPUs, and of those its
    own --gpus-per-task (None: as they are)."""
    every = env.get("FLOW_TASK_GPUS")
    if every is not None and node_count() > 1:
        gpus = [g for g in every.split(",") if g]
        size = len(gpus) // max(node_count(), 1)
        share = gpus[node * size : (node + 1) * size]
    elif "CUDA_VISIBLE_DEVICES" in env:
        share = [g for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g]
    else:
        return None
    if per_task:
        share = share[local * per_task : (local + 1) * per_task]
    return ",".join(share)


def _file_name(pattern: str, env: dict[str, str], procid: int, node: int, nodename: str) -> str:
    values = {
        "t": str(procid),
        "n": str(node),
        "N": nodename,
        "j": env.get("SLURM_JOB_ID", "0"),
        "J": f"{env.get('SLURM_JOB_ID', '0')}.{env.get('SLURM_STEP_ID', '0')}",
        "s": env.get("SLURM_STEP_ID", "0"),
        "x": env.get("SLURM_JOB_NAME", ""),
        "u": os.environ.get("USER", ""),
        "A": env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "0")),
        "a": env.get("SLURM_ARRAY_TASK_ID", "4294967294"),
        "%": "%",
    }
    return re.sub(r"%(\d*)([tnNjJsxuAa%])", lambda m: values[m.group(2)].zfill(int(m.group(1) or 0)), pattern)


def _exported(options: dict[str, str], env: dict[str, str]) -> dict[str, str]:
    """--export: ALL (the default), NONE (Slurm's variables only), or names and NAME=value."""
    spec = options.get("export")
    if spec is None:
        return env
    items = [item for item in spec.split(",") if item]
    keep_all = any(item.upper() == "ALL" for item in items)
    out = dict(env) if keep_all else {k: v for k, v in env.items() if k.startswith(("SLURM_", "FLOW_", "PATH"))}
    for item in items:
        name, eq, value = item.partition("=")
        if name.upper() in ("ALL", "NONE", "NIL"):
            continue
        if eq:
            out[name] = value
        elif name in env:
            out[name] = env[name]
    return out


def _next_step(env: dict[str, str]) -> int:
    directory = env.get(DIR_VAR, "")
    if not directory:
        return 0
    path = os.path.join(directory, STEPS_FILE)
    try:
        with open(path) as handle:
            step = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        step = 0
    try:
        with open(path, "w") as handle:
            handle.write(str(step + 1))
    except OSError:
        pass
    return step


def _copy_lines(source: IO[bytes], sink: IO[bytes], prefix: bytes, lock: threading.Lock) -> None:
    for line in iter(source.readline, b""):
        with lock:
            sink.write(prefix + line)
            sink.flush()


def srun(argv: Sequence[str]) -> int:
    if list(argv[:1]) in (["--help"], ["--usage"]):
        print(__doc__)
        return 0
    try:
        options, command = parse_srun(argv)
        if not command:
            raise SrunError("no command to run: srun [OPTIONS] COMMAND [ARGS...]")
        env = dict(os.environ)
        layout = step_layout(options, env)
    except SrunError as exc:
        print(f"srun: error: {exc}", file=sys.stderr)
        return 1
    if len(layout) > 1 and not same_machine():
        print(
            f"srun: error: this step spans {len(layout)} nodes, and outside Slurm Flow's srun reaches only the "
            "first node where the task's nodes are separate machines; run the script on a Slurm provider "
            "(or on the local provider), or ask for one node: srun -N1 ...",
            file=sys.stderr,
        )
        return 1
    names = expand_hostlist(env.get(NODES_VAR, "")) or node_names(len(layout))
    ntasks = sum(layout)
    step = _next_step(env)
    per_task_gpus = _count_option(options, "gpus-per-task") if "gpus-per-task" in options else None
    label = "label" in options
    kill_on_bad_exit = "kill-on-bad-exit" in options and options["kill-on-bad-exit"] != "0"
    step_nodes = names[: len(layout)]
    common = {
        "SLURM_STEP_ID": str(step),
        "SLURM_STEPID": str(step),
        "SLURM_STEP_NUM_TASKS": str(ntasks),
        "SLURM_STEP_NUM_NODES": str(len(layout)),
        "SLURM_STEP_NODELIST": compress_hostlist(step_nodes),
        "SLURM_STEP_TASKS_PER_NODE": ",".join(str(n) for n in layout),
        "SLURM_TASKS_PER_NODE": ",".join(str(n) for n in layout),
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NPROCS": str(ntasks),
        "SLURM_NNODES": str(len(layout)),
    }
    if "cpus-per-task" in options:
        common["SLURM_CPUS_PER_TASK"] = options["cpus-per-task"]
    if "job-name" in options:
        common["SLURM_JOB_NAME"] = options["job-name"]
    children: list[subprocess.Popen[bytes]] = []
    copiers: list[threading.Thread] = []
    lock = threading.Lock()
    opened: list[IO[bytes]] = []
    _forwarding(lambda: children)
    cwd = options.get("chdir") or None
    procid = 0
    try:
        for node, tasks in enumerate(layout):
            for local in range(tasks):
                task_env = _exported(options, {**env, **common})
                task_env.update(
                    {
                        "SLURM_PROCID": str(procid),
                        "SLURM_LOCALID": str(local),
                        "SLURM_NODEID": str(node),
                        "SLURMD_NODENAME": step_nodes[node] if node < len(step_nodes) else names[-1],
                    }
                )
                gpus = _gpu_share(env, node, len(layout), local, per_task_gpus)
                if gpus is not None:
                    task_env["CUDA_VISIBLE_DEVICES"] = gpus
                stdout: int | IO[bytes] | None = None
                stderr: int | IO[bytes] | None = None
                nodename = task_env["SLURMD_NODENAME"]
                if "output" in options:
                    stdout = open(_file_name(options["output"], task_env, procid, node, nodename), "ab")  # noqa: SIM115
                    opened.append(stdout)
                    stderr = stdout
                if "error" in options:
                    stderr = open(_file_name(options["error"], task_env, procid, node, nodename), "ab")  # noqa: SIM115
                    opened.append(stderr)
                if label:
                    stdout = subprocess.PIPE if stdout is None else stdout
                    stderr = subprocess.PIPE if stderr is None else stderr
                child = subprocess.Popen(
                    command, env=task_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
                )
                children.append(child)
                prefix = f"{procid}: ".encode()
                for stream, sink in ((child.stdout, sys.stdout.buffer), (child.stderr, sys.stderr.buffer)):
                    if stream is not None:
                        copier = threading.Thread(target=_copy_lines, args=(stream, sink, prefix, lock), daemon=True)
                        copier.start()
                        copiers.append(copier)
                procid += 1
    except OSError as exc:
        for child in children:
            child.kill()
        print(f"srun: error: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 2
    codes: list[int] = [0] * len(children)
    pending = set(range(len(children)))
    stopped: set[int] = set()  # stopped for another's failure: their status is not the step's
    while pending:
        for k in list(pending):
            code = children[k].poll()
            if code is None:
                continue
            pending.discard(k)
            codes[k] = 0 if k in stopped else _status(code)
            if codes[k] and kill_on_bad_exit:
                for other in pending - stopped:
                    children[other].terminate()
                    stopped.add(other)
        if pending:
            with contextlib.suppress(subprocess.TimeoutExpired):
                children[min(pending)].wait(timeout=0.05)
    for copier in copiers:
        copier.join()
    for handle in opened:
        handle.close()
    return max(codes, default=0)


# --- scontrol --------------------------------------------------------------------------------


def scontrol(argv: Sequence[str]) -> int:
    words = [a for a in argv if not a.startswith("-")]
    if len(words) >= 2 and words[0] == "show" and words[1] in ("hostnames", "hostname"):
        listed = words[2] if len(words) > 2 else os.environ.get(NODES_VAR, "")
        try:
            for name in expand_hostlist(listed):
                print(name)
        except ValueError as exc:
            print(f"scontrol: error: {exc}", file=sys.stderr)
            return 1
        return 0
    if len(words) >= 3 and words[0] == "show" and words[1] == "hostlist":
        print(compress_hostlist(_split_top(words[2])))
        return 0
    if len(words) >= 2 and words[0] == "show" and words[1] == "job":
        env = os.environ
        nodes = env.get(NODES_VAR, "")
        fields = {
            "JobId": env.get("SLURM_JOB_ID", ""),
            "JobName": env.get("SLURM_JOB_NAME", ""),
            "JobState": "RUNNING",
            "NumNodes": env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", "1")),
            "NumTasks": env.get("SLURM_NTASKS", "1"),
            "NodeList": compress_hostlist(expand_hostlist(nodes)) if nodes else "",
            "BatchHost": (expand_hostlist(nodes) or [""])[0] if nodes else "",
            "WorkDir": env.get("SLURM_SUBMIT_DIR", os.getcwd()),
        }
        print(" ".join(f"{key}={value}" for key, value in fields.items()))
        return 0
    shown = " ".join(argv) or "(nothing)"
    print(
        f"scontrol: error: `scontrol {shown}` needs a Slurm cluster; outside Slurm Flow answers only "
        "`scontrol show hostnames [LIST]`, `show hostlist LIST` and `show job`",
        file=sys.stderr,
    )
    return 1


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 2 and argv[0] == "batch":
        return batch(argv[1])
    if argv and argv[0] == "srun":
        return srun(argv[1:])
    if argv and argv[0] == "scontrol":
        return scontrol(argv[1:])
    print("usage: flow_slurm.py batch DIR | srun ... | scontrol ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
