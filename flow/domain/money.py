"""Money as integer micro-dollars: exact to compare and sum, unlike floats."""

from __future__ import annotations

import decimal
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from returns.result import Failure, Result

    from flow.domain.errors import DomainError

MICROS_PER_DOLLAR = 1_000_000

# No instance costs a million dollars an hour; a larger figure is a typo, and the bound keeps
# every later arithmetic step small.
MAX_DOLLARS = decimal.Decimal(1_000_000)

_DECIMAL_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)


def price_to_micros(dollars: float) -> int:
    """An already valid price in dollars as micro-dollars (the wire and the matcher use micros)."""
    return round(dollars * MICROS_PER_DOLLAR)


def dollars_to_micros(amount: float | str, field: str = "max_price") -> Result[int, DomainError]:
    """Dollars (10, 10.5 or "10.50", "$10.50") as micro-dollars, rounded to the nearest micro.
    (returns and the error values are imported here, not at the top: the CLI's start-up reads
    prices through this module and should not pay for them.)"""
    from returns.result import Success

    dollars = _to_decimal(amount)
    if dollars is None:
        return _refuse(field, amount, "is not a number of dollars")
    if not dollars.is_finite():
        return _refuse(field, amount, "is not a finite number")
    if dollars < 0:
        return _refuse(field, amount, "is negative")
    if dollars > MAX_DOLLARS:
        return _refuse(field, amount, f"is above {MAX_DOLLARS} dollars")
    micros = (dollars * MICROS_PER_DOLLAR).to_integral_value(rounding=decimal.ROUND_HALF_EVEN)
    return Success(int(micros))


def _to_decimal(amount: object) -> decimal.Decimal | None:
    if isinstance(amount, bool):  # True is an int to Python, but never a price
        return None
    if isinstance(amount, int):
        return decimal.Decimal(amount)
    if isinstance(amount, float):
        # Through repr, so 10.1 means 10.1 and not 10.0999999999999996447286321199499070644378662
        return decimal.Decimal(repr(amount))
    if isinstance(amount, str):
        # Plain ASCII decimals only, the same in every client language: no exponents,
        # underscores or non-ASCII digits, which Python's Decimal would otherwise accept.
        text = amount.strip().removeprefix("$")
        if len(text) <= 32 and _DECIMAL_TEXT.fullmatch(text):
            return decimal.Decimal(text)
    return None


def _refuse(field: str, amount: object, problem: str) -> Failure[DomainError]:
    from returns.result import Failure

    from flow.domain.errors import validation_error, violation

    fix = "give dollars per hour as a non-negative number, e.g. 10.0"
    shown = amount
    if isinstance(amount, int) and amount.bit_length() > 64:
        shown = f"an integer of {amount.bit_length()} bits"  # repr fails past 4300 digits
    return Failure(validation_error([violation(field, shown, problem, fix)], subject="price"))


def micros_to_dollars(micros: int) -> float:
    """For display and JSON only; compare and add prices as micros."""
    return micros / MICROS_PER_DOLLAR


def format_dollars(micros: int) -> str:
    """Dollars with cents always, and more digits only when needed: "$12.00", "$0.005"."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_DOLLAR)
    digits = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{digits}"


def format_price(micros: int) -> str:
    """An hourly price: "$12.00/h"."""
    return f"{format_dollars(micros)}/h"
