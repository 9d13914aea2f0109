"""flowd's own environment, and what of it a task (or a command flowd runs for one) may see."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# Variables of flowd's own environment that must never reach a task, a job or an exec'd command:
# the Mithril key, the TCP access token, the daemon's own markers.
PRIVATE_ENV: Final = frozenset({"MITHRIL_API_KEY", "FLOW_DAEMON_TOKEN", "FLOW_DAEMON_DETACHED"})


def public_env(source: Mapping[str, str]) -> dict[str, str]:
    """`source` without flowd's private variables."""
    return {k: v for k, v in source.items() if k not in PRIVATE_ENV}
