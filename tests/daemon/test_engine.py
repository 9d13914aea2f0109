"""The engine in process, against a provider that implements the contract in memory
(memory_provider.py): accepted means accepted, refusals leave nothing behind, every byte of a
log reaches every reader exactly once, memory stays bounded, waits end when their client goes."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from returns.result import Failure

from conftest import wait_until
from daemon.memory_provider import MemoryProvider
from flow.domain.errors import DomainError, ErrorReason
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import TaskState
from flow.home import FlowHome
from flowd.blobs import BlobStore
from flowd.engine import TaskEngine
from flowd.lifecycle import TaskLifecycle
from flowd.log_stream import LINE_LIMIT, LogStreams, LogWatch
from flowd.provider_registry import ProviderRegistry
from flowd.store import Store
from flowd.wakeups import Waiter, Wakeups

QUOTA = DomainError(ErrorReason.QUOTA_EXCEEDED, "quota exceeded for a100", ("ask for more",))


class Rig:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = Store(root / "state.db")
        self.wakeups = Wakeups()
        self.lifecycle = TaskLifecycle(self.store, self.wakeups)
        blobs = BlobStore(root / "blobs")
        self.providers = ProviderRegistry(FlowHome(root=root), self.lifecycle.report, blobs, "memory")
        self.provider = MemoryProvider(root / "tasks", self.lifecycle.report)
        self.providers.add(self.provider, None)
        self.watch = LogWatch(self.wakeups)
        streams = LogStreams(self.wakeups, self.watch, self.lifecycle.is_live)
        self.engine = TaskEngine(self.store, self.lifecycle, self.providers, blobs, streams, self.wakeups)

    def run(self, name: str = "t", request_id: str = "") -> str:
        created = self.engine.create(TaskConfig(command=("true",), name=name), request_id, False, "")
        return created.unwrap().task_id

    def read(self, task_id: str, cursor: str = "", follow: bool = False, tail: int = 0) -> Iterator[tuple[bytes, str]]:
        chunks = self.engine.stream_logs(task_id, cursor, follow, tail, Waiter()).unwrap()
        return ((c.data, c.cursor) for c in chunks)

    def close(self) -> None:
        self.engine.close()
        self.watch.close()
        self.store.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.close()


def test_an_accepted_task_exists_and_a_refused_one_never_did(rig: Rig) -> None:
    task_id = rig.run()
    assert rig.provider.launched == [task_id] and rig.provider.watched == [task_id]
    assert rig.engine.get(task_id).unwrap().state is TaskState.PENDING
    rig.provider.refusal = QUOTA
    refused = rig.engine.create(TaskConfig(command=("true",)), "req-1", False, "")
    assert isinstance(refused, Failure) and refused.failure() == QUOTA
    listed = rig.engine.list((), 100, "").unwrap()[0]
    assert [r.task_id for r in listed] == [task_id]  # the refused task left no record
    rig.provider.refusal = None
    retried = rig.engine.create(TaskConfig(command=("true",)), "req-1", False, "").unwrap()
    assert retried.task_id in rig.provider.launched  # the same request id tries again


def test_a_provider_that_raises_is_a_provider_error_and_leaves_nothing(rig: Rig) -> None:
    rig.provider.launch_raises = RuntimeError("boom")
    refused = rig.engine.create(TaskConfig(command=("true",)), "", False, "")
    assert isinstance(refused, Failure) and refused.failure().reason is ErrorReason.PROVIDER_ERROR
    assert "boom" in refused.failure().message
    assert rig.engine.list((), 100, "").unwrap()[0] == []


def test_states_flow_through_the_lifecycle_and_waiters_wake(rig: Rig) -> None:
    task_id = rig.run()
    done: list[TaskState] = []
    waiter = threading.Thread(target=lambda: done.append(rig.engine.wait(task_id, 60, Waiter()).unwrap().state))
    waiter.start()
    rig.provider.start(task_id)
    assert rig.engine.get(task_id).unwrap().state is TaskState.RUNNING
    rig.provider.end(task_id, 3)
    waiter.join(timeout=30)
    assert done == [TaskState.FAILED]
    assert rig.store.get(task_id) is not None and rig.store.get(task_id).record.exit_code == 3  # type: ignore[union-attr]


def test_a_wait_whose_client_went_away_ends_at_once(rig: Rig) -> None:
    """Issue 15 #2: WaitTask noticed a vanished client only after its timeout (60 s)."""
    task_id = rig.run()
    waiter = Waiter()
    thread = threading.Thread(target=rig.engine.wait, args=(task_id, 60, waiter))
    thread.start()
    waiter.release()  # what the RPC layer does when the client goes away
    wait_until(lambda: not thread.is_alive(), 30)  # well before its 60 s
    assert rig.engine.get(task_id).unwrap().state is TaskState.PENDING


def test_a_follower_whose_client_went_away_ends_at_once(rig: Rig) -> None:
    task_id = rig.run()
    rig.provider.start(task_id)
    waiter = Waiter()
    chunks = rig.engine.stream_logs(task_id, "", True, 0, waiter).unwrap()
    ended = threading.Event()
    threading.Thread(target=lambda: (list(chunks), ended.set())).start()
    waiter.release()
    assert ended.wait(30)


def test_cancel_while_queued_stops_it_at_the_provider(rig: Rig) -> None:
    task_id = rig.run()
    cancelled = rig.engine.cancel(task_id).unwrap()
    assert cancelled.state is TaskState.CANCELLED and rig.provider.cancelled == [task_id]


LINE = b"x" * (LINE_LIMIT * 4 + 17)  # a 1 MB line, as one big JSON document or a tqdm bar


def test_a_line_longer_than_a_chunk_reaches_readers_whole_exactly_once(rig: Rig) -> None:
    """Issue 15 #1: a line over 256 KiB without a newline ended every stream there."""
    task_id = rig.run()
    rig.provider.start(task_id)
    output = b"before\n" + LINE + b"\rprogress 50%\rprogress 100%\nafter\n" + LINE
    follower = rig.read(task_id, follow=True)
    got: list[bytes] = []
    rig.provider.write(task_id, output[: len(output) // 2])
    while sum(map(len, got)) < len(output) // 2 - len(LINE):  # live: no end of the task needed
        got.append(next(follower)[0])
    rig.provider.write(task_id, output[len(output) // 2 :])
    rig.provider.end(task_id, 0)
    got += [data for data, _ in follower]
    assert b"".join(got) == output
    assert b"".join(data for data, _ in rig.read(task_id)) == output  # a finished task's log


def test_every_cursor_resumes_exactly_after_its_chunk(rig: Rig) -> None:
    task_id = rig.run()
    rig.provider.start(task_id)
    output = b"".join(b"line %d\n" % i for i in range(20_000)) + LINE + b"\rlast"
    rig.provider.write(task_id, output)
    rig.provider.end(task_id, 0)
    cursor, got = "", b""
    while True:  # a reader that reconnects after every chunk
        first = next(rig.read(task_id, cursor), None)
        if first is None:
            break
        data, cursor = first
        got += data
    assert got == output


def test_tail_lines_memory_is_bounded_whatever_the_log(rig: Rig) -> None:
    """Issue 15 #3: tail_lines read whole logs into memory (909 MB for a 600 MB log)."""
    task_id = rig.run()
    rig.provider.start(task_id)
    block = b"y" * (1 << 20)
    with open(rig.provider.log(task_id), "ab") as handle:
        for _ in range(64):  # 64 MB without a newline
            handle.write(block)
        handle.write(b"\nend\n")
    rig.provider.end(task_id, 0)
    tracemalloc.start()
    try:
        total = 0
        for data, _ in rig.read(task_id, tail=10):
            total += len(data)
        for data, _ in rig.read(task_id, tail=1):
            assert data == b"end\n"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 64 * (1 << 20) + 5
    assert peak < 4 * LINE_LIMIT  # a few chunks, not the log


def test_find_instances_tells_the_truth(rig: Rig) -> None:
    assert [o.region for o in rig.engine.find_instances("", {}, 10).unwrap().matches] == ["memory"]
    rig.provider.offers_error = DomainError(ErrorReason.AUTHENTICATION_FAILED, "bad key", ("fix the key",))
    found = rig.engine.find_instances("", {}, 10)
    assert isinstance(found, Failure) and found.failure().reason is ErrorReason.AUTHENTICATION_FAILED


def test_a_restart_recovers_tasks_with_typed_and_with_legacy_states(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    typed = first.run("typed")
    legacy = first.run("legacy")
    first.store.update(first.engine.get(legacy).unwrap(), {"id": legacy})  # as an older flowd stored it
    first.store.close()
    second = Rig(tmp_path)
    try:
        second.engine.recover()
        states = second.provider.recovered_states
        assert sorted(s.task_id for s in states if s is not None) == sorted([typed, legacy])
        assert sorted(second.provider.watched) == sorted([typed, legacy])
    finally:
        second.close()
