"""`flow instances`: the instance types a provider offers, best first."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from flow.cli.arguments import add_json, add_provider, client
from flow.cli.output import emit_json, table


def cmd_instances(args: argparse.Namespace) -> int:
    wanted = {
        key: getattr(args, key)
        for key in ("gpu_memory_gb", "max_price", "region", "gpu_type", "min_gpu_count", "instance_type")
        if getattr(args, key) is not None
    }
    found = client(args).find_instances(wanted, limit=args.limit)
    if args.json:
        emit_json({"offers": list(found), "explanation": found.explanation, "suggestions": found.suggestions})
        return 0
    if not found:
        print(found.explanation or "no offers")
        from flow.cli.hints import flags_of, in_cli_words

        for tip in found.suggestions:
            print(f"  hint: {in_cli_words(tip, flags_of(args.command_parser))}")
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
    sys.stdout.write(table(rows))
    return 0


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    instances = add_parser("instances", help="find instance types a provider offers, best first")
    # dest = the find_instances requirement an option sets (and the name the core's hints use).
    instances.add_argument(
        "--gpu-memory", dest="gpu_memory_gb", type=int, metavar="GB", help="at least this much memory per GPU"
    )
    instances.add_argument("--max-price", type=float, metavar="USD_PER_HOUR", help="at most this price per hour")
    instances.add_argument("--region", help="only offers in this region")
    instances.add_argument("--gpu-type", help="a GPU model, e.g. h100")
    instances.add_argument("--min-gpus", dest="min_gpu_count", type=int, metavar="N", help="at least N GPUs")
    instances.add_argument("-i", "--instance-type", dest="instance_type", help="this instance type, e.g. 8xh100")
    add_provider(instances)
    instances.add_argument("--limit", type=int, default=20, metavar="N", help="show at most N offers (default 20)")
    add_json(instances)
    instances.set_defaults(handler=cmd_instances, command_parser=instances)


__all__ = ["register"]
