"""Hints in the CLI's words.

The core's suggestions are shared by the SDK, the CLI and clients in other languages, so they name
TaskConfig fields, often in Python syntax (`provider='slurm'`, `memory_mb=4096`). On a command line
the user sets those through flags, so the CLI rewrites them (`--provider slurm`, `--memory 4096`)
with one table: the command's own parser, where an option whose `dest` is a field's name is the
flag that sets that field. What has no flag (volumes, code_root, ...) is left as written, and so
are Python values spelled out whole (`VolumeSpec(name='data')`)."""

from __future__ import annotations

import argparse
import re
from typing import Final, NamedTuple

_CALL: Final = re.compile(r"\b[A-Z]\w*\([^()]*\)")
_TERM: Final = re.compile(
    r"(?<![\w.\[-])(?:"
    r"(?P<field>[a-z][a-z0-9_]*)=(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;)]+)"  # provider='slurm'
    r"|(?P<name>[a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b(?!\()"  # min_gpu_memory_gb (names with a '_' only)
    r")"
)


class Flag(NamedTuple):
    option: str  # the long form, e.g. --max-price
    takes_value: bool
    const: object  # what a flag without a value sets (--no-upload: False)


def flags_of(parser: argparse.ArgumentParser) -> dict[str, Flag]:
    """Field name -> the flag of `parser` that sets it."""
    found: dict[str, Flag] = {}
    for action in parser._actions:
        if action.option_strings and action.dest not in (argparse.SUPPRESS, "help"):
            found[action.dest] = Flag(max(action.option_strings, key=len), action.nargs != 0, action.const)
    return found


def _literal(value: str) -> str:
    return value[1:-1] if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1 else value


def _term(match: re.Match[str], flags: dict[str, Flag]) -> str:
    field = match.group("field") or match.group("name")
    flag = flags.get(field)
    if flag is None:
        return match.group(0)
    value = match.group("value")
    if value is None:
        return flag.option
    if flag.takes_value:
        return f"{flag.option} {_literal(value)}"
    return flag.option if _literal(value) == str(flag.const) else f"no {flag.option}"


def in_cli_words(text: str, flags: dict[str, Flag]) -> str:
    """`text` with each field the command has a flag for written as that flag."""
    if not flags:
        return text
    out: list[str] = []
    last = 0
    for call in _CALL.finditer(text):
        out.append(_TERM.sub(lambda m: _term(m, flags), text[last : call.start()]))
        out.append(call.group(0))
        last = call.end()
    out.append(_TERM.sub(lambda m: _term(m, flags), text[last:]))
    return "".join(out)


__all__ = ["Flag", "flags_of", "in_cli_words"]
