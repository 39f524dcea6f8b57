"""Notifications: the hook ``onecard_register_notifiers``, the ``email`` channel against a real
SMTP server (aiosmtpd on 127.0.0.1), the ``sms`` channel against a real HTTP endpoint, the rate
limit, and the rows recorded (never committed by ``notify``)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import socket
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import BUILTIN_PLUGINS
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard import hookimpl
from onecard.config import Settings, load_settings
from onecard.errors import InvalidInput, NotFound, PluginError
from onecard.models import Notification
from onecard.notify import Message, NotifierRegistry, notify, render_alarm
from onecard.plugins import Plugins, load_plugins

NOW = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


def plugin(name: str, **hooks: object) -> types.ModuleType:
    module = types.ModuleType(f"onecard_{name}")
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))  # type: ignore[call-overload]
    return module


def settings(tmp_path: Path, **values: Any) -> Settings:
    return replace(load_settings({"instance_path": tmp_path}, env={}), **values)


@dataclass
class Pager:
    """A plugin's channel that keeps what it is given."""

    name: str = "pager"
    sent: list[Message] = field(default_factory=list)
    fail: bool = False

    def send(self, message: Message) -> None:
        if self.fail:
            raise ConnectionError("pager network down")
        self.sent.append(message)


PAGER = Pager()


def register_pager(registry: NotifierRegistry) -> None:
    registry.add_channel("pager", lambda settings: PAGER)


PAGER_PLUGIN = plugin("pager", onecard_register_notifiers=register_pager)


@pytest.fixture
def loaded() -> Plugins:
    PAGER.sent.clear()
    PAGER.fail = False
    return load_plugins([*BUILTIN_PLUGINS, PAGER_PLUGIN])


def count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Notification)) or 0


# The registry and the hook ----------------------------------------------------------------------


def test_the_core_registers_email_and_sms_without_being_listed_as_a_plugin() -> None:
    loaded = load_plugins(BUILTIN_PLUGINS)
    assert loaded.notifiers.channel_names() == ["email", "sms"]
    assert loaded.notifiers.connector_names() == ["http"]
    assert loaded.notifiers.plugin_of("email") is None
    assert [p.name for p in loaded.info] == ["electric", "gas", "heat", "rent", "water"]
    assert load_plugins(env={"ONECARD_PLUGINS": ""}).notifiers.channel_names() == ["email", "sms"]
    with pytest.raises(PluginError, match="only be registered at start-up"):
        loaded.notifiers.add_channel("late", lambda s: PAGER)
    with pytest.raises(NotFound, match="no notification channel 'fax' \\(known: email, sms\\)"):
        loaded.notifiers.channel("fax", Settings(instance_path=Path(), database_url="sqlite://"))


def test_onecard_register_notifiers_adds_a_plugins_channel_and_connector(
    loaded: Plugins, tmp_path: Path
) -> None:
    def register(registry: NotifierRegistry) -> None:
        registry.add_sms_connector("aliyun", lambda settings: object())

    more = load_plugins([PAGER_PLUGIN, plugin("ali", onecard_register_notifiers=register)])
    assert more.notifiers.channel_names() == ["email", "pager", "sms"]
    assert more.notifiers.describe() == {
        "channels": {"email": "onecard", "pager": "pager", "sms": "onecard"},
        "sms_connectors": {"aliyun": "ali", "http": "onecard"},
    }
    channel = loaded.notifiers.channel("pager", settings(tmp_path))
    assert channel is PAGER and loaded.notifiers.plugin_of("pager") == "pager"


@pytest.mark.parametrize(
    ("register", "message"),
    [
        (
            lambda registry: registry.add_channel("email", lambda s: PAGER),
            "dup: notification channel 'email' is already registered by onecard",
        ),
        (
            lambda registry: registry.add_sms_connector("http", lambda s: PAGER),
            "dup: SMS connector 'http' is already registered by onecard",
        ),
        (
            lambda registry: registry.add_channel("Pager", lambda s: PAGER),
            "name 'Pager' must be lower-case",
        ),
        (lambda registry: registry.add_channel("x" * 33, lambda s: PAGER), "at most 32 characters"),
        (lambda registry: registry.add_channel("pager2", PAGER), "needs a factory"),
        (
            lambda registry: 1 / 0,
            "plugin 'dup' failed while registering notifiers: division by zero",
        ),
    ],
)
def test_bad_registrations_are_refused_naming_the_plugin(register: Any, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        load_plugins([plugin("dup", onecard_register_notifiers=register)])


def test_two_plugins_registering_one_channel_name_the_second() -> None:
    other = plugin("rival", onecard_register_notifiers=register_pager)
    with pytest.raises(
        PluginError, match="rival: notification channel 'pager' is already registered by pager"
    ):
        load_plugins([PAGER_PLUGIN, other])


# notify: recording, rate limit, transactions ----------------------------------------------------


def test_notify_records_every_message_and_never_commits(
    sessions: sessionmaker[Session], loaded: Plugins, tmp_path: Path
) -> None:
    conf = settings(tmp_path, notify_rate_per_hour=2)
    with sessions() as s:
        sent = notify(
            s, loaded, conf, channel="pager", recipient=" ops ", subject="s", body="b", now=NOW
        )
        assert (sent.status, sent.error, sent.recipient, sent.id is not None) == (
            "sent",
            "",
            "ops",
            True,
        )
        assert PAGER.sent == [Message("pager", "ops", "s", "b")]
        PAGER.fail = True
        failed = notify(
            s,
            loaded.notifiers,
            conf,
            channel="pager",
            recipient="ops",
            subject="s",
            body="b",
            now=NOW + dt.timedelta(minutes=1),
        )
        assert (failed.status, failed.error) == ("failed", "pager network down")
        limited = notify(
            s,
            loaded,
            conf,
            channel="pager",
            recipient="ops",
            subject="s",
            body="b",
            now=NOW + dt.timedelta(minutes=2),
        )
        assert limited.status == "limited"
        assert (
            limited.error == "rate limit: 2 messages to this recipient in the last hour (at most 2)"
        )
        assert len(PAGER.sent) == 1  # a limited message is not tried
        # another recipient has its own allowance; a message past the hour is allowed again
        PAGER.fail = False
        other = notify(
            s,
            loaded,
            conf,
            channel="pager",
            recipient="boss",
            subject="s",
            body="b",
            now=NOW + dt.timedelta(minutes=2),
        )
        later = notify(
            s,
            loaded,
            conf,
            channel="pager",
            recipient="ops",
            subject="s",
            body="b",
            now=NOW + dt.timedelta(minutes=61),
        )
        assert (other.status, later.status) == ("sent", "sent")
        s.rollback()
    assert count(sessions) == 0


def test_the_rate_limit_holds_across_sessions(
    sessions: sessionmaker[Session], loaded: Plugins, tmp_path: Path
) -> None:
    """Counted from the table: a second process (here a second session) sees the first's rows."""
    conf = settings(tmp_path, notify_rate_per_hour=1)
    with sessions() as s, s.begin():
        notify(
            s,
            loaded,
            conf,
            channel="pager",
            recipient="13800000001",
            subject="",
            body="hi",
            now=NOW,
        )
    with sessions() as s, s.begin():
        row = notify(
            s,
            loaded,
            conf,
            channel="pager",
            recipient="13800000001",
            subject="",
            body="hi",
            now=NOW + dt.timedelta(minutes=59),
        )
        assert row.status == "limited"
    with sessions() as s:
        statuses = s.scalars(select(Notification.status).order_by(Notification.id)).all()
    assert statuses == ["sent", "limited"]


def test_notify_refuses_what_cannot_be_recorded(
    sessions: sessionmaker[Session], loaded: Plugins, tmp_path: Path
) -> None:
    with sessions() as s:
        with pytest.raises(InvalidInput, match="recipient must not be empty") as err:
            notify(
                s, loaded, settings(tmp_path), channel="pager", recipient=" ", subject="", body=""
            )
        assert err.value.field == "recipient"
        with pytest.raises(InvalidInput, match="timezone-aware"):
            notify(
                s,
                loaded,
                settings(tmp_path),
                channel="pager",
                recipient="x",
                subject="",
                body="",
                now=dt.datetime(2026, 1, 1),
            )


# e-mail through a real SMTP server --------------------------------------------------------------


class LoopbackSMTP(Controller):
    """aiosmtpd on 127.0.0.1 with an OS-assigned port."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class Inbox:
    envelopes: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 OK"

    def message(self, i: int = 0) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.envelopes[i].content, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"meter", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


@pytest.fixture
def smtp() -> Iterator[tuple[LoopbackSMTP, Inbox]]:
    inbox = Inbox()
    server = LoopbackSMTP(
        inbox,
        hostname="127.0.0.1",
        port=0,
        ready_timeout=5,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    server.start()
    yield server, inbox
    server.stop()


def test_an_alarm_e_mail_arrives_with_its_chinese_text_intact(
    sessions: sessionmaker[Session],
    loaded: Plugins,
    tmp_path: Path,
    smtp: tuple[LoopbackSMTP, Inbox],
) -> None:
    server, inbox = smtp
    conf = settings(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=server.port,
        smtp_from="东区收费中心 <billing@example.cn>",
        smtp_user="meter",
        smtp_password="s3cret",
        notify_timeout=5.0,
    )
    subject, body = render_alarm(
        2, customer="王芳", serial="E0001", kind="电", balance=1234, threshold=2000
    )
    with sessions() as s:
        row = notify(
            s,
            loaded,
            conf,
            channel="email",
            recipient="wang.fang@example.cn",
            subject=subject,
            body=body,
            now=NOW,
        )
        assert (row.status, row.error) == ("sent", "")
        s.rollback()
    assert [e.rcpt_tos for e in inbox.envelopes] == [["wang.fang@example.cn"]]
    mail = inbox.message()
    assert mail["Subject"] == "余额严重不足提醒：电表 E0001"
    assert mail["From"].addresses[0].display_name == "东区收费中心"
    assert mail["From"].addresses[0].addr_spec == "billing@example.cn"
    assert mail.get_content_charset() == "utf-8"
    assert mail.get_content().rstrip("\n") == (
        "王芳您好：您的电表（表号 E0001）当前余额 12.34 元，已低于二级报警值 20.00 元，"
        "请尽快充值，以免停止供应。"
    )


def test_e_mail_failures_are_recorded_with_what_went_wrong(
    sessions: sessionmaker[Session],
    loaded: Plugins,
    tmp_path: Path,
    smtp: tuple[LoopbackSMTP, Inbox],
) -> None:
    server, inbox = smtp
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    base = settings(tmp_path, smtp_host="127.0.0.1", smtp_port=server.port, notify_timeout=5.0)
    cases = [
        (replace(base, smtp_host=None), "x@example.cn", "smtp_host is not set"),
        (base, "not-an-address", "not an e-mail address: 'not-an-address'"),
        (
            replace(base, smtp_user="meter", smtp_password="wrong"),
            "x@example.cn",
            f"the SMTP server 127.0.0.1:{server.port} refused the login of meter: 535",
        ),
        (replace(base, smtp_starttls=True), "x@example.cn", "STARTTLS extension not supported"),
        (
            replace(base, smtp_port=closed),
            "x@example.cn",
            f"cannot reach the SMTP server 127.0.0.1:{closed}: Connection refused",
        ),
    ]
    with sessions() as s:
        for i, (conf, recipient, error) in enumerate(cases):
            row = notify(
                s,
                loaded,
                conf,
                channel="email",
                recipient=recipient,
                subject="s",
                body="b",
                now=NOW + dt.timedelta(seconds=i),
            )
            assert row.status == "failed" and error in row.error, row.error
        unknown = notify(s, loaded, base, channel="fax", recipient="x", subject="", body="b")
        assert unknown.status == "failed"
        assert unknown.error == "no notification channel 'fax' (known: email, pager, sms)"
    assert inbox.envelopes == []


# SMS through a real HTTP endpoint ---------------------------------------------------------------


@dataclass
class Gateway:
    server: ThreadingHTTPServer
    requests: list[dict[str, Any]]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            path = urlsplit(self.path).path
            if path == "/slow":
                time.sleep(1.0)
            status, answer = {
                "/fail": (500, b"internal error: queue full"),
                "/refuse": (200, '{"result": {"code": 40, "msg": "签名不存在"}}'.encode()),
                "/html": (200, b"<html>ok</html>"),
            }.get(path, (200, b'{"result": {"code": 0}}'))
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the slow gateway)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield Gateway(server, requests)
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_an_sms_goes_to_the_http_gateway_as_configured(
    sessions: sessionmaker[Session], loaded: Plugins, tmp_path: Path, gateway: Gateway
) -> None:
    template = {"to": "{phone}", "sign": "东区", "params": {"content": "{text}"}, "n": 1}
    conf = settings(
        tmp_path,
        sms_url=gateway.url("/send"),
        sms_token="tok-123",
        sms_template=json.dumps(template, ensure_ascii=False),
        sms_ok_field="result.code",
        notify_timeout=2.0,
    )
    _, body = render_alarm(
        1, customer="王芳", serial="W0001", kind="冷水", balance=-50, threshold=1000
    )
    with sessions() as s:
        row = notify(
            s,
            loaded,
            conf,
            channel="sms",
            recipient="138 0000 0001",
            subject="",
            body=body,
            now=NOW,
        )
        assert (row.status, row.error) == ("sent", "")
        # the same through a form, without a token and without a success field
        form = replace(
            conf,
            sms_format="form",
            sms_token=None,
            sms_ok_field=None,
            sms_template='{"mobile": "{phone}", "msg": "[{phone}] {text}"}',
        )
        row = notify(
            s,
            loaded,
            form,
            channel="sms",
            recipient="+8613800000002",
            subject="",
            body="余额 0.00 元",
            now=NOW,
        )
        assert row.status == "sent"
    first, second = gateway.requests
    assert first["headers"]["Authorization"] == "Bearer tok-123"
    assert first["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(first["body"]) == {
        "to": "13800000001",
        "sign": "东区",
        "params": {
            "content": "王芳您好：您的冷水表（表号 W0001）当前余额 -0.50 元，"
            "已低于一级报警值 10.00 元，请及时充值。"
        },
        "n": 1,
    }
    assert "Authorization" not in second["headers"]
    assert second["headers"]["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(second["body"].decode()) == {
        "mobile": ["+8613800000002"],
        "msg": ["[+8613800000002] 余额 0.00 元"],
    }


def test_sms_failures_and_timeouts_are_recorded_as_failed(
    sessions: sessionmaker[Session], loaded: Plugins, tmp_path: Path, gateway: Gateway
) -> None:
    conf = settings(
        tmp_path, sms_token="secret-token", sms_ok_field="result.code", notify_timeout=0.3
    )
    host = gateway.url("")
    cases = [
        (
            "/fail",
            f"the SMS gateway {host}/fail answered HTTP 500 Internal Server Error: "
            "internal error: queue full",
        ),
        (
            "/refuse",
            "the SMS gateway refused the message: result.code is '40', not '0': "
            '{"result": {"code": 40, "msg": "签名不存在"}}',
        ),
        ("/html", f"the SMS gateway {host}/html did not answer JSON"),
        ("/slow?key=abc", f"the SMS gateway {host}/slow did not answer within 0.3 s"),
    ]
    with sessions() as s:
        for i, (path, error) in enumerate(cases):
            started = time.monotonic()
            row = notify(
                s,
                loaded,
                replace(conf, sms_url=gateway.url(path)),
                channel="sms",
                recipient="13800000001",
                subject="",
                body="b",
                now=NOW + dt.timedelta(seconds=i),
            )
            assert row.status == "failed" and row.error.startswith(error), (
                path,
                row.error,
                [r["path"] for r in gateway.requests],
            )
            assert "secret-token" not in row.error and "abc" not in row.error
            assert time.monotonic() - started < 0.9
        bad_phone = notify(
            s,
            loaded,
            replace(conf, sms_url=gateway.url("/send")),
            channel="sms",
            recipient="wang@example.cn",
            subject="",
            body="b",
        )
        assert bad_phone.error == "not a phone number: 'wang@example.cn'"
        unset = notify(
            s, loaded, conf, channel="sms", recipient="13800000001", subject="", body="b"
        )
        assert unset.error == "sms_url is not set: SMS cannot be sent"
        other = notify(
            s,
            loaded,
            replace(conf, sms_connector="nosuch", sms_url="http://x"),
            channel="sms",
            recipient="13800000001",
            subject="",
            body="b",
        )
        assert other.error == "no SMS connector 'nosuch' (known: http)"
    assert len(gateway.requests) == 4


# Texts and settings -----------------------------------------------------------------------------


def test_alarm_texts_in_both_languages() -> None:
    assert render_alarm(
        1, customer="Li", serial="E9", kind="Electricity", balance=1999, threshold=2000, lang="en"
    ) == (
        "Low balance (alarm 1): Electricity meter E9",
        "Dear Li, the balance of your Electricity meter E9 is 19.99 yuan, below alarm level 1 "
        "(20.00 yuan). Please top up soon.",
    )
    subject, body = render_alarm(
        3, customer="王芳", serial="H0001", kind="热量", balance=-500, threshold=500
    )
    assert subject == "余额已用尽：热量表 H0001"
    assert body == (
        "王芳您好：您的热量表（表号 H0001）当前余额 -5.00 元，已用尽（透支额度 5.00 元），"
        "将按规定停止供应，充值后自动恢复。"
    )
    assert (
        "overdraft"
        not in render_alarm(3, customer="A", serial="1", kind="Gas", balance=0, lang="en")[1]
    )
    with pytest.raises(InvalidInput, match="level must be 1, 2 or 3") as err:
        render_alarm(4, customer="A", serial="1", kind="Gas", balance=0)
    assert err.value.field == "level"


def test_notification_settings_from_file_and_environment(tmp_path: Path) -> None:
    (tmp_path / "onecard.toml").write_text(
        'smtp_host = "mail.example.cn"\nsmtp_port = 587\nsmtp_starttls = true\n'
        "notify_rate_per_hour = 3\n"
    )
    env = {"ONECARD_SMTP_PASSWORD": "pw", "ONECARD_SMS_TOKEN": "t", "ONECARD_SMTP_PORT": "2525"}
    loaded = load_settings({"instance_path": tmp_path}, env=env)
    assert (loaded.smtp_host, loaded.smtp_port, loaded.smtp_starttls) == (
        "mail.example.cn",
        2525,
        True,
    )
    assert (loaded.smtp_password, loaded.sms_token, loaded.notify_rate_per_hour) == ("pw", "t", 3)
    assert "pw" not in repr(loaded)
    for env_key, value, field_name in [
        ("ONECARD_SMTP_PORT", "smtp", "smtp_port"),
        ("ONECARD_NOTIFY_RATE_PER_HOUR", "0", "notify_rate_per_hour"),
        ("ONECARD_NOTIFY_TIMEOUT", "-1", "notify_timeout"),
        ("ONECARD_SMTP_STARTTLS", "maybe", "smtp_starttls"),
        ("ONECARD_SMS_FORMAT", "xml", "sms_format"),
        ("ONECARD_SMS_TEMPLATE", "[1]", "sms_template"),
    ]:
        with pytest.raises(InvalidInput) as err:
            load_settings({"instance_path": tmp_path}, env={env_key: value})
        assert err.value.field == field_name
    (tmp_path / "onecard.toml").write_text('sms_token = "in-a-file"\n')
    with pytest.raises(InvalidInput, match="unknown settings sms_token"):
        load_settings({"instance_path": tmp_path}, env={})
