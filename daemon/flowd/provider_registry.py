"""Which providers this daemon runs tasks on, built from $FLOW_HOME/config.yaml and the
environment. The local provider is always there (the embedded default)."""

from __future__ import annotations

from collections.abc import Mapping

from flow.home import FlowHome
from flowd.blobs import BlobStore
from flowd.providers.base import Provider, Reporter
from flowd.providers.local import LocalProvider

LOCAL = "local"


def build_providers(
    home: FlowHome, reporter: Reporter, blobs: BlobStore, env: Mapping[str, str]
) -> tuple[dict[str, Provider], str]:
    """The providers by name, and the name of the default one."""
    providers: dict[str, Provider] = {LOCAL: LocalProvider(tasks_root=home.tasks, reporter=reporter, blobs=blobs)}
    return providers, LOCAL
