"""Money at the edges: yuan text in, integer fen inside, yuan text out. Never floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from onecard.errors import InvalidInput
from onecard.ledger.core import MAX_AMOUNT


def parse_yuan(text: object, field: str = "amount") -> int:
    """``"100.5"`` -> 10050 fen. Refuses floats, more than two decimals, signs and nonsense."""
    if isinstance(text, (bool, float)):
        raise InvalidInput(f"{field} must be written as text like 100.50, not a float", field=field)
    raw = str(text).strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidInput(
            f"{field} must be an amount in yuan like 100.50, not {raw!r}", field=field
        ) from None
    if not value.is_finite():
        raise InvalidInput(f"{field} must be a finite amount", field=field)
    if value <= 0:
        raise InvalidInput(f"{field} must be positive, got {raw}", field=field)
    fen = value * 100
    if fen != fen.to_integral_value():
        raise InvalidInput(f"{field} has more than two decimals (fen): {raw}", field=field)
    if fen > MAX_AMOUNT:
        raise InvalidInput(
            f"{field} is too large: at most {format_fen(MAX_AMOUNT)} yuan", field=field
        )
    return int(fen)


def format_fen(fen: int) -> str:
    """10050 -> ``"100.50"``; -5 -> ``"-0.05"``."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"
