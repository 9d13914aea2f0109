"""Providers' runtime states as JSON, through one cattrs converter.

A state is stored as its attrs fields plus "type": the class name, so a provider with several
kinds of state (a local task waiting for GPUs, one process, a group of nodes) reads back the
right one. A dict without "type" was written by a flowd from before typed states: the provider's
`StateType.legacy` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import cattrs

from flowd.providers.base import StateType

TAG: Final = "type"

converter = cattrs.Converter()


class StateFormatError(Exception):
    """A stored state this provider cannot read (the message says what)."""


def dump_state(state: object | None) -> dict[str, Any] | None:
    if state is None:
        return None
    data = converter.unstructure(state)
    assert isinstance(data, dict), f"{type(state).__name__} is not an attrs class"
    return {TAG: type(state).__name__, **data}


def load_state(data: Mapping[str, Any] | None, kind: StateType) -> object | None:
    """The state `data` holds, for a provider whose states are `kind`; None for no state."""
    if not data:
        return None
    tag = data.get(TAG)
    if tag is None:
        return kind.legacy(data)
    cls = next((c for c in kind.classes if c.__name__ == tag), None)
    if cls is None:
        raise StateFormatError(f"unknown runtime state {tag!r} (known: {', '.join(c.__name__ for c in kind.classes)})")
    fields = {k: v for k, v in data.items() if k != TAG}
    try:
        return converter.structure(fields, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise StateFormatError(f"unreadable {tag} state: {exc}") from None
