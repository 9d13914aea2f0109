"""flowd's blob store (uploaded code): what a crash leaves is cleaned at start, its size is shown,
and `flow daemon gc` removes what no live task and no recent upload uses."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import Daemon, wait_until
from flow import Flow, TaskStatus
from flow.domain.code.manifest import digest_of
from flowapi.v1 import code_service_pb2, code_service_pb2_grpc


def _stored(daemon: Daemon) -> dict[str, int]:
    """digest -> size of every blob the store holds."""
    return {f"sha256:{p.name}": p.stat().st_size for p in (daemon.home.root / "blobs" / "sha256").iterdir()}


def test_a_crash_mid_upload_leaves_no_partial_file_after_a_restart(daemon: Daemon) -> None:
    incoming = daemon.home.root / "blobs" / "incoming"
    stub = code_service_pb2_grpc.CodeServiceStub(grpc.insecure_channel(daemon.home.address))
    digest = "sha256:" + "2" * 64
    killed = threading.Event()

    def requests() -> Iterator[code_service_pb2.UploadBlobsRequest]:
        chunk = code_service_pb2.BlobChunk(digest=digest, size=64 * 2**20, offset=0, data=b"x" * 2**20)
        yield code_service_pb2.UploadBlobsRequest(chunks=[chunk])
        killed.wait(60)  # the rest never comes: flowd dies first

    call = stub.UploadBlobs.future(requests(), timeout=60)
    wait_until(lambda: any(incoming.iterdir()), 30)
    daemon.kill9()
    killed.set()
    assert call.exception(timeout=30) is not None
    assert any(incoming.iterdir())  # what the killed daemon left
    daemon.start()
    assert not any(incoming.iterdir())


def test_daemon_status_shows_the_blob_store_size(daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = daemon.client()  # type: ignore[assignment]
    (tmp_path / "a.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "b.txt").write_text("b\n")
    client.upload_code(tmp_path)
    stored = _stored(daemon)
    status = json.loads(daemon.flow_cli("daemon", "status", "--json").stdout)
    assert len(stored) == 3  # two files and the manifest
    assert (status["blob_count"], status["blob_store_bytes"]) == (len(stored), sum(stored.values()))
    assert "blob store: 3 blobs, 0.3 MB" in daemon.flow_cli("daemon", "status").stdout


def _project(root: Path, name: str) -> Path:
    where = root / name
    where.mkdir()
    (where / f"{name}.txt").write_text(f"content of {name}\n")
    return where


def test_gc_removes_what_no_live_task_and_no_recent_upload_uses(daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = daemon.client()  # type: ignore[assignment]
    finished, live, unused, found_again = (_project(tmp_path, n) for n in ("finished", "live", "unused", "again"))
    done = client.run(["cat", "finished.txt"], code_root=str(finished)).wait(timeout=30)
    assert done.last_status is TaskStatus.COMPLETED
    running = client.run(["sleep", "600"], code_root=str(live))
    wait_until(lambda: running.status is TaskStatus.RUNNING, 30)
    snapshots = {p.name: client.upload_code(p).digest for p in (finished, live, unused, found_again)}
    hours_ago = time.time() - 2 * 3600
    for blob in (daemon.home.root / "blobs" / "sha256").iterdir():  # last used two hours ago
        os.utime(blob, (hours_ago, hours_ago))
    client.upload_code(found_again)  # nothing sent, but about to be used: kept
    recent = client.upload_code(_project(tmp_path, "recent")).digest  # uploaded, not used yet: kept
    before = _stored(daemon)

    report = json.loads(daemon.flow_cli("daemon", "gc", "--json").stdout)

    after = _stored(daemon)
    gone = {
        snapshots["finished"],
        snapshots["unused"],
        digest_of(b"content of finished\n"),
        digest_of(b"content of unused\n"),
    }
    assert set(before) - set(after) == gone
    assert {snapshots["live"], snapshots["again"], recent, digest_of(b"content of live\n")} <= set(after)
    assert report == {
        "removed_blobs": len(gone),
        "removed_bytes": sum(before[d] for d in gone),
        "kept_blobs": len(after),
        "kept_bytes": sum(after.values()),
    }
    status = json.loads(daemon.flow_cli("daemon", "status", "--json").stdout)
    assert (status["blob_count"], status["blob_store_bytes"]) == (len(after), sum(after.values()))
    assert "removed 0 blobs" in daemon.flow_cli("daemon", "gc").stdout  # nothing more to collect
    # What was collected is simply uploaded again when needed.
    again = client.run(["cat", "finished.txt"], code_root=str(finished)).wait(timeout=30)
    assert (again.last_status, again.logs()) == (TaskStatus.COMPLETED, "content of finished\n")
    running.cancel()


def test_a_snapshot_counts_as_held_only_whole(daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = daemon.client()  # type: ignore[assignment]
    (tmp_path / "a.py").write_text("a\n")
    (tmp_path / "b.py").write_text("b\n")
    snapshot = client.upload_code(tmp_path).digest
    stub = code_service_pb2_grpc.CodeServiceStub(grpc.insecure_channel(daemon.home.address))

    def missing(*snapshots: str) -> list[str]:
        request = code_service_pb2.FindMissingBlobsRequest(snapshots=list(snapshots))
        return list(stub.FindMissingBlobs(request, timeout=30).missing_digests)

    unknown = "sha256:" + "3" * 64
    not_a_manifest = digest_of(b"a\n")
    assert missing(snapshot, unknown, not_a_manifest) == [unknown, not_a_manifest]
    daemon.stop()  # a fresh daemon remembers nothing it checked
    (daemon.home.root / "blobs" / "sha256" / digest_of(b"b\n").removeprefix("sha256:")).unlink()
    daemon.start()
    assert missing(snapshot) == [snapshot]  # the manifest is there, one of its files is not
    with pytest.raises(grpc.RpcError) as refused:
        missing("sha256:NOT-HEX")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "snapshots" in str(refused.value.details()) and "sha256:NOT-HEX" in str(refused.value.details())


def test_a_checked_snapshot_is_checked_again_after_a_collection(tmp_path: Path) -> None:
    """CreateTask's check of a snapshot (flowd.blobs.checked_manifest) is remembered, but never
    across a collection: a snapshot whose blobs `flow daemon gc` removed is refused again."""
    from flow.domain.code.manifest import ManifestEntry, manifest_bytes
    from flowd.blobs import BlobStore

    store = BlobStore(tmp_path / "blobs")

    def put(data: bytes) -> str:
        digest = digest_of(data)
        writer = store.writer(digest, len(data))
        writer.write(data)
        writer.commit()
        return digest

    entries = [ManifestEntry(path=name, digest=put(name.encode()), size=len(name)) for name in ("a.py", "b.py")]
    snapshot = put(manifest_bytes(entries))
    hours_ago = time.time() - 2 * 3600
    for blob in (tmp_path / "blobs" / "sha256").iterdir():  # uploaded long ago...
        os.utime(blob, (hours_ago, hours_ago))
    manifest, problems = store.checked_manifest(snapshot)  # ...but a task names it now: used
    assert store.collect(min_age=3600).removed_blobs == 0
    assert problems == [] and manifest is not None and {e.path for e in manifest.entries} == {"a.py", "b.py"}
    assert store.checked_manifest(snapshot) == (manifest, [])
    lying = put(manifest_bytes([ManifestEntry(path="a.py", digest=entries[0].digest, size=99)]))
    assert "is not the size" in store.checked_manifest(lying)[1][0].description
    store.collect(min_age=0)  # nothing live, nothing recent: every blob goes
    manifest, problems = store.checked_manifest(snapshot)
    assert manifest is None and "names no uploaded code snapshot" in problems[0].description
    put(manifest_bytes(entries))  # the manifest uploaded again, its files not
    manifest, problems = store.checked_manifest(snapshot)
    assert manifest is None and "lists files never uploaded: a.py, b.py" in problems[0].description
