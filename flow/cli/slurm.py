"""`flow slurm submit job.sbatch`: an existing sbatch script as Flow task(s), on any provider."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from flow.cli.arguments import add_json, client
from flow.cli.output import emit_json
from flow.cli.tasks import EXIT_FAILED, EXIT_INTERRUPTED, attach, summary


def cmd_slurm_submit(args: argparse.Namespace) -> int:
    from flow.slurm import submit_sbatch

    tasks = submit_sbatch(
        client(args),
        args.script,
        provider=args.provider,
        instance_type=args.instance_type,
        upload_code=not args.no_upload,
        validate_only=args.dry_run,
        on_warning=lambda text: print(f"warning: {text}", file=sys.stderr),
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
        return EXIT_INTERRUPTED
    if args.json:
        emit_json([t.to_dict() for t in tasks])
    return 0 if all(str(t.last_status) == "COMPLETED" for t in tasks) else EXIT_FAILED


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    slurm = add_parser("slurm", help="run existing Slurm batch scripts as Flow tasks")
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
    add_json(submit)
    submit.set_defaults(handler=cmd_slurm_submit)


__all__ = ["register"]
