"""Volumes: what one is, how a task's VolumeSpecs resolve against the ones that exist, and who
may attach what.

Pure: the shell passes in the existing volumes, the live tasks that hold them, fresh ids and the
clock. Rules:
  - a name is letters, digits, '-' and '_' (as task names); a size is 1..MAX_VOLUME_GB GB;
  - `VolumeSpec(name=..., size_gb=...)` creates the volume on first use and reuses it by name
    afterwards (a different size or interface for an existing name is refused, not ignored);
    `VolumeSpec(volume_id=...)` and `VolumeSpec(name=...)` without a size attach an existing one,
    as it is;
  - a volume appears at `mount_path`, or /volumes/<name>;
  - a `file` volume is shared by any number of live tasks; a `block` volume is attached to one
    live task at a time, and a second one gets VOLUME_ERROR naming the holder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason, FieldViolation, not_found, validation_error, violation
from flow.domain.task.config import (
    DEFAULT_VOLUME_ROOT,
    VOLUME_ID_PATTERN,
    VolumeSpec,
    volume_spec_violations,
)

VOLUME_ID_PREFIX: Final = "vol-"
GB: Final = 10**9  # volumes are sized in decimal gigabytes, as clouds sell them
LOCAL_REGION: Final = "local"


@frozen
class Volume:
    """A volume that exists. `created_at` is seconds since the epoch."""

    volume_id: str
    name: str
    size_gb: int
    interface: str = "block"
    region: str = LOCAL_REGION
    provider: str = "local"
    created_at: float = 0.0
    iops: int | None = None
    request_id: str | None = None

    @property
    def size_bytes(self) -> int:
        return self.size_gb * GB

    @property
    def default_mount_path(self) -> str:
        return f"{DEFAULT_VOLUME_ROOT}/{self.name}"


@frozen
class VolumeMount:
    """One volume of a task, resolved: which volume, where it appears, and whether it is new."""

    volume: Volume
    mount_path: str
    created: bool = False


def new_volume_violations(
    name: object, size_gb: object, interface: object, iops: object = None
) -> tuple[FieldViolation, ...]:
    """Every problem with a volume to be created (fields named as in create_volume)."""
    # Values of any type, on purpose (a request may carry anything): the checks name what is wrong.
    spec = VolumeSpec(
        name=name,  # type: ignore[arg-type]  # see above
        size_gb=size_gb,  # type: ignore[arg-type]  # see above
        interface=interface,  # type: ignore[arg-type]  # see above
        iops=iops,  # type: ignore[arg-type]  # see above
    )
    sized = (
        ()
        if size_gb is not None
        else (violation("size_gb", None, "is required for a new volume", "give size_gb, e.g. 100"),)
    )
    return volume_spec_violations(spec) + sized


def make_volume(
    name: object,
    size_gb: object,
    interface: object,
    volume_id: str,
    now: float,
    provider: str = "local",
    iops: object = None,
    request_id: str | None = None,
) -> Result[Volume, DomainError]:
    """A new volume, or a VALIDATION_FAILED error naming every bad field."""
    problems = new_volume_violations(name, size_gb, interface, iops)
    if problems:
        return Failure(validation_error(problems, subject="volume"))
    assert isinstance(name, str) and isinstance(size_gb, int) and isinstance(interface, str)
    return Success(
        Volume(
            volume_id=volume_id,
            name=name,
            size_gb=size_gb,
            interface=interface,
            provider=provider,
            created_at=now,
            iops=iops if isinstance(iops, int) else None,
            request_id=request_id,
        )
    )


def is_volume_id(text: str) -> bool:
    return bool(VOLUME_ID_PATTERN.fullmatch(text))


def check_volume_id(volume_id: str, field: str = "volume_id") -> Result[str, DomainError]:
    """A volume id given in a request: malformed is INVALID_ARGUMENT naming the field (as the task
    calls answer a malformed name); well-formed but unknown is the caller's NOT_FOUND."""
    if is_volume_id(volume_id):
        return Success(volume_id)
    fix = "use the volume_id shown by `flow volumes list`, e.g. vol-3kq9x2m4zr"
    return Failure(validation_error([violation(field, volume_id, "is not a volume id", fix)], subject="request"))


def volume_not_found(volume_id: str) -> DomainError:
    return not_found("volume", volume_id, ("list volumes with `flow volumes list`",))


def listed_volume(
    listed: Iterable[tuple[Volume, tuple[str, ...]]], volume_id: str
) -> Result[tuple[Volume, tuple[str, ...]], DomainError]:
    """The volume with `volume_id` (and its holders) among a provider's listed ones, or NOT_FOUND."""
    found = next((pair for pair in listed if pair[0].volume_id == volume_id), None)
    return Success(found) if found is not None else Failure(volume_not_found(volume_id))


def name_taken(existing: Volume) -> DomainError:
    return DomainError(
        reason=ErrorReason.ALREADY_EXISTS,
        message=f"A volume named {existing.name!r} exists already ({existing.volume_id}, {existing.size_gb} GB)",
        suggestions=(
            f"attach it with VolumeSpec(volume_id={existing.volume_id!r}) or VolumeSpec(name={existing.name!r})",
            "or choose another name",
        ),
        metadata=(("volume_id", existing.volume_id),),
    )


def _mismatch(path: str, spec: VolumeSpec, existing: Volume) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if spec.size_gb is not None and spec.size_gb != existing.size_gb:
        out.append(
            violation(
                f"{path}.size_gb",
                spec.size_gb,
                f"differs from the existing volume {existing.name!r} ({existing.volume_id}, {existing.size_gb} GB)",
                f"give size_gb={existing.size_gb} to reuse it, or another name for a new volume",
            )
        )
    if spec.interface != existing.interface:
        out.append(
            violation(
                f"{path}.interface",
                spec.interface,
                f"differs from the existing volume {existing.name!r} ({existing.interface})",
                f"give interface={existing.interface!r} to reuse it, or another name for a new volume",
            )
        )
    return out


def resolve_volumes(
    specs: Iterable[VolumeSpec],
    existing: Iterable[Volume],
    new_ids: Iterable[str],
    now: float,
    provider: str = "local",
) -> Result[tuple[VolumeMount, ...], DomainError]:
    """Each (valid) spec resolved against the existing volumes: attach by volume_id, reuse by
    name, or create (taking the next id of `new_ids`). Every problem at once."""
    by_id = {v.volume_id: v for v in existing}
    by_name = {v.name: v for v in by_id.values()}
    ids = iter(new_ids)
    mounts: list[VolumeMount] = []
    problems: list[FieldViolation] = []
    missing: list[str] = []
    missing_names: list[str] = []
    used: dict[str, str] = {}
    for i, spec in enumerate(specs):
        path = f"volumes[{i}]"
        if spec.volume_id is not None:
            found = by_id.get(spec.volume_id)
            if found is None:
                missing.append(spec.volume_id)
                continue
            if spec.name is not None and spec.name != found.name:
                problems.append(
                    violation(
                        f"{path}.name",
                        spec.name,
                        f"is not the name of {found.volume_id} ({found.name!r})",
                        "leave name out when attaching by volume_id",
                    )
                )
                continue
        else:
            assert spec.name is not None
            found = by_name.get(spec.name)
            if found is None and spec.size_gb is None:
                missing_names.append(spec.name)
                continue
            if found is not None and spec.size_gb is not None:
                bad = _mismatch(path, spec, found)
                if bad:
                    problems.extend(bad)
                    continue
        if found is not None and found.volume_id in used:
            problems.append(
                violation(
                    path,
                    found.name,
                    f"is the same volume as {used[found.volume_id]}",
                    "attach each volume once",
                )
            )
            continue
        if found is None:
            made = make_volume(spec.name, spec.size_gb, spec.interface, next(ids), now, provider, spec.iops)
            if isinstance(made, Failure):
                problems.extend(made.failure().violations)
                continue
            new = made.unwrap()
            by_name[new.name] = new
            by_id[new.volume_id] = new
            mounts.append(VolumeMount(new, spec.mount_path or new.default_mount_path, created=True))
            used[new.volume_id] = path
            continue
        mounts.append(VolumeMount(found, spec.mount_path or found.default_mount_path))
        used[found.volume_id] = path
    if missing:
        shown = ", ".join(missing)
        return Failure(
            DomainError(
                reason=ErrorReason.RESOURCE_NOT_FOUND,
                message=f"No volume with id {shown}",
                suggestions=(
                    "list volumes with `flow volumes list`",
                    "or create one by name: VolumeSpec(name=..., size_gb=...)",
                ),
                metadata=(("volume", missing[0]),),
            )
        )
    if missing_names:
        shown = ", ".join(repr(n) for n in missing_names)
        return Failure(
            DomainError(
                reason=ErrorReason.RESOURCE_NOT_FOUND,
                message=f"No volume named {shown}",
                suggestions=(
                    "list volumes with `flow volumes list`",
                    f"or give size_gb to create it on first use: VolumeSpec(name={missing_names[0]!r}, size_gb=...)",
                ),
                metadata=(("volume", missing_names[0]),),
            )
        )
    if problems:
        return Failure(validation_error(problems, subject="task configuration"))
    return Success(tuple(mounts))


def volume_holders(
    specs_by_task: Mapping[str, Iterable[VolumeSpec]], volumes: Iterable[Volume]
) -> dict[str, tuple[str, ...]]:
    """volume_id -> the ids of the (live) tasks whose specs name it, in the given task order."""
    by_name = {v.name: v.volume_id for v in volumes}
    known = set(by_name.values())
    holders: dict[str, list[str]] = {}
    for task_id, specs in specs_by_task.items():
        for spec in specs:
            volume_id = spec.volume_id if spec.volume_id is not None else by_name.get(spec.name or "")
            if volume_id in known and task_id not in holders.setdefault(volume_id or "", []):
                holders[volume_id or ""].append(task_id)
    return {k: tuple(v) for k, v in holders.items()}


def check_attach(mounts: Iterable[VolumeMount], holders: Mapping[str, tuple[str, ...]]) -> Result[None, DomainError]:
    """A block volume held by a live task cannot be attached by another."""
    for mount in mounts:
        held_by = holders.get(mount.volume.volume_id, ())
        if mount.volume.interface == "block" and held_by:
            volume = mount.volume
            return Failure(
                DomainError(
                    reason=ErrorReason.VOLUME_ERROR,
                    message=(
                        f"Volume {volume.name!r} ({volume.volume_id}) is a block volume attached to task "
                        f"{held_by[0]}, which is still live; a block volume attaches to one task at a time"
                    ),
                    suggestions=(
                        f"wait for task {held_by[0]} to finish (flow wait {held_by[0]}), or cancel it",
                        "use a volume with interface='file' to share it between running tasks",
                    ),
                    metadata=(("volume_id", volume.volume_id), ("task_id", held_by[0])),
                )
            )
    return Success(None)


def check_delete(volume: Volume, holders: Mapping[str, tuple[str, ...]]) -> Result[None, DomainError]:
    """A volume a live task uses cannot be deleted (its data is kept)."""
    held_by = holders.get(volume.volume_id, ())
    if not held_by:
        return Success(None)
    shown = ", ".join(held_by)
    return Failure(
        DomainError(
            reason=ErrorReason.VOLUME_ERROR,
            message=(
                f"Volume {volume.name!r} ({volume.volume_id}) is in use by live task(s) {shown}; "
                "it was not deleted and its data is intact"
            ),
            suggestions=(f"wait for or cancel task {held_by[0]}, then delete the volume",),
            metadata=(("volume_id", volume.volume_id), ("task_id", held_by[0])),
        )
    )
