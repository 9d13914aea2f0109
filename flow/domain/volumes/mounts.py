"""The shell script that gives a task with volumes or data mounts its own view of the machine.

flowd starts such a task as
`unshare --mount --propagation private /bin/sh -c <this script> flow-mounts <wrapper argv...>`.
Nothing a task asks for may change the host outside $FLOW_HOME and the task's directory, and a
mount point that does not exist on the host cannot be created there. So the script builds a
private root for the task, inside the new namespace only:

  1. a tmpfs at `root` (a directory in the task's directory) holds the host's top level, entry
     by entry: each directory bound back (recursively, with what is mounted below it), each file
     bound, each symlink copied. The task sees the machine as it is, and what it writes there
     reaches the host as before;
  2. where a missing mount point lies inside an existing host directory (/mnt/data), that
     directory is "shadowed" the same way: a tmpfs over it in the private root, holding binds of
     its entries, so the new mount point is made on the tmpfs, never in the host's /mnt;
  3. missing mount points are made one component at a time (`mkdir` without -p: a component
     that appeared since flowd looked fails instead of being written through), then each source
     is bound at its target (read-only where asked);
  4. the script chroots into the private root, returns to the task's directory, and execs the
     task's usual wrapper: the pid, the marker in argv and the exit-status file are unchanged.

A mount path that runs through a symlink or a file on the host is refused before anything runs
(a link would lead the mount, or a new directory, out to wherever it points). Paths are decided
here from what the shell reports about the host (`path_kinds`); every value in the script is
quoted with shlex.quote; a failure names what failed and ends the task with MOUNT_FAILED_EXIT
before its command runs.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason

MOUNT_FAILED_EXIT: Final = 125
# The setup's own tools; the task's PATH (which may lack /usr/sbin) is restored before its command.
SETUP_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PathKind = Literal["dir", "missing", "other"]  # what the host has at a path (lstat: links are "other")


@frozen
class Bind:
    """`source` (a host directory) appears at `target` in the task."""

    source: str
    target: str
    read_only: bool = False


def _normal(path: str) -> str:
    """'/a//b/./c/' -> '/a/b/c' (targets are absolute, validated without '..')."""
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


def _ancestors(path: str) -> list[str]:
    """'/a/b/c' -> ['/a', '/a/b'] (not '/', not the path itself)."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def mount_point_paths(binds: Iterable[Bind]) -> tuple[str, ...]:
    """The host paths whose kind the plan depends on: every target and its ancestors."""
    paths: dict[str, None] = {}
    for bind in binds:
        target = _normal(bind.target)
        paths.update(dict.fromkeys([*_ancestors(target), target]))
    return tuple(paths)


@frozen
class _Plan:
    shadows: tuple[str, ...]  # host directories given a tmpfs of binds, shallowest first
    made: tuple[str, ...]  # mount points (and their missing parents) made in the private root
    binds: tuple[Bind, ...]  # normalized targets


def _refused(target: str, where: str, what: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.VOLUME_ERROR,
        message=f"The mount path {target} cannot be used on this machine: {where} is {what} here",
        suggestions=(
            "give a mount path that is a directory on this machine, or that does not exist yet",
            "e.g. a path under /volumes or /data",
        ),
        metadata=(("mount_path", target),),
    )


def _plan(binds: Iterable[Bind], kinds: Mapping[str, PathKind]) -> Result[_Plan, DomainError]:
    ordered = sorted(
        (Bind(b.source, _normal(b.target), b.read_only) for b in binds),
        key=lambda b: (b.target.count("/"), b.target),
    )
    private = {"/"}  # directories of the namespace's own, where a mount point may be made
    shadows: list[str] = []
    made: list[str] = []
    for bind in ordered:
        path = [*_ancestors(bind.target), bind.target]
        for step in path:
            kind = kinds.get(step, "missing")
            if kind == "other" and step not in private:
                what = "a symlink or a file" if step != bind.target else "not a directory"
                return Failure(_refused(bind.target, step, what))
        missing = [step for step in path if kinds.get(step, "missing") == "missing" and step not in private]
        if not missing:
            continue
        parent = missing[0].rsplit("/", 1)[0] or "/"  # the deepest directory that exists
        if parent not in private:
            shadows.append(parent)
            private.add(parent)
        made.extend(missing)
        private.update(missing)
    shadows.sort(key=lambda d: (d.count("/"), d))
    return Success(_Plan(tuple(shadows), tuple(made), tuple(ordered)))


_FUNCTIONS: Final = f"""fail() {{ printf 'flow: %s\\n' "$1" >&2; exit {MOUNT_FAILED_EXIT}; }}
copy_entries() {{
  for entry in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    name=${{entry##*/}}
    if [ -L "$entry" ]; then cp -P -- "$entry" "$2/$name"
    elif [ -d "$entry" ]; then mkdir -- "$2/$name" && mount --rbind -- "$entry" "$2/$name"
    else : > "$2/$name" && mount --bind -- "$entry" "$2/$name"
    fi || fail "cannot keep $entry in the task's view of the machine"
  done
}}
shadow() {{
  mount --rbind -- "$root$1" "$scratch" || fail "cannot look into $1"
  mount -t tmpfs -o mode=0755 flow-shadow "$root$1" || fail "cannot mount a tmpfs on $1 in the task namespace"
  chmod --reference="$scratch" -- "$root$1" && chown --reference="$scratch" -- "$root$1" \\
    || fail "cannot copy the mode of $1"
  copy_entries "$scratch" "$root$1"
  umount -l -- "$scratch" || fail "cannot let go of $1"
}}
"""


def namespace_script(binds: Iterable[Bind], root: str, kinds: Mapping[str, PathKind]) -> Result[str, DomainError]:
    """The script (run by /bin/sh inside the new namespace) that builds the private root at
    `root` (an empty directory without symlinks in its path), mounts `binds` in it, then chroots
    and execs "$@" from the current directory. `kinds` says what the host has at each of
    `mount_point_paths(binds)`."""
    planned = _plan(binds, kinds)
    if isinstance(planned, Failure):
        return Failure(planned.failure())
    plan = planned.unwrap()
    q = shlex.quote
    lines = [
        _FUNCTIONS,
        f"had_path=${{PATH+x}}; task_path=${{PATH-}}; PATH={SETUP_PATH}",
        "here=$(pwd -P) || fail 'cannot read the working directory'",
        f"root={q(root)}",
        "scratch=$root/.flow-shadow",
        f'mount -t tmpfs -o mode=0755 flow-root "$root" || fail {q("cannot mount the task root on " + root)}',
        'mkdir -- "$scratch" || fail "cannot make $scratch"',
        "copy_entries '' \"$root\"",
        # The copy of the private root inside itself, made when its host directory was bound in.
        'umount -l -- "$root$root" 2>/dev/null',
    ]
    lines += [f"shadow {q(directory)}" for directory in plan.shadows]
    lines += [
        f'mkdir -m 0755 -- "$root"{q(point)} || fail {q("cannot make the mount point " + point)}' for point in plan.made
    ]
    for bind in plan.binds:
        target, source = '"$root"' + q(bind.target), q(bind.source)
        lines.append(f"mount --bind -- {source} {target} || fail {q(f'cannot bind {bind.source} at {bind.target}')}")
        if bind.read_only:
            lines.append(f"mount -o remount,bind,ro -- {target} || fail {q(f'cannot make {bind.target} read-only')}")
    enter = f'cd -- "$1" || exit {MOUNT_FAILED_EXIT}; shift; exec "$@"'
    lines += [
        'rmdir -- "$scratch"',
        "chroot_bin=$(command -v chroot) || fail 'chroot (coreutils) is missing'",
        'if [ -n "$had_path" ]; then PATH=$task_path; else unset PATH; fi',
        f'exec "$chroot_bin" -- "$root" /bin/sh -c {q(enter)} flow-root "$here" "$@"',
    ]
    return Success("\n".join(lines) + "\n")


def namespace_argv(unshare: str, script: str, command: Iterable[str]) -> list[str]:
    """The argv that runs `command` (the task's program) in a private mount namespace set up by `script`."""
    return [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", script, "flow-mounts", *command]


def enter_argv(nsenter: str, pid: int, command: Sequence[str]) -> list[str]:
    """`command` run in the mount namespace and private root of the task whose process is `pid`,
    from the task's directory (flow ssh sees what the task sees)."""
    return [nsenter, f"--target={pid}", "--mount", "--root", "--wd", "--", *command]
