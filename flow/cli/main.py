"""The `flow` command. Every subcommand takes --json; heavy modules load only when a command runs,
so `flow --version` and `flow status` start fast."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from flow.client import Flow
    from flow.errors import FlowError
    from flow.task import Task

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def _client(args: argparse.Namespace) -> Flow:
    from flow.client import Flow

    return Flow(provider=getattr(args, "provider", None))


def _exit_code_of(task: Task) -> int:
    """Like a shell: 0 when COMPLETED, the task's own code when it failed with one, else 1."""
    status = str(task.last_status)
    if status == "COMPLETED":
        return 0
    if task.exit_code and 0 < task.exit_code < 256:
        return task.exit_code
    return EXIT_FAILED


def _summary(task: Task) -> str:
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


def _config_from_args(args: argparse.Namespace) -> Any:
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


def cmd_run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    flow = _client(args)
    if args.dry_run:
        return _dry_run(flow, config, args.json)
    from flow.code_upload import progress_bar

    task = flow.submit(_with_code_root(config), progress=None if args.json else progress_bar())
    if args.detach:
        if args.json:
            _emit_json(task.to_dict())
        else:
            print(task.task_id)
        return 0
    return _attach(task, args.json)


def _with_code_root(config: Any) -> Any:
    import attrs

    if config.upload_code and not config.code_root:
        from pathlib import Path

        return attrs.evolve(config, code_root=str(Path.cwd()))
    return config


def _dry_run(flow: Flow, config: Any, as_json: bool) -> int:
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
        _emit_json(
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


def cmd_invoke(args: argparse.Namespace) -> int:
    from flow.errors import ValidationError
    from flow.invoke import spawn_invocation

    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"--args/--kwargs must be JSON: {exc}", suggestions=["e.g. --args '[1, \"a\"]' --kwargs '{\"epochs\": 3}'"]
        ) from None
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise ValidationError(
            "--args must be a JSON list and --kwargs a JSON object", suggestions=["e.g. --args '[1]' --kwargs '{}'"]
        )
    options: dict[str, Any] = {}
    if args.name:
        options["name"] = args.name
    if args.max_run_time is not None:
        options["max_run_time_hours"] = args.max_run_time
    client = _client(args)
    task = spawn_invocation(args.path, args.function, call_args, call_kwargs, args.gpu, flow=client, **options)
    print(f"task {task.task_id} calls {args.function} from {args.path}", file=sys.stderr)
    value = task.result()
    _emit_json({"task_id": task.task_id, "result": value} if args.json else value)
    return 0


def _attach(task: Task, as_json: bool) -> int:
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
        _emit_json(task.to_dict())
    else:
        print(_summary(task), file=sys.stderr)
    return _exit_code_of(task)


def _table(tasks: Sequence[Task]) -> str:
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return (
        "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows
        ).rstrip()
        + "\n"
    )


def _status_fast(args: argparse.Namespace) -> list[Task] | None:
    """The tasks `flow status` shows, read without grpcio (flow.local_reads); None when that
    path cannot answer, and the grpcio path must. Raises the same errors as that path."""
    from flow import local_reads

    if not local_reads.enabled():
        return None
    from flow.home import resolve_home
    from flow.task import Task

    home = resolve_home()
    conn: Any = local_reads.DeferredConnection(home)
    try:
        if args.task:
            return [Task(conn, local_reads.get_task(home, args.task))]
        return [Task(conn, message) for message in local_reads.list_tasks(home, args.limit)]
    except local_reads.FastPathUnusableError:
        return None


def cmd_status(args: argparse.Namespace) -> int:
    fast = _status_fast(args)
    if fast is not None:
        return _show_status(args, fast)
    flow = _client(args)
    if args.task:
        return _show_status(args, [flow.get_task(args.task)])
    return _show_status(args, flow.list_tasks(limit=args.limit))


def _show_status(args: argparse.Namespace, tasks: list[Task]) -> int:
    if args.task:
        task = tasks[0]
        if args.json:
            _emit_json(task.to_dict())
        else:
            sys.stdout.write(_table([task]))
        return 0
    if args.json:
        _emit_json([t.to_dict() for t in tasks])
    elif tasks:
        sys.stdout.write(_table(tasks))
    else:
        print('no tasks yet; start one with `flow run "python train.py"`')
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    task = _client(args).get_task(args.task)
    try:
        for chunk in task.log_chunks(follow=args.follow, tail=args.tail or 0, node=args.node):
            if args.json:
                _emit_json({"cursor": chunk.cursor, "lines": chunk.lines})
            else:
                sys.stdout.buffer.write(chunk.data)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    flow = _client(args)
    cancelled = []
    for task_id in args.tasks:
        task = flow.get_task(task_id)
        task.cancel()
        if args.wait:
            task.wait(timeout=120)
        cancelled.append(task)
    if args.json:
        _emit_json([t.to_dict() for t in cancelled])
    else:
        for task in cancelled:
            print(_summary(task))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    task = _client(args).get_task(args.task).wait(timeout=args.timeout)
    if args.json:
        _emit_json(task.to_dict())
    else:
        print(_summary(task))
    return _exit_code_of(task)


def cmd_instances(args: argparse.Namespace) -> int:
    wanted = {
        key: value
        for key, value in (
            ("gpu_memory_gb", args.gpu_memory),
            ("max_price", args.max_price),
            ("region", args.region),
            ("gpu_type", args.gpu_type),
            ("min_gpu_count", args.min_gpus),
            ("instance_type", args.instance_type),
        )
        if value is not None
    }
    found = _client(args).find_instances(wanted, limit=args.limit)
    if args.json:
        _emit_json({"offers": list(found), "explanation": found.explanation, "suggestions": found.suggestions})
        return 0
    if not found:
        print(found.explanation or "no offers")
        for tip in found.suggestions:
            print(f"  hint: {tip}")
        return 1
    rows = [("INSTANCE", "GPUS", "GPU MEM", "PRICE/H", "REGION", "PROVIDER", "AVAILABLE")]
    for o in found:
        rows.append(
            (
                o["instance_type"],
                str(o["gpu_count"]),
                f"{o['gpu_memory_gb']} GB",
                f"${o['price_per_hour']:.2f}",
                o["region"],
                o["provider"],
                "" if o["available"] is None else str(o["available"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    from flow import exec_client

    task = _client(args).get_task(args.task)
    words: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command
    conn = task._conn
    resource = f"tasks/{task.task_id}"
    if args.tty or (not words and sys.stdin.isatty()):
        return exec_client.interactive(conn, resource, words)
    stdin = None if sys.stdin.isatty() else sys.stdin.buffer.read()
    return exec_client.run(conn, resource, words, stdin, sys.stdout.buffer, sys.stderr.buffer).exit_code


def cmd_slurm_submit(args: argparse.Namespace) -> int:
    """`flow slurm submit job.sbatch`: an existing sbatch script as Flow task(s), on any provider."""
    from flow.slurm import submit_sbatch

    flow = _client(args)
    tasks = submit_sbatch(
        flow,
        args.script,
        provider=args.provider,
        instance_type=args.instance_type,
        upload_code=not args.no_upload,
        validate_only=args.dry_run,
        on_warning=lambda text: print(f"warning: {text}", file=sys.stderr),
    )
    if args.dry_run:
        if args.json:
            _emit_json([{"valid": True, "provider": t.provider, "instance_type": t.instance_type} for t in tasks])
        else:
            for t in tasks:
                print(f"valid: {t.name} would run on {t.provider} as {t.instance_type}")
        return 0
    if len(tasks) == 1 and not args.detach:
        return _attach(tasks[0], args.json)
    if args.detach:
        if args.json:
            _emit_json([t.to_dict() for t in tasks])
        else:
            print("\n".join(t.task_id for t in tasks))
        return 0
    print(f"{len(tasks)} tasks submitted (one per array element); waiting for them", file=sys.stderr)
    try:
        for task in tasks:
            task.wait()
            if not args.json:
                print(_summary(task))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if args.json:
        _emit_json([t.to_dict() for t in tasks])
    return 0 if all(str(t.last_status) == "COMPLETED" for t in tasks) else EXIT_FAILED


def cmd_volumes(args: argparse.Namespace) -> int:
    from flow.volumes import run_volumes_command

    return run_volumes_command(_client(args), args)


def cmd_daemon(args: argparse.Namespace) -> int:
    from flow import daemon_control

    return daemon_control.run_action(args.action, as_json=args.json)


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    from flow import __version__

    parser = argparse.ArgumentParser(prog="flow", description="Run code on GPUs: locally, on Slurm, or in the cloud.")
    parser.add_argument("--version", action="version", version=f"flow {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")

    run = sub.add_parser("run", help="run a command (or a job.yaml) as a task and stream its logs")
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
    _add_json(run)
    run.set_defaults(handler=cmd_run)

    status = sub.add_parser("status", help="list tasks, or show one")
    status.add_argument("task", nargs="?")
    status.add_argument("--limit", type=int, default=50)
    _add_json(status)
    status.set_defaults(handler=cmd_status)

    logs = sub.add_parser("logs", help="print a task's output")
    logs.add_argument("task")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    logs.add_argument("--tail", type=int, metavar="N", help="start with the last N lines")
    logs.add_argument(
        "--node", type=int, metavar="K", help="one node of a multi-node task (default: all, prefixed [node K])"
    )
    _add_json(logs)
    logs.set_defaults(handler=cmd_logs)

    cancel = sub.add_parser("cancel", help="stop tasks")
    cancel.add_argument("tasks", nargs="+", metavar="TASK")
    cancel.add_argument("--wait", action="store_true", help="return once they have stopped")
    _add_json(cancel)
    cancel.set_defaults(handler=cmd_cancel)

    wait = sub.add_parser("wait", help="wait for a task to finish; exits with its exit code")
    wait.add_argument("task")
    wait.add_argument("--timeout", type=float, metavar="SECONDS")
    _add_json(wait)
    wait.set_defaults(handler=cmd_wait)

    ssh = sub.add_parser("ssh", help="a shell in a running task, or run one command there (after --)")
    ssh.add_argument("task")
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="the command (argv) to run; none: a shell")
    ssh.add_argument("-t", "--tty", action="store_true", help="give the command a terminal")
    ssh.add_argument("--provider")
    ssh.set_defaults(handler=cmd_ssh, json=False)

    invoke = sub.add_parser("invoke", help="call a function from a Python file in a task; prints its JSON result")
    invoke.add_argument("path", help="the .py file, relative to the current directory")
    invoke.add_argument("function")
    invoke.add_argument("--args", default="[]", help="positional arguments as a JSON list")
    invoke.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    invoke.add_argument("--gpu", help="instance type, e.g. a100")
    invoke.add_argument("-n", "--name")
    invoke.add_argument("--max-run-time", type=float, metavar="HOURS")
    invoke.add_argument("--provider")
    _add_json(invoke)
    invoke.set_defaults(handler=cmd_invoke)

    instances = sub.add_parser("instances", help="find instance types a provider offers, best first")
    instances.add_argument("--gpu-memory", type=int, metavar="GB", help="at least this much memory per GPU")
    instances.add_argument("--max-price", type=float, metavar="USD_PER_HOUR")
    instances.add_argument("--region")
    instances.add_argument("--gpu-type", help="e.g. h100")
    instances.add_argument("--min-gpus", type=int, metavar="N")
    instances.add_argument("-i", "--instance-type")
    instances.add_argument("--provider")
    instances.add_argument("--limit", type=int, default=20)
    _add_json(instances)
    instances.set_defaults(handler=cmd_instances)

    slurm = sub.add_parser("slurm", help="run existing Slurm batch scripts as Flow tasks")
    slurm_sub = slurm.add_subparsers(dest="slurm_cmd", metavar="COMMAND")
    submit = slurm_sub.add_parser(
        "submit",
        help="submit an #SBATCH script (on any provider; natively on a slurm provider)",
        description="Reads the script's #SBATCH directives into a task (one per --array element) and runs the "
        "script on the provider; on a slurm provider the directives are submitted as they are.",
    )
    submit.add_argument("script", help="the sbatch script, e.g. job.sbatch")
    submit.add_argument("--provider", help="where to run it (default: $FLOW_PROVIDER or the daemon's default)")
    submit.add_argument("-i", "--instance-type", help="GPUs for providers other than slurm, e.g. 8xa100")
    submit.add_argument("--no-upload", action="store_true", help="do not run in a snapshot of this directory")
    submit.add_argument("-d", "--detach", action="store_true", help="print the task ids and return at once")
    submit.add_argument("--dry-run", action="store_true", help="validate and place, launch nothing")
    _add_json(submit)
    submit.set_defaults(handler=cmd_slurm_submit)

    volumes = sub.add_parser("volumes", help="persistent storage: create, list and delete volumes")
    volumes_sub = volumes.add_subparsers(dest="volumes_cmd", metavar="COMMAND", required=True)
    create_volume = volumes_sub.add_parser("create", help="create a volume")
    create_volume.add_argument("name", help="letters, digits, '-' and '_', e.g. checkpoints")
    create_volume.add_argument("--size", type=int, required=True, metavar="GB", help="capacity in GB")
    create_volume.add_argument("--interface", choices=["block", "file"], default="block")
    create_volume.add_argument("--provider")
    list_volumes = volumes_sub.add_parser("list", help="list volumes, newest first")
    list_volumes.add_argument("--limit", type=int, default=100)
    delete_volume = volumes_sub.add_parser("delete", help="delete volumes and their data")
    delete_volume.add_argument("volume_ids", nargs="+", metavar="VOLUME_ID")
    for command in (create_volume, list_volumes, delete_volume):
        _add_json(command)
        command.set_defaults(handler=cmd_volumes)

    daemon = sub.add_parser("daemon", help="manage flowd, the per-user daemon")
    daemon.add_argument("action", choices=["start", "stop", "status", "gc"])
    _add_json(daemon)
    daemon.set_defaults(handler=cmd_daemon)
    return parser


def _report(error: FlowError, as_json: bool) -> None:
    if as_json:
        _emit_json(
            {
                "error": {
                    "code": error.error_code,
                    "type": type(error).__name__,
                    "message": error.message,
                    "suggestions": error.suggestions,
                    "violations": [{"field": v.field, "description": v.description} for v in error.violations],
                }
            }
        )
        return
    remote_traceback = getattr(error, "remote_traceback", None)
    if remote_traceback:
        print(remote_traceback.rstrip(), file=sys.stderr)
    print(f"error: {error.message}", file=sys.stderr)
    for tip in error.suggestions:
        print(f"  hint: {tip}", file=sys.stderr)


def _fail(parser: argparse.ArgumentParser) -> NoReturn:
    parser.print_help(sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        _fail(parser)
    from flow.errors import FlowError, ValidationError

    try:
        code = handler(args)
    except FlowError as error:
        _report(error, getattr(args, "json", False))
        code = EXIT_USAGE if isinstance(error, ValidationError) else EXIT_FAILED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    # Skip interpreter teardown (60-100 ms of module finalizers and gRPC shutdown): the CLI has
    # nothing left to flush but its two streams.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
