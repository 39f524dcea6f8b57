"""Languages, money and time for the console: Flask-Babel with zh_CN (the default) and English.

Messages are written in English in the code and templates (``_("Sell")``); the Chinese catalog is
``translations/zh/LC_MESSAGES/messages.po``, built from the per-area parts in
``translations/zh/parts/*.po`` by ``python -m onecard.console.catalog`` (``make i18n``).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask, g, request, session
from flask_babel import Babel, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup

from onecard.errors import OnecardError
from onecard.money import format_fen

LOCALES = {"zh_CN": "中文", "en": "English"}
DEFAULT_LOCALE = "zh_CN"
DEFAULT_TIMEZONE = "Asia/Shanghai"

#: What each error code means, in the operator's language (the service's message follows).
ERROR_TITLES = {
    "invalid_input": _l("Please check the input"),
    "not_found": _l("Not found"),
    "conflict": _l("This conflicts with what is stored"),
    "permission_denied": _l("You are not allowed to do this"),
    "authentication_failed": _l("Login failed"),
    "insufficient_funds": _l("Not enough credit"),
    "idempotency_conflict": _l("This form was already used for another request"),
    "already_reversed": _l("Already reversed"),
    "card_error": _l("Card error"),
    "no_reader": _l("No card reader"),
    "no_card": _l("No card on the reader"),
    "card_removed": _l("The card was removed during the operation"),
    "reader_error": _l("Card reader error"),
    "wrong_key": _l("The card's keys are wrong"),
    "not_our_card": _l("This is not a card of this system"),
    "foreign_site": _l("This card belongs to another site"),
    "card_tampered": _l("The card has been tampered with"),
    "card_refused": _l("The card was refused"),
}


def current_locale() -> str:
    lang = session.get("lang")
    if lang in LOCALES:
        return str(lang)
    return DEFAULT_LOCALE


def current_timezone() -> str:
    tz = g.get("tz")
    return str(tz) if tz else DEFAULT_TIMEZONE


def init_babel(app: Flask) -> None:
    from pathlib import Path

    app.config.setdefault(
        "BABEL_TRANSLATION_DIRECTORIES", str(Path(__file__).parent / "translations")
    )
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", DEFAULT_TIMEZONE)
    Babel(app, locale_selector=current_locale, timezone_selector=current_timezone)
    app.jinja_env.filters["yuan"] = yuan
    app.jinja_env.filters["localtime"] = localtime
    app.jinja_env.filters["localdate"] = localdate
    app.jinja_env.globals["LOCALES"] = LOCALES
    app.jinja_env.globals["lang"] = page_language
    app.jinja_env.globals["error_text"] = error_text
    from onecard.console.labels import init_labels

    init_labels(app.jinja_env.filters, app.jinja_env.globals)


def page_language() -> str:
    """``zh_CN`` or ``en`` (Babel itself spells Chinese ``zh_Hans_CN``; its catalog is ``zh``)."""
    locale = get_locale()
    return "en" if locale is not None and locale.language == "en" else "zh_CN"


def yuan(fen: int | None, sign: bool = False) -> str:
    """Fen as yuan with two decimals and thousands separators: 123456 -> ``"1,234.56"``."""
    if fen is None:
        return "—"
    text = format_fen(int(fen))
    negative = text.startswith("-")
    whole, cents = text.lstrip("-").split(".")
    grouped = f"{int(whole):,}"
    prefix = "-" if negative else ("+" if sign and fen > 0 else "")
    return f"{prefix}{grouped}.{cents}"


def zone(name: str | None = None) -> ZoneInfo:
    try:
        return ZoneInfo(name or current_timezone())
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def localtime(value: dt.datetime | str | None, tz: str | None = None, seconds: bool = False) -> str:
    """A UTC time as ``2026-11-21 14:05`` in the office's time zone (or ``tz``)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    local = value.astimezone(zone(tz))
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def localdate(value: dt.datetime | str | None, tz: str | None = None) -> str:
    return localtime(value, tz)[:10] if value else "—"


def error_text(exc: OnecardError) -> Markup:
    """An error for the page: the translated meaning of its code, then the service's words."""
    title = ERROR_TITLES.get(exc.code)
    if title is None or (page_language() == "en" and exc.code == "invalid_input"):
        return Markup.escape(exc.message)
    return Markup.escape(f"{title}: {exc.message}")


def wants_language() -> str | None:
    lang = request.args.get("lang") or request.form.get("lang")
    return lang if lang in LOCALES else None


__all__ = [
    "DEFAULT_LOCALE",
    "LOCALES",
    "_",
    "_l",
    "current_locale",
    "error_text",
    "init_babel",
    "localdate",
    "localtime",
    "yuan",
    "zone",
]
