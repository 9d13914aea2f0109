"""Tasks with an `image` on the local provider: finding a working container engine (an effect,
once per daemon start) and turning a task's program into `docker|podman run ...` through the
pure flow.domain.task.container_command.

In the container the task's code (its snapshot, or its work directory) is /workspace and the
task's own directory (scripts, function-call files, results) is /flow/task; host paths in the
program are rewritten to those.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from attrs import define, field
from returns.result import Failure

from flow.domain.errors import DomainError, ErrorReason
from flow.domain.task.container_command import (
    CONTAINER_CODE_DIR,
    ENGINES,
    ContainerSpec,
    Mount,
    container_argv,
    container_env,
    container_workdir,
)
from flowd.providers.base import LaunchError

CONTAINER_TASK_DIR: Final = "/flow/task"
PROBE_TIMEOUT: Final = 15.0


@define
class EngineProbe:
    """Which container engine works here: the first of docker, podman whose `info` succeeds
    (so the engine answers, not only the client exists). Asked once, then remembered."""

    path: str | None
    _lock: threading.Lock = field(factory=threading.Lock)
    _found: tuple[str | None, str] | None = None

    def find(self) -> tuple[str | None, str]:
        """(the engine client's path, "") or (None, why none works)."""
        with self._lock:
            if self._found is None:
                self._found = self._probe()
            return self._found

    def _probe(self) -> tuple[str | None, str]:
        reasons = []
        for name in ENGINES:
            client = shutil.which(name, path=self.path)
            if client is None:
                continue
            try:
                done = subprocess.run(
                    [client, "info"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=PROBE_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                reasons.append(f"`{name} info` failed ({type(exc).__name__})")
                continue
            if done.returncode == 0:
                return client, ""
            said = next((line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()), "")
            reasons.append(f"`{name} info` failed: {said.strip()[:200]}" if said else f"`{name} info` failed")
        if not reasons:
            return None, "neither docker nor podman is installed"
        return None, "; ".join(reasons)


def no_engine_error(image: str, why: str, provider: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
        message=f"No working container engine was found on this machine to run image {image!r}: "
        + why.rstrip(".?! ")
        + ".",
        suggestions=(
            "leave image out (no --image) to run the task on this machine's own environment instead",
            "or start docker (e.g. `sudo systemctl start docker`) or install podman, then restart flowd "
            "(`flow daemon stop`): flowd looks for an engine once per start",
        ),
        metadata=(("provider", provider), ("image", image)),
    )


def _container_path(arg: str, task_dir: Path, code_dir: Path) -> str:
    for host, inside in ((code_dir, CONTAINER_CODE_DIR), (task_dir, CONTAINER_TASK_DIR)):
        if arg == str(host):
            return inside
        if arg.startswith(str(host) + "/"):
            return inside + arg[len(str(host)) :]
    return arg


def containerize(
    *,
    engine: str,
    image: str,
    name: str,
    argv: Sequence[str],
    task_env: Mapping[str, str],
    client_env: Mapping[str, str],
    task_dir: Path,
    code_dir: Path,
    working_dir: str | None,
    gpus: Sequence[int],
    host_network: bool,
    host_programs: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """The engine command that runs `argv` in the image, and the client's environment (which
    carries the task's variables; the command only names them)."""
    program = [host_programs.get(arg, _container_path(arg, task_dir, code_dir)) for arg in argv]
    inside = container_env(task_env, gpus)
    spec = ContainerSpec(
        engine=os.path.basename(engine),
        image=image,
        argv=tuple(program),
        name=name,
        workdir=container_workdir(working_dir),
        env_names=tuple(sorted(inside)),
        mounts=(Mount(str(code_dir), CONTAINER_CODE_DIR), Mount(str(task_dir), CONTAINER_TASK_DIR)),
        gpus=tuple(gpus),
        host_network=host_network,
    )
    built = container_argv(spec)
    if isinstance(built, Failure):
        raise LaunchError(built.failure().message)
    command = [engine, *built.unwrap()[1:]]
    return command, {**client_env, **inside}


def remove_container(engine: str | None, name: str) -> None:
    """`<engine> rm -f name`, in the background: a container whose client was killed (SIGKILL
    after the grace period) keeps running otherwise. One that is gone already (--rm) is fine."""
    if engine is None:
        return

    def remove() -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [engine, "rm", "-f", name],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )

    threading.Thread(target=remove, name=f"rm-{name}", daemon=True).start()
