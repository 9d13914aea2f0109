"""`flow slurm submit job.sbatch`: an existing sbatch script as Flow task(s), on any provider."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from flow.cli import exit_status
from flow.cli.arguments import add_json, add_provider, client
from flow.cli.output import emit_json
from flow.cli.tasks import attach, begin_time, summary


def cmd_slurm_submit(args: argparse.Namespace) -> int:
    from flow.slurm import plan_for, submit_plan

    flow = client(args)
    plan = plan_for(flow, args.script, args.provider, instance_type=args.instance_type)
    for note in plan.warnings:
        print(f"warning: {note}", file=sys.stderr)
    tasks = submit_plan(
        flow, plan, upload_code=args.upload_code is not False, validate_only=args.dry_run, overrides=_scheduling(args)
    )
    if args.dry_run:
        # Every task passed the provider's checks (a refusal raised): the plan, and where each runs.
        if args.json:
            shown = plan.to_dict()
            for planned, task in zip(shown["tasks"], tasks, strict=True):
                planned["validation"] = {"valid": True, "provider": task.provider, "instance_type": task.instance_type}
            emit_json({**shown, "valid": True})
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
    shown_name = plan.job_name or Path(args.script).name
    print(
        f"{shown_name}: {len(tasks)} tasks submitted (one per array element); waiting for them "
        f"(`flow slurm cancel {tasks[0].task_id}` cancels them all)",
        file=sys.stderr,
    )
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


def cmd_slurm_cancel(args: argparse.Namespace) -> int:
    from flow.slurm import cancel_array

    flow = client(args)
    cancelled = cancel_array(flow, flow.get_task(args.task))
    if args.json:
        emit_json([t.to_dict() for t in cancelled])
    else:
        for task in cancelled:
            print(f"{task.task_id} {task.name}: {task.last_status}")
        if not cancelled:
            print("every element of the array had already ended")
    return 0


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
    slurm_sub = slurm.add_subparsers(
        dest="slurm_cmd", metavar="COMMAND", help="submit: run an sbatch script; cancel: cancel an array"
    )
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
    submit.add_argument(
        "--dry-run",
        action="store_true",
        help="read, validate and place every task (on Slurm: sbatch --test-only), launch nothing; "
        "with --json, the whole plan",
    )
    add_json(submit)
    submit.set_defaults(handler=cmd_slurm_submit, command_parser=submit)
    cancel = slurm_sub.add_parser(
        "cancel",
        help="cancel every element of an array submitted by `flow slurm submit`",
        description="Cancels every element of the array TASK belongs to that has not ended (on a slurm provider, "
        "each element of the one array job) and prints the state each reached.",
    )
    cancel.add_argument("task", help="the task id of any element of the array")
    add_json(cancel)
    cancel.set_defaults(handler=cmd_slurm_cancel, command_parser=cancel)


__all__ = ["register"]
