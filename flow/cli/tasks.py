"""`flow run|status|logs|cancel|wait|ssh`: tasks from the command line.

Start-up is most of what these commands cost, so they import little: their calls go over HTTP/2
without grpcio (flow.connection.prefer_http2, set by flow.cli.main), and `flow run` with plain
options encodes its task without building a TaskConfig (`_plain_run_fields`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from flow.cli import exit_status
from flow.cli.arguments import add_json, add_provider, client, plain_tasks_enabled
from flow.cli.output import emit_json, table

if TYPE_CHECKING:
    from flow.client import Flow
    from flow.code_upload import Progress
    from flow.config import TaskConfig
    from flow.connection import DaemonConnection
    from flow.task import Task
    from flow.wire.function_codec import FunctionCallProto

CANCEL_SETTLE: Final = 2.0  # seconds `flow cancel` waits to show the state reached before it says "stopping"
NO_PROGRAM: Final = (
    'no program to run: give a shell string (flow run "python train.py"), an argument vector after -- '
    "(flow run -- python train.py --epochs 3) or a YAML job file (flow run job.yaml)"
)


def summary(task: Task) -> str:
    reason = f" ({task.state_reason})" if task.state_reason else ""
    return f"task {task.task_id} {task.last_status}{reason}"


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    from flow.errors import ValidationError

    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValidationError(f"--env {pair!r} is not NAME=VALUE", suggestions=["write e.g. --env BATCH_SIZE=256"])
        env[name] = value
    return env


def _program_config(args: argparse.Namespace) -> TaskConfig:
    """The program of `flow run`: words before `--` (one: a shell string or a job.yaml; several:
    an argument vector), or the argument vector after `--`. None at all is a usage error."""
    from flow.config import TaskConfig, job_file

    words: list[str] = args.command
    if args.program is not None and words:
        args.command_parser.error(
            f"a program both before and after `--` ({' '.join(words)!r} and {' '.join(args.program)!r}): "
            "give the whole program after --, or quote it as one shell string before it"
        )
    program: list[str] = words or args.program or []
    if not program:
        args.command_parser.error(NO_PROGRAM)
    if args.program is None and len(program) == 1:
        return job_file(program[0]) or TaskConfig(command=program[0])  # one word: a shell string, as typed
    return TaskConfig(command=program)  # an argument vector, no shell


def _config_from_args(args: argparse.Namespace) -> TaskConfig:
    import attrs

    config = _program_config(args)
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "instance_type",
            "min_gpu_memory_gb",
            "name",
            "max_run_time_hours",
            "max_price_per_hour",
            "region",
            "num_instances",
            "working_dir",
            "image",
            "memory_mb",
            "upload_code",
            "priority",
            "max_retries",
        )
        if getattr(args, name) is not None
    }
    if args.env:
        overrides["env"] = {**config.env, **_parse_env(args.env)}
    if args.depends_on:
        overrides["depends_on"] = (*config.depends_on, *args.depends_on)
    if args.start_after is not None:
        overrides["start_after"] = begin_time(args.start_after)
    return attrs.evolve(config, **overrides) if overrides else config


def begin_time(text: str) -> float:
    """--begin as sbatch reads it (now+1hour, 2025-06-01T09:00, 18:30, tomorrow ...), local time."""
    import time

    from returns.result import Failure

    from flow.domain.task.dependencies import parse_begin
    from flow.slurm import local_time
    from flow.wire.error_table import exception_from_domain_error

    parsed = parse_begin(text, time.time(), local_time)
    if isinstance(parsed, Failure):
        raise exception_from_domain_error(parsed.failure())
    return parsed.unwrap()


def _with_code_root(config: TaskConfig) -> TaskConfig:
    import attrs

    if config.upload_code and not config.code_root:
        from pathlib import Path

        return attrs.evolve(config, code_root=str(Path.cwd()))
    return config


# The options `flow run` encodes straight into the TaskSpec, by the TaskConfig field each sets,
# and those that set no field; any other option takes the path through TaskConfig.
PLAIN_RUN_FIELDS: Final = frozenset(
    {
        "instance_type",
        "min_gpu_memory_gb",
        "name",
        "env",
        "max_run_time_hours",
        "max_price_per_hour",
        "region",
        "num_instances",
        "image",
        "memory_mb",
        "upload_code",
    }
)
PLAIN_RUN_OTHERS: Final = frozenset({"command", "provider", "detach", "json", "help"})
JOB_FILE_SUFFIXES: Final = (".yaml", ".yml")  # flow.config's, too heavy to import here (a test keeps them equal)


def _plain_run_fields(args: argparse.Namespace) -> dict[str, Any] | None:
    """`flow run`'s task as TaskConfig's fields, read straight from plain options: no TaskConfig
    is built (importing the core costs more than the whole command may take), and flowd
    validates the spec as it validates every client's, by the same rules, in the same words.
    None where the TaskConfig path must run: a job file, --dry-run or another option not listed
    above, a usage error, or a value the wire would read as unset ("", a count below 1) or a
    number that is not finite, which TaskConfig names as the mistake it is."""
    import math

    for action in args.command_parser._actions:
        if action.dest not in PLAIN_RUN_FIELDS | PLAIN_RUN_OTHERS and getattr(args, action.dest) != action.default:
            return None
    words: list[str] = args.command
    if (args.program is not None and words) or not (words or args.program):
        return None
    if args.program is None and len(words) == 1:
        if words[0].endswith(JOB_FILE_SUFFIXES):
            return None
        command: str | list[str] = words[0]  # one word: a shell string, as typed
    else:
        command = list(words or args.program)
    fields: dict[str, Any] = {"command": command}
    for name in PLAIN_RUN_FIELDS - {"env"}:
        value = getattr(args, name)
        if value is None:
            continue
        unset_on_the_wire = value == "" or (name == "num_instances" and value < 1)
        if unset_on_the_wire or (isinstance(value, float) and not math.isfinite(value)):
            return None
        fields[name] = value
    if args.env:
        fields["env"] = _parse_env(args.env)
    return fields


def submit_plain(
    flow: Flow, fields: dict[str, Any], progress: Progress | None, function_call: FunctionCallProto | None = None
) -> Task:
    """Submits a task given as TaskConfig's fields (`_plain_run_fields`, flow invoke's plain path)
    as Flow.submit submits a TaskConfig: the code uploaded first (unless --no-upload), a fresh
    request id, this client's provider."""
    import uuid
    from pathlib import Path

    from flow.task import Task
    from flow.wire.task_spec_codec import create_task_call_from_spec, task_spec_from_fields

    request_id = uuid.uuid4().hex
    uploads = fields.get("upload_code", True)
    root = os.getcwd()  # the task runs in a snapshot of the directory it was submitted from
    spec_fields = {**fields, "upload_code": True, "code_root": root} if uploads else fields

    def create(digest: str | None) -> Task:
        call = create_task_call_from_spec(
            task_spec_from_fields(spec_fields),
            code_digest=digest,
            request_id=request_id,
            provider=flow.provider,
            function_call=function_call,
        )
        return Task(flow.connection, flow.connection.unary(call, timeout=600))

    return flow._submitted_from(Path(root), progress, create) if uploads else create(None)


def cmd_run(args: argparse.Namespace) -> int:
    from flow.cli.progress import progress_bar

    fields = _plain_run_fields(args) if plain_tasks_enabled() and not args.dry_run else None
    if fields is not None:
        task = submit_plain(client(args), fields, progress=None if args.json else progress_bar())
        return _submitted(task, args)
    config = _config_from_args(args)
    flow = client(args)
    if args.dry_run:
        return _dry_run(flow, config, args.json)
    task = flow.submit(_with_code_root(config), progress=None if args.json else progress_bar())
    return _submitted(task, args)


def _submitted(task: Task, args: argparse.Namespace) -> int:
    if args.detach:
        if args.json:
            emit_json(task.to_dict())
        else:
            print(task.task_id)
        return 0
    return attach(task, args.json)


def _dry_run(flow: Flow, config: TaskConfig, as_json: bool) -> int:
    """Validates and places the task and lists the code it would upload; launches nothing."""
    config = _with_code_root(config)
    planned = flow.validate(config)
    plan = flow.plan_upload(config.code_root) if config.upload_code else None
    if as_json:
        upload = None
        if plan is not None:
            upload = {
                "root": str(plan.root),
                "files": [{"path": f.path, "size": f.size} for f in plan.files],
                "total_bytes": plan.total_size,
                "excluded": plan.excluded,
            }
        emit_json(
            {
                "valid": True,
                "provider": planned.provider,
                "instance_type": planned.instance_type,
                "config": config.to_dict(),
                "upload": upload,
            }
        )
        return 0
    print(f"valid: would run on {planned.provider} as {planned.instance_type}")
    if plan is None:
        print("no code upload (upload_code is off)")
        return 0
    size = plan.total_size / 1e6
    print(f"would upload {len(plan.files)} files, {size:,.2f} MB from {plan.root} ({plan.excluded} left out)")
    for f in sorted(plan.files, key=lambda f: -f.size)[:15]:
        print(f"  {f.size / 1e6:10,.3f} MB  {f.path}")
    if len(plan.files) > 15:
        print(f"  ... and {len(plan.files) - 15} smaller files (--json lists them all)")
    return 0


def attach(task: Task, as_json: bool) -> int:
    """Streams a submitted task's output until it ends (Ctrl-C detaches); exits like the task."""
    print(f"task {task.task_id} submitted; streaming its logs (Ctrl-C detaches)", file=sys.stderr)
    out = sys.stderr if as_json else sys.stdout
    try:
        for chunk in task.log_chunks(follow=True):
            out.buffer.write(chunk.data)
            out.flush()
        task.wait()
    except KeyboardInterrupt:
        print(
            f"\ndetached; task {task.task_id} keeps running. Follow it with `flow logs {task.task_id} -f`, "
            f"stop it with `flow cancel {task.task_id}`",
            file=sys.stderr,
        )
        return exit_status.DETACHED
    if as_json:
        emit_json(task.to_dict())
    else:
        print(summary(task), file=sys.stderr)
    return exit_status.of_task(task)


def _task_table(tasks: Sequence[Task]) -> str:
    rows = [("TASK", "NAME", "STATUS", "EXIT", "INSTANCE", "CREATED", "REASON")]
    for t in tasks:
        created = t.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if t.created_at else ""
        rows.append(
            (
                t.task_id,
                t.name,
                str(t.last_status),
                "" if t.exit_code is None else str(t.exit_code),
                t.instance_type,
                created,
                t.state_reason,
            )
        )
    return table(rows, ragged_last=True)


def _status_tasks(conn: DaemonConnection, args: argparse.Namespace) -> list[Task]:
    from flow.task import get_task, list_tasks

    return [get_task(conn, args.task)] if args.task else list_tasks(conn, args.limit)


def _bare_connection() -> DaemonConnection:
    """The daemon's connection without a Flow client: no GetDaemonInfo first, no flow.client to
    import (for commands that name no provider)."""
    from flow.connection import DaemonConnection
    from flow.home import resolve_home
    from flow.transport.channel import Remote

    return DaemonConnection(resolve_home(), remote=Remote.from_env(os.environ))


def _named_task(task_id: str, conn: DaemonConnection | None = None) -> Task:
    """The task, read through a bare connection (no Flow client: these commands name no
    provider); one that does not exist fails here, by name."""
    from flow.task import get_task

    return get_task(conn or _bare_connection(), task_id)


def cmd_status(args: argparse.Namespace) -> int:
    """Reads through a bare connection, not a Flow client: one call, no GetDaemonInfo first."""
    tasks = _status_tasks(_bare_connection(), args)
    if args.json:
        emit_json(tasks[0].to_dict() if args.task else [t.to_dict() for t in tasks])
    elif tasks:
        sys.stdout.write(_task_table(tasks))
        if args.task:  # one task: its earlier runs too
            for number, a in enumerate(tasks[0].attempts, start=1):
                code = "" if a.exit_code is None else f", exit {a.exit_code}"
                print(f"  attempt {number}: {a.state}{code} ({a.state_reason})")
    else:
        print('no tasks yet; start one with `flow run "python train.py"`')
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    task = _named_task(args.task)
    try:
        for chunk in task.log_chunks(follow=args.follow, tail=args.tail or 0, node=args.node):
            if args.json:
                emit_json({"cursor": chunk.cursor, "lines": chunk.lines})
            else:
                sys.stdout.buffer.write(chunk.data)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return exit_status.DETACHED
    return 0


def _settled(task: Task, seconds: float) -> bool:
    """Waits up to `seconds` for the task to end; whether it has."""
    from flow import errors

    try:
        task.wait(timeout=seconds)
    except errors.TimeoutError:
        return False
    return True


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancels each task and says where it got: the state it reached (a task stops within the
    provider's grace period: --wait waits for it), or that it is still stopping."""
    conn = _bare_connection()
    cancelled = []
    for task_id in args.tasks:
        task = _named_task(task_id, conn)
        was_over = task.last_status.is_terminal
        task.cancel()
        ended = task.last_status.is_terminal or _settled(task, 120 if args.wait else CANCEL_SETTLE)
        cancelled.append(task)
        if args.json:
            continue
        if was_over:
            print(f"{summary(task)}: it had already ended, nothing to cancel")
        elif ended:
            print(summary(task))
        else:
            print(
                f"task {task.task_id} is stopping (still {task.last_status}); `flow wait {task.task_id}` "
                "waits until it has"
            )
    if args.json:
        emit_json([t.to_dict() for t in cancelled])
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    task = _named_task(args.task).wait(timeout=args.timeout)
    if args.json:
        emit_json(task.to_dict())
    else:
        print(summary(task))
    return exit_status.of_task(task)


def cmd_ssh(args: argparse.Namespace) -> int:
    """Unlike Task.ssh, a command also gets this terminal when asked (-t) and piped input."""
    from flow import exec_client

    conn = _bare_connection()
    task_id = _named_task(args.task, conn).task_id
    if args.program is not None and args.command:
        args.command_parser.error("give the command either before `--` or after it, not both")
    words: list[str] = args.command or args.program or []
    if args.json:
        if not words:
            args.command_parser.error("--json needs a command to run (a terminal session prints no JSON)")
        stdin = None if sys.stdin.isatty() else sys.stdin.buffer.read()
        done = exec_client.run(conn, task_id, words, stdin)
        emit_json(
            {
                "task_id": task_id,
                "command": words,
                "exit_code": done.exit_code,
                "stdout": done.stdout.decode("utf-8", errors="replace"),
                "stderr": done.stderr.decode("utf-8", errors="replace"),
            }
        )
        return done.exit_code
    if args.tty or (not words and sys.stdin.isatty()):
        return exec_client.interactive(conn, task_id, words)
    stdin = None if sys.stdin.isatty() else sys.stdin.buffer.read()
    return exec_client.run_streaming(conn, task_id, words, stdin, sys.stdout.buffer, sys.stderr.buffer)


def add_scheduling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--after",
        dest="depends_on",
        action="append",
        default=[],
        metavar="TASK[:CONDITION]",
        help="start after another task: afterok (completed; the default), afterany, afternotok, after (started), "
        "or 'singleton' (repeatable)",
    )
    parser.add_argument(
        "--begin",
        dest="start_after",
        metavar="TIME",
        help="not before this time, as sbatch's --begin: now+1hour, 2025-06-01T09:00, 18:30, tomorrow",
    )
    parser.add_argument(
        "--priority", type=int, metavar="N", help="order among your waiting tasks: higher first (default 0)"
    )


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    # dest = the TaskConfig field an option sets: _config_from_args reads them by that name, and
    # the CLI's hints name the option where the core's name the field (flow.cli.hints).
    run = add_parser(
        "run",
        help="run a program (or a job.yaml) as a task and stream its logs",
        description="Runs a program as a task and streams its logs; exits as the task did (see `flow --help`). "
        "Flow's options go anywhere before `--`; everything after `--` is the program's.",
    )
    run.add_argument(
        "command",
        nargs="*",
        metavar="PROGRAM",
        help='one shell string ("python train.py --epochs 3"), a YAML job file (job.yaml), or a program and '
        "its arguments (after --: flow run -- python train.py --epochs 3)",
    )
    run.add_argument("-i", "--instance-type", dest="instance_type", help="GPUs to run on: a100, 4xa100, 8xh100, cpu")
    run.add_argument(
        "--min-gpu-memory", dest="min_gpu_memory_gb", type=int, metavar="GB", help="any GPU with this much memory"
    )
    run.add_argument("-n", "--name", help="a name for the task: letters, digits, '-' and '_'")
    run.add_argument(
        "-e", "--env", action="append", default=[], metavar="NAME=VALUE", help="an environment variable (repeatable)"
    )
    run.add_argument(
        "--max-run-time", dest="max_run_time_hours", type=float, metavar="HOURS", help="stop the task after this long"
    )
    run.add_argument(
        "--max-price", dest="max_price_per_hour", type=float, metavar="USD_PER_HOUR", help="the most to pay per hour"
    )
    run.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        help="run again (same task id) up to N times after a preemption or exit status 75 (default 0)",
    )
    run.add_argument("--region", help="where to run, e.g. us-central1-b (cloud providers); a partition on Slurm")
    run.add_argument("--num-instances", type=int, metavar="N", help="nodes of a multi-node task (default 1)")
    run.add_argument(
        "--working-dir", metavar="DIR", help="where the program starts: absolute, or relative to the code snapshot"
    )
    run.add_argument("--image", help="a container image to run in, e.g. pytorch/pytorch:2.1.0-cuda12.1-cudnn8")
    run.add_argument("--memory", dest="memory_mb", type=int, metavar="MB", help="RAM the task needs per node")
    add_scheduling(run)
    run.add_argument(
        "--no-upload",
        dest="upload_code",
        action="store_const",
        const=False,
        help="run in the task's own empty directory, not in a snapshot of this one",
    )
    add_provider(run)
    run.add_argument("-d", "--detach", action="store_true", help="print the task id and return at once")
    run.add_argument("--dry-run", action="store_true", help="validate and place, launch nothing")
    add_json(run)
    run.set_defaults(handler=cmd_run, command_parser=run, takes_program="flow run -- python train.py --epochs 3")

    status = add_parser("status", help="list tasks, or show one")
    status.add_argument("task", nargs="?", metavar="TASK", help="a task id (default: the most recent tasks)")
    status.add_argument("--limit", type=int, default=50, metavar="N", help="list at most N tasks (default 50)")
    add_json(status)
    status.set_defaults(handler=cmd_status, command_parser=status)

    logs = add_parser("logs", help="print a task's output")
    logs.add_argument("task", metavar="TASK", help="the task id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    logs.add_argument("--tail", type=int, metavar="N", help="start with the last N lines")
    logs.add_argument(
        "--node", type=int, metavar="K", help="one node of a multi-node task (default: all, prefixed [node K])"
    )
    add_json(logs)
    logs.set_defaults(handler=cmd_logs, command_parser=logs)

    cancel = add_parser("cancel", help="stop tasks; prints the state each reached")
    cancel.add_argument("tasks", nargs="+", metavar="TASK", help="the task ids")
    cancel.add_argument("--wait", action="store_true", help="return once they have stopped")
    add_json(cancel)
    cancel.set_defaults(handler=cmd_cancel, command_parser=cancel)

    wait = add_parser("wait", help="wait for a task to finish; exits as the task did")
    wait.add_argument("task", metavar="TASK", help="the task id")
    wait.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up after this long (exit 124; the task keeps running)"
    )
    add_json(wait)
    wait.set_defaults(handler=cmd_wait, command_parser=wait)

    ssh = add_parser(
        "ssh",
        help="a shell in a running task, or run one command there (after --)",
        description="Opens a terminal in a running task, or runs one command there and exits with its code.",
    )
    ssh.add_argument("task", metavar="TASK", help="the task id")
    ssh.add_argument(
        "command", nargs="*", metavar="COMMAND", help="the command to run, best after -- (none: an interactive shell)"
    )
    ssh.add_argument("-t", "--tty", action="store_true", help="give the command a terminal")
    add_provider(ssh)
    add_json(ssh)
    ssh.set_defaults(handler=cmd_ssh, command_parser=ssh, takes_program="flow ssh TASK -- nvidia-smi -L")


__all__ = ["attach", "register", "summary"]
