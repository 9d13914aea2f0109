"""`flow instances`: the instance types a provider offers, best first."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from flow.cli.arguments import add_json, client
from flow.cli.output import emit_json, table


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
    found = client(args).find_instances(wanted, limit=args.limit)
    if args.json:
        emit_json({"offers": list(found), "explanation": found.explanation, "suggestions": found.suggestions})
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
    sys.stdout.write(table(rows))
    return 0


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    instances = add_parser("instances", help="find instance types a provider offers, best first")
    instances.add_argument("--gpu-memory", type=int, metavar="GB", help="at least this much memory per GPU")
    instances.add_argument("--max-price", type=float, metavar="USD_PER_HOUR")
    instances.add_argument("--region")
    instances.add_argument("--gpu-type", help="e.g. h100")
    instances.add_argument("--min-gpus", type=int, metavar="N")
    instances.add_argument("-i", "--instance-type")
    instances.add_argument("--provider")
    instances.add_argument("--limit", type=int, default=20)
    add_json(instances)
    instances.set_defaults(handler=cmd_instances)


__all__ = ["register"]
