"""Stored codes (payment methods, ledger kinds, audit actions, ...) are shown in the operator's
language, from one table (``onecard.console.labels``); a code it does not know is shown as is."""

from __future__ import annotations

import pytest
from flask import Flask, render_template_string
from sqlalchemy import select

from onecard.console import labels
from onecard.models import CardProfile

from .conftest import Desk, login
from .test_counter import Shop, amount, confirm, open_shop, sell_form


@pytest.fixture
def shop(app: Flask, reader: Desk) -> Shop:
    return open_shop(app, reader)


def test_chinese_customer_page_names_the_codes(shop: Shop) -> None:
    client = login(shop.app, "east", lang="zh_CN")
    _, key = sell_form(client)
    r = confirm(client, shop, key, **{amount(shop, "electric"): "100"})
    assert r.status_code == 302, r.get_data(as_text=True)
    with shop.rt.sessions() as s:
        four = s.scalar(select(CardProfile).where(CardProfile.code == "four"))
        assert four is not None
        profile = four.names["zh-CN"]
    body = client.get(f"/console/customers/{shop.number}").get_data(as_text=True)
    purchases = body[body.index('id="purchases"') : body.index('id="transactions"')]
    assert "现金" in purchases and "<td>cash</td>" not in purchases
    transactions = body[body.index('id="transactions"') : body.index('id="readings"')]
    assert "售卖充值" in transactions and "<td>sale" not in transactions
    history = body[body.index('id="history"') :]
    assert "发卡" in history and "card.issue" not in history
    cards = body[body.index('id="cards"') : body.index('id="purchases"')]
    assert profile in cards and "<td>four</td>" not in cards
    receipts = body[body.index('id="receipts"') :]
    assert "售卡收据" in receipts


def test_english_labels(shop: Shop) -> None:
    client = login(shop.app, "east")
    _, key = sell_form(client)
    confirm(client, shop, key, **{amount(shop, "gas"): "30"})
    body = client.get(f"/console/customers/{shop.number}").get_data(as_text=True)
    assert "<td>Cash</td>" in body and "Credit sale" in body and "Card issued" in body


def test_unknown_code_is_shown_as_itself(app: Flask) -> None:
    with app.test_request_context():
        assert labels.label("cash", "method") == "现金"  # Chinese is the default
        assert labels.label("plugin_bonus", "txn") == "plugin_bonus"
        assert labels.label("plugin.thing", "action") == "plugin.thing"
        assert labels.label("x", "no-such-group") == "x"
        assert labels.label(None, "txn") == ""
        assert labels.kind_name("no.such.kind") == "no.such.kind"
        assert labels.profile_name("no-such-profile") == "no-such-profile"
        page = render_template_string(
            "{{ 'plugin_bonus'|label('txn') }} "
            "{{ ['alarm1', 'odd']|map('label', 'flag')|join(',') }}"
        )
        assert page == "plugin_bonus 一级报警,odd"


def test_a_plugin_names_its_code(app: Flask) -> None:
    try:
        labels.register("txn", "plugin_bonus", "Bonus")
        with app.test_request_context():
            assert labels.label("plugin_bonus", "txn") == "Bonus"
    finally:
        labels.LABELS["txn"].pop("plugin_bonus", None)
