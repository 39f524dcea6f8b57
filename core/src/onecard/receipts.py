"""Receipts: numbered, stored as plain data, rendered to PDF (weasyprint) on demand.

A receipt is made in the same transaction as what it records and never changes afterwards; a
reprint renders the stored ``data`` again and counts the reprint. The data is utility-neutral:

``data`` keys
    ``title``: what the receipt is for ("sale", "settlement", ...; the renderer translates it);
    ``office``: ``{"code", "name", "timezone"}``; ``operator``: ``{"username", "full_name"}``;
    ``customer``: ``{"number", "name", "building", "unit", "address"}`` (or None);
    ``card``: the card UID (or None); ``method``: the payment method (cash, bank, ...);
    ``at``: ISO time (UTC) of the business event; ``lines``: one per meter or wallet, each
    ``{"title", "kind", "meter", "seq", "amount_fen", "units", "items"}`` where ``items`` is the
    itemised quote (``[{"label", "quantity", "unit", "price", "amount"}]``, amounts in yuan text);
    ``total_fen``: what was paid (negative: paid out to the customer); ``notes``: extra lines.
"""

from __future__ import annotations

import datetime as dt
import gettext
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel.support import Translations
from sqlalchemy import select
from sqlalchemy.orm import Session

from onecard.errors import InvalidInput, NotFound
from onecard.models import (
    Card,
    CardPurchase,
    Customer,
    Office,
    Operator,
    Premises,
    Receipt,
    utcnow,
)
from onecard.money import format_fen
from onecard.utility import UtilityRegistry

KINDS = ("sale", "settlement", "refund", "fee", "cancel")


def issue_receipt(
    session: Session,
    *,
    kind: str,
    office_id: int,
    data: dict[str, Any],
    total: int,
    operator_id: int | None = None,
    customer_id: int | None = None,
    sale_key: str | None = None,
    when: dt.datetime | None = None,
) -> Receipt:
    """Store a new receipt with the next number; does not commit.

    A sale has at most one receipt: asking again for ``sale_key`` returns the one there is.
    """
    if kind not in KINDS:
        raise InvalidInput(f"receipt kind must be one of {', '.join(KINDS)}", field="kind")
    if sale_key is not None:
        found = session.scalar(select(Receipt).where(Receipt.sale_key == sale_key))
        if found is not None:
            return found
    office = session.get(Office, office_id)
    if office is None:
        raise NotFound(f"no office with id {office_id}", field="office")
    at = when or utcnow()
    receipt = Receipt(
        number=f"pending-{id(data)}-{at.timestamp()}",
        kind=kind,
        office_id=office_id,
        operator_id=operator_id,
        customer_id=customer_id,
        sale_key=sale_key,
        total=total,
        data=data,
        created_at=at,
    )
    session.add(receipt)
    session.flush()
    receipt.number = receipt_number(office.code, at, receipt.id)
    session.flush()
    return receipt


def receipt_number(office_code: str, at: dt.datetime, receipt_id: int) -> str:
    """``E01-20261121-000042``: office, UTC date of issue, and the receipt's row id."""
    return f"{office_code}-{at.astimezone(dt.UTC):%Y%m%d}-{receipt_id:06d}"


def get_receipt(session: Session, number: str) -> Receipt:
    found = session.scalar(select(Receipt).where(Receipt.number == number))
    if found is None:
        raise NotFound(f"no receipt numbered {number!r}", field="receipt")
    return found


def receipt_for_sale(session: Session, sale_key: str) -> Receipt | None:
    return session.scalar(select(Receipt).where(Receipt.sale_key == sale_key))


def customer_receipts(session: Session, customer_id: int, *, limit: int = 50) -> list[Receipt]:
    """The customer's receipts, newest first."""
    return list(
        session.scalars(
            select(Receipt)
            .where(Receipt.customer_id == customer_id)
            .order_by(Receipt.id.desc())
            .limit(limit)
        )
    )


# Sale receipts ----------------------------------------------------------------------------------


def sale_receipt_data(
    session: Session, utilities: UtilityRegistry, sale_key: str
) -> tuple[dict[str, Any], CardPurchase]:
    """A card sale's receipt data (see the module docstring) from its confirmed purchases and
    their stored quotes (``params["_quote"]``); and the sale's first purchase."""
    rows = list(
        session.scalars(
            select(CardPurchase)
            .where(CardPurchase.sale_key == sale_key, CardPurchase.status == "confirmed")
            .order_by(CardPurchase.slot)
        )
    )
    if not rows:
        raise NotFound(f"no confirmed sale {sale_key!r}", field="sale_key")
    first = rows[0]
    office = session.get(Office, first.office_id)
    assert office is not None
    operator = session.get(Operator, first.operator_id) if first.operator_id else None
    customer = session.get(Customer, first.customer_id)
    card = session.get(Card, first.card_id)
    lines = []
    for p in rows:
        kind = utilities.get(p.meter.kind) if p.meter.kind in utilities else None
        quote = p.params.get("_quote") or {}
        unit = quote.get("unit") or (kind.unit if kind else None)
        quantity = quote.get("quantity")
        if quantity is None and p.units is not None and kind is not None and kind.unit:
            quantity = str(Decimal(p.units).scaleb(-kind.unit_decimals))
        lines.append(
            {
                "title": dict(kind.names) if kind else p.meter.kind,
                "kind": p.meter.kind,
                "meter": p.meter.serial,
                "seq": p.seq,
                "amount_fen": p.amount,
                "units": p.units,
                "quantity": quantity,
                "unit": unit,
                "tariff": quote.get("tariff"),
                "credit_fen": quote.get("credit_fen") or 0,
                "items": [_quote_item(line) for line in quote.get("lines", [])],
            }
        )
    at = max((p.confirmed_at or p.written_at) for p in rows)
    data: dict[str, Any] = {
        "title": "sale",
        "office": {"code": office.code, "name": office.name, "timezone": office.timezone},
        "operator": (
            {"username": operator.username, "full_name": operator.full_name} if operator else None
        ),
        "customer": _customer_data(session, customer) if customer else None,
        "card": card.uid if card else None,
        "method": first.method,
        "at": _utc(at).isoformat(),
        "lines": lines,
        "total_fen": sum(p.amount for p in rows),
        "notes": [],
        "sale_key": sale_key,
    }
    return data, first


def issue_sale_receipt(session: Session, utilities: UtilityRegistry, sale_key: str) -> Receipt:
    """The receipt of a confirmed card sale: made once (by ``sale_key``), then the same one."""
    found = receipt_for_sale(session, sale_key)
    if found is not None:
        return found
    data, first = sale_receipt_data(session, utilities, sale_key)
    return issue_receipt(
        session,
        kind="sale",
        office_id=first.office_id,
        data=data,
        total=data["total_fen"],
        operator_id=first.operator_id,
        customer_id=first.customer_id,
        sale_key=sale_key,
    )


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _customer_data(session: Session, customer: Customer) -> dict[str, Any]:
    premises = session.scalar(
        select(Premises).where(Premises.customer_id == customer.id).order_by(Premises.id).limit(1)
    )
    return {
        "number": customer.number,
        "name": customer.name,
        "building": premises.building if premises else "",
        "unit": premises.unit if premises else "",
        "address": premises.address if premises else "",
    }


def _quote_item(line: dict[str, Any]) -> dict[str, Any]:
    """A quote line as a receipt item: the exact amount to the fen for display."""
    out = {
        "label": str(line.get("label", "")),
        "quantity": line.get("quantity"),
        "unit": line.get("unit"),
        "price": line.get("price"),
        "amount": _yuan_text(line.get("amount")),
    }
    for name in ("item", "tier", "band", "component"):
        if line.get(name) is not None:
            out[name] = line[name]
    return out


def _yuan_text(value: Any) -> str:
    """Exact yuan (``"100.003840"``) as the two-decimal text a receipt shows (``"100.00"``)."""
    if value is None or value == "":
        return ""
    try:
        return str(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    except InvalidOperation:
        return str(value)


# Rendering --------------------------------------------------------------------------------------

TRANSLATIONS = Path(__file__).parent / "console" / "translations"
_TIER = re.compile(r"^tier (\d+)$")
_DAYS = re.compile(r"^(\d+)/(\d+) days$")
_environments: dict[str, tuple[jinja2.Environment, gettext.NullTranslations]] = {}


def _environment(locale: str) -> tuple[jinja2.Environment, gettext.NullTranslations]:
    """The receipt template's Jinja environment, translated with the console's catalog."""
    language = "en" if locale.startswith("en") else "zh"
    found = _environments.get(language)
    if found is None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("onecard", "templates"),
            autoescape=True,
            extensions=["jinja2.ext.i18n"],
            undefined=jinja2.StrictUndefined,
        )
        translations: gettext.NullTranslations = (
            gettext.NullTranslations()
            if language == "en"
            else Translations.load(str(TRANSLATIONS), [language], domain="messages")
        )
        env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        env.filters["yuan"] = _yuan_filter
        found = _environments[language] = (env, translations)
    return found


def _yuan_filter(fen: int | None) -> str:
    if fen is None:
        return "—"
    text = format_fen(int(fen))
    negative = text.startswith("-")
    whole, cents = text.lstrip("-").split(".")
    return f"{'-' if negative else ''}{int(whole):,}.{cents}"


def item_label(label: str, gettext_: Callable[[str], str]) -> str:
    """A quote line's label in the receipt's language: ``tier 2 · peak`` -> ``第2档 · 高峰``.

    Labels are made of parts joined by `` · ``; the core's and plugins' own words are in the
    catalog, a tariff's own labels (band and component names) are shown as the tariff has them.
    """
    parts = []
    for part in label.split(" · "):
        if m := _TIER.match(part):
            parts.append(gettext_("Tier %(n)s") % {"n": m.group(1)})
        elif m := _DAYS.match(part):
            parts.append(gettext_("%(n)s of %(m)s days") % {"n": m.group(1), "m": m.group(2)})
        else:
            parts.append(gettext_(part) if part else part)
    return " · ".join(parts)


def render_html(receipt: Receipt, locale: str = "zh_CN") -> str:
    """The receipt as HTML (what :func:`render_pdf` prints)."""
    env, translations = _environment(locale)
    language = "en" if locale.startswith("en") else "zh-CN"
    data = receipt.data
    office = data.get("office") or {}
    tz = _zone(office.get("timezone"))
    at = data.get("at") or receipt.created_at.isoformat()
    when = _utc(dt.datetime.fromisoformat(at)).astimezone(tz)

    def title_of(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get(language) or value.get("en") or next(iter(value.values()), ""))
        return str(value or "")

    from onecard.console import labels

    template = env.get_template("receipt.html")
    return template.render(
        label=lambda code, group: labels.label(code, group, translations.gettext),
        known=labels.known,
        receipt=receipt,
        data=data,
        office=office,
        when=when.strftime("%Y-%m-%d %H:%M:%S"),
        tz=str(tz),
        lang=language,
        title_of=title_of,
        label_of=lambda text: item_label(str(text), translations.gettext),
    )


_font_config: Any = None


def render_pdf(receipt: Receipt, locale: str = "zh_CN") -> bytes:
    """The receipt as an A5 PDF (weasyprint), in ``zh_CN`` or ``en``, times in the office's zone.

    The font configuration (fontconfig's fonts as Pango loaded them) is made once and reused: the
    CJK collection is not looked up and opened again for every receipt.
    """
    global _font_config
    from weasyprint import HTML
    from weasyprint.text.fonts import FontConfiguration

    if _font_config is None:
        _font_config = FontConfiguration()
    pdf = HTML(string=render_html(receipt, locale)).write_pdf(font_config=_font_config)
    assert isinstance(pdf, bytes)
    return pdf


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "Asia/Shanghai")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")
