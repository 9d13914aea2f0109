"""Which providers this daemon runs tasks on, built from $FLOW_HOME/config.yaml and the
environment. The local provider is always there (the embedded default)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flow.domain.gpu_inventory import describe_inventory
from flow.home import FlowHome
from flowd.blobs import BlobStore
from flowd.gpu_discovery import discover_gpus
from flowd.providers.base import Provider, Reporter
from flowd.providers.local import LocalProvider

LOCAL = "local"
log = logging.getLogger(__name__)


def build_providers(
    home: FlowHome, reporter: Reporter, blobs: BlobStore, env: Mapping[str, str]
) -> tuple[dict[str, Provider], str]:
    """The providers by name, and the name of the default one."""
    gpus, source = discover_gpus(env)
    log.info("local GPUs (%s): %s", source, describe_inventory(gpus))
    local = LocalProvider(tasks_root=home.tasks, reporter=reporter, blobs=blobs, gpus=gpus)
    providers: dict[str, Provider] = {LOCAL: local}
    return providers, LOCAL
