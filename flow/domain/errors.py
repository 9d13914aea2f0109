"""Errors as values.

A `DomainError` is what the core returns when it refuses something. Its `reason` selects, in one
table (`flow.wire.error_table`), the gRPC status code, the `ErrorReason` of the contract and the
SDK exception class. Validation problems are collected as `FieldViolation`s so that one error can
name every mistake in a config at once.
"""

from __future__ import annotations

from attrs import frozen

from flow.domain.error_reasons import ErrorReason as ErrorReason


@frozen
class FieldViolation:
    """One problem with one field: where, what was given, what is wrong, how to fix it."""

    field: str
    value: str
    problem: str
    fix: str

    @property
    def description(self) -> str:
        return f"{self.problem} (got {self.value}); {self.fix}"

    def render(self) -> str:
        return f"{self.field}: {self.description}"


@frozen
class DomainError:
    reason: ErrorReason
    message: str
    suggestions: tuple[str, ...] = ()
    violations: tuple[FieldViolation, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()


MAX_SHOWN_VALUE = 80


def show_value(value: object) -> str:
    """A short, printable rendering of a user value for error messages (never a whole blob)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints of over 4300 digits, very deep nesting
        return f"<unprintable {type(value).__name__}>"
    if len(text) > MAX_SHOWN_VALUE:
        text = text[: MAX_SHOWN_VALUE - 3] + "..."
    return text


def violation(field: str, value: object, problem: str, fix: str) -> FieldViolation:
    return FieldViolation(field=field, value=show_value(value), problem=problem, fix=fix)


def validation_error(
    violations: tuple[FieldViolation, ...] | list[FieldViolation],
    subject: str = "configuration",
    suggestions: tuple[str, ...] = (),
) -> DomainError:
    """One error for every problem found: the message lists them all, one per line."""
    found = tuple(violations)
    count = len(found)
    noun = "problem" if count == 1 else "problems"
    lines = "\n".join(f"  - {v.render()}" for v in found)
    return DomainError(
        reason=ErrorReason.VALIDATION_FAILED,
        message=f"Invalid {subject}: {count} {noun}\n{lines}",
        suggestions=suggestions or tuple(v.fix for v in found),
        violations=found,
    )


def not_found(kind: str, identifier: str, suggestions: tuple[str, ...] = ()) -> DomainError:
    reason = ErrorReason.TASK_NOT_FOUND if kind == "task" else ErrorReason.RESOURCE_NOT_FOUND
    return DomainError(
        reason=reason,
        message=f"No {kind} named {show_value(identifier)}",
        suggestions=suggestions,
        metadata=((kind, identifier),),
    )
