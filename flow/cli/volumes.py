"""`flow volumes create|list|delete`: persistent storage from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from flow.cli.arguments import add_json, client
from flow.cli.output import emit_json, table


def cmd_volumes(args: argparse.Namespace) -> int:
    flow = client(args)
    if args.volumes_cmd == "create":
        volume = flow.create_volume(size_gb=args.size, name=args.name, interface=args.interface)
        if args.json:
            emit_json(volume.to_dict())
        else:
            print(volume.volume_id)
        return 0
    if args.volumes_cmd == "list":
        volumes = flow.list_volumes(limit=args.limit)
        if args.json:
            emit_json([v.to_dict() for v in volumes])
            return 0
        rows = [("VOLUME_ID", "NAME", "SIZE", "INTERFACE", "REGION", "CREATED", "ATTACHED TO")]
        rows += [
            (
                v.volume_id,
                v.name,
                f"{v.size_gb} GB",
                v.interface,
                v.region,
                v.created_at.strftime("%Y-%m-%d %H:%M"),
                ", ".join(v.attachments) or "-",
            )
            for v in volumes
        ]
        sys.stdout.write(table(rows))
        return 0
    deleted = []
    for volume_id in args.volume_ids:
        flow.delete_volume(volume_id)
        deleted.append(volume_id)
        if not args.json:
            print(f"deleted {volume_id}")
    if args.json:
        emit_json({"deleted": deleted})
    return 0


def register(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    volumes = add_parser("volumes", help="persistent storage: create, list and delete volumes")
    volumes_sub = volumes.add_subparsers(dest="volumes_cmd", metavar="COMMAND", required=True)
    create = volumes_sub.add_parser("create", help="create a volume")
    create.add_argument("name", help="letters, digits, '-' and '_', e.g. checkpoints")
    create.add_argument("--size", type=int, required=True, metavar="GB", help="capacity in GB")
    create.add_argument("--interface", choices=["block", "file"], default="block")
    create.add_argument("--provider")
    listing = volumes_sub.add_parser("list", help="list volumes, newest first")
    listing.add_argument("--limit", type=int, default=100)
    delete = volumes_sub.add_parser("delete", help="delete volumes and their data")
    delete.add_argument("volume_ids", nargs="+", metavar="VOLUME_ID")
    for command in (create, listing, delete):
        add_json(command)
        command.set_defaults(handler=cmd_volumes)


__all__ = ["register"]
