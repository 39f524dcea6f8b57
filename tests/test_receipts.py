"""Receipts: a card sale's receipt data from its purchases and stored quotes, one receipt per sale,
and the PDF (weasyprint, CJK font) in Chinese and English; settlement receipts render too."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from cardkit import ACTOR, blank_card, card_customer, direct, keyed_site, make_desk
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard import receipts, tariffs
from onecard.card.service import CardDesk, SaleItem
from onecard.errors import NotFound
from onecard.models import Receipt
from onecard.plugins import Plugins

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "tariffs" / "examples"


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


@pytest.fixture
def desk(sessions: sessionmaker[Session], plugins: Plugins, world: object) -> CardDesk:
    with sessions() as s, s.begin():
        for name in ("electric-residential.yaml", "water-cold-residential.yaml"):
            doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
            tariffs.add_version(s, ACTOR, plugins.utilities, doc)
    return make_desk(sessions, plugins, keyed_site(sessions))


def sold(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> tuple[str, list[str]]:
    number, serials = card_customer(sessions, plugins, ["electric", "water.cold", "gas"])
    card = blank_card()
    desk.issue(direct(card), ACTOR, customer=number, profile="four")
    items = [SaleItem(serials[0], 10000), SaleItem(serials[1], 5000), SaleItem(serials[2], 3000)]
    desk.sell(direct(card), ACTOR, sale_key="r-1", items=items, method="bank")
    return number, serials


@SQLITE
def test_sale_receipt_from_purchases_and_quotes(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    number, serials = sold(desk, sessions, plugins)
    with sessions() as s, s.begin():
        r = receipts.issue_sale_receipt(s, plugins.utilities, "r-1")
        again = receipts.issue_sale_receipt(s, plugins.utilities, "r-1")
        assert again.id == r.id
        assert r.kind == "sale" and r.total == 18000 and r.number.startswith("E01-")
        data = r.data
    assert data["customer"]["number"] == number and data["customer"]["name"] == "张伟"
    assert data["method"] == "bank" and data["total_fen"] == 18000
    lines = {ln["meter"]: ln for ln in data["lines"]}
    assert lines[serials[0]]["seq"] == 1 and lines[serials[0]]["quantity"] == "204.80"
    assert lines[serials[0]]["title"]["zh-CN"] == "电"
    water = lines[serials[1]]["items"]
    assert [i["amount"] for i in water] == ["20.70", "15.70", "13.60"]
    assert lines[serials[2]]["items"] == []  # gas: no tariff loaded, no itemised quote
    with sessions() as s, pytest.raises(NotFound):
        receipts.sale_receipt_data(s, plugins.utilities, "no-such-sale")


@SQLITE
def test_pdf_in_chinese_and_english(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins, tmp_path: Path
) -> None:
    _number, serials = sold(desk, sessions, plugins)
    with sessions() as s, s.begin():
        r = receipts.issue_sale_receipt(s, plugins.utilities, "r-1")
        zh = receipts.render_pdf(r, "zh_CN")
        en = receipts.render_pdf(r, "en")
        number = r.number
    out = Path(__import__("os").environ.get("ONECARD_RECEIPT_OUT", tmp_path))
    (out / "receipt-zh.pdf").write_bytes(zh)
    (out / "receipt-en.pdf").write_bytes(en)
    text = pdf_text(zh)
    for expected in ("售卡收据", "张伟", number, "180.00", "100.00", "第 1 次购买", "银行卡",
                     "第1阶梯", "水资源费", serials[1]):  # fmt: skip
        assert expected in text, (expected, text)
    fonts = {
        str(f.get("/BaseFont"))
        for page in PdfReader(io.BytesIO(zh)).pages
        for f in (page["/Resources"].get("/Font") or {}).values()
    }
    assert any("Noto-Sans-CJK-SC" in f for f in fonts), fonts
    text = pdf_text(en)
    for expected in ("Sales receipt", "张伟", "Purchase no. 1", "Bank card", "Tier 1", "180.00"):
        assert expected in text, (expected, text)


@SQLITE
def test_time_is_in_the_office_time_zone(
    desk: CardDesk, sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    sold(desk, sessions, plugins)
    with sessions() as s, s.begin():
        r = receipts.issue_sale_receipt(s, plugins.utilities, "r-1")
        r.data = dict(r.data, at="2026-03-01T20:30:00+00:00")
        html = receipts.render_html(r, "en")
    assert "2026-03-02 04:30:00" in html and "Asia/Shanghai" in html


@SQLITE
def test_settlement_receipt_is_rendered_from_generic_lines(
    sessions: sessionmaker[Session], world: Any
) -> None:
    data = {
        "title": "settlement",
        "office": {"code": "E01", "name": "East", "timezone": "Asia/Shanghai"},
        "operator": {"username": "east", "full_name": "East Clerk"},
        "customer": {
            "number": "E01-000001",
            "name": "王芳",
            "building": "1号楼",
            "unit": "101",
            "address": "",
        },
        "card": None,
        "method": "cash",
        "at": dt.datetime(2026, 5, 1, 2, 0, tzinfo=dt.UTC).isoformat(),
        "lines": [
            {
                "title": "Electricity wallet",
                "kind": "electric",
                "meter": "E0001",
                "seq": None,
                "amount_fen": -4550,
                "units": None,
                "items": [],
            },
            {
                "title": {"zh-CN": "物业费", "en": "Property fee"},
                "kind": "rent",
                "meter": None,
                "seq": None,
                "amount_fen": 1200,
                "units": None,
                "items": [
                    {
                        "label": "arrears",
                        "quantity": None,
                        "unit": None,
                        "price": None,
                        "amount": "12.00",
                    }
                ],
            },
        ],
        "total_fen": -3350,
        "notes": ["账户已销户"],
    }
    with sessions() as s, s.begin():
        r = receipts.issue_receipt(
            s, kind="settlement", office_id=world.office_id, data=data, total=-3350
        )
        text = pdf_text(receipts.render_pdf(r, "zh_CN"))
        assert s.scalar(select(Receipt.kind).where(Receipt.id == r.id)) == "settlement"
    for expected in (
        "结算收据",
        "王芳",
        "1号楼 101",
        "物业费",
        "-¥45.50",
        "退还用户",
        "33.50",
        "账户已销户",
    ):
        assert expected in text, (expected, text)


def test_item_labels_are_translated_part_by_part() -> None:
    words = {"Tier %(n)s": "第%(n)s阶梯", "water fee": "水费"}

    def gettext(text: str) -> str:
        return words.get(text, text)

    assert receipts.item_label("tier 2 · water fee", gettext) == "第2阶梯 · 水费"
    assert receipts.item_label("tier 1 · 高峰", gettext) == "第1阶梯 · 高峰"
    assert receipts.item_label("", gettext) == ""
