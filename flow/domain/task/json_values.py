"""What a function's JSON argument or returned value may hold, and the integers restored after
the wire carried them as doubles.

Kept apart from flow.domain.task.function_call (attrs, returns) so that `flow invoke` can check
its arguments without loading the core: start-up is most of what that command costs."""

from __future__ import annotations

import math
from typing import Any, Final

MAX_SAFE_INTEGER: Final = 2**53
MAX_NESTING: Final = 64


def json_problem(value: object, depth: int = 0) -> str | None:
    """Why a value cannot travel as a JSON value (google.protobuf.Value), if it cannot."""
    if depth > MAX_NESTING:
        return f"is nested deeper than {MAX_NESTING} levels"
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return (
            None
            if abs(value) <= MAX_SAFE_INTEGER
            else "holds an integer beyond 2**53, which JSON numbers cannot carry exactly"
        )
    if isinstance(value, float):
        return None if math.isfinite(value) else "holds NaN or infinity, which JSON cannot carry"
    if isinstance(value, list | tuple):
        for item in value:
            problem = json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a {type(key).__name__} key; JSON object keys are strings"
            problem = json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"holds a {type(value).__name__}, which JSON cannot carry"


def restore_integers(value: Any) -> Any:
    """JSON numbers travel as doubles: integral ones become int again, as json.loads makes them."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    if isinstance(value, list):
        return [restore_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: restore_integers(v) for k, v in value.items()}
    return value


__all__ = ["MAX_NESTING", "MAX_SAFE_INTEGER", "json_problem", "restore_integers"]
