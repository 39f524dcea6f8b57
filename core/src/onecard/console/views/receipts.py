"""Receipts as PDF: the receipt a sale (or settlement) made, printed again from its stored data.

``/console/receipts/<number>.pdf`` renders the receipt in the operator's language. Opening it
counts as a reprint (the PDF says "Reprint n"), except the first print the clerk who made it
opens from the sale's page within a few minutes (``?original=1``).
"""

from __future__ import annotations

import datetime as dt

from flask import make_response, request
from flask.typing import ResponseReturnValue

from onecard import receipts
from onecard.audit import record
from onecard.console import kit
from onecard.console.i18n import page_language
from onecard.errors import NotFound
from onecard.web import db

bp = kit.console_blueprint("receipts", __name__, "/console/receipts")

#: How long after a sale its clerk's ``?original=1`` prints the receipt without counting a reprint.
ORIGINAL_WINDOW = dt.timedelta(minutes=15)


@bp.get("/<number>.pdf")
@kit.page("customer.view")
def pdf(number: str) -> ResponseReturnValue:
    """The receipt ``number`` as a PDF (inline: the browser shows it, ready to print)."""
    session = db()
    try:
        receipt = receipts.get_receipt(session, number)
    except NotFound:
        raise NotFound(f"no receipt numbered {number!r}", field="receipt") from None
    if not kit.allowed("customer.view", receipt.office_id):
        raise NotFound(f"no receipt numbered {number!r}", field="receipt")
    op = kit.operator()
    created = receipt.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    original = (
        request.args.get("original") == "1"
        and receipt.operator_id == op.id
        and dt.datetime.now(dt.UTC) - created < ORIGINAL_WINDOW
    )
    if not original:
        receipt.reprints += 1
        record(
            session,
            kit.actor(),
            "receipt.reprint",
            [f"receipt:{receipt.number}"],
            detail={"reprints": receipt.reprints},
            office_id=receipt.office_id,
            customer_id=receipt.customer_id,
        )
    body = receipts.render_pdf(receipt, page_language())
    session.commit()
    response = make_response(body)
    response.headers["Content-Type"] = "application/pdf"
    response.headers["Content-Disposition"] = f'inline; filename="{receipt.number}.pdf"'
    response.headers["Cache-Control"] = "no-store"
    return response
