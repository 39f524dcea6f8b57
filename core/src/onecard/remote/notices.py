"""Turn meter events into notices: alarm crossings to the customer (e-mail and/or SMS, as their
record and the installation's settings allow), bypasses and recharge mismatches to the staff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from onecard.models import Customer, Meter, MeterEvent
from onecard.remote.fees import Policy


def policy_of(settings: Any) -> Policy:
    """The installation's alarm and stale defaults, from the settings (``ONECARD_ALARM1``,
    ``ONECARD_ALARM2``, ``ONECARD_STALE_AFTER``)."""
    return Policy(
        alarm1=settings.alarm1_fen, alarm2=settings.alarm2_fen, stale_after=settings.stale_after
    )


def make_notice_sender(runtime: Any) -> Callable[[Session, MeterEvent], None]:
    """A function that sends the notices of one event, recorded as notifications."""
    from onecard.notify.send import notify
    from onecard.notify.texts import render_alarm

    settings = runtime.settings
    plugins = runtime.plugins
    levels = {"alarm1": 1, "alarm2": 2, "exhausted": 3}

    def channels_for(customer: Customer | None) -> list[tuple[str, str]]:
        out = []
        if customer is not None:
            if customer.email and getattr(settings, "smtp_host", None):
                out.append(("email", customer.email))
            if customer.phone and getattr(settings, "sms_url", None):
                out.append(("sms", customer.phone))
        return out

    def send(session: Session, event: MeterEvent) -> None:
        meter = session.get(Meter, event.meter_id)
        if meter is None:
            return
        customer = session.get(Customer, event.customer_id) if event.customer_id else None
        kind = runtime.utilities.get(meter.kind)
        if event.event in levels:
            subject, body = render_alarm(
                levels[event.event],
                customer=customer.name if customer else meter.serial,
                serial=meter.serial,
                kind=kind.name("zh-CN"),
                balance=event.balance or 0,
                threshold=(event.detail or {}).get("threshold"),
            )
            for channel, recipient in channels_for(customer):
                notify(
                    session,
                    plugins,
                    settings,
                    channel=channel,
                    recipient=recipient,
                    subject=subject,
                    body=body,
                    event_id=event.id,
                    customer_id=event.customer_id,
                    now=event.at,
                )
            return
        staff = getattr(settings, "staff_email", None)
        if not staff or not getattr(settings, "smtp_host", None):
            return
        what = {
            "bypass": "继电器旁路告警 / relay bypass",
            "recharge_mismatch": "充值次数不符 / recharge count mismatch",
        }.get(event.event, event.event)
        notify(
            session,
            plugins,
            settings,
            channel="email",
            recipient=staff,
            subject=f"{what}: {kind.name('zh-CN')} {meter.serial}",
            body=(
                f"{what}\n{kind.name('zh-CN')} / {kind.name('en')} {meter.serial}\n"
                f"{event.at.isoformat()}\n{event.detail}"
            ),
            event_id=event.id,
            customer_id=event.customer_id,
            now=event.at,
        )

    return send
