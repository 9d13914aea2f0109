"""Launching a task on Kubernetes: its objects (Secret, ConfigMap, Service, Job; what was created
is deleted again on a refusal) and its code, in the ConfigMap or, when too large for one, streamed
into each pod's waiting init container. See flowd.providers.kubernetes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from returns.result import Failure

from flow.domain.daemon_config import KubernetesSettings
from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.instances.instance_types import format_instance_type
from flow.domain.kubernetes.manifests import (
    CODE_ARCHIVE,
    CODE_CONTAINER,
    CODE_IN_CONFIGMAP,
    CODE_STREAMED,
    INVOCATION,
    MAX_FILES_BYTES,
    RUNNER,
    UNPACK_STREAM,
    PodPlan,
    files_manifest,
    job_manifest,
    job_name,
    secret_manifest,
    service_manifest,
)
from flow.domain.kubernetes.nodes import REGION_LABEL
from flow.domain.mithril.data_mounts import CREDENTIALS_FILE, SYNCER_FILE, data_mounts_of
from flow.domain.task.config import TaskConfig
from flow.domain.task.function_call import invocation_document
from flow.domain.task.lifecycle import TaskRecord
from flow.runtime import runner, s3_sync
from flowd.blobs import BlobStore
from flowd.providers.base import Launched, LaunchError, Queued, Refused
from flowd.providers.code_archive import snapshot_archive
from flowd.providers.kubernetes_api import KubeApi, KubeError
from flowd.providers.kubernetes_catalog import KubeCatalog
from flowd.providers.kubernetes_state import KubeJob
from flowd.providers.kubernetes_volumes import KubeVolumes
from flowd.providers.s3_credentials import no_storage_credentials, storage_credentials

log = logging.getLogger(__name__)

RUNNER_SOURCE: Final = Path(runner.__file__)
SYNCER_SOURCE: Final = Path(s3_sync.__file__)
STDIN_CHUNK: Final = 256 * 1024


class KubeLauncher:
    """Creates a task's objects, and streams its code into pods that wait for it."""

    def __init__(
        self,
        settings: KubernetesSettings,
        api: Callable[[], KubeApi],
        catalog: KubeCatalog,
        volumes: KubeVolumes,
        blobs: BlobStore,
        env: Mapping[str, str],
    ) -> None:
        self._env = env
        self.name = settings.name
        self.settings = settings
        self._api = api
        self._catalog = catalog
        self._volumes = volumes
        self._blobs = blobs

    def _claims(self, record: TaskRecord) -> tuple[tuple[str, str], ...]:
        """The task's volumes as claims, the new ones created now (they outlive a refused launch:
        a volume is kept until deleted)."""
        if not record.config.volumes:
            return ()
        resolved = self._volumes.for_task(record.config)
        if isinstance(resolved, Failure):
            raise LaunchError(resolved.failure().message, resolved.failure())
        return self._volumes.attach(resolved.unwrap())

    def _code_archive(self, digest: str | None) -> bytes | None:
        return snapshot_archive(self._blobs, digest, compresslevel=9)  # a ConfigMap holds 1 MiB: every byte counts

    def _data_credentials(self, config: TaskConfig) -> dict[str, str]:
        """The task Secret's entry the data container reads (never the pod spec's), {} without data mounts."""
        if not config.data_mounts:
            return {}
        found = storage_credentials(self._env)
        if found is None:
            error = no_storage_credentials(self.name)
            raise LaunchError(error.message, error)
        return {CREDENTIALS_FILE: json.dumps(found)}

    def _plan(self, record: TaskRecord) -> tuple[PodPlan, dict[str, bytes], dict[str, str]]:
        config = record.config
        for fresh in (False, True):
            offers = self._catalog.current(fresh=fresh)
            same = [o for o in offers if format_instance_type(o.offer.instance_type) == record.instance_type]
            chosen = self._catalog.choose(config, same) if same else None
            if chosen is not None and not isinstance(chosen, Failure):
                break
        else:
            raise LaunchError(
                f"the cluster no longer offers {record.instance_type}; look at `flow instances --provider {self.name}`",
                DomainError(
                    reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
                    message=f"provider {self.name} no longer offers {record.instance_type}",
                    suggestions=(f"look at what it offers: flow instances --provider {self.name}",),
                ),
            )
        offer = chosen.unwrap()
        files: dict[str, bytes] = {}
        archive = self._code_archive(record.code_digest)
        if archive is not None:
            files[CODE_ARCHIVE] = archive
        call = record.function_call
        if call is not None:
            files[RUNNER] = RUNNER_SOURCE.read_bytes()
            files[INVOCATION] = json.dumps(invocation_document(call)).encode()
        if config.data_mounts:
            files[SYNCER_FILE] = SYNCER_SOURCE.read_bytes()
        code = CODE_IN_CONFIGMAP if archive is not None else ""
        if sum(len(v) for v in files.values()) > MAX_FILES_BYTES:  # too large for a ConfigMap: streamed
            files.pop(CODE_ARCHIVE, None)
            code = CODE_STREAMED if archive is not None else ""
        size = sum(len(v) for v in files.values())
        if size > MAX_FILES_BYTES:  # a function call's arguments alone
            problem = (
                f"is {size // 1024} KiB; the kubernetes provider sends a function call through a ConfigMap, "
                f"which holds {MAX_FILES_BYTES // 1024} KiB"
            )
            fix = "pass large data through a volume or a data mount, not as an argument"
            error = validation_error(
                [violation("args", call.function if call else "", problem, fix)], subject="function call"
            )
            raise LaunchError(error.message, error)
        region = offer.offer.region  # a node label's region selects those nodes; the cluster's, any
        plan = PodPlan(
            task_id=record.task_id,
            task_name=record.name,
            config=config,
            image=config.image or self.settings.image,
            gpus=offer.gpus,
            gpu_product=offer.product,
            region_label=(REGION_LABEL, region) if config.region and region != self._api().cluster else None,
            secret_names=tuple(sorted(record.secrets)),
            code=code,
            function_python=(call.python or "python3") if call is not None else None,
            claims=self._claims(record),
            data_mounts=data_mounts_of(config),
        )
        return plan, files, {**record.secrets, **self._data_credentials(config)}

    def launch(self, record: TaskRecord) -> Launched[KubeJob]:
        try:
            api = self._api()
            plan, files, secrets = self._plan(record)
        except KubeError as exc:
            return Refused(exc.error)
        except (LaunchError, OSError) as exc:
            return (exc if isinstance(exc, LaunchError) else LaunchError(str(exc))).refused(self.name)
        name = job_name(record.task_id)
        created: list[str] = []
        try:
            if secrets:
                api.create("secrets", secret_manifest(record.task_id, self.name, secrets))
                created.append("secrets")
            if files:
                api.create("configmaps", files_manifest(record.task_id, self.name, files))
                created.append("configmaps")
            if record.config.num_instances > 1:
                api.create("services", service_manifest(record.task_id, self.name))
                created.append("services")
            api.create("jobs", job_manifest(plan, self.settings))
        except KubeError as exc:
            if exc.status == 409 and not created:  # launched before flowd stopped: it is there
                return Queued(KubeJob(name, api.namespace, record.config.num_instances))
            for kind in created:
                try:
                    api.delete(kind, name)
                except KubeError:
                    log.warning("provider %s: could not delete %s %s after a refusal", self.name, kind, name)
            return Refused(exc.error)
        return Queued(KubeJob(name, api.namespace, record.config.num_instances))

    def stream_code(self, digest: str | None, pod: str) -> tuple[int, bytes, bool]:
        """Streams the code snapshot into the pod's waiting init container (one too large for a
        ConfigMap); the init container ends once it is unpacked, and the task's program starts.
        Answers the unpacking's exit status (-1: unknown), what it said, and whether the answer is
        final (False: the cluster did not answer or the stream broke, and trying again may help)."""
        said, code, answered = b"", -1, False
        try:
            archive = self._code_archive(digest)
            if archive is None:
                raise LaunchError("the task's code snapshot is gone")
            channel = self._api().exec(pod, UNPACK_STREAM, False, container=CODE_CONTAINER)
            for start in range(0, len(archive), STDIN_CHUNK):
                channel.write(archive[start : start + STDIN_CHUNK])
            channel.close_stdin()
            said = b"".join(chunk for _, chunk in iter(channel.read, None))
            code, answered = channel.wait(), channel.answered
        except KubeError as exc:
            said = str(exc).encode()
        except (LaunchError, OSError) as exc:
            said, answered = str(exc).encode(), True
        return code, said, answered
