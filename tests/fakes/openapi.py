"""The Mithril OpenAPI contract, as a validator: requests and responses checked the way the real
(FastAPI) server checks them, with its error shapes.

The spec says OpenAPI 3.1 (JSON Schema 2020-12) but writes optional fields the 3.0 way
(`"nullable": true`), which 2020-12 ignores: `load_spec` rewrites each such schema to
`anyOf: [schema, {"type": "null"}]` and makes every `$ref` absolute, so that any schema in the
document (a component, a parameter's, a response's) can be the root of a jsonschema validator.
`format: "datetime"` (the spec's spelling) is checked as ISO-8601, as pydantic parses it.

`tests/fakes/mithril-openapi.json` is a verbatim copy of `../shared/reference/mithril-openapi.json`
(Mithril Compute API 1.0.0, shipped in the flow-compute 3.28.2 package, Apache-2.0), kept here so
the tests run where the reference directory is absent.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import threading
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).with_name("mithril-openapi.json")
SPEC_URI = "urn:mithril-openapi"
METHODS = ("get", "post", "put", "patch", "delete")

JSON = Any  # a decoded JSON value


def _nullable_to_2020(node: JSON) -> JSON:
    if isinstance(node, list):
        return [_nullable_to_2020(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_to_2020(value) for key, value in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        out["$ref"] = SPEC_URI + ref
    if out.get("nullable") is True:
        del out["nullable"]
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _check_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("datetime", raises=())(_check_datetime)
_FORMATS.checks("date-time", raises=())(_check_datetime)


@cache
def load_spec() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    converted: dict[str, Any] = _nullable_to_2020(raw)
    return converted


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return registry


def _pointer(*parts: str | int) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


@cache
def validator_at(*parts: str | int) -> Draft202012Validator:
    """A validator for the schema at this JSON pointer of the spec (e.g. "components", "schemas",
    "BidModel"). The schema is referenced, not copied, so its own `$ref`s resolve."""
    schema: Any = load_spec()
    for part in parts:
        schema = schema[part]
    root = copy.deepcopy(schema)
    root.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
    return Draft202012Validator(root, registry=_registry(), format_checker=_FORMATS)


# --- FastAPI-shaped validation errors -------------------------------------------------------

_TYPE_ERRORS = {
    "string": ("string_type", "Input should be a valid string"),
    "integer": ("int_type", "Input should be a valid integer"),
    "number": ("float_type", "Input should be a valid number"),
    "boolean": ("bool_type", "Input should be a valid boolean"),
    "array": ("list_type", "Input should be a valid list"),
    "object": ("model_attributes_type", "Input should be a valid dictionary or object to extract fields from"),
    "null": ("none_required", "Input should be None"),
}


def fastapi_errors(error: SchemaError, loc: list[str | int]) -> list[dict[str, Any]]:
    """One jsonschema error as FastAPI's `detail` entries ({loc, msg, type})."""
    here = [*loc, *error.absolute_path]
    kind = error.validator
    if kind == "anyOf" and error.context:
        # A nullable field: report what the non-null branch says.
        branch = [sub for sub in error.context if sub.relative_schema_path and sub.relative_schema_path[0] == 0]
        chosen = branch or list(error.context)
        out: list[dict[str, Any]] = []
        for sub in chosen:
            out.extend(fastapi_errors(sub, loc))
        return out
    if kind == "required":
        match = re.match(r"'(.*)' is a required property", error.message)
        name = match.group(1) if match else str(error.message)
        return [{"loc": [*here, name], "msg": "Field required", "type": "missing"}]
    if kind == "type":
        expected = error.validator_value
        first = expected[0] if isinstance(expected, list) else expected
        typ, msg = _TYPE_ERRORS.get(str(first), ("type_error", f"Input should be of type {first}"))
        return [{"loc": here, "msg": msg, "type": typ}]
    if kind == "enum":
        allowed: Any = error.validator_value
        options = [repr(option) for option in allowed]
        listed = options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
        return [{"loc": here, "msg": f"Input should be {listed}", "type": "enum"}]
    if kind == "pattern":
        msg = f"String should match pattern '{error.validator_value}'"
        return [{"loc": here, "msg": msg, "type": "string_pattern_mismatch"}]
    if kind == "maxLength":
        msg = f"String should have at most {error.validator_value} characters"
        return [{"loc": here, "msg": msg, "type": "string_too_long"}]
    if kind == "minLength":
        msg = f"String should have at least {error.validator_value} characters"
        return [{"loc": here, "msg": msg, "type": "string_too_short"}]
    if kind == "minimum":
        msg = f"Input should be greater than or equal to {error.validator_value}"
        return [{"loc": here, "msg": msg, "type": "greater_than_equal"}]
    if kind == "maximum":
        msg = f"Input should be less than or equal to {error.validator_value}"
        return [{"loc": here, "msg": msg, "type": "less_than_equal"}]
    if kind == "format":
        return [{"loc": here, "msg": f"Input should be a valid {error.validator_value}", "type": "value_error"}]
    return [{"loc": here, "msg": error.message, "type": "value_error"}]


def validate(validator: Draft202012Validator, value: JSON, loc: list[str | int]) -> list[dict[str, Any]]:
    """Every problem with `value`, FastAPI-shaped, in a stable order."""
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    out: list[dict[str, Any]] = []
    for error in errors:
        out.extend(fastapi_errors(error, loc))
    return out


def unknown_fields(validator: Draft202012Validator, value: JSON, path: list[str | int]) -> list[str]:
    """Fields of `value` (recursively, through objects, arrays and $refs) that its schema does not
    declare. FastAPI ignores them; a client that sends them is coding against something other than
    the spec (the published SDK sent `auction_id`, for one)."""
    return _unknown(validator, validator.schema, value, path)


def _resolve(validator: Draft202012Validator, schema: JSON) -> JSON:
    while isinstance(schema, dict) and "$ref" in schema and "properties" not in schema:
        schema = _registry().resolver().lookup(schema["$ref"]).contents
    return schema


def _unknown(validator: Draft202012Validator, schema: JSON, value: JSON, path: list[str | int]) -> list[str]:
    schema = _resolve(validator, schema)
    if not isinstance(schema, dict):
        return []
    if "anyOf" in schema:
        if value is None:
            return []
        return _unknown(validator, schema["anyOf"][0], value, path)
    out: list[str] = []
    if isinstance(value, dict) and "properties" in schema and "additionalProperties" not in schema:
        props: Mapping[str, Any] = schema["properties"]
        for key, item in value.items():
            if key not in props:
                out.append(".".join(str(p) for p in [*path, key]))
            else:
                out.extend(_unknown(validator, props[key], item, [*path, key]))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            out.extend(_unknown(validator, schema["items"], item, [*path, index]))
    return out


# --- Operations --------------------------------------------------------------------------------


class Operation:
    """One (method, path template) of the spec."""

    def __init__(self, method: str, template: str, op: dict[str, Any]) -> None:
        self.method = method.upper()
        self.template = template
        self.op = op
        self.parameters: list[dict[str, Any]] = list(op.get("parameters", []))
        body = op.get("requestBody")
        self.body_required = bool(body and body.get("required"))
        self.has_body = body is not None
        self.responses: dict[str, Any] = op.get("responses", {})

    def param_validator(self, index: int) -> Draft202012Validator:
        return validator_at("paths", self.template, self.method.lower(), "parameters", index, "schema")

    def body_validator(self) -> Draft202012Validator:
        return validator_at(
            "paths", self.template, self.method.lower(), "requestBody", "content", "application/json", "schema"
        )

    def response_validator(self, status: int) -> Draft202012Validator | None:
        response = self.responses.get(str(status), {})
        if "application/json" not in response.get("content", {}):
            return None
        return validator_at(
            "paths", self.template, self.method.lower(), "responses", str(status), "content", "application/json",
            "schema",
        )  # fmt: skip


class Router:
    """Maps a request path to the spec's operations."""

    def __init__(self) -> None:
        spec = load_spec()
        self.routes: list[tuple[re.Pattern[str], str, dict[str, Operation]]] = []
        for template, item in spec["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")
            ops = {m.upper(): Operation(m, template, o) for m, o in item.items() if m in METHODS}
            self.routes.append((pattern, template, ops))
        # Literal segments win over parameters (FastAPI matches in declaration order, and the spec
        # declares /v2/instances/status/history before /v2/instances/{instance_fid}/...).
        self.routes.sort(key=lambda route: route[1].count("{"))

    def match(self, path: str) -> tuple[str, dict[str, str], dict[str, Operation]] | None:
        for pattern, template, ops in self.routes:
            found = pattern.match(path)
            if found:
                return template, found.groupdict(), ops
        return None


def coerce_query(schema: JSON, values: list[str], validator: Draft202012Validator) -> tuple[JSON, str | None]:
    """A query parameter's raw values as the JSON value FastAPI would build, or an error type."""
    schema = _resolve(validator, schema)
    if isinstance(schema, dict) and "anyOf" in schema:
        schema = _resolve(validator, schema["anyOf"][0])
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "array":
        # The spec calls the *_in filters comma-separated; repeated parameters work too.
        return [part for value in values for part in value.split(",") if part != ""], None
    last = values[-1]
    if kind == "integer":
        try:
            return int(last), None
        except ValueError:
            return last, "int_parsing"
    if kind == "boolean":
        lowered = last.lower()
        if lowered in ("true", "1", "yes", "on", "t", "y"):
            return True, None
        if lowered in ("false", "0", "no", "off", "f", "n"):
            return False, None
        return last, "bool_parsing"
    return last, None


PARSE_MESSAGES = {
    "int_parsing": "Input should be a valid integer, unable to parse string as an integer",
    "bool_parsing": "Input should be a valid boolean, unable to interpret input",
}


def join_locs(errors: Iterable[dict[str, Any]]) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)


# --- response checking, fast enough for 100-item lists ---------------------------------------

_verdicts: dict[tuple[tuple[str | int, ...], str], list[dict[str, Any]]] = {}
_verdicts_lock = threading.Lock()


def _checked(parts: tuple[str | int, ...], value: JSON, loc: list[str | int]) -> list[dict[str, Any]]:
    """`validate` with the verdict remembered per (schema, value): a poller re-reads the same
    objects over and over, and pure-Python validation of 100 models takes about 100 ms."""
    text = json.dumps(value, sort_keys=True)
    with _verdicts_lock:
        known = _verdicts.get((parts, text))
    if known is None:
        known = validate(validator_at(*parts), value, [])
        with _verdicts_lock:
            if len(_verdicts) > 50_000:
                _verdicts.clear()
            _verdicts[(parts, text)] = known
    return [{**problem, "loc": [*loc, *problem["loc"]]} for problem in known]


def validate_response(op: Operation, status: int, body: JSON) -> list[dict[str, Any]]:
    """Every way this response body breaks the spec's model for (operation, status); [] when the
    spec declares no JSON body for it. Lists and {data: [...]} pages are checked item by item."""
    if op.response_validator(status) is None:
        return []
    parts: tuple[str | int, ...] = (
        "paths", op.template, op.method.lower(), "responses", str(status), "content", "application/json", "schema",
    )  # fmt: skip
    schema: Any = load_spec()
    for part in parts:
        schema = schema[part]
    if isinstance(body, list) and isinstance(schema, dict) and "items" in schema:
        out: list[dict[str, Any]] = _checked(parts, [], ["response"])
        for index, item in enumerate(body):
            out.extend(_checked((*parts, "items"), item, ["response", index]))
        return out
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if isinstance(body, dict) and isinstance(body.get("data"), list) and isinstance(ref, str):
        name = ref.rsplit("/", 1)[1]
        component = load_spec()["components"]["schemas"][name]
        if "items" in component.get("properties", {}).get("data", {}):
            out = _checked(parts, {**body, "data": []}, ["response"])
            item_parts: tuple[str | int, ...] = ("components", "schemas", name, "properties", "data", "items")
            for index, item in enumerate(body["data"]):
                out.extend(_checked(item_parts, item, ["response", "data", index]))
            return out
    return _checked(parts, body, ["response"])
