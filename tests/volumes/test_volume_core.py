"""The pure core of volumes (flow.domain.volumes.rules, flow.domain.volumes.mounts), with hypothesis."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import ErrorReason
from flow.domain.task.config import MAX_VOLUME_GB, NAME_PATTERN, VolumeSpec
from flow.domain.volumes.mounts import (
    MOUNT_FAILED_EXIT,
    Bind,
    PathKind,
    mount_point_paths,
    namespace_argv,
    namespace_script,
)
from flow.domain.volumes.rules import (
    Volume,
    VolumeMount,
    check_attach,
    check_delete,
    make_volume,
    resolve_volumes,
    volume_holders,
)
from flowd.volumes import volume_from_json, volume_to_json

names = st.from_regex(NAME_PATTERN, fullmatch=True)
sizes = st.integers(min_value=1, max_value=MAX_VOLUME_GB)
interfaces = st.sampled_from(["block", "file"])


def fresh_ids() -> object:
    return (f"vol-{i:010d}" for i in range(10**6))


@given(names, sizes, interfaces, st.floats(min_value=0, max_value=4e9))
def test_a_valid_volume_is_made_as_given(name: str, size: int, interface: str, now: float) -> None:
    made = make_volume(name, size, interface, "vol-x", now)
    assert made == Success(Volume("vol-x", name, size, interface, created_at=now))
    assert made.unwrap().default_mount_path == f"/volumes/{name}"
    assert made.unwrap().size_bytes == size * 10**9


@given(
    st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=MAX_VOLUME_GB + 1),
        st.booleans(),
        st.floats(),
        st.text(max_size=5),
        st.none(),
    )
)
def test_a_bad_size_is_named_with_its_value(size: object) -> None:
    made = make_volume("data", size, "block", "vol-x", 0.0)
    assert isinstance(made, Failure)
    error = made.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert [v.field for v in error.violations] == ["size_gb"]
    assert error.violations[0].fix


@given(st.one_of(st.text(max_size=80).filter(lambda s: not NAME_PATTERN.fullmatch(s)), st.integers(), st.none()))
def test_a_bad_name_is_refused(name: object) -> None:
    made = make_volume(name, 10, "block", "vol-x", 0.0)
    assert isinstance(made, Failure)
    assert [v.field for v in made.failure().violations] == ["name"]


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([None, "/m1", "/m2"])), max_size=3))
def test_resolution_creates_each_name_once_and_then_reuses_it(wanted: list[tuple[str, str | None]]) -> None:
    seen: set[str] = set()
    specs = []
    for name, path in wanted:  # one spec per name (a task attaching one volume twice is refused)
        if name not in seen:
            seen.add(name)
            specs.append(VolumeSpec(name=name, size_gb=5, mount_path=path))
    first = resolve_volumes(specs, (), fresh_ids(), 1.0).unwrap()
    assert [m.created for m in first] == [True] * len(specs)
    assert len({m.volume.volume_id for m in first}) == len(specs)
    assert [m.mount_path for m in first] == [s.mount_path or f"/volumes/{s.name}" for s in specs]
    again = resolve_volumes(specs, [m.volume for m in first], fresh_ids(), 2.0).unwrap()
    assert [(m.volume, m.created) for m in again] == [(m.volume, False) for m in first]


def test_resolution_names_every_problem_and_missing_ids() -> None:
    existing = [Volume("vol-1", "data", 10, "block")]
    mismatch = resolve_volumes([VolumeSpec(name="data", size_gb=20, interface="file")], existing, fresh_ids(), 0.0)
    assert [v.field for v in mismatch.failure().violations] == ["volumes[0].size_gb", "volumes[0].interface"]
    twice = resolve_volumes(
        [VolumeSpec(name="data", size_gb=10), VolumeSpec(volume_id="vol-1", mount_path="/x")],
        existing,
        fresh_ids(),
        0.0,
    )
    assert "same volume" in twice.failure().message
    missing = resolve_volumes([VolumeSpec(volume_id="vol-nope", mount_path="/x")], existing, fresh_ids(), 0.0)
    assert missing.failure().reason is ErrorReason.RESOURCE_NOT_FOUND
    assert "vol-nope" in missing.failure().message


def test_a_name_without_a_size_attaches_the_existing_volume_as_it_is_and_never_creates_one() -> None:
    existing = [Volume("vol-1", "data", 10, "file")]
    (mount,) = resolve_volumes([VolumeSpec(name="data")], existing, fresh_ids(), 0.0).unwrap()
    assert (mount.volume.volume_id, mount.mount_path, mount.created) == ("vol-1", "/volumes/data", False)
    absent = resolve_volumes([VolumeSpec(name="weights", mount_path="/w")], existing, fresh_ids(), 0.0)
    error = absent.failure()
    assert error.reason is ErrorReason.RESOURCE_NOT_FOUND
    assert "'weights'" in error.message and any("size_gb" in s for s in error.suggestions)


@given(interfaces, st.lists(st.sampled_from(["t-1", "t-2", "t-3"]), unique=True, max_size=3))
def test_only_a_held_block_volume_refuses_another_task(interface: str, holders: list[str]) -> None:
    volume = Volume("vol-1", "data", 10, interface)
    held = volume_holders({t: (VolumeSpec(name="data", size_gb=10),) for t in holders}, [volume])
    assert held.get("vol-1", ()) == tuple(holders)
    verdict = check_attach([VolumeMount(volume, "/volumes/data")], held)
    if interface == "block" and holders:
        assert verdict.failure().reason is ErrorReason.VOLUME_ERROR
        assert holders[0] in verdict.failure().message
    else:
        assert verdict == Success(None)
    deleting = check_delete(volume, held)
    assert isinstance(deleting, Failure) == bool(holders)
    if holders:
        assert "intact" in deleting.failure().message


@given(
    st.builds(
        Volume,
        volume_id=st.from_regex(r"vol-[a-z0-9]{10}", fullmatch=True),
        name=names,
        size_gb=sizes,
        interface=interfaces,
        created_at=st.floats(min_value=0, max_value=4e9),
        iops=st.none() | st.integers(min_value=1, max_value=10**7),
        request_id=st.none() | st.text(max_size=20),
    )
)
def test_volume_records_round_trip_through_json(volume: Volume) -> None:
    assert volume_from_json(volume_to_json(volume)) == volume


# --- the namespace script, run by a real /bin/sh with recording stand-ins for mount/mkdir -------

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root (CI runs as root)")
components = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n/"), min_size=1, max_size=12
).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200)


def _run_in_namespace(base: Path, binds: list[Bind], command: list[str]) -> subprocess.CompletedProcess[bytes]:
    """`command` run as flowd runs a task with these binds (its private root in base/task)."""
    task = base / "task"
    (task / "work").mkdir(parents=True)
    root = task / ".flow-root"
    root.mkdir()
    kinds = {p: _host_kind(p) for p in mount_point_paths(binds)}
    script = namespace_script(binds, str(root), kinds).unwrap()
    return subprocess.run(
        namespace_argv("unshare", script, command), capture_output=True, cwd=task / "work", check=False
    )


def _host_kind(path: str) -> PathKind:
    try:
        return "dir" if stat.S_ISDIR(os.lstat(path).st_mode) else "other"
    except FileNotFoundError:
        return "missing"


@ROOT_ONLY
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(components, components, st.booleans()), min_size=1, max_size=3, unique_by=lambda t: t[1]))
def test_every_value_reaches_mount_as_one_argument(tmp_path: Path, wanted: list[tuple[str, str, bool]]) -> None:
    """Quotes, spaces, $(...), backticks and globs in paths are data, never shell syntax: each
    source appears at its target, and the missing mount points never appear on the host."""
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    top = f"/flow-core-{secrets.token_hex(4)}"
    binds = []
    for i, (source, target, read_only) in enumerate(wanted):
        where = base / "src" / str(i) / source
        where.mkdir(parents=True)
        (where / "marker").write_text(source)
        binds.append(Bind(str(where), f"{top}/{target}", read_only))
    reader = 'for t; do cat "$t/marker"; printf "\\0"; done'
    done = _run_in_namespace(base, binds, ["/bin/sh", "-c", reader, "read", *(b.target for b in binds)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split("\0")[:-1] == [source for source, _, _ in wanted]
    assert not os.path.exists(top)


@ROOT_ONLY
def test_a_failed_mount_stops_before_the_command_and_says_which(tmp_path: Path) -> None:
    done = _run_in_namespace(tmp_path, [Bind("/no/such/source", "/volumes/x")], ["echo", "ran"])
    assert done.returncode == MOUNT_FAILED_EXIT
    assert done.stdout == b""
    assert b"flow: cannot bind /no/such/source at /volumes/x" in done.stderr


def test_a_mount_path_through_a_symlink_or_a_file_is_refused() -> None:
    """A link on the way would lead the mount point, or a new directory, out of the private root."""
    binds = [Bind("/src", "/mnt/link/data")]
    refused = namespace_script(
        binds, "/t/.flow-root", {"/mnt": "dir", "/mnt/link": "other", "/mnt/link/data": "missing"}
    )
    assert isinstance(refused, Failure)
    assert refused.failure().reason is ErrorReason.VOLUME_ERROR
    assert "/mnt/link" in refused.failure().message
    file_target = namespace_script(
        binds, "/t/.flow-root", {"/mnt": "dir", "/mnt/link": "dir", "/mnt/link/data": "other"}
    )
    assert isinstance(file_target, Failure) and "not a directory" in file_target.failure().message


def test_the_namespace_is_private() -> None:
    argv = namespace_argv("/usr/bin/unshare", "exit 0", ["/bin/sh", "-c", "x"])
    assert argv[:4] == ["/usr/bin/unshare", "--mount", "--propagation", "private"]
    assert argv[-3:] == ["/bin/sh", "-c", "x"]


@given(st.sampled_from(["", "data/", "data"]), st.text(alphabet="ab./", max_size=12))
def test_an_s3_key_never_lands_outside_the_target(prefix: str, rest: str) -> None:
    from flowd.volume_s3 import _relative, split_s3_url

    landed = _relative(prefix + rest, prefix)
    if landed is None:
        return
    target = Path("/target")
    assert not landed.is_absolute()
    assert ".." not in landed.parts and "." not in landed.parts
    assert (target / landed).resolve().is_relative_to(target.resolve())
    assert split_s3_url(f"s3://bucket/{prefix}{rest}") == ("bucket", prefix + rest)
