"""Opaque page tokens and page sizes of every List method."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import ErrorReason
from flow.domain.page_token import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    page_size_of,
)


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_round_trip(position: int) -> None:
    assert decode_page_token(encode_page_token(position)) == Success(position)


def test_empty_token_is_the_first_page() -> None:
    assert decode_page_token("") == Success(None)


def _refuses(token: str) -> None:
    result = decode_page_token(token)
    assert isinstance(result, Failure), (token, result)
    error = result.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert [v.field for v in error.violations] == ["page_token"]
    assert "next_page_token" in error.violations[0].fix


@pytest.mark.parametrize(
    "token",
    ["5", "p1.", "p1.-5", "p1.+5", "p1.5x", "p1. 5", "p2.5", "P1.5", "p1.٥", "c1.5", "p1." + "1" * 40],  # noqa: RUF001 - an Arabic-Indic digit, on purpose: int() would accept it
)
def test_foreign_tokens_are_refused(token: str) -> None:
    _refuses(token)


@given(st.text())
def test_decode_never_raises(token: str) -> None:
    result = decode_page_token(token)
    if isinstance(result, Success):
        position = result.unwrap()
        assert (token == "" and position is None) or (token.startswith("p1.") and int(token[3:]) == position)
    else:
        _refuses(token)


def test_page_size_zero_means_default() -> None:
    assert page_size_of(0) == Success(DEFAULT_PAGE_SIZE)
    assert DEFAULT_PAGE_SIZE == 100


@given(st.integers(min_value=1, max_value=MAX_PAGE_SIZE))
def test_page_size_in_range_is_kept(size: int) -> None:
    assert page_size_of(size) == Success(size)


@given(st.integers(min_value=MAX_PAGE_SIZE + 1, max_value=2**64))
def test_page_size_above_max_is_clamped(size: int) -> None:
    assert page_size_of(size) == Success(MAX_PAGE_SIZE)
    assert MAX_PAGE_SIZE == 1000


@given(st.integers(max_value=-1, min_value=-(2**64)))
def test_negative_page_size_is_refused(size: int) -> None:
    result = page_size_of(size)
    assert isinstance(result, Failure)
    error = result.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert [v.field for v in error.violations] == ["page_size"]
    assert error.violations[0].value == repr(size)
    assert "must not be negative" in error.violations[0].problem
