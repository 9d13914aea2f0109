"""Opaque page tokens for List methods: "p1." + the position to continue after."""

from __future__ import annotations

from typing import Final

from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, validation_error, violation

PAGE_PREFIX: Final = "p1."
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000


def encode_page_token(position: int) -> str:
    return f"{PAGE_PREFIX}{position}"


def decode_page_token(token: str) -> Result[int | None, DomainError]:
    """None for the first page."""
    if token == "":
        return Success(None)
    digits = token[len(PAGE_PREFIX) :]
    if token.startswith(PAGE_PREFIX) and len(token) <= 32 and digits.isascii() and digits.isdigit():
        return Success(int(digits))
    return Failure(
        validation_error(
            [
                violation(
                    "page_token",
                    token,
                    "is not a token from a previous page",
                    "pass next_page_token from the previous response, or '' for the first page",
                )
            ],
            subject="list request",
        )
    )


def page_size_of(requested: int) -> Result[int, DomainError]:
    """0 means the default; sizes above the maximum are clamped, negative ones refused."""
    if requested < 0:
        return Failure(
            validation_error(
                [
                    violation(
                        "page_size",
                        requested,
                        "must not be negative",
                        f"give 1 to {MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}",
                    )
                ],
                subject="list request",
            )
        )
    return Success(min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE))
