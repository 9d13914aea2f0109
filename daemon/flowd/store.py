"""flowd's durable state: one SQLite database (WAL) under $FLOW_HOME.

A task row holds the TaskRecord as JSON plus the provider's runtime facts (pid, job id, ...) as
an opaque JSON object, so a restarted daemon can find its tasks again. WAL with
synchronous=NORMAL survives the daemon being killed at any point (only a power cut can drop the
last commits), and keeps readers from blocking the writer.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
from attrs import frozen

from flow.domain.config_codec import converter, task_config_to_dict
from flow.domain.function_call import FunctionCall
from flow.domain.task_config import TaskConfig
from flow.domain.task_state import TERMINAL_STATES, TaskRecord, TaskState

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,
    state      TEXT NOT NULL,
    record     TEXT NOT NULL,
    runtime    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(state);
"""

_TERMINAL_NAMES = tuple(s.value for s in TERMINAL_STATES)


class DuplicateRequestError(Exception):
    """A task with this request_id exists already."""


@frozen
class StoredTask:
    seq: int
    record: TaskRecord
    runtime: dict[str, Any]


def record_to_json(record: TaskRecord) -> str:
    return json.dumps(
        {
            "task_id": record.task_id,
            "config": task_config_to_dict(record.config),
            "provider": record.provider,
            "created_at": record.created_at,
            "state": record.state.value,
            "instance_type": record.instance_type,
            "cost_per_hour_micros": record.cost_per_hour_micros,
            "exit_code": record.exit_code,
            "state_reason": record.state_reason,
            "started_at": record.started_at,
            "ended_at": record.ended_at,
            "cancel_requested": record.cancel_requested,
            "request_id": record.request_id,
            "code_digest": record.code_digest,
            "secrets": record.secrets,  # the database is 0600 in a 0700 directory
            "function_call": None if record.function_call is None else _call_to_json(record.function_call),
        },
        separators=(",", ":"),
    )


def _call_to_json(call: FunctionCall) -> dict[str, Any]:
    data = attrs.asdict(call)
    data["pickled_arguments"] = base64.b64encode(call.pickled_arguments).decode()
    data["args"] = list(call.args)
    return data


def _call_from_json(data: dict[str, Any]) -> FunctionCall:
    data["pickled_arguments"] = base64.b64decode(data["pickled_arguments"])
    return FunctionCall(**data)


def record_from_json(text: str) -> TaskRecord:
    data = json.loads(text)
    # Structured without re-validating: a record accepted once stays readable after rules change.
    config = converter.structure(data.pop("config"), TaskConfig)
    call = data.pop("function_call", None)
    return TaskRecord(
        config=config,
        state=TaskState(data.pop("state")),
        function_call=None if call is None else _call_from_json(call),
        **data,
    )


class Store:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, record: TaskRecord) -> None:
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO tasks (task_id, request_id, state, record) VALUES (?, ?, ?, ?)",
                    (record.task_id, record.request_id, record.state.value, record_to_json(record)),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateRequestError(record.request_id) from exc

    def update(self, record: TaskRecord, runtime: dict[str, Any] | None = None) -> None:
        with self._lock:
            if runtime is None:
                self._db.execute(
                    "UPDATE tasks SET state = ?, record = ? WHERE task_id = ?",
                    (record.state.value, record_to_json(record), record.task_id),
                )
            else:
                self._db.execute(
                    "UPDATE tasks SET state = ?, record = ?, runtime = ? WHERE task_id = ?",
                    (record.state.value, record_to_json(record), json.dumps(runtime), record.task_id),
                )

    def _rows(self, sql: str, params: Iterable[object]) -> list[StoredTask]:
        with self._lock:
            rows = self._db.execute(sql, tuple(params)).fetchall()
        return [StoredTask(seq, record_from_json(rec), json.loads(rt)) for seq, rec, rt in rows]

    def get(self, task_id: str) -> StoredTask | None:
        found = self._rows("SELECT seq, record, runtime FROM tasks WHERE task_id = ?", (task_id,))
        return found[0] if found else None

    def by_request_id(self, request_id: str) -> StoredTask | None:
        found = self._rows("SELECT seq, record, runtime FROM tasks WHERE request_id = ?", (request_id,))
        return found[0] if found else None

    def page(self, states: tuple[TaskState, ...], before_seq: int | None, limit: int) -> list[StoredTask]:
        """Newest first: at most `limit` tasks older than `before_seq`, in the given states."""
        clauses: list[str] = []
        params: list[object] = []
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        if states:
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(s.value for s in states)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._rows(
            f"SELECT seq, record, runtime FROM tasks {where} ORDER BY seq DESC LIMIT ?",
            [*params, limit],
        )

    def live(self) -> list[StoredTask]:
        marks = ",".join("?" * len(_TERMINAL_NAMES))
        return self._rows(
            f"SELECT seq, record, runtime FROM tasks WHERE state NOT IN ({marks}) ORDER BY seq",
            _TERMINAL_NAMES,
        )

    def integrity_check(self) -> str:
        with self._lock:
            row = self._db.execute("PRAGMA integrity_check").fetchone()
        return str(row[0])
