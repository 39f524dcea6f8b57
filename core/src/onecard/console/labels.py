"""Words for the codes the services store: payment methods, ledger transaction kinds, audit
actions, reading sources and flags, card types, receipt kinds, statuses, categories, and the
remote meters' events, relay states, relay commands and recharge states.

One place for all of them, so a page never shows ``cash`` or ``card.issue`` to an operator. The
tables hold English message ids (marked with :func:`N_` so ``python -m onecard.console.catalog``
extracts and checks them); :func:`label` translates at the time of use, in the request's language
(the console) or with a catalog it is given (the receipt). A code nobody named (a plugin's ledger
kind, a new audit action) is shown as itself; a plugin may name its codes with :func:`register`.

In templates: ``{{ p.method|label('method') }}``, ``{{ kind_name(m.kind) }}``,
``{{ profile_name(card.profile) }}``.
"""

from __future__ import annotations

from collections.abc import Callable

#: The groups of codes :func:`label` knows.
GROUPS = (
    "method",
    "txn",
    "reason",
    "source",
    "flag",
    "action",
    "card_type",
    "receipt",
    "status",
    "category",
    "event",
    "relay",
    "command",
    "command_status",
    "recharge",
    "billing",
)


def N_(message: str) -> str:  # noqa: N802 (the gettext convention)
    """Mark a message for the catalog without translating it (translated by :func:`label`)."""
    return message


LABELS: dict[str, dict[str, str]] = {
    # how a customer paid (card_purchases.method, receipts' data["method"])
    "method": {
        "cash": N_("Cash"),
        "bank": N_("Bank card"),
    },
    # ledger_transactions.kind (onecard.ledger, lifecycle's settlement)
    "txn": {
        "sale": N_("Credit sale"),
        "consume": N_("Consumption"),
        "refund": N_("Refund to wallet"),
        "refund_payment": N_("Refund paid out"),
        "fee": N_("Fee"),
        "transfer": N_("Transfer between wallets"),
        "arrears_collection": N_("Arrears collected"),
        "reversal": N_("Reversal"),
        "settlement": N_("Settlement"),
    },
    # ledger reason codes and why a card was replaced
    "reason": {
        "purchase_cancelled": N_("Purchase cancelled"),
        "operator_error": N_("Operator error"),
        "lost": N_("Lost"),
        "broken": N_("Broken"),
        "stolen": N_("Stolen"),
    },
    # meter_readings.source
    "source": {
        "card": N_("Customer's card"),
        "check_card": N_("Check card"),
        "remote": N_("Remote reading"),
    },
    # a meter's return record (onecard.card.layout.STATUS_FLAGS)
    "flag": {
        "alarm1": N_("Alarm 1"),
        "alarm2": N_("Alarm 2"),
        "exhausted": N_("Credit exhausted"),
        "relay_open": N_("Supply cut"),
        "tamper": N_("Tampered"),
        "battery_low": N_("Battery low"),
        "refused": N_("Card refused"),
    },
    # audit_events.action
    "action": {
        "system.init": N_("System set up"),
        "keys.init": N_("Card keys created"),
        "keys.rotate": N_("Card keys rotated"),
        "office.create": N_("Office created"),
        "operator.create": N_("Operator created"),
        "operator.login": N_("Logged in"),
        "operator.login_failed": N_("Login failed"),
        "operator.unlock": N_("Operator unlocked"),
        "operator.deactivate": N_("Operator deactivated"),
        "operator.reactivate": N_("Operator reactivated"),
        "operator.role_grant": N_("Role granted"),
        "operator.role_revoke": N_("Role revoked"),
        "role.create": N_("Role created"),
        "tariff.version": N_("Tariff version added"),
        "meter.tariff": N_("Meter tariff set"),
        "customer.open": N_("Account opened"),
        "customer.transfer": N_("Ownership transferred"),
        "customer.suspend": N_("Account suspended"),
        "customer.resume": N_("Account resumed"),
        "customer.close": N_("Account closed"),
        "meter.replace": N_("Meter replaced"),
        "ledger.sale": N_("Sale recorded"),
        "ledger.reverse": N_("Transaction reversed"),
        "receipt.reprint": N_("Receipt reprinted"),
        "card_profile.create": N_("Card profile created"),
        "card.issue": N_("Card issued"),
        "card.issue_tool": N_("Tool card issued"),
        "card.reissue": N_("Card reissued"),
        "card.read": N_("Card read"),
        "card.rekey": N_("Card rekeyed"),
        "card.lost": N_("Card reported lost"),
        "card.report_lost": N_("Card reported lost"),
        "card.sale": N_("Sold to the card"),
        "card.sale.pending": N_("Card sale pending"),
        "card.sale.finish": N_("Card sale finished"),
        "card.sale.void": N_("Card sale voided"),
        "card.sale.void_without_card": N_("Card sale voided without the card"),
        "card.repurchase": N_("Purchase written again"),
        "card.cancel": N_("Purchase cancelled"),
        "card.authorize_failed": N_("Manager authorisation failed"),
        "gateway.add": N_("Gateway added"),
        "meters.import": N_("Remote meters imported"),
        "meter.trip": N_("Meter tripped"),
        "meter.close": N_("Meter relay closed"),
        "meter.keep": N_("Keep power set"),
        "meter.release": N_("Keep power released"),
        "meter.recharge": N_("Remote recharge"),
    },
    # cards.card_type (onecard.card.layout.CARD_TYPES)
    "card_type": {
        "user": N_("Customer card"),
        "system": N_("System card"),
        "manager": N_("Manager card"),
        "settings": N_("Settings card"),
        "reset": N_("Reset card"),
        "clear": N_("Clear card"),
        "check": N_("Check card"),
    },
    # receipts.kind (onecard.receipts.KINDS)
    "receipt": {
        "sale": N_("Sales receipt"),
        "settlement": N_("Settlement receipt"),
        "refund": N_("Refund receipt"),
        "fee": N_("Fee receipt"),
        "cancel": N_("Cancellation receipt"),
    },
    # customers, meters, cards and card purchases
    "status": {
        "active": N_("Active"),
        "suspended": N_("Suspended"),
        "closed": N_("Closed"),
        "removed": N_("Removed"),
        "lost": N_("Lost"),
        "blacklisted": N_("Blacklisted"),
        "retired": N_("Retired"),
        "pending": N_("Pending"),
        "confirmed": N_("Confirmed"),
        "voided": N_("Voided"),
        "cancelled": N_("Cancelled"),
    },
    # customers.category
    "category": {
        "residential": N_("Residential"),
        "commercial": N_("Commercial"),
        "industrial": N_("Industrial"),
        "public": N_("Public"),
    },
    # meter_events.event (onecard.remote.fees and onecard.remote.service)
    "event": {
        "alarm1": N_("Alarm 1: credit low"),
        "alarm2": N_("Alarm 2: credit very low"),
        "exhausted": N_("Credit exhausted"),
        "recovered": N_("Credit back above the alarm"),
        "stale": N_("Stale: readings missed"),
        "fresh": N_("Read again after missed readings"),
        "bypass": N_("Bypass: supply on while tripped"),
        "recharge_mismatch": N_("Recharge count mismatch"),
        "rollback": N_("Counter went backwards"),
        "trip": N_("Relay opened (tripped)"),
        "close": N_("Relay closed"),
    },
    # remote_meters.relay, relay_commands.relay_after (onecard.remote.types.RELAY_STATES)
    "relay": {
        "closed": N_("Closed: supply on"),
        "open": N_("Open: supply cut"),
    },
    # relay_commands.command (onecard.remote.types.RELAY_COMMANDS)
    "command": {
        "trip": N_("Trip"),
        "close": N_("Close the relay"),
        "keep": N_("Keep power"),
        "release": N_("Release keep power"),
    },
    # relay_commands.status
    "command_status": {
        "sent": N_("Sent"),
        "done": N_("Done"),
        "failed": N_("Failed"),
        "mismatch": N_("Not obeyed"),
    },
    # remote_recharges.status
    "recharge": {
        "pending": N_("Waiting for the meter"),
        "accepted": N_("Accepted by the meter"),
        "failed": N_("Failed"),
        "mismatch": N_("Count mismatch"),
    },
    # remote_meters.billing
    "billing": {
        "server": N_("Priced by the server"),
        "meter": N_("Meter keeps its credit"),
    },
}


def register(group: str, code: str, message: str) -> None:
    """Name a code (a plugin's ledger kind or audit action); ``message`` is English, and is
    translated when the plugin's catalog or the console's has it. A code already named stays."""
    LABELS.setdefault(group, {}).setdefault(code, message)


def known(group: str, code: str | None) -> bool:
    return code is not None and code in LABELS.get(group, {})


def label(code: object, group: str, gettext: Callable[[str], str] | None = None) -> str:
    """``code`` of ``group`` in the page's language (or with ``gettext``); unknown: the code."""
    if code is None or code == "":
        return ""
    message = LABELS.get(group, {}).get(str(code))
    if message is None:
        return str(code)
    if gettext is not None:
        return str(gettext(message))
    from flask_babel import gettext as translate

    return str(translate(message))


def options(group: str, codes: list[str] | None = None) -> list[tuple[str, str]]:
    """``(code, label)`` pairs for a select, in the table's order (or that of ``codes``)."""
    return [(c, label(c, group)) for c in (codes if codes is not None else LABELS[group])]


def language() -> str:
    """The page's language as utilities and card profiles spell it: ``zh-CN`` or ``en``."""
    from onecard.console.i18n import page_language

    return "en" if page_language() == "en" else "zh-CN"


def kind_name(code: str | None) -> str:
    """A utility kind's name in the page's language (``electric`` -> 电); unknown: the code."""
    if not code:
        return ""
    from onecard.web import runtime

    utilities = runtime().utilities
    return utilities.get(code).name(language()) if code in utilities else code


def profile_name(code: str | None) -> str:
    """A card profile's name in the page's language (``six`` -> 六表卡); unknown: the code."""
    if not code:
        return ""
    from flask import g
    from sqlalchemy import select

    from onecard.models import CardProfile
    from onecard.web import db

    names: dict[str, dict[str, str]] | None = g.get("profile_names")
    if names is None:
        rows = db().execute(select(CardProfile.code, CardProfile.names)).all()
        names = g.profile_names = {c: dict(n or {}) for c, n in rows}
    found = names.get(code) or {}
    return str(found.get(language()) or found.get("en") or code)


def init_labels(env_filters: dict[str, object], env_globals: dict[str, object]) -> None:
    """Add the filter ``label`` and the globals ``kind_name``, ``profile_name`` to Jinja."""
    env_filters["label"] = label
    env_globals["label"] = label
    env_globals["kind_name"] = kind_name
    env_globals["profile_name"] = profile_name


__all__ = [
    "GROUPS",
    "LABELS",
    "N_",
    "init_labels",
    "kind_name",
    "known",
    "label",
    "language",
    "options",
    "profile_name",
    "register",
]
