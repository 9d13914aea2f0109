"""Helpers of the volume tests: finishing tasks, and releasing mounts and loop devices."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def release_storage(root: Path) -> None:
    """Unmounts every mount below `root` and detaches loop devices backed by files below it."""
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as info:
        targets = [line.split()[4] for line in info if line.split()[4].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    listed = subprocess.run(["losetup", "-nO", "NAME,BACK-FILE", "-l"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        name, _, backing = line.strip().partition(" ")
        if backing.strip().startswith(prefix):
            subprocess.run(["losetup", "-d", name], capture_output=True, check=False)


def loop_devices() -> set[str]:
    listed = subprocess.run(["losetup", "-nO", "NAME", "-l"], capture_output=True, text=True, check=False)
    return {line.strip() for line in listed.stdout.splitlines() if line.strip()}


def finished(task: Any, timeout: float = 120) -> Any:
    task.wait(timeout=timeout)
    return task
