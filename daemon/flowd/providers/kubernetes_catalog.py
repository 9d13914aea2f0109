"""What a kubernetes provider's nodes offer (cached for CATALOG_TTL; find_instances asks anew), and
placing a task on one of them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Final

from returns.result import Failure, Result, Success

from flow.domain.daemon_config import KubernetesSettings
from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.instances.matching import Offer
from flow.domain.instances.placement import choose_offer
from flow.domain.kubernetes.nodes import KubeOffer, node_facts, offers_of
from flow.domain.mithril.data_mounts import data_mount_violations
from flow.domain.task.config import TaskConfig
from flowd.providers.base import Placement
from flowd.providers.kubernetes_api import KubeApi, KubeError

CATALOG_TTL: Final = 15.0


class KubeCatalog:
    """The offers of one kubernetes provider's nodes, and the choice among them for a task."""

    def __init__(self, settings: KubernetesSettings, api: Callable[[], KubeApi], clock: Callable[[], float]) -> None:
        self.name = settings.name
        self.settings = settings
        self._api = api
        self._clock = clock
        self._lock = threading.Lock()
        self._catalog: tuple[float, tuple[KubeOffer, ...]] | None = None

    def current(self, fresh: bool = False) -> tuple[KubeOffer, ...]:
        with self._lock:
            if not fresh and self._catalog is not None and self._clock() - self._catalog[0] < CATALOG_TTL:
                return self._catalog[1]
        api = self._api()
        facts = [f for n in api.nodes() if (f := node_facts(n, self.settings, api.cluster)) is not None]
        offers = offers_of(facts, self.name)
        with self._lock:
            self._catalog = (self._clock(), offers)
        return offers

    def offers(self) -> Result[tuple[Offer, ...], DomainError]:
        try:
            return Success(tuple(o.offer for o in self.current(fresh=True)))
        except KubeError as exc:
            return Failure(exc.error)

    def _unsupported(self, config: TaskConfig) -> DomainError | None:
        problems = []
        if config.ssh_keys:
            fix = "remove ssh_keys: flow ssh reaches the pods through the Kubernetes API"
            problems.append(violation("ssh_keys", list(config.ssh_keys), "has no meaning on Kubernetes", fix))
        problems += data_mount_violations(config, self.name)  # only s3:// sources reach a pod
        if problems:
            return validation_error(problems, subject=f"task for provider {self.name}")
        return None

    def choose(self, config: TaskConfig, offers: Sequence[KubeOffer]) -> Result[KubeOffer, DomainError]:
        chosen = choose_offer(config, [o.offer for o in offers])
        if isinstance(chosen, Failure):
            return Failure(chosen.failure())
        offer = chosen.unwrap()
        found = next(o for o in offers if o.offer == offer)
        if config.memory_mb:
            api = self._api()
            fits = [
                f
                for n in api.nodes()
                if (f := node_facts(n, self.settings, api.cluster)) is not None
                and f.memory_mib >= config.memory_mb
                and (not found.product or (f.product == found.product and f.gpus >= found.gpus))
            ]
            if not fits:
                return Failure(
                    DomainError(
                        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                        message=f"no node of provider {self.name} has memory_mb={config.memory_mb} MiB to give "
                        f"(with {format_instance_type(offer.instance_type)})",
                        suggestions=(
                            "ask for less memory (memory_mb)",
                            f"see the nodes: flow instances --provider {self.name}",
                        ),
                        metadata=(("provider", self.name),),
                    )
                )
        return Success(found)

    def place(self, config: TaskConfig) -> Result[Placement, DomainError]:
        refused = self._unsupported(config)
        if refused is not None:
            return Failure(refused)
        try:
            chosen = self.choose(config, self.current())
        except KubeError as exc:
            return Failure(exc.error)
        if isinstance(chosen, Failure):
            return Failure(chosen.failure())
        return Success(Placement(instance_type=format_instance_type(chosen.unwrap().offer.instance_type)))
