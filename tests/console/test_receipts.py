"""The receipt PDF page: scoped to the operator's offices, in their language, reprints counted."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from flask import Flask
from pypdf import PdfReader
from sqlalchemy import select

from onecard.models import AuditEvent, Receipt

from .conftest import Desk, login
from .test_counter import Shop, amount, confirm, open_shop, sell_form


@pytest.fixture
def shop(app: Flask, reader: Desk) -> Shop:
    return open_shop(app, reader)


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def made_sale(shop: Shop) -> tuple[str, str]:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    r = confirm(
        client,
        shop,
        key,
        **{amount(shop, "electric"): "100", amount(shop, "water.cold"): "50"},
        **{amount(shop, "gas"): "30"},
    )
    assert r.status_code == 302
    page = client.get(r.location).get_data(as_text=True)
    link = re.search(r'href="(/console/receipts/([^"/]+)\.pdf\?original=1)"', page)
    assert link, page
    return link.group(1), link.group(2)


def reprints(app: Flask, number: str) -> int:
    from onecard.web import EXTENSION

    with app.extensions[EXTENSION].sessions() as s:
        return int(s.scalar(select(Receipt.reprints).where(Receipt.number == number)) or 0)


def test_sale_receipt_pdf_in_chinese(shop: Shop, tmp_path: Path) -> None:
    link, number = made_sale(shop)
    client = login(shop.app, "east", lang="zh_CN")
    r = client.get(link)
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert f'filename="{number}.pdf"' in r.headers["Content-Disposition"]
    out = Path(os.environ.get("ONECARD_RECEIPT_OUT", tmp_path))
    (out / "console-receipt.pdf").write_bytes(r.data)
    text = pdf_text(r.data)
    for expected in ("售卡收据", "张伟", number, "180.00", "100.00", "50.00", "30.00",
                     "第 1 次购买", "现金", "East", shop.card.uid.hex().upper()):  # fmt: skip
        assert expected in text, (expected, text)
    for serial in shop.serials.values():
        if serial != shop.serials["heat"]:
            assert serial in text
    assert reprints(shop.app, number) == 0  # the first print by its clerk


def test_reprint_from_history_is_counted_and_marked(shop: Shop) -> None:
    _, number = made_sale(shop)
    audit = login(shop.app, "audit")
    r = audit.get(f"/console/receipts/{number}.pdf")
    assert r.status_code == 200
    assert "Reprint 1" in pdf_text(r.data) and "Sales receipt" in pdf_text(r.data)
    # ?original=1 is only the first print of the clerk who made the sale
    r = audit.get(f"/console/receipts/{number}.pdf?original=1")
    assert "Reprint 2" in pdf_text(r.data)
    assert reprints(shop.app, number) == 2
    from onecard.web import EXTENSION

    with shop.app.extensions[EXTENSION].sessions() as s:
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.action == "receipt.reprint"))
        assert len(list(actions)) == 2


def test_other_office_does_not_see_the_receipt(shop: Shop) -> None:
    _, number = made_sale(shop)
    west = login(shop.app, "west")
    assert west.get(f"/console/receipts/{number}.pdf").status_code == 404
    assert west.get("/console/receipts/E01-20990101-999999.pdf").status_code == 404
    assert reprints(shop.app, number) == 0
