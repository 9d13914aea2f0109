"""Mithril's HTTP errors as the seed's exceptions (by ErrorReason), with suggestions.

By status code first, then by the substrings the platform is known to use in `detail`:
401/403 -> AUTHENTICATION_FAILED; 404 -> RESOURCE_NOT_FOUND; 422 -> API_VALIDATION_FAILED with every field
error as a violation; "price below minimum" -> RESOURCE_NOT_AVAILABLE (the provider adds the
market price and regions with room, see mithril_bid.price_too_low); "quota" -> QUOTA_EXCEEDED;
other 4xx/5xx -> API_ERROR; no answer at all -> NETWORK_ERROR. The API key never appears here:
nothing that comes in holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from flow.domain.errors import DomainError, ErrorReason, FieldViolation, show_value

PRICE_TOO_LOW: Final = "price below minimum"
MAX_DETAIL: Final = 300


def detail_text(body: object, raw: str) -> str:
    """FastAPI's {"detail": "..."} (or the raw text), short."""
    text = ""
    if isinstance(body, Mapping):
        detail = body.get("detail")
        if isinstance(detail, str):
            text = detail
        elif detail is not None:
            text = show_value(detail)
    if not text:
        text = raw.strip()
    return text[:MAX_DETAIL] or "no details"


def is_price_too_low(status: int, body: object, raw: str) -> bool:
    if status == 400 and PRICE_TOO_LOW in raw.lower():
        return True
    if status == 422 and isinstance(body, Mapping) and isinstance(body.get("detail"), list):
        for item in body["detail"]:
            if isinstance(item, Mapping) and any("price" in str(part) for part in item.get("loc") or ()):
                return True
    return False


def _field_errors(body: object) -> tuple[FieldViolation, ...]:
    if not isinstance(body, Mapping) or not isinstance(body.get("detail"), list):
        return ()
    found = []
    for item in body["detail"]:
        if not isinstance(item, Mapping):
            continue
        loc = [str(part) for part in item.get("loc") or () if part != "body"]
        found.append(
            FieldViolation(
                field=".".join(loc) or "request",
                value=show_value(item.get("input", "")),
                problem=str(item.get("msg", "is not valid"))[:MAX_DETAIL],
                fix="this is Flow's request to Mithril: report it, with the field named here",
            )
        )
    return tuple(found)


def api_error(status: int, body: object, raw: str, action: str, request_id: str | None = None) -> DomainError:
    """The error for an HTTP answer of `status` to `action` ("create the bid", ...)."""
    detail = detail_text(body, raw)
    where = f" (request id {request_id})" if request_id else ""
    metadata = (("http_status", str(status)),) + ((("request_id", request_id),) if request_id else ())
    lowered = raw.lower()
    if status in (401, 403):
        return DomainError(
            reason=ErrorReason.AUTHENTICATION_FAILED,
            message=f"Mithril refused the API key while trying to {action}: HTTP {status}, {detail}{where}",
            suggestions=(
                "check MITHRIL_API_KEY (or api_key in $FLOW_HOME/config.yaml): keys start with fkey_",
                "create a new key in the Mithril console if this one was revoked or has expired",
            ),
            metadata=metadata,
        )
    if "quota" in lowered:
        return DomainError(
            reason=ErrorReason.QUOTA_EXCEEDED,
            message=f"Mithril quota exceeded while trying to {action}: {detail}{where}",
            suggestions=("cancel tasks you no longer need (flow status)", "ask Mithril for a larger quota"),
            metadata=metadata,
        )
    if status == 404:
        return DomainError(
            reason=ErrorReason.RESOURCE_NOT_FOUND,
            message=f"Mithril does not know what Flow asked for while trying to {action}: {detail}{where}",
            suggestions=("check the project (MITHRIL_PROJECT) and the ids you gave",),
            metadata=metadata,
        )
    if status == 422:
        violations = _field_errors(body)
        lines = "".join(f"\n  - {v.field}: {v.problem}" for v in violations)
        return DomainError(
            reason=ErrorReason.API_VALIDATION_FAILED,
            message=f"Mithril rejected the request to {action} (HTTP 422){where}:{lines or ' ' + detail}",
            suggestions=("check the task's settings named above",),
            violations=violations,
            metadata=metadata,
        )
    if status == 400 and "ssh" in lowered and "key" in lowered:
        return DomainError(
            reason=ErrorReason.API_ERROR,
            message=f"Mithril needs SSH keys to {action}: {detail}{where}",
            suggestions=("set ssh_key_file (MITHRIL_SSH_KEY) or ssh_keys (MITHRIL_SSH_KEYS) for the provider",),
            metadata=metadata,
        )
    return DomainError(
        reason=ErrorReason.API_ERROR,
        message=f"Mithril answered HTTP {status} while trying to {action}: {detail}{where}",
        suggestions=("try again later; if it persists, check Mithril's status page",),
        metadata=metadata,
    )


def network_error(base_url: str, action: str, problem: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.NETWORK_ERROR,
        message=f"Cannot reach Mithril at {base_url} to {action}: {problem}",
        suggestions=(
            "check your network connection",
            "check MITHRIL_API_URL (or api_url in $FLOW_HOME/config.yaml)",
        ),
        metadata=(("api_url", base_url),),
    )
