"""Console fixtures: an app on SQLite with the test world, operators of every role, card keys,
and an in-process card reader (``ONECARD_READER_FACTORY``) holding whatever card a test puts on
it. The browser tests (``tests/console/test_browser_*.py``) use the real PC/SC path instead."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cardkit import ACTOR, KEK, direct
from conftest import BUILTIN_PLUGINS, World, build_world
from flask import Flask
from flask.testing import FlaskClient

from onecard import operators as ops
from onecard.card.emulator import MifareClassicCard
from onecard.card.reader import MifareReader
from onecard.errors import NoCard
from onecard.runtime import Runtime
from onecard.web import EXTENSION, create_app

PASSWORDS = {
    "boss": "boss-pass-1",
    "east": "east-pass-1",
    "west": "west-pass-1",
    "audit": "audit-pass-1",
    "mgr": "mgr-pass-1",
}
ROLES = [
    ("boss", "administrator", None),
    ("east", "cashier", "E01"),
    ("west", "cashier", "W01"),
    ("audit", "auditor", "GRP"),
    ("mgr", "manager", "E01"),
]


@dataclass
class Desk:
    """The in-process reader of the console tests: put a card on it, take it away."""

    card: MifareClassicCard | None = None
    opened: list[str | None] = field(default_factory=list)

    @contextmanager
    def open(self, name: str | None) -> Iterator[MifareReader]:
        self.opened.append(name)
        if self.card is None:
            raise NoCard("no card on the reader: put the card on it")
        yield direct(self.card)


@pytest.fixture
def reader() -> Desk:
    return Desk()


@pytest.fixture
def app(
    sqlite_url: str, tmp_path: Path, reader: Desk, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    monkeypatch.setenv("ONECARD_KEK", KEK.hex())
    flask_app = make_app(sqlite_url, tmp_path)
    flask_app.config["ONECARD_READER_FACTORY"] = reader.open
    flask_app.config["ONECARD_READER_NAMES"] = ["Test reader 0", "Test reader 1"]
    yield flask_app
    flask_app.extensions[EXTENSION].close()


def make_app(url: str, tmp_path: Path, **settings: Any) -> Flask:
    """The console's app on ``url`` with the test world, the operators of ``ROLES`` and card
    keys (the KEK comes from ``ONECARD_KEK``)."""
    from cardkit import keyed_site

    flask_app = create_app(
        {"database_url": url, "instance_path": tmp_path / "instance", **settings},
        plugins=BUILTIN_PLUGINS,
    )
    rt: Runtime = flask_app.extensions[EXTENSION]
    with rt.sessions() as s, s.begin():
        flask_app.config["WORLD"] = build_world(s, rt.plugins)
        for name, role, office in ROLES:
            ops.create_operator(
                s,
                ACTOR,
                username=name,
                password=PASSWORDS[name],
                full_name=name.title(),
                roles=[(role, office)],
            )
    keyed_site(rt.sessions)
    return flask_app


@pytest.fixture
def world(app: Flask) -> World:
    w: World = app.config["WORLD"]
    return w


CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


def csrf_of(client: FlaskClient, path: str = "/console/login") -> str:
    """The session's CSRF token, read from a page's meta tag."""
    page = client.get(path)
    found = CSRF.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def login(app: Flask, who: str, lang: str = "en") -> FlaskClient:
    """A client logged in to the console as ``who`` (English unless ``lang``)."""
    client = app.test_client()
    client.get(f"/console/language/{lang}")
    token = csrf_of(client)
    r = client.post(
        "/console/login",
        data={"username": who, "password": PASSWORDS[who], "csrf_token": token},
    )
    assert r.status_code == 302, r.get_data(as_text=True)
    return client


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
    """POST a console form with the session's CSRF token."""
    token = csrf_of(client, "/console/")
    return client.post(path, data={"csrf_token": token, **(data or {})}, **kw)


# The browser tests: a live server and headless Chromium driven by Playwright --------------------

BROWSER_ENABLED = os.environ.get("ONECARD_TEST_BROWSER", "1") != "0"
CHROMIUM = os.environ.get("ONECARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class LiveServer:
    """The app served by werkzeug on a free loopback port, in a thread."""

    def __init__(self, flask_app: Flask) -> None:
        from werkzeug.serving import make_server

        self.app = flask_app
        self.server = make_server("127.0.0.1", 0, flask_app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread, which
    would stop the later tests' ``asyncio.run`` from working (the remote-meter tests, and the
    console's remote-meter commands in ``test_remote.py``, which comes after the browser tests)."""
    if not BROWSER_ENABLED:
        pytest.skip("ONECARD_TEST_BROWSER=0: browser tests not run")
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
            "'make install' installs it), or skip them with ONECARD_TEST_BROWSER=0",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_app(
    sqlite_url: str, tmp_path: Path, pcscd_service: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    """The app on the real card path: its reader is the first virtual (vpcd) reader."""
    monkeypatch.setenv("ONECARD_KEK", KEK.hex())
    flask_app = make_app(sqlite_url, tmp_path, reader=pcscd_service.reader_names()[0])
    yield flask_app
    flask_app.extensions[EXTENSION].close()


@pytest.fixture
def live(live_app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(live_app)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(chromium: Any, live: LiveServer) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the live server, 1280x900."""
    context = chromium.new_context(
        base_url=live.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def browser_login(page: Any, who: str, lang: str = "en") -> None:
    """Log in through the login page, in ``lang``."""
    page.goto(f"/console/language/{lang}?next=/console/login")
    page.goto("/console/login")
    page.fill("#username", who)
    page.fill("#password", PASSWORDS[who])
    page.press("#password", "Enter")
    page.wait_for_url("**/console/**")
    assert "/console/login" not in page.url, page.content()


SCREENSHOTS = os.environ.get("ONECARD_SCREENSHOTS")


def screenshot(page: Any, name: str) -> None:
    """Save a screenshot for the docs when ``ONECARD_SCREENSHOTS`` names a folder."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)
