#!/usr/bin/env python3
"""`lsblk`, `blkid`, `mkfs.ext4` and `mount` on a fake Mithril instance (tests/fakes/mithril.py):
the volumes attached to the instance's bid, as the platform doc describes them, without real
block devices.

The fake writes the instance's disks to the JSON file named by FAKE_MITHRIL_DISKS (set in the
startup script's environment): a root disk `/dev/vda` (100 GB, mounted at /) and one virtio disk
per Block volume, `/dev/vdb`, `/dev/vdc`, ... in the REVERSE of the bid's attach order (so a
script that guesses by attach order mounts the wrong volume), each exactly `capacity_gb` x 10^9
bytes with an empty serial (the platform promises none); and the File volumes' NFS shares
(`fileshare-<fid>.mithril.internal:/`). A volume's storage is a directory kept by the fake per
volume fid (`<dir>/fs`, its filesystem label in `<dir>/label`), so data outlives instances
exactly as a volume's does.

- `lsblk [-d] [-b] [-n] [-p] [-r] -o COLS [DEV...]`: columns NAME, SIZE, TYPE, SERIAL, MOUNTPOINT.
- `blkid DEV` (exit 2 when the disk has no filesystem) and `blkid -o value -s LABEL|TYPE DEV`.
- `mkfs.ext4 [-q] [-F] [-L LABEL] DEV`: empties the volume's directory and records the label.
- `mount DEV DIR` (the disk must carry a filesystem, else exit 32 "wrong fs type") and
  `mount -t nfs4 -o OPTS fileshare-<fid>.mithril.internal:/ DIR`: DIR (an empty directory, or a
  link left by an earlier mount) becomes a symbolic link to the volume's directory: what the
  instance sees at DIR is the volume's data.
Without FAKE_MITHRIL_DISKS (a command over SSH, or anything else on the shared host) each name runs
the real program of that name.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

SHIM_DIR = str(Path(__file__).resolve().parent)


def real(name: str) -> None:
    path = os.environ.get("PATH", "")
    rest = os.pathsep.join(p for p in path.split(os.pathsep) if p and os.path.realpath(p) != SHIM_DIR)
    found = shutil.which(name, path=rest or "/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        sys.exit(f"{name}: command not found")
    os.execv(found, [name, *sys.argv[1:]])


def table() -> dict[str, Any] | None:
    where = os.environ.get("FAKE_MITHRIL_DISKS")
    if not where:
        return None
    return json.loads(Path(where).read_text())


def disk(info: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((d for d in info["disks"] if d["name"] == name), None)


def formatted(d: dict[str, Any]) -> str | None:
    """The disk's filesystem label ("" when unlabelled), None when it has no filesystem."""
    if d.get("dir") is None:
        return "root"
    label = Path(d["dir"]) / "label"
    return label.read_text() if label.exists() else None


def mountpoint(d: dict[str, Any]) -> str:
    if d.get("dir") is None:
        return "/"
    marker = Path(d["dir"]) / f"mount.{os.environ.get('FAKE_MITHRIL_INSTANCE', '')}"
    return marker.read_text() if marker.exists() else ""


def lsblk(info: dict[str, Any], args: list[str]) -> int:
    flags, cols, devices = set(), ["NAME", "SIZE", "TYPE"], []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            for j, ch in enumerate(letters):
                if ch == "o":
                    value = letters[j + 1 :] or args[i + 1]
                    if not letters[j + 1 :]:
                        i += 1
                    cols = value.upper().split(",")
                    break
                flags.add(ch)
        else:
            devices.append(arg)
        i += 1
    shown = info["disks"] if not devices else [disk(info, d) for d in devices]
    if any(d is None for d in shown):
        print(f"lsblk: {devices[0]}: not a block device", file=sys.stderr)
        return 32
    for d in shown:
        assert d is not None
        gb = d["size"] // 10**9
        values = {
            "NAME": d["name"] if "p" in flags else d["name"].rsplit("/", 1)[-1],
            "SIZE": str(d["size"]) if "b" in flags else f"{gb}G",
            "TYPE": "disk",
            "SERIAL": d.get("serial", ""),
            "MOUNTPOINT": mountpoint(d),
        }
        print(" ".join(values.get(c, "") for c in cols).rstrip())
    return 0


def blkid(info: dict[str, Any], args: list[str]) -> int:
    tag, devices = None, []
    i = 0
    while i < len(args):
        if args[i] == "-s":
            tag = args[i + 1]
            i += 2
            continue
        if args[i] == "-o":
            i += 2
            continue
        devices.append(args[i])
        i += 1
    for name in devices:
        d = disk(info, name)
        label = formatted(d) if d is not None else None
        if label is None:
            return 2
        if tag == "LABEL":
            print(label)
        elif tag == "TYPE":
            print("ext4")
        else:
            print(f'{name}: LABEL="{label}" TYPE="ext4"')
    return 0


def mkfs(info: dict[str, Any], args: list[str]) -> int:
    label, device = "", None
    i = 0
    while i < len(args):
        if args[i] == "-L":
            label = args[i + 1]
            i += 2
            continue
        if not args[i].startswith("-"):
            device = args[i]
        i += 1
    d = disk(info, device or "")
    if d is None or d.get("dir") is None:
        print(f"mkfs.ext4: cannot format {device}", file=sys.stderr)
        return 1
    root = Path(d["dir"])
    shutil.rmtree(root / "fs", ignore_errors=True)
    (root / "fs").mkdir()
    (root / "label").write_text(label)
    return 0


def mount(info: dict[str, Any], args: list[str]) -> int:
    positional: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in ("-t", "-o"):
            i += 2
            continue
        positional.append(args[i])
        i += 1
    if len(positional) != 2:
        real("mount")
    source, target = positional
    share = info.get("shares", {}).get(source)
    if share is not None:
        store = Path(share)
        (store / "fs").mkdir(exist_ok=True)
    else:
        d = disk(info, source)
        if d is None:
            real("mount")
            return 1
        if d.get("dir") is None:
            print(f"mount: {source} is busy", file=sys.stderr)
            return 32
        if formatted(d) is None:
            print(f"mount: {target}: wrong fs type, bad option, bad superblock on {source}", file=sys.stderr)
            return 32
        store = Path(d["dir"])
    where = Path(target)
    if where.is_symlink():
        where.unlink()
    elif where.is_dir():
        if any(where.iterdir()):
            print(f"mount: {target}: the fake mounts only over empty directories", file=sys.stderr)
            return 32
        where.rmdir()
    else:
        print(f"mount: {target}: mount point does not exist", file=sys.stderr)
        return 32
    where.symlink_to(store / "fs")
    (store / f"mount.{os.environ.get('FAKE_MITHRIL_INSTANCE', '')}").write_text(target)
    return 0


def main() -> int:
    name = os.path.basename(sys.argv[0])
    info = table()
    if info is None:
        real(name)
    assert info is not None
    handlers = {"lsblk": lsblk, "blkid": blkid, "mkfs.ext4": mkfs, "mount": mount}
    handler = handlers.get(name)
    if handler is None:
        real(name)
        return 1
    return handler(info, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
