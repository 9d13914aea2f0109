"""`flow slurm submit job.sbatch`: an existing sbatch script as Flow task(s), on any provider."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from flow.cli import exit_status
from flow.cli.arguments import add_json, add_provider, client
from flow.cli.output import emit_json
from flow.cli.tasks import attach, begin_time, summary


def cmd_slurm_submit(args: argparse.Namespace) -> int:
    from flow.slurm import submit_sbatch

    tasks = submit_sbatch(
        client(args),
        args.script,
        provider=args.provider,
        instance_type=args.instance_type,
        upload_code=args.upload_code is not False,
        validate_only=args.dry_run,
        on_warning=lambda text: print(f"warning: {text}", file=sys.stderr),
        overrides=_scheduling(args),
    )
    if args.dry_run:
        if args.json:
            emit_json([{"valid": True, "provider": t.provider, "instance_type": t.instance_type} for t in tasks])
        else:
            for t in tasks:
                print(f"valid: {t.name} would run on {t.provider} as {t.instance_type}")
        return 0
    if len(tasks) == 1 and not args.detach:
        return attach(tasks[0], args.json)
    if args.detach:
        if args.json:
            emit_json([t.to_dict() for t in tasks])
        else:
            print("\n".join(t.task_id for t in tasks))
        return 0
    print(f"{len(tasks)} tasks submitted (one per array element); waiting for them", file=sys.stderr)
    try:
        for task in tasks:
            task.wait()
            if not args.json:
                print(summary(task))
    except KeyboardInterrupt:
        return exit_status.DETACHED
    if args.json:
        emit_json([t.to_dict() for t in tasks])
    return max((exit_status.of_task(t) for t in tasks), key=lambda code: code != 0)  # the first that did not complete


def _scheduling(args: argparse.Namespace) -> dict[str, object]:
    """sbatch's scheduling options given on the command line: they win over the script's."""
    from returns.result import Failure

    from flow.domain.task.dependencies import parse_slurm_dependency
    from flow.wire.error_table import exception_from_domain_error

    found: dict[str, object] = {}
    if args.dependency is not None:
        parsed = parse_slurm_dependency(args.dependency)
        if isinstance(parsed, Failure):
            raise exception_from_domain_error(parsed.failure())
        found["depends_on"] = parsed.unwrap()
    if args.begin is not None:
        found["start_after"] = begin_time(args.begin)
    if args.nice is not None:
        found["priority"] = -args.nice
    if args.priority is not None:
        found["priority"] = args.priority
    return found


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    slurm = add_parser("slurm", help="run existing Slurm batch scripts as Flow tasks")
    slurm.set_defaults(command_parser=slurm)
    slurm_sub = slurm.add_subparsers(dest="slurm_cmd", metavar="COMMAND", help="submit: run an sbatch script")
    submit = slurm_sub.add_parser(
        "submit",
        help="submit an #SBATCH script (on any provider; natively on a slurm provider)",
        description="Reads the script's #SBATCH directives into a task (one per --array element) and runs the "
        "script on the provider; on a slurm provider the directives are submitted as they are.",
    )
    submit.add_argument("script", help="the sbatch script, e.g. job.sbatch")
    add_provider(submit)
    submit.add_argument(
        "-i", "--instance-type", dest="instance_type", help="GPUs for providers other than slurm, e.g. 8xa100"
    )
    submit.add_argument(
        "--no-upload",
        dest="upload_code",
        action="store_const",
        const=False,
        help="run in the task's own empty directory, not in a snapshot of this one",
    )
    submit.add_argument(
        "--dependency",
        metavar="TYPE:TASK[:TASK...][,...]",
        help="as sbatch's: afterok:t-abc,afterany:t-def (Flow task ids), or singleton",
    )
    submit.add_argument("-b", "--begin", metavar="TIME", help="as sbatch's: now+1hour, 2025-06-01T09:00, 18:30")
    order = submit.add_mutually_exclusive_group()
    order.add_argument("--nice", type=int, metavar="N", help="as sbatch's: lower the tasks' priority by N")
    order.add_argument("--priority", type=int, metavar="N", help="order among your waiting tasks: higher first")
    submit.add_argument("-d", "--detach", action="store_true", help="print the task ids and return at once")
    submit.add_argument("--dry-run", action="store_true", help="validate and place, launch nothing")
    add_json(submit)
    submit.set_defaults(handler=cmd_slurm_submit, command_parser=submit)


__all__ = ["register"]
