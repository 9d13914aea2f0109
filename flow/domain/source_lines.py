"""Field paths back to the lines of the file they came from, for error messages.

A YAML reader (in the shell: PyYAML is I/O-adjacent) records the line of every key and list item
under the paths the validators use (`instance_type`, `env['KEY']`, `volumes[0].size_gb`,
`providers.cluster.port`); `locate` then rewrites a validation error so that each problem names
its line: "job.yaml:4: instance_type: ...".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import evolve

from flow.domain.errors import DomainError

_LAST_SEGMENT = re.compile(r"(\.[^.\[\]]+|\[[^\]]*\])$")


def line_of(path: str, lines: Mapping[str, int]) -> int | None:
    """The line of `path`, or of the nearest enclosing key that has one."""
    current = path
    while current:
        if current in lines:
            return lines[current]
        shorter = _LAST_SEGMENT.sub("", current)
        if shorter == current:
            break
        current = shorter
    return None


def locate(error: DomainError, lines: Mapping[str, int], source: str) -> DomainError:
    """The error with each violation's line (and the file) in its message; the violations' field
    paths stay as they are, so programs can still match on them."""
    if not error.violations:
        return error
    head = error.message.split("\n", 1)[0]
    if source:
        head = head.replace(":", f" in {source}:", 1) if ":" in head else f"{head} ({source})"
    rendered = []
    for v in error.violations:
        line = line_of(v.field, lines)
        where = f"line {line}: " if line is not None else ""
        rendered.append(f"  - {where}{v.render()}")
    return evolve(error, message="\n".join([head, *rendered]))
