"""What `task.exec()` answers: a command's exit code and its collected output.

A module of its own so that `flow ssh`, which streams output and never builds one, starts
without importing attrs (flow.exec_client imports this only where it builds one)."""

from __future__ import annotations

from attrs import frozen


@frozen
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


__all__ = ["ExecResult"]
