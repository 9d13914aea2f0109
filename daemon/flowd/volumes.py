"""flowd's volumes: records in SQLite, data in filesystem images under $FLOW_HOME/volumes.

A volume is `$FLOW_HOME/volumes/<id>/image`, a sparse ext4 image of exactly size_gb GB, so a
write beyond the size fails inside the task with ENOSPC. flowd loop-mounts it at
`$FLOW_HOME/volumes/<id>/mnt` when a task needs it (and again after a restart); the local
provider binds that directory into the task's private mount namespace. flowd unmounts its host
mounts lazily when it stops: a task still running keeps its own mount, and a restarted daemon
mounts the same loop device again rather than a second one of the same image.

Decisions (names, sizes, reuse by name, who holds a block volume, whether a delete may go
ahead) are the core's (flow.domain.volumes.rules); this module gathers inputs and acts.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import attrs
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.page_token import decode_page_token, encode_page_token, page_size_of
from flow.domain.task.config import TaskConfig, VolumeSpec
from flow.domain.volumes.rules import (
    VOLUME_ID_PREFIX,
    Volume,
    VolumeMount,
    check_attach,
    check_delete,
    make_volume,
    name_taken,
    resolve_volumes,
    volume_holders,
    volume_not_found,
)
from flowd.store import DuplicateRequestError, StateWriteError, Store

log = logging.getLogger(__name__)

ID_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"
IMAGE_FILE: Final = "image"
MOUNT_DIR: Final = "mnt"
MKFS_OPTIONS: Final = ("-q", "-F", "-m", "0", "-i", "65536", "-E", "lazy_itable_init=1,lazy_journal_init=1")


def new_volume_id() -> str:
    return VOLUME_ID_PREFIX + "".join(secrets.choice(ID_ALPHABET) for _ in range(10))


def volume_to_json(volume: Volume) -> str:
    return json.dumps(attrs.asdict(volume), separators=(",", ":"))


def volume_from_json(text: str) -> Volume:
    return Volume(**json.loads(text))


class VolumeStorageError(Exception):
    """The machine could not create or mount a volume's image; the message says why."""


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise VolumeStorageError(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _mounted_at(path: Path) -> bool:
    wanted = str(path)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == wanted for line in info)


def storage_error(error: VolumeStorageError | OSError) -> DomainError:
    return DomainError(
        reason=ErrorReason.VOLUME_ERROR,
        message=f"flowd could not prepare the volume's storage: {error}",
        suggestions=(
            "volumes on the local provider need flowd to run as root with loop devices (losetup -f) and mkfs.ext4",
            "free space on the disk that holds $FLOW_HOME",
        ),
    )


class VolumeManager:
    """Volume records and their storage. `live_specs` gives the volumes named by each live task
    (the lifecycle's): the holders of block volumes and of volumes being deleted."""

    def __init__(
        self,
        store: Store,
        root: Path,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_volume_id,
        live_specs: Callable[[], Mapping[str, tuple[VolumeSpec, ...]]] = dict,
    ) -> None:
        self._store = store
        self.root = root
        self._clock = clock
        self._new_id = new_id
        self.lock = threading.RLock()  # held from resolving a task's volumes until it is live
        self.live_specs = live_specs
        self._mounted: set[Path] = set()

    # --- records ----------------------------------------------------------------------------

    def all(self) -> list[Volume]:
        return [volume_from_json(rec) for _, rec in self._store.volume_rows()]

    def get(self, volume_id: str) -> Result[Volume, DomainError]:
        found = next((v for v in self.all() if v.volume_id == volume_id), None)
        return Success(found) if found is not None else Failure(volume_not_found(volume_id))

    def holders(self) -> dict[str, tuple[str, ...]]:
        return volume_holders(self.live_specs(), self.all())

    def page(self, page_size: int, page_token: str) -> Result[tuple[list[Volume], str], DomainError]:
        size = page_size_of(page_size)
        if isinstance(size, Failure):
            return Failure(size.failure())
        before = decode_page_token(page_token)
        if isinstance(before, Failure):
            return Failure(before.failure())
        rows = self._store.volume_rows(before.unwrap(), size.unwrap() + 1)
        more = len(rows) > size.unwrap()
        rows = rows[: size.unwrap()]
        token = encode_page_token(rows[-1][0]) if more and rows else ""
        return Success(([volume_from_json(rec) for _, rec in rows], token))

    def create(
        self, name: object, size_gb: object, interface: object, iops: object, request_id: str, provider: str
    ) -> Result[Volume, DomainError]:
        if len(request_id) > 128 or "\x00" in request_id:
            return Failure(
                validation_error(
                    [violation("request_id", request_id, "must be at most 128 characters without NUL", "use a UUID")],
                    subject="request",
                )
            )
        made = make_volume(name, size_gb, interface, self._new_id(), self._clock(), provider, iops, request_id or None)
        if isinstance(made, Failure):
            return made
        volume = made.unwrap()
        with self.lock:
            existing = self.all()
            again = next((v for v in existing if request_id and v.request_id == request_id), None)
            if again is not None:
                return Success(again)
            taken = next((v for v in existing if v.name == volume.name), None)
            if taken is not None:
                return Failure(name_taken(taken))
            return self._materialize(volume)

    def _materialize(self, volume: Volume) -> Result[Volume, DomainError]:
        """Creates the image, then the record; on any failure neither is left behind."""
        try:
            self._make_image(volume)
        except (VolumeStorageError, OSError) as exc:
            shutil.rmtree(self.root / volume.volume_id, ignore_errors=True)
            return Failure(storage_error(exc))
        try:
            self._store.insert_volume(volume.volume_id, volume.name, volume.request_id, volume_to_json(volume))
        except (DuplicateRequestError, StateWriteError) as exc:
            shutil.rmtree(self.root / volume.volume_id, ignore_errors=True)
            if isinstance(exc, StateWriteError):
                raise
            taken = next((v for v in self.all() if v.name == volume.name), None)
            return Failure(name_taken(taken) if taken else volume_not_found(volume.volume_id))
        log.info("created volume %s (%s, %s GB)", volume.volume_id, volume.name, volume.size_gb)
        return Success(volume)

    def _make_image(self, volume: Volume) -> None:
        where = self.root / volume.volume_id
        self.root.mkdir(mode=0o700, exist_ok=True)
        where.mkdir(mode=0o700)
        image = where / IMAGE_FILE
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, volume.size_bytes)  # sparse: blocks are used as data is written
        finally:
            os.close(fd)
        _run(["mkfs.ext4", *MKFS_OPTIONS, "-L", volume.volume_id[:16], str(image)])
        (where / MOUNT_DIR).mkdir(mode=0o700)

    def delete(self, volume_id: str) -> Result[Volume, DomainError]:
        with self.lock:
            found = self.get(volume_id)
            if isinstance(found, Failure):
                return found
            volume = found.unwrap()
            allowed = check_delete(volume, self.holders())
            if isinstance(allowed, Failure):
                return Failure(allowed.failure())
            where = self.root / volume.volume_id
            try:
                self._unmount(where / MOUNT_DIR)
            except VolumeStorageError as exc:
                return Failure(storage_error(exc))
            self._store.delete_volume(volume_id)
            shutil.rmtree(where, ignore_errors=True)
        log.info("deleted volume %s (%s)", volume.volume_id, volume.name)
        return Success(volume)

    # --- tasks ------------------------------------------------------------------------------

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """Held by the engine from resolving a task's volumes until the task is live, so two
        tasks can never both take the same block volume."""
        with self.lock:
            yield

    def resolve(self, config: TaskConfig, provider: str, create: bool) -> Result[tuple[VolumeMount, ...], DomainError]:
        """The task's volumes: existing ones found, missing ones created (when `create`), block
        volumes checked against live holders. Callers hold `claiming()`."""
        if not config.volumes:
            return Success(())
        existing = self.all()
        resolved = resolve_volumes(config.volumes, existing, iter(self._new_id, None), self._clock(), provider)
        if isinstance(resolved, Failure):
            return resolved
        mounts = resolved.unwrap()
        allowed = check_attach(mounts, self.holders())
        if isinstance(allowed, Failure):
            return Failure(allowed.failure())
        if create:
            for mount in mounts:
                if mount.created:
                    made = self._materialize(mount.volume)
                    if isinstance(made, Failure):
                        return Failure(made.failure())
        return Success(mounts)

    def host_path(self, volume_id: str) -> Path:
        """The volume's directory on the host, mounted now if it is not (raises
        VolumeStorageError)."""
        where = self.root / volume_id
        target = where / MOUNT_DIR
        with self.lock:
            if not (where / IMAGE_FILE).is_file():
                raise VolumeStorageError(f"the image of volume {volume_id} is missing from {where}")
            if _mounted_at(target):
                return target
            image = str(where / IMAGE_FILE)
            # A loop device still attached to this image (used by a task that outlived the
            # daemon) is mounted again: a second device on the same image would corrupt it.
            attached = _run(["losetup", "-j", image]).strip()
            if attached:
                _run(["mount", "-o", "noinit_itable", attached.split(":", 1)[0], str(target)])
            else:
                _run(["mount", "-o", "loop,noinit_itable", image, str(target)])
            self._mounted.add(target)
            return target

    def _unmount(self, target: Path) -> None:
        if target.exists() and _mounted_at(target):
            _run(["umount", "-l", str(target)])
        self._mounted.discard(target)

    def close(self) -> None:
        """Lets go of the host mounts (tasks still running keep theirs)."""
        with self.lock:
            for target in list(self._mounted):
                try:
                    self._unmount(target)
                except VolumeStorageError as exc:
                    log.warning("could not unmount %s: %s", target, exc)
