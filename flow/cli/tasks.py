"""`flow run|status|logs|cancel|wait|ssh`: tasks from the command line.

`flow status` answers without grpcio when it can (the HTTP/2 transport, flow.transport.http2_unary):
importing grpcio alone costs more than a cold `flow status` may take."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from flow.cli.arguments import add_json, client
from flow.cli.output import emit_json, table

if TYPE_CHECKING:
    from flow.client import Flow
    from flow.config import TaskConfig
    from flow.connection import DaemonConnection
    from flow.task import Task

EXIT_FAILED: Final = 1
EXIT_INTERRUPTED: Final = 130
FASTPATH_ENV: Final = "FLOW_CLI_FASTPATH"  # "0" turns the fast path off (tests compare both paths)


def exit_code_of(task: Task) -> int:
    """Like a shell: 0 when COMPLETED, the task's own code when it failed with one, else 1."""
    status = str(task.last_status)
    if status == "COMPLETED":
        return 0
    if task.exit_code and 0 < task.exit_code < 256:
        return task.exit_code
    return EXIT_FAILED


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


def _config_from_args(args: argparse.Namespace) -> TaskConfig:
    from pathlib import Path

    import attrs

    from flow.config import TaskConfig

    words: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command
    if len(words) == 1 and words[0].endswith((".yaml", ".yml")) and " " not in words[0]:
        if not Path(words[0]).is_file():
            from flow.errors import ValidationError

            raise ValidationError(
                f"No job file {words[0]!r} (in {Path.cwd()})",
                suggestions=["give the path of a YAML job file, e.g. flow run job.yaml", "or quote a shell command"],
            )
        config = TaskConfig.from_yaml(Path(words[0]))
    elif len(words) == 1:
        config = TaskConfig(command=words[0])  # one word: a shell string, as typed
    elif words:
        config = TaskConfig(command=words)  # several: an argument vector, no shell
    else:
        config = TaskConfig()
    overrides: dict[str, Any] = {}
    for flag, field in (
        ("instance_type", "instance_type"),
        ("min_gpu_memory", "min_gpu_memory_gb"),
        ("name", "name"),
        ("max_run_time", "max_run_time_hours"),
        ("max_price", "max_price_per_hour"),
        ("region", "region"),
        ("num_instances", "num_instances"),
        ("working_dir", "working_dir"),
        ("image", "image"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    if args.env:
        overrides["env"] = {**config.env, **_parse_env(args.env)}
    if args.no_upload:
        overrides["upload_code"] = False
    return attrs.evolve(config, **overrides) if overrides else config


def _with_code_root(config: TaskConfig) -> TaskConfig:
    import attrs

    if config.upload_code and not config.code_root:
        from pathlib import Path

        return attrs.evolve(config, code_root=str(Path.cwd()))
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    flow = client(args)
    if args.dry_run:
        return _dry_run(flow, config, args.json)
    from flow.cli.progress import progress_bar

    task = flow.submit(_with_code_root(config), progress=None if args.json else progress_bar())
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
        return EXIT_INTERRUPTED
    if as_json:
        emit_json(task.to_dict())
    else:
        print(summary(task), file=sys.stderr)
    return exit_code_of(task)


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


def fast_path_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Only for the local daemon on its Unix socket: never for FLOW_DAEMON_ADDRESS (TCP/TLS)."""
    source = os.environ if env is None else env
    return not source.get("FLOW_DAEMON_ADDRESS") and source.get(FASTPATH_ENV, "1") != "0"


def _status_tasks(conn: DaemonConnection, args: argparse.Namespace) -> list[Task]:
    from flow.task import get_task, list_tasks

    return [get_task(conn, args.task)] if args.task else list_tasks(conn, args.limit)


def _status_fast(args: argparse.Namespace) -> list[Task] | None:
    """The tasks `flow status` shows, read without grpcio; None when that transport cannot
    answer and grpcio must (which also starts a daemon that is not running)."""
    if not fast_path_enabled():
        return None
    from flow.connection import DaemonConnection
    from flow.home import resolve_home
    from flow.transport.http2_unary import FastPathUnusableError, Http2UnaryChannel

    home = resolve_home()
    conn = DaemonConnection(home, auto_start=False, channel=Http2UnaryChannel(str(home.socket)))
    try:
        return _status_tasks(conn, args)
    except FastPathUnusableError:
        return None


def cmd_status(args: argparse.Namespace) -> int:
    tasks = _status_fast(args)
    if tasks is None:
        tasks = _status_tasks(client(args).connection, args)  # grpcio, which also starts a daemon
    if args.json:
        emit_json(tasks[0].to_dict() if args.task else [t.to_dict() for t in tasks])
    elif tasks:
        sys.stdout.write(_task_table(tasks))
    else:
        print('no tasks yet; start one with `flow run "python train.py"`')
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    task = client(args).get_task(args.task)
    try:
        for chunk in task.log_chunks(follow=args.follow, tail=args.tail or 0, node=args.node):
            if args.json:
                emit_json({"cursor": chunk.cursor, "lines": chunk.lines})
            else:
                sys.stdout.buffer.write(chunk.data)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    flow = client(args)
    cancelled = []
    for task_id in args.tasks:
        task = flow.get_task(task_id)
        task.cancel()
        if args.wait:
            task.wait(timeout=120)
        cancelled.append(task)
    if args.json:
        emit_json([t.to_dict() for t in cancelled])
    else:
        for task in cancelled:
            print(summary(task))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    task = client(args).get_task(args.task).wait(timeout=args.timeout)
    if args.json:
        emit_json(task.to_dict())
    else:
        print(summary(task))
    return exit_code_of(task)


def cmd_ssh(args: argparse.Namespace) -> int:
    """Unlike Task.ssh, a command also gets this terminal when asked (-t) and piped input."""
    from flow import exec_client

    flow = client(args)
    task_id = flow.get_task(args.task).task_id  # a task that does not exist fails here, by name
    conn = flow.connection
    words: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.tty or (not words and sys.stdin.isatty()):
        return exec_client.interactive(conn, task_id, words)
    stdin = None if sys.stdin.isatty() else sys.stdin.buffer.read()
    return exec_client.run(conn, task_id, words, stdin, sys.stdout.buffer, sys.stderr.buffer).exit_code


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    run = add_parser("run", help="run a command (or a job.yaml) as a task and stream its logs")
    run.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help='a shell string ("python train.py"), a program and its arguments, or job.yaml; options go before it',
    )
    run.add_argument("-i", "--instance-type", help="e.g. a100, 4xa100, 8xh100, cpu")
    run.add_argument("--min-gpu-memory", type=int, metavar="GB", help="any GPU with at least this much memory")
    run.add_argument("-n", "--name")
    run.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--max-run-time", type=float, metavar="HOURS")
    run.add_argument("--max-price", type=float, metavar="USD_PER_HOUR")
    run.add_argument("--region")
    run.add_argument("--num-instances", type=int, metavar="N")
    run.add_argument("--working-dir")
    run.add_argument("--image")
    run.add_argument("--no-upload", action="store_true", help="do not run in a snapshot of this directory")
    run.add_argument("--provider", help="local, slurm, mithril, ... (default: $FLOW_PROVIDER or local)")
    run.add_argument("-d", "--detach", action="store_true", help="print the task id and return at once")
    run.add_argument("--dry-run", action="store_true", help="validate and place, launch nothing")
    add_json(run)
    run.set_defaults(handler=cmd_run)

    status = add_parser("status", help="list tasks, or show one")
    status.add_argument("task", nargs="?")
    status.add_argument("--limit", type=int, default=50)
    add_json(status)
    status.set_defaults(handler=cmd_status)

    logs = add_parser("logs", help="print a task's output")
    logs.add_argument("task")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    logs.add_argument("--tail", type=int, metavar="N", help="start with the last N lines")
    logs.add_argument(
        "--node", type=int, metavar="K", help="one node of a multi-node task (default: all, prefixed [node K])"
    )
    add_json(logs)
    logs.set_defaults(handler=cmd_logs)

    cancel = add_parser("cancel", help="stop tasks")
    cancel.add_argument("tasks", nargs="+", metavar="TASK")
    cancel.add_argument("--wait", action="store_true", help="return once they have stopped")
    add_json(cancel)
    cancel.set_defaults(handler=cmd_cancel)

    wait = add_parser("wait", help="wait for a task to finish; exits with its exit code")
    wait.add_argument("task")
    wait.add_argument("--timeout", type=float, metavar="SECONDS")
    add_json(wait)
    wait.set_defaults(handler=cmd_wait)

    ssh = add_parser("ssh", help="a shell in a running task, or run one command there (after --)")
    ssh.add_argument("task")
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="the command (argv) to run; none: a shell")
    ssh.add_argument("-t", "--tty", action="store_true", help="give the command a terminal")
    ssh.add_argument("--provider")
    ssh.set_defaults(handler=cmd_ssh, json=False)


__all__ = ["EXIT_INTERRUPTED", "attach", "exit_code_of", "register", "summary"]
