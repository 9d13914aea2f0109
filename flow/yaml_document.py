"""YAML text as data plus the line of every field: how both TaskConfig.from_yaml (the SDK) and
flowd's config.yaml reader point at the line of a bad setting.

Shared by the SDK and flowd, and part of neither: it needs PyYAML, which the pure core
(flow.domain) does not import, and it answers a core error value, not an SDK exception, so that
flowd can import it (see the flowd contract in pyproject.toml)."""

from __future__ import annotations

from typing import Any

from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason

Lines = dict[str, int]


def load_yaml_with_lines(text: str, source: str = "") -> Result[tuple[Any, Lines], DomainError]:
    """One YAML document, and the line (1-based) of every key and list item under the field
    paths validators use: `name`, `env['KEY']` (also `env.KEY`), `volumes[0].size_gb`. Broken
    YAML is a VALIDATION_FAILED error naming the line and column."""
    import yaml  # here: importing this module must stay cheap for code that never reads YAML

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        name = f" in {source}" if source else ""
        return Failure(
            DomainError(
                reason=ErrorReason.VALIDATION_FAILED,
                message=f"Invalid YAML{name}{at}: {what}",
                suggestions=("check the indentation and quoting near the line shown",),
            )
        )
    lines: Lines = {}

    def walk(current: Any, path: str) -> None:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                line = key_node.start_mark.line + 1
                for spelled in (f"{path}.{key}" if path else str(key), f"{path}[{key!r}]", f'{path}["{key}"]'):
                    lines.setdefault(spelled, line)
                walk(value_node, f"{path}.{key}" if path else str(key))
                if path:
                    walk(value_node, f"{path}[{key!r}]")
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                lines.setdefault(f"{path}[{index}]", item.start_mark.line + 1)
                walk(item, f"{path}[{index}]")

    if node is not None:
        walk(node, "")
    return Success((data, lines))


__all__ = ["load_yaml_with_lines"]
