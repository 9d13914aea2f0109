"""flowd's durable state: one SQLite database (WAL) under $FLOW_HOME.

A task row holds the TaskRecord as JSON plus the provider's runtime state (pid, job id, ...) as a
JSON object the store does not interpret (flowd.providers.runtime_state reads and writes it), so a
restarted daemon can find its tasks again. WAL with
synchronous=NORMAL survives the daemon being killed at any point (only a power cut can drop the
last commits), and keeps readers from blocking the writer.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, NoReturn

import attrs
from attrs import frozen

from flow.domain.identity_memo import IdentityMemo
from flow.domain.task.config import TaskConfig
from flow.domain.task.config_codec import converter, task_config_to_dict
from flow.domain.task.function_call import FunctionCall
from flow.domain.task.lifecycle import TERMINAL_STATES, Attempt, TaskRecord, TaskState

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
CREATE TABLE IF NOT EXISTS volumes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    volume_id  TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,
    record     TEXT NOT NULL
);
"""

log = logging.getLogger(__name__)
_TERMINAL_NAMES = tuple(s.value for s in TERMINAL_STATES)
MAX_SEQ = 2**63 - 1  # SQLite's largest integer


class DuplicateRequestError(Exception):
    """A task with this request_id exists already."""


class StateWriteError(Exception):
    """flowd could not write its state: the disk is full, or the state directory is read-only.
    The message says so and what to do; `full` tells the two apart."""

    def __init__(self, message: str, full: bool) -> None:
        super().__init__(message)
        self.full = full


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def state_write_error(exc: BaseException, where: Path) -> StateWriteError | None:
    """The StateWriteError for a write into `where` that failed with `exc` (an OSError or an
    sqlite3 error), or None when it failed for another reason."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    number = exc.errno if isinstance(exc, OSError) else None
    if name == "SQLITE_FULL" or number in _FULL_ERRNOS:
        return StateWriteError(
            f"flowd cannot save its state: the disk that holds {where} is full. Free some space there "
            f"(see `df -h {where}`), then retry; this request changed nothing.",
            full=True,
        )
    if name.startswith("SQLITE_READONLY") or number in _READ_ONLY_ERRNOS:
        return StateWriteError(
            f"flowd cannot save its state: {where} is read-only. Make it writable for flowd's user (is "
            "its file system mounted read-only? do its files have another owner or mode?), then retry; "
            "this request changed nothing.",
            full=False,
        )
    return None


@frozen
class StoredTask:
    seq: int
    record: TaskRecord
    runtime: dict[str, Any]  # the provider's runtime state as JSON (flowd.providers.runtime_state)


# A task's record is written at every state change; its config never changes (flow.domain.identity_memo).
_config_dict: Final = IdentityMemo[TaskConfig, dict[str, Any]](task_config_to_dict)


def record_to_json(record: TaskRecord) -> str:
    # A terminal task never starts again: its secret values go (the names stay in the config).
    kept_secrets = {} if record.is_terminal else record.secrets
    return json.dumps(
        {
            "task_id": record.task_id,
            "config": _config_dict(record.config),
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
            "secrets": kept_secrets,  # the database is 0600 in a 0700 directory
            "function_call": None if record.function_call is None else _call_to_json(record.function_call),
            "attempts": [_attempt_to_json(a) for a in record.attempts],
        },
        separators=(",", ":"),
    )


def _attempt_to_json(attempt: Attempt) -> dict[str, Any]:
    return {**attrs.asdict(attempt), "state": attempt.state.value}


def _attempt_from_json(data: dict[str, Any]) -> Attempt:
    return Attempt(**{**data, "state": TaskState(data["state"])})


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
        attempts=tuple(_attempt_from_json(a) for a in data.pop("attempts", ())),
        **data,
    )


REMEMBERED_ROWS: Final = 4096


class Store:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        # Rows by their text, as this store wrote or read them: a row is read far more often than
        # written (every GetTask and WaitTask reads it), and the record read back is the very one
        # written, so its config keeps its identity (flow.domain.identity_memo).
        self._records: dict[str, TaskRecord] = {}
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA secure_delete=ON")  # what a write replaces is zeroed, not left
        self._db.executescript(SCHEMA)
        self._erase_finished_secrets()

    def _erase_finished_secrets(self) -> None:
        """Erases the secret values an older flowd kept for finished tasks (only names remain).
        A database flowd cannot write (read-only, a full disk) keeps them until it can: flowd
        still starts, and serves what it can."""
        marks = ",".join("?" * len(_TERMINAL_NAMES))
        kept = f"state IN ({marks}) AND json_extract(record, '$.secrets') != '{{}}'"
        if self._db.execute(f"SELECT 1 FROM tasks WHERE {kept} LIMIT 1", _TERMINAL_NAMES).fetchone() is None:
            return  # nothing to erase: no write (the database may be read-only)
        try:
            self._db.execute(
                f"UPDATE tasks SET record = json_set(record, '$.secrets', json('{{}}')) WHERE {kept}", _TERMINAL_NAMES
            )
            self._forget_old_pages()
        except sqlite3.Error as exc:
            log.warning("could not erase the secret values of finished tasks yet: %s", exc)

    def _forget_old_pages(self) -> None:
        """Moves the WAL into the database and empties it: earlier versions of pages (a secret
        value before it was erased) live on in the WAL until then."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _remember(self, text: str, record: TaskRecord) -> None:
        if record.is_terminal and record.secrets:
            return  # its row no longer holds the secret values: it is read back without them
        if len(self._records) >= REMEMBERED_ROWS:
            self._records.clear()
        self._records[text] = record

    def _record(self, text: str) -> TaskRecord:
        found = self._records.get(text)
        if found is None:
            found = record_from_json(text)
            self._remember(text, found)
        return found

    def insert(self, record: TaskRecord) -> None:
        text = record_to_json(record)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO tasks (task_id, request_id, state, record) VALUES (?, ?, ?, ?)",
                    (record.task_id, record.request_id, record.state.value, text),
                )
                self._remember(text, record)
        except sqlite3.IntegrityError as exc:
            raise DuplicateRequestError(record.request_id) from exc
        except sqlite3.Error as exc:
            self._raise_write_error(exc)

    def _raise_write_error(self, exc: sqlite3.Error) -> NoReturn:
        """A StateWriteError for a disk that is full or read-only; else the error as it came."""
        error = state_write_error(exc, self._path.parent)
        if error is None:
            raise exc
        raise error from exc

    def update(self, record: TaskRecord, runtime: dict[str, Any] | None = None) -> None:
        try:
            self._update(record, runtime)
            if record.is_terminal and record.secrets:  # this write erased its secret values
                with self._lock:
                    self._forget_old_pages()
        except sqlite3.Error as exc:
            self._raise_write_error(exc)

    def _update(self, record: TaskRecord, runtime: dict[str, Any] | None) -> None:
        text = record_to_json(record)
        with self._lock:
            if runtime is None:
                self._db.execute(
                    "UPDATE tasks SET state = ?, record = ? WHERE task_id = ?",
                    (record.state.value, text, record.task_id),
                )
            else:
                self._db.execute(
                    "UPDATE tasks SET state = ?, record = ?, runtime = ? WHERE task_id = ?",
                    (record.state.value, text, json.dumps(runtime), record.task_id),
                )
            self._remember(text, record)

    def delete(self, task_id: str) -> None:
        """Forgets a task that never existed (its provider refused it)."""
        try:
            with self._lock:
                self._db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
        except sqlite3.Error as exc:
            self._raise_write_error(exc)

    def _rows(self, sql: str, params: Iterable[object]) -> list[StoredTask]:
        with self._lock:
            rows = self._db.execute(sql, tuple(params)).fetchall()
        return [StoredTask(seq, self._record(rec), json.loads(rt)) for seq, rec, rt in rows]

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
            params.append(min(before_seq, MAX_SEQ))  # a forged token past any task: from the newest
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

    # --- volumes (rows of flowd.volumes, which owns their JSON) ------------------------------

    def insert_volume(self, volume_id: str, name: str, request_id: str | None, record: str) -> None:
        """Raises DuplicateRequestError when the id, name or request_id is taken."""
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO volumes (volume_id, name, request_id, record) VALUES (?, ?, ?, ?)",
                    (volume_id, name, request_id, record),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateRequestError(name) from exc
        except sqlite3.Error as exc:
            self._raise_write_error(exc)

    def volume_rows(self, before_seq: int | None = None, limit: int = -1) -> list[tuple[int, str]]:
        """(seq, record) of volumes, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, record FROM volumes WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (MAX_SEQ if before_seq is None else min(before_seq, MAX_SEQ), limit),
            ).fetchall()
        return [(int(seq), str(record)) for seq, record in rows]

    def delete_volume(self, volume_id: str) -> bool:
        try:
            with self._lock:
                done = self._db.execute("DELETE FROM volumes WHERE volume_id = ?", (volume_id,))
        except sqlite3.Error as exc:
            self._raise_write_error(exc)
        return done.rowcount > 0

    def integrity_check(self) -> str:
        with self._lock:
            row = self._db.execute("PRAGMA integrity_check").fetchone()
        return str(row[0])
