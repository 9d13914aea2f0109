"""The tree index (flow.code_index): an upload of an unchanged tree is answered from what the last
upload saw, and a tree that changed in any way is walked again. Each check compares the snapshot
the client names with the one a full upload (a fresh cache, no index) computes for the same tree."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Daemon, wait_until
from flow import Flow, TaskStatus
from flow.code_index import RACY_NS, TreeIndex, decode, encode, index_key, recorded_index, still_holds
from flow.code_upload import _hash_cache, upload_code
from flow.code_walk import CodeFile, walk_code_root
from flow.config import TaskConfig

_fresh = itertools.count()


def full_upload(client: Flow, root: Path, scratch: Path) -> str:
    """The snapshot of `root` as an upload with no cache and no index computes it."""
    cache = scratch / f"fresh-cache-{next(_fresh)}" / "upload-cache.db"
    cache.parent.mkdir(parents=True)
    return upload_code(client.connection, root, cache).digest


def index_of(client: Flow, root: Path) -> object:
    cache_path = client.connection.home.root / "upload-cache.db"
    return _hash_cache(cache_path).tree(index_key(root.resolve(), [cache_path.parent]))


# --- random edits, made right after each upload (everything is racily clean) -----------------------

NAMES = ("a.py", "b.txt", "sub/c.py", "sub/d.bin", "sub/deep/e.py", "venv/lib.py", "data/f.csv")
edits = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.binary(max_size=6)),
    st.tuples(st.just("rewrite same size"), st.sampled_from(NAMES), st.binary(min_size=1, max_size=1)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.just(b"")),
    st.tuples(st.just("chmod"), st.sampled_from(NAMES), st.just(b"")),
    st.tuples(st.just("ignore"), st.sampled_from(("*.txt", "sub/", "!b.txt", "data/", "*.bin")), st.just(b"")),
    st.tuples(st.just("virtualenv"), st.sampled_from(("venv", "sub")), st.just(b"")),
    st.tuples(st.just("link"), st.sampled_from(("a.py", "sub", "missing", "data/f.csv")), st.just(b"")),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
)


def apply(root: Path, edit: tuple[str, str, bytes | str]) -> None:
    kind, name, value = edit
    path = root / name
    if kind == "write":
        assert isinstance(value, bytes)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value)
    elif kind == "rewrite same size" and path.is_file() and path.stat().st_size:
        assert isinstance(value, bytes)
        with open(path, "r+b") as handle:  # in place: same inode, same size
            handle.write(value)
    elif kind == "delete" and path.is_file():
        path.unlink()
    elif kind == "chmod" and path.is_file():
        path.chmod(path.stat().st_mode ^ 0o100)
    elif kind == "ignore":
        with open(root / ".gitignore", "a") as handle:
            handle.write(name + "\n")
    elif kind == "virtualenv":
        path.mkdir(exist_ok=True)
        (path / "pyvenv.cfg").write_text("home = /usr\n")
    elif kind == "link":
        link = root / "link"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(name)
    elif kind == "rename" and path.is_file():
        assert isinstance(value, str)
        target = root / value
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_dir():
            path.rename(target)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.lists(edits, max_size=3), min_size=1, max_size=6))
def test_after_any_edits_the_upload_names_the_snapshot_a_full_upload_computes(
    flow: Flow, tmp_path_factory: pytest.TempPathFactory, steps: list[list[tuple[str, str, bytes | str]]]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    scratch = tmp_path_factory.mktemp("scratch")
    for name in NAMES[:4]:
        apply(root, ("write", name, name.encode()))
    assert flow.upload_code(root).digest == full_upload(flow, root, scratch)
    for batch in steps:
        for edit in batch:
            apply(root, edit)
        uploaded = flow.upload_code(root)
        assert uploaded.digest == full_upload(flow, root, scratch), batch
        assert flow.upload_code(root).digest == uploaded.digest  # and again, from the index


# --- one edit each, to trees older than RACY_NS (nothing is checked by content) ----------------------

Edit = Callable[[Path], None]


def _same_size_same_mtime(root: Path) -> None:
    path = root / "pkg" / "model.py"
    status = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"Z")
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def _add_file(root: Path) -> None:
    (root / "pkg" / "new.py").write_text("new\n")


def _add_directory(root: Path) -> None:
    (root / "pkg" / "sub").mkdir()
    (root / "pkg" / "sub" / "x.py").write_text("x\n")


def _delete(root: Path) -> None:
    (root / "pkg" / "model.py").unlink()


def _chmod(root: Path) -> None:
    (root / "run.sh").chmod(0o755)


def _ignore(root: Path) -> None:
    with open(root / ".gitignore", "a") as handle:
        handle.write("pkg/model.py\n")


def _virtualenv(root: Path) -> None:
    (root / "pkg" / "pyvenv.cfg").write_text("home = /usr\n")


def _repoint_link(root: Path) -> None:
    (root / "link").unlink()
    (root / "link").symlink_to("pkg/model.py")


def _link_target_edited(root: Path) -> None:
    (root / "target.txt").write_text("changed, and longer\n")


def _dangling_link_resolves(root: Path) -> None:
    (root / "later.txt").write_text("now a file\n")


def _ignored_file_edited(root: Path) -> None:
    (root / "notes.log").write_text("not uploaded, so no new snapshot\n")


def _nested_ignore_file(root: Path) -> None:
    (root / "pkg" / ".gitignore").write_text("*.py\n")


def _self_ignoring_ignore_file(root: Path) -> None:
    with open(root / "conf" / ".gitignore", "a") as handle:  # not uploaded itself: it ignores itself
        handle.write("settings.py\n")


def _target_in_ignored_directory_edited(root: Path) -> None:
    (root / "build" / "model.bin").write_bytes(b"retrained weights")


def _link_in_ignored_directory_repointed(root: Path) -> None:
    (root / "build" / "other.bin").write_bytes(b"other weights")
    (root / "build" / "current").unlink()
    (root / "build" / "current").symlink_to("other.bin")


def _dangling_link_resolves_into_ignored_directory(root: Path) -> None:
    (root / "build" / "later.bin").write_bytes(b"built")


EDITS: dict[str, Edit] = {
    "same size and mtime": _same_size_same_mtime,
    "a new file": _add_file,
    "a new directory": _add_directory,
    "a deleted file": _delete,
    "chmod +x": _chmod,
    "an ignore rule": _ignore,
    "a new virtualenv": _virtualenv,
    "a repointed symlink": _repoint_link,
    "a symlink's target edited": _link_target_edited,
    "a dangling symlink now resolving": _dangling_link_resolves,
    "a nested ignore file": _nested_ignore_file,
    "a self-ignoring ignore file": _self_ignoring_ignore_file,
    "a link's target in an ignored directory": _target_in_ignored_directory_edited,
    "a dangling link resolving into an ignored directory": _dangling_link_resolves_into_ignored_directory,
    "a link through an ignored directory repointed": _link_in_ignored_directory_repointed,
    "an ignored file edited": _ignored_file_edited,
}


@pytest.fixture(scope="module")
def aged_trees(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    trees = {}
    for name in EDITS:
        root = tmp_path_factory.mktemp("aged")
        (root / "pkg").mkdir()
        (root / "pkg" / "model.py").write_text("weights = 1\n")
        (root / "run.sh").write_text("echo run\n")
        (root / ".gitignore").write_text("*.log\nbuild/\n")
        (root / "conf").mkdir()
        (root / "conf" / ".gitignore").write_text(".gitignore\n")
        (root / "conf" / "settings.py").write_text("lr = 0.1\n")
        (root / "build").mkdir()  # ignored: the walk never enters it
        (root / "build" / "model.bin").write_bytes(b"weights")
        (root / "weights").symlink_to("build/model.bin")  # uploaded as the file it names
        (root / "built").symlink_to("build/later.bin")  # dangling: left out
        (root / "build" / "current").symlink_to("model.bin")
        (root / "latest").symlink_to("build/current")  # a link to a link
        (root / "notes.log").write_text("ignored\n")
        (root / "target.txt").write_text("target\n")
        (root / "link").symlink_to("target.txt")
        (root / "dangling").symlink_to("later.txt")
        trees[name] = root
    made = time.time_ns()
    # Older than RACY_NS: the index then vouches for every entry by its identity alone.
    wait_until(lambda: time.time_ns() > made + RACY_NS + 100_000_000, 10)
    yield trees


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edit_to_a_settled_tree_is_never_missed(
    flow: Flow, aged_trees: dict[str, Path], tmp_path: Path, edit: str
) -> None:
    root = aged_trees[edit]
    before = flow.upload_code(root).digest
    assert index_of(flow, root) is not None  # recorded: the next upload starts from it
    assert flow.upload_code(root).digest == before
    EDITS[edit](root)
    after = flow.upload_code(root)
    assert after.digest == full_upload(flow, root, tmp_path)
    if edit == "an ignored file edited":
        assert after.digest == before and after.sent_files == 0
    else:
        assert after.digest != before


def test_a_snapshot_flowd_no_longer_holds_is_sent_again(daemon: Daemon, tmp_path: Path) -> None:
    client: Flow = daemon.client()  # type: ignore[assignment]
    (tmp_path / "train.py").write_text("print('trained')\n")
    first = client.upload_code(tmp_path)
    assert client.upload_code(tmp_path).sent_files == 0
    hours_ago = time.time() - 2 * 3600
    for blob in (daemon.home.root / "blobs" / "sha256").iterdir():
        os.utime(blob, (hours_ago, hours_ago))
    assert json.loads(daemon.flow_cli("daemon", "gc", "--json").stdout)["removed_blobs"] == 2
    again = client.upload_code(tmp_path)  # the index still holds, but flowd lost the snapshot
    assert (again.digest, again.sent_files) == (first.digest, 2)
    task = client.run(["python3", "train.py"], code_root=str(tmp_path)).wait(timeout=60)
    assert (task.last_status, task.logs()) == (TaskStatus.COMPLETED, "trained\n")


def test_a_submit_names_an_unchanged_snapshot_and_sends_it_again_only_when_refused(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Submitting from an unchanged project names its snapshot without asking flowd first
    (submitted_with_snapshot); CreateTask checks it, and a snapshot flowd collected meanwhile is
    refused, uploaded again and created once more. Other refusals are the caller's to see."""
    from flow.code_upload import submitted_with_snapshot
    from flow.errors import ValidationError
    from flow.wire.task_codec import create_task_call

    client: Flow = daemon.client()  # type: ignore[assignment]
    (tmp_path / "train.py").write_text("print('trained')\n")
    cache = daemon.home.root / "upload-cache.db"
    conn = client.connection
    named: list[str] = []

    def create(name: str) -> Callable[[str], str]:
        def attempt(digest: str) -> str:
            named.append(digest)
            config = TaskConfig(name=name, command=["python3", "train.py"], upload_code=True, code_root=str(tmp_path))
            call = create_task_call(
                config, {}, code_digest=digest, function_call=None, request_id="", validate_only=True, provider=""
            )
            return conn.unary(call, timeout=60).task_id

        return attempt

    snapshot = client.upload_code(tmp_path).digest
    submitted_with_snapshot(conn, tmp_path, cache, None, create("ok"))
    assert named == [snapshot]  # named at once, accepted
    hours_ago = time.time() - 2 * 3600
    for blob in (daemon.home.root / "blobs" / "sha256").iterdir():
        os.utime(blob, (hours_ago, hours_ago))
    assert json.loads(daemon.flow_cli("daemon", "gc", "--json").stdout)["removed_blobs"] == 2
    named.clear()
    submitted_with_snapshot(conn, tmp_path, cache, None, create("again"))
    assert named == [snapshot, snapshot]  # refused (collected), sent again, accepted
    assert client.upload_code(tmp_path).sent_files == 0
    named.clear()
    with pytest.raises(ValidationError) as refused:
        submitted_with_snapshot(conn, tmp_path, cache, None, create("bad name!"))
    assert named == [snapshot] and "name" in str(refused.value)


def test_a_damaged_index_is_ignored_and_the_tree_walked_again(flow: Flow, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "a.py").write_text("a\n")
    digest = flow.upload_code(root).digest
    cache_path = flow.connection.home.root / "upload-cache.db"
    key = index_key(root.resolve(), [cache_path.parent])
    recorded = _hash_cache(cache_path).tree(key)
    assert recorded is not None and decode(encode(recorded)) == recorded
    with sqlite3.connect(cache_path) as db:  # what a crash, or a newer Flow's format, may leave
        db.execute("UPDATE trees SET data = ? WHERE key = ?", (b"\x00garbage", key))
    assert _hash_cache(cache_path).tree(key) is None
    (root / "b.py").write_text("b\n")
    assert flow.upload_code(root).digest == full_upload(flow, root, tmp_path) != digest


@given(st.binary(max_size=200))
def test_decoding_any_bytes_gives_an_index_or_none(data: bytes) -> None:
    decoded = decode(data)
    assert decoded is None or decode(encode(decoded)) == decoded


# --- what only a coarse filesystem clock shows: changes that keep an identity ---------------------


def _sha256(path: str, size: int) -> str | None:
    data = Path(path).read_bytes()
    return "sha256:" + hashlib.sha256(data).hexdigest() if len(data) == size else None


def _identity_now(path: Path) -> str:
    return CodeFile.identity_of(path.lstat())


def _fresh_index(root: Path) -> TreeIndex:
    walked = walk_code_root(root)
    files = [(f.path, f.identity, f"{root}/{f.path}", f.size) for f in walked.files]
    digests = [_sha256(source, size) or "" for _, _, source, size in files]
    index = recorded_index(walked, files, digests, "sha256:" + "0" * 64, (), (), time.time_ns())
    assert index is not None
    return index


def test_a_racily_clean_directory_is_listed_again(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a\n")
    index = _fresh_index(tmp_path)  # just written: every entry is racily clean
    assert still_holds(index, tmp_path, _sha256)
    (tmp_path / "b.py").write_text("b\n")
    # A coarse clock can leave the directory's identity as it was: record the identity it has now.
    same_identity = index._replace(
        directories=tuple((p, _identity_now(tmp_path / p), names) for p, _, names in index.directories)
    )
    assert not still_holds(same_identity, tmp_path, _sha256)
    settled = same_identity._replace(directories=tuple((p, i, None) for p, i, _ in same_identity.directories))
    assert still_holds(settled, tmp_path, _sha256)  # what a settled directory's identity vouches for


def test_a_racily_clean_file_is_hashed_again(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a\n")
    index = _fresh_index(tmp_path)
    (tmp_path / "a.py").write_text("b\n")  # same size
    same_identity = index._replace(files=tuple((p, _identity_now(tmp_path / p), s, d) for p, _, s, d in index.files))
    assert not still_holds(same_identity, tmp_path, _sha256)


def test_racily_clean_entries_settle_once_they_are_old_enough(flow: Flow, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "a.py").write_text("a\n")
    first = flow.upload_code(root)
    recorded = index_of(flow, root)
    assert isinstance(recorded, TreeIndex)
    assert [f[3] != "" for f in recorded.files] == [True]  # just written: checked by content
    assert all(names is not None for _, _, names in recorded.directories)
    written = time.time_ns()
    wait_until(lambda: time.time_ns() > written + RACY_NS + 100_000_000, 10)
    again = flow.upload_code(root)
    assert (again.digest, again.sent_files) == (first.digest, 0)
    now = index_of(flow, root)
    assert isinstance(now, TreeIndex)
    assert [f[3] for f in now.files] == [""] and all(names is None for _, _, names in now.directories)
