"""Code upload: the task runs in a snapshot taken at submit time, sent once, filtered by
.flowignore/.gitignore."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import Daemon, wait_until
from flow import Flow, TaskStatus
from flow.errors import ValidationError


def test_the_task_runs_in_the_snapshot_and_later_edits_never_reach_it(flow: Flow, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("original\n")
    gate = tmp_path.parent / f"{tmp_path.name}-gate"
    task = flow.run(f"while [ ! -e {gate} ]; do sleep 0.02; done; cat data.txt; ls", code_root=str(tmp_path))
    (tmp_path / "data.txt").write_text("edited after submit\n")  # the user keeps working
    (tmp_path / "new.txt").write_text("new\n")
    gate.write_text("")
    assert task.wait(timeout=30).logs() == "original\ndata.txt\n"


def test_ignore_rules_and_defaults_decide_what_is_uploaded(flow: Flow, tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.log\n/build/\n!keep.log\n")
    for name in (
        "a.py",
        "x.log",
        "keep.log",
        "build/out.bin",
        "sub/build/inner.txt",
        "__pycache__/a.pyc",
        "node_modules/m.js",
        ".git/HEAD",
    ):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    venv = tmp_path / "myenv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "lib.py").write_text("x")
    task = flow.run("find . -type f | sort", code_root=str(tmp_path)).wait(timeout=30)
    assert task.logs().split() == ["./.gitignore", "./a.py", "./keep.log", "./sub/build/inner.txt"]


def test_flowignore_replaces_gitignore(flow: Flow, tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.py\n")
    (tmp_path / ".flowignore").write_text("secret.txt\n")
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "secret.txt").write_text("no\n")
    task = flow.run("ls -A | sort", code_root=str(tmp_path)).wait(timeout=30)
    assert task.logs().split() == [".flowignore", ".gitignore", "train.py"]


def test_executable_bits_survive(flow: Flow, tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)
    assert flow.run(["./run.sh"], code_root=str(tmp_path)).wait(timeout=30).logs() == "ran\n"


def test_an_unchanged_10000_file_tree_is_not_sent_again(daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = daemon.client()
    for d in range(100):
        folder = tmp_path / f"pkg{d:03d}"
        folder.mkdir()
        for f in range(100):
            (folder / f"m{f:03d}.py").write_text(f"# module {d}/{f}\nVALUE = {d * 100 + f}\n")
    first = client.upload_code(tmp_path)
    assert (first.files, first.sent_files) == (10_000, 10_001)  # every file and the manifest
    assert first.sent_bytes > first.total_bytes  # the files, then the manifest
    again = client.upload_code(tmp_path)
    assert again.digest == first.digest
    assert (again.sent_files, again.sent_bytes) == (0, 0)
    # One file changes: exactly that file and a new manifest travel.
    (tmp_path / "pkg042" / "m007.py").write_text("VALUE = 'changed'\n")
    changed = client.upload_code(tmp_path)
    assert changed.digest != first.digest
    assert changed.sent_files == 2
    blobs = list((daemon.home.root / "blobs" / "sha256").iterdir())
    assert len(blobs) == 10_003  # 10,000 files, the changed file, two manifests


def test_identical_content_is_stored_once(daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = daemon.client()
    for i in range(5):
        (tmp_path / f"copy{i}.txt").write_text("same bytes\n")
    upload = client.upload_code(tmp_path)
    assert upload.sent_files == 2  # one content blob and the manifest


def test_the_size_cap_names_the_largest_offenders(flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_MAX_UPLOAD_MB", "1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(os.urandom(3 * 2**20))
    (tmp_path / "train.py").write_text("print(1)\n")
    before = len(flow.list_tasks(limit=1000))
    with pytest.raises(ValidationError) as caught:
        flow.run("python3 train.py", code_root=str(tmp_path))
    message = str(caught.value)
    assert "above the upload limit of 1.0 MB" in message
    assert "data/" in message
    assert any(".flowignore" in tip for tip in caught.value.suggestions)
    assert len(flow.list_tasks(limit=1000)) == before  # nothing was launched


def test_dry_run_lists_what_would_be_uploaded(shared_daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "x.log").write_text("noise\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    done = shared_daemon.flow_cli("run", "--dry-run", "--json", "python3 train.py", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["upload"]
    assert [f["path"] for f in plan["files"]] == [".gitignore", "train.py"]
    assert plan["total_bytes"] == len("print(1)\n") + len("*.log\n")
    text = shared_daemon.flow_cli("run", "--dry-run", "python3 train.py", cwd=tmp_path)
    assert "would upload 2 files" in text.stdout


def test_upload_code_false_runs_in_an_empty_private_directory(flow: Flow, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print(1)\n")
    task = flow.run("ls -A | wc -l", code_root=str(tmp_path), upload_code=False).wait(timeout=30)
    assert task.logs().strip() == "0"


def test_a_file_that_changes_while_uploading_is_retried(daemon: Daemon, tmp_path: Path) -> None:
    """flowd refuses bytes that do not hash to their digest; the SDK re-hashes and resends."""
    import grpc

    from flowapi.v1 import code_service_pb2, code_service_pb2_grpc

    channel = grpc.insecure_channel(daemon.home.address)
    stub = code_service_pb2_grpc.CodeServiceStub(channel)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(grpc.RpcError) as caught:
        chunk = code_service_pb2.BlobChunk(digest=wrong, size=3, offset=0, data=b"abc")
        stub.UploadBlobs(iter([code_service_pb2.UploadBlobsRequest(chunks=[chunk])]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "changed while uploading" in caught.value.details()
    assert not (daemon.home.root / "blobs" / "sha256" / ("0" * 64)).exists()
    channel.close()


def test_a_file_deleted_while_uploading_gives_a_fresh_snapshot_without_it(daemon: Daemon, tmp_path: Path) -> None:
    """A task writing into the project, or an editor's temp file: the file is gone by the time
    its bytes are read. The SDK takes a new snapshot (without it) instead of failing."""
    client: Flow = daemon.client()
    (tmp_path / "a-big.bin").write_bytes(os.urandom(3 << 20))  # sent first, over several messages
    (tmp_path / "z-scratch.txt").write_text("short-lived\n")
    (tmp_path / "train.py").write_text("print('ok')\n")
    deleted: list[bool] = []

    def delete_scratch_once(sent: int, total: int) -> None:
        if not deleted:
            (tmp_path / "z-scratch.txt").unlink()
            deleted.append(True)

    upload = client.upload_code(tmp_path, progress=delete_scratch_once)
    assert deleted and upload.files == 2  # the snapshot has what exists: a-big.bin, train.py
    again = client.upload_code(tmp_path)
    assert again.digest == upload.digest and again.sent_files == 0  # and flowd has all of it


def test_a_task_naming_code_that_was_never_uploaded_is_refused(daemon: Daemon) -> None:
    import grpc

    from flowapi.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc

    stub = task_service_pb2_grpc.TaskServiceStub(grpc.insecure_channel(daemon.home.address))
    spec = task_pb2.TaskSpec(command=["true"], code_digest="sha256:" + "a" * 64)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "names no uploaded code snapshot" in caught.value.details()


def test_a_running_task_has_its_own_copy_of_the_code(flow: Flow, tmp_path: Path, shared_daemon: Daemon) -> None:
    (tmp_path / "a.txt").write_text("x")
    task = flow.run("sleep 600", code_root=str(tmp_path))
    wait_until(lambda: task.status is TaskStatus.RUNNING, 10)
    code_dir = shared_daemon.home.task_dir(task.task_id) / "code"
    assert (code_dir / "a.txt").read_text() == "x"
    task.cancel()


def test_odd_file_names_travel(flow: Flow, tmp_path: Path) -> None:
    for name in ("back\\slash.txt", "space name.txt", "ünï.txt", "-dash.txt"):
        (tmp_path / name).write_text(name)
    task = flow.run(["sh", "-c", "ls -A | sort"], code_root=str(tmp_path)).wait(timeout=30)
    assert task.last_status is TaskStatus.COMPLETED, task.state_reason
    assert task.logs().splitlines() == sorted(["back\\slash.txt", "space name.txt", "ünï.txt", "-dash.txt"])


def test_an_upload_broken_off_mid_blob_leaves_nothing_behind(daemon: Daemon) -> None:
    import grpc

    from flowapi.v1 import code_service_pb2, code_service_pb2_grpc

    stub = code_service_pb2_grpc.CodeServiceStub(grpc.insecure_channel(daemon.home.address))
    digest = "sha256:" + "1" * 64

    def requests():
        yield code_service_pb2.UploadBlobsRequest(
            chunks=[code_service_pb2.BlobChunk(digest=digest, size=4 * 2**20, offset=0, data=b"x" * 2**20)]
        )
        raise RuntimeError("the client dies mid-blob")

    with pytest.raises(grpc.RpcError):
        stub.UploadBlobs(requests(), timeout=10)
    incoming = daemon.home.root / "blobs" / "incoming"
    wait_until(lambda: not any(incoming.iterdir()), 10)


def _upload_blobs(stub: object, *contents: bytes) -> list[str]:
    from flow.domain.code.manifest import digest_of
    from flowapi.v1 import code_service_pb2

    chunks = [
        code_service_pb2.BlobChunk(digest=digest_of(data), size=len(data), offset=0, data=data) for data in contents
    ]
    stub.UploadBlobs(iter([code_service_pb2.UploadBlobsRequest(chunks=chunks)]), timeout=10)  # type: ignore[attr-defined]
    return [digest_of(data) for data in contents]


def test_a_manifest_whose_sizes_lie_is_refused(daemon: Daemon) -> None:
    """A manifest entry's declared size is checked against its blob (a 1 PB claim for 5 bytes,
    or a smaller one), naming the entry; the true size is accepted."""
    import grpc

    from flow.domain.code.manifest import ManifestEntry, manifest_bytes
    from flowapi.v1 import code_service_pb2_grpc, task_pb2, task_service_pb2, task_service_pb2_grpc

    channel = grpc.insecure_channel(daemon.home.address)
    code = code_service_pb2_grpc.CodeServiceStub(channel)
    tasks = task_service_pb2_grpc.TaskServiceStub(channel)
    (content,) = _upload_blobs(code, b"hello")
    for size in (10**15, 4, 6):
        manifest = manifest_bytes([ManifestEntry("train.py", content, size)])
        (digest,) = _upload_blobs(code, manifest)
        spec = task_pb2.TaskSpec(command=["true"], code_digest=digest)
        with pytest.raises(grpc.RpcError) as caught:
            tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec, validate_only=True), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        details = caught.value.details()  # type: ignore[attr-defined]
        assert "train.py" in details and str(size) in details and "5 bytes" in details, details
    (honest,) = _upload_blobs(code, manifest_bytes([ManifestEntry("train.py", content, 5)]))
    spec = task_pb2.TaskSpec(command=["true"], code_digest=honest)
    tasks.CreateTask(task_service_pb2.CreateTaskRequest(spec=spec, validate_only=True), timeout=10)
    channel.close()


def test_symlinks_leaving_the_code_root_are_refused_by_name(flow: Flow, tmp_path: Path) -> None:
    """A cloned repository must not ship the user's keys: a symlink whose target lies outside the
    code root stops the submit with an error naming it; nothing is uploaded."""
    outside = tmp_path / "home"
    (outside / ".ssh").mkdir(parents=True)
    (outside / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('ok')\n")
    (root / "pkg" / "key").symlink_to(outside / ".ssh" / "id_ed25519")  # absolute, outside
    (root / "ssh").symlink_to(outside / ".ssh", target_is_directory=True)  # a directory: never followed
    (root / "via-dir").symlink_to("ssh/id_ed25519")  # looks inside, resolves outside
    (root / "up").symlink_to("../home/.ssh/id_ed25519")  # relative, outside
    (root / "alias.py").symlink_to("train.py")  # inside: uploaded as the file it names
    (root / "dangling").symlink_to("/no/such/file")  # nothing to upload
    with pytest.raises(ValidationError) as caught:
        flow.plan_upload(root)
    message = str(caught.value)
    for name in ("pkg/key", "via-dir", "up"):
        assert name in message, message
    assert "alias.py" not in message and "dangling" not in message
    assert any(".flowignore" in tip for tip in caught.value.suggestions)
    blobs = flow._conn.home.root / "blobs" / "sha256"  # type: ignore[attr-defined]
    before = set(blobs.iterdir())
    with pytest.raises(ValidationError, match="pkg/key"):
        flow.run(["true"], code_root=str(root))
    assert set(blobs.iterdir()) == before  # nothing was sent
    (root / ".flowignore").write_text("pkg/key\nvia-dir\nup\n")
    task = flow.run(["sh", "-c", "ls -A | sort; cat alias.py"], code_root=str(root)).wait(timeout=30)
    assert task.last_status is TaskStatus.COMPLETED, task.state_reason
    assert task.logs() == ".flowignore\nalias.py\ntrain.py\nprint('ok')\n"  # pkg/ held only the link


class _Churn:
    """Creates and deletes files and directories in `root` as fast as it can (a /tmp, a task
    writing into the project), and appends to a file that keeps growing (a log)."""

    def __init__(self, root: Path, pause: float = 0.0) -> None:
        import threading

        self.root = root
        self.pause = pause
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import contextlib
        import shutil

        log = open(self.root / "growing.log", "ab")  # noqa: SIM115 - closed below
        n = 0
        while not self._stop.is_set():
            n += 1
            here = self.root / f"d{n % 7}"
            with contextlib.suppress(OSError):
                here.mkdir()
                (here / ".gitignore").write_text("*.tmp\n")
                for k in range(5):
                    (here / f"f{k}.txt").write_text("x" * k)
                (self.root / f"f{n % 11}.txt").write_text("y" * n)
            log.write(b"line %d\n" % n)
            log.flush()
            with contextlib.suppress(OSError):
                shutil.rmtree(self.root / f"d{(n + 3) % 7}")
                (self.root / f"f{(n + 5) % 11}.txt").unlink()
            self.rounds = n
            self._stop.wait(self.pause)
        log.close()

    def __enter__(self) -> _Churn:
        self._thread.start()
        wait_until(lambda: self.rounds > 20, 30)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_tree_that_changes_during_the_walk_never_crashes_it(flow: Flow, tmp_path: Path) -> None:
    """Files and directories created and deleted while the walk and the hash run (submitting
    from /tmp): what is gone is left out, never a FileNotFoundError traceback."""
    from flow.code_walk import walk_code_root

    with _Churn(tmp_path):
        for _ in range(300):
            walk_code_root(tmp_path)
            flow.plan_upload(tmp_path)


def test_an_upload_of_a_changing_tree_succeeds_or_says_why(daemon: Daemon, tmp_path: Path) -> None:
    """The same while uploading: a snapshot of what was there (a growing log up to where it was
    when listed), or after retries the error saying the tree kept changing; never a raw
    FileNotFoundError nor "blob larger than its declared bytes"."""
    client: Flow = daemon.client()  # type: ignore[assignment]
    with _Churn(tmp_path, pause=0.002):
        for _ in range(20):
            try:
                client.upload_code(tmp_path)
            except ValidationError as exc:  # how often depends on how busy the machine is
                assert "kept changing" in exc.message, exc.message
    assert client.upload_code(tmp_path).files > 0  # once it holds still, it goes


def test_a_file_growing_while_it_is_sent_goes_as_it_was_when_listed(daemon: Daemon, tmp_path: Path) -> None:
    """A log the project's own job keeps appending to: the snapshot holds it as it was when the
    walk listed it (not "blob larger than its declared bytes", three times over)."""
    client: Flow = daemon.client()  # type: ignore[assignment]
    first = os.urandom((3 << 20) + 123)  # sent over several messages
    (tmp_path / "train.log").write_bytes(first)

    def append(sent: int, total: int) -> None:
        with open(tmp_path / "train.log", "ab") as log:
            log.write(b"more\n" * 1000)

    upload = client.upload_code(tmp_path, progress=append)
    from flow.domain.code.manifest import digest_of

    blobs = daemon.home.root / "blobs" / "sha256"
    assert (blobs / digest_of(first).removeprefix("sha256:")).read_bytes() == first
    assert upload.files == 1 and upload.total_bytes == len(first)


def test_an_edit_that_keeps_size_and_mtime_still_reaches_the_next_snapshot(flow: Flow, tmp_path: Path) -> None:
    # The hash cache trusts a file whose stat identity it knows; the change time and inode are
    # part of that identity, so an edit that restores the old size and mtime is hashed again.
    data = tmp_path / "data.txt"
    data.write_text("before\n")
    first = flow.upload_code(tmp_path)
    status = data.stat()
    with open(data, "r+b") as handle:  # in place: same inode, same size
        handle.write(b"after!\n")
    os.utime(data, ns=(status.st_atime_ns, status.st_mtime_ns))
    second = flow.upload_code(tmp_path)
    assert second.digest != first.digest and second.sent_files == 2
    task = flow.run("cat data.txt", code_root=str(tmp_path))
    assert task.wait(timeout=30).logs() == "after!\n"
