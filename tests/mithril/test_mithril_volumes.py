"""Volumes on the mithril provider, end to end: the SDK -> a real flowd -> the fake Mithril server
(/v2/volumes, spec-checked) -> instances that are the test stack's real sshd, where the startup
script finds each volume's disk (tests/fakes/shims/disks.py) and mounts it.

The fake's instances share one host and run as `ubuntu`, so the tests give mount paths below its
home; on the platform the script runs as root and the default /volumes/<name> works the same."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fakes.mithril import DISK_SHIMS, SHIMS, FakeMithril
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Daemon, wait_until
from flow import MountSpec, TaskStatus, VolumeSpec, errors
from flow.domain.mithril.volumes import VolumeAttachment, mount_lines

A100 = {"instance_type": "a100", "upload_code": False}


def client(daemon: Daemon) -> Any:
    return daemon.client()


def test_create_list_and_delete_map_to_the_api(fake_mithril: FakeMithril, mithril_daemon: Daemon) -> None:
    flow = client(mithril_daemon)
    volume = flow.create_volume(size_gb=10, name="checkpoints", interface="file")
    assert volume.volume_id.startswith("vol_") and volume.provider == "mithril"
    assert (volume.name, volume.size_gb, volume.interface) == ("checkpoints", 10, "file")
    model = fake_mithril.volumes[volume.volume_id]
    assert (model["name"], model["capacity_gb"], model["interface"]) == ("checkpoints", 10, "File")
    assert model["region"] == volume.region != ""
    assert [v.volume_id for v in flow.list_volumes() if v.provider == "mithril"] == [volume.volume_id]

    with pytest.raises(errors.ValidationError) as taken:
        flow.create_volume(size_gb=10, name="checkpoints")
    assert volume.volume_id in taken.value.message

    posts = len([r for r in fake_mithril.requests if r.method == "POST"])
    with pytest.raises(errors.ValidationError) as bad:
        flow.create_volume(size_gb=10, name="ckpt_2")  # fine for Flow, not for Mithril: '_'
    assert [v.field for v in bad.value.violations] == ["name"]
    assert "'ckpt-2'" in bad.value.violations[0].description
    assert len([r for r in fake_mithril.requests if r.method == "POST"]) == posts  # nothing was sent

    assert flow.delete_volume(volume.volume_id)
    assert fake_mithril.volumes[volume.volume_id]["deleted_at"] is not None
    assert all(v.volume_id != volume.volume_id for v in flow.list_volumes())
    with pytest.raises(errors.ResourceNotFoundError):
        flow.delete_volume(volume.volume_id)


def test_task_volumes_persist_across_bids_and_an_attached_one_is_not_deleted(
    fake_mithril: FakeMithril, mithril_daemon: Daemon, mithril_stack: dict[str, str], tmp_path: Path
) -> None:
    home = Path(mithril_stack["FLOW_TEST_MITHRIL_SSH_HOME"])
    mount = home / f"vol-test-{os.getpid()}-{tmp_path.name}" / "my data"  # a space: quoted
    flow = client(mithril_daemon)
    spec = VolumeSpec(name="data", size_gb=5, mount_path=str(mount))
    try:
        a = flow.run(f"echo written > {str(mount / 'x')!r}; ls -a {str(mount)!r}", volumes=[spec], **A100)
        a.wait(timeout=90)
        assert a.status is TaskStatus.COMPLETED, a.logs()
        (vol,) = [v for v in fake_mithril.volumes.values() if v["deleted_at"] is None]
        assert (vol["name"], vol["capacity_gb"], vol["interface"]) == ("data", 5, "Block")
        (bid_a,) = fake_mithril.bids.values()
        assert bid_a["launch_specification"]["volumes"] == [vol["fid"]]
        assert (fake_mithril.volume_dir(vol["fid"]) / "label").read_text() == vol["fid"][-16:]
        assert fake_mithril.bids[bid_a["fid"]]["status"] == "Terminated"  # the volume is free once A ended

        # Later, another bid: the same volume by name, not formatted again, the data there.
        b = flow.run(f"cat {str(mount / 'x')!r}", volumes=[spec], **A100)
        b.wait(timeout=90)
        assert b.status is TaskStatus.COMPLETED and b.logs() == "written\n"
        assert len([v for v in fake_mithril.volumes.values() if v["deleted_at"] is None]) == 1

        holder = flow.run("sleep 600", volumes=[VolumeSpec(volume_id=vol["fid"], mount_path=str(mount))], **A100)
        wait_until(lambda: holder.status is TaskStatus.RUNNING, 60)
        with pytest.raises(errors.VolumeError) as second:  # a block volume: one live task at a time
            flow.run("true", volumes=[spec], **A100)
        assert holder.task_id in second.value.message
        with pytest.raises(errors.VolumeError) as in_use:
            flow.delete_volume(vol["fid"])
        assert "intact" in in_use.value.message
        assert (fake_mithril.volume_dir(vol["fid"]) / "fs" / "x").read_text() == "written\n"
        listed = next(v for v in flow.list_volumes() if v.volume_id == vol["fid"])
        assert listed.attachments == (holder.task_id,)
        # The holder holds Mithril's "data", not a local volume that happens to share its name.
        local = mithril_daemon.client(provider="local")
        same_name = local.create_volume(size_gb=1, name="data")
        assert same_name.provider == "local" and same_name.attachments == ()
        assert local.delete_volume(same_name.volume_id)
        holder.cancel()
        holder.wait(timeout=30)
        wait_until(lambda: not fake_mithril.volumes[vol["fid"]]["bids"], 15)
        assert flow.delete_volume(vol["fid"])
    finally:
        shutil.rmtree(mount.parent, ignore_errors=True)


def test_bad_task_volumes_are_refused_before_anything_is_created(
    fake_mithril: FakeMithril, mithril_daemon: Daemon
) -> None:
    flow = client(mithril_daemon)
    with pytest.raises(errors.ValidationError) as bad:
        flow.run("true", volumes=[VolumeSpec(name="9lives", size_gb=1)], **A100)
    assert [v.field for v in bad.value.violations] == ["volumes[0].name"]
    with pytest.raises(errors.ResourceNotFoundError):
        flow.run("true", volumes=[VolumeSpec(volume_id="vol_doesnotexist00000", mount_path="/data")], **A100)
    with pytest.raises(errors.ValidationError) as multi:  # Block volumes attach to one instance
        flow.run("true", num_instances=2, volumes=[VolumeSpec(name="shared", size_gb=1)], **A100)
    assert [v.field for v in multi.value.violations] == ["volumes[0].interface"]
    with pytest.raises(errors.ValidationError) as mounts:  # a path of this machine: not on an instance
        flow.run("true", data_mounts=[MountSpec(source="/srv/train", target="/train")], **A100)
    assert [v.field for v in mounts.value.violations] == ["data_mounts[0].source"]
    assert not fake_mithril.volumes and not fake_mithril.bids


def _run_mounts(tmp_path: Path, table: dict[str, Any], attachments: list[VolumeAttachment]) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in DISK_SHIMS:
        shutil.copy(SHIMS / "disks.py", bin_dir / name)
        (bin_dir / name).chmod(0o755)
    disks = tmp_path / "disks.json"
    disks.write_text(json.dumps(table))
    script = "\n".join(
        [
            'flow_fail() { echo "FAIL: $1"; exit 1; }',
            "exec 3>&1",
            *mount_lines(attachments, "flow_fail"),
            "echo ok",
        ]
    )
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_MITHRIL_DISKS": str(disks),
        "FAKE_MITHRIL_INSTANCE": "inst_t",
    }
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False)
    return done.stdout + done.stderr


def test_the_script_finds_disks_by_label_and_size_never_by_attach_order(tmp_path: Path) -> None:
    """The startup script's volume section, run by bash against the fake's disk shims: two block
    volumes lettered against their attach order, one of them already formatted with data, and a
    file volume."""
    stores = {name: tmp_path / name for name in ("old", "new", "shared")}
    for store in stores.values():
        store.mkdir()
    (stores["old"] / "fs").mkdir()
    (stores["old"] / "fs" / "kept").write_text("data")
    (stores["old"] / "label").write_text("vol_old000000000000"[-16:])
    table = {
        "disks": [
            {"name": "/dev/vda", "size": 100 * 10**9, "serial": "", "dir": None},
            {"name": "/dev/vdb", "size": 20 * 10**9, "serial": "", "dir": str(stores["new"])},
            {"name": "/dev/vdc", "size": 20 * 10**9, "serial": "", "dir": str(stores["old"])},
        ],
        "shares": {"fileshare-vol_shared.mithril.internal:/": str(stores["shared"])},
    }
    mounts = tmp_path / "mnt"
    attachments = [
        VolumeAttachment("vol_old000000000000", "block", 20, str(mounts / "old one")),
        VolumeAttachment("vol_new000000000000", "block", 20, str(mounts / "new")),
        VolumeAttachment("vol_shared", "file", 100, str(mounts / "shared")),
    ]
    out = _run_mounts(tmp_path, table, attachments)
    assert out.strip().endswith("ok"), out
    assert (mounts / "old one" / "kept").read_text() == "data"  # found by its label, not reformatted
    assert (mounts / "new").resolve() == (stores["new"] / "fs").resolve()
    assert (stores["new"] / "label").read_text() == "vol_new000000000000"[-16:]  # blank: formatted
    assert (mounts / "shared").resolve() == (stores["shared"] / "fs").resolve()


def test_a_volume_that_never_appears_fails_the_task_with_a_reason(tmp_path: Path) -> None:
    table = {"disks": [{"name": "/dev/vda", "size": 100 * 10**9, "serial": "", "dir": None}], "shares": {}}
    attachments = [VolumeAttachment("vol_missing", "block", 7, str(tmp_path / "m"))]
    lines = mount_lines(attachments, "flow_fail")
    assert "seq 60" in lines[0]
    fast = [line.replace("seq 60", "seq 1") for line in lines]
    script = "\n".join(['flow_fail() { echo "FAIL: $1"; exit 1; }', "exec 3>&1", *fast, "echo ok"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in DISK_SHIMS:
        shutil.copy(SHIMS / "disks.py", bin_dir / name)
    (tmp_path / "disks.json").write_text(json.dumps(table))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_MITHRIL_DISKS": str(tmp_path / "disks.json")}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "FAIL: block volume vol_missing (7 GB) did not appear as a disk" in done.stdout


@settings(max_examples=15, deadline=None)
@given(st.text(alphabet=" '\"$`;&|()*?\\!#~ab-", min_size=1, max_size=12).filter(lambda s: s.strip(" ") == s))
def test_every_mount_path_is_quoted(name: str) -> None:
    """A hostile mount path is created exactly as written, and nothing in it runs."""
    root = Path(tempfile.mkdtemp(prefix="mvol-q-"))
    try:
        share = root / "share"
        share.mkdir()
        target = root / "m" / name
        table = {"disks": [], "shares": {"fileshare-vol_s.mithril.internal:/": str(share)}}
        out = _run_mounts(root, table, [VolumeAttachment("vol_s", "file", 1, str(target))])
        assert out.strip().endswith("ok"), out
        assert target.is_symlink() and target.resolve() == (share / "fs").resolve()
        assert sorted(p.name for p in (root / "m").iterdir()) == [name]
    finally:
        shutil.rmtree(root, ignore_errors=True)
