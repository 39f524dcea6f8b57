"""The words of alarm notices, in Chinese (the default) and English. Money is integer fen."""

from __future__ import annotations

from onecard.errors import InvalidInput
from onecard.money import format_fen

#: alarm levels, as ``RemoteMeter.alarm_level`` counts them
LEVELS = (1, 2, 3)


def render_alarm(
    level: int,
    *,
    customer: str,
    serial: str,
    kind: str,
    balance: int,
    threshold: int | None = None,
    lang: str = "zh-CN",
) -> tuple[str, str]:
    """The ``(subject, body)`` of an alarm notice.

    ``level`` is 1 (alarm 1), 2 (alarm 2) or 3 (credit exhausted); ``kind`` is the utility kind's
    display name in ``lang`` (``kind.name(lang)``); ``balance`` and ``threshold`` (the alarm level
    crossed, or for level 3 the overdraft allowed) are fen, shown as yuan with two decimals.
    ``lang`` starting with ``zh`` gives Chinese, anything else English.
    """
    if level not in LEVELS:
        raise InvalidInput(f"level must be 1, 2 or 3, not {level!r}", field="level")
    money = format_fen(balance)
    limit = format_fen(threshold) if threshold is not None else None
    if lang.lower().startswith("zh"):
        return _zh(level, customer, serial, kind, money, limit)
    return _en(level, customer, serial, kind, money, limit)


def _zh(
    level: int, customer: str, serial: str, kind: str, money: str, limit: str | None
) -> tuple[str, str]:
    meter = f"{kind}表（表号 {serial}）"
    greeting = f"{customer}您好：您的{meter}当前余额 {money} 元，"
    if level == 3:
        overdraft = f"（透支额度 {limit} 元）" if limit is not None else ""
        return (
            f"余额已用尽：{kind}表 {serial}",
            f"{greeting}已用尽{overdraft}，将按规定停止供应，充值后自动恢复。",
        )
    below = (
        f"已低于{'一' if level == 1 else '二'}级报警值 {limit} 元，" if limit is not None else ""
    )
    urge = "请及时充值。" if level == 1 else "请尽快充值，以免停止供应。"
    title = "余额不足提醒" if level == 1 else "余额严重不足提醒"
    return f"{title}：{kind}表 {serial}", f"{greeting}{below}{urge}"


def _en(
    level: int, customer: str, serial: str, kind: str, money: str, limit: str | None
) -> tuple[str, str]:
    greeting = f"Dear {customer}, the balance of your {kind} meter {serial} is {money} yuan"
    if level == 3:
        overdraft = f" (overdraft allowed: {limit} yuan)" if limit is not None else ""
        return (
            f"Credit exhausted: {kind} meter {serial}",
            f"{greeting}: the credit is used up{overdraft}. Supply will be cut off as the rules "
            "say; it comes back by itself after a recharge.",
        )
    below = f", below alarm level {level} ({limit} yuan)" if limit is not None else ""
    urge = "Please top up soon." if level == 1 else "Please top up now to keep the supply on."
    title = "Low balance" if level == 1 else "Very low balance"
    return f"{title} (alarm {level}): {kind} meter {serial}", f"{greeting}{below}. {urge}"
