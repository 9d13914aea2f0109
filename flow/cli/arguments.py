"""What every command group shares: the --json flag and the client a command talks through."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flow.client import Flow


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def client(args: argparse.Namespace) -> Flow:
    """A Flow client for the command's --provider (the grpcio path: imported only here)."""
    from flow.client import Flow

    return Flow(provider=getattr(args, "provider", None))


__all__ = ["add_json", "client"]
