"""The demo: its data is made once, every metered kind has a tariff that quotes, and the lab's
wallet holds blank cards, customers' cards and a manager card."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cardkit import KEK, keyed_site
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard.card.keys import KeyStore
from onecard.card.service import CardDesk
from onecard.console.lab import Lab
from onecard.demo import BLANK_UIDS, CUSTOMER_UIDS, MANAGER_CARD, build_demo, seed_lab
from onecard.models import Card, Customer, LedgerTransaction, Meter, Tariff
from onecard.plugins import Plugins
from onecard.tariffs.meters import quote_meter

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE
def test_demo_data_is_made_once_with_a_tariff_per_metered_kind(
    sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    with sessions() as session, session.begin():
        first = build_demo(session, plugins.utilities)
    assert "12 customers" in first and "tariffs loaded" in first
    with sessions() as session:
        counts = (
            session.scalar(select(func.count()).select_from(Customer)),
            session.scalar(select(func.count()).select_from(LedgerTransaction)),
            session.scalar(select(func.count()).select_from(Tariff)),
        )
    with sessions() as session, session.begin():
        assert build_demo(session, plugins.utilities) == "demo data is already present"
    with sessions() as session:
        again = (
            session.scalar(select(func.count()).select_from(Customer)),
            session.scalar(select(func.count()).select_from(LedgerTransaction)),
            session.scalar(select(func.count()).select_from(Tariff)),
        )
        assert again == counts
        metered = {k.code for k in plugins.utilities if not k.money_only}
        assert set(session.scalars(select(Tariff.kind))) == metered

        # every demo meter quotes, now and in summer (outside the heating season)
        meters = list(session.scalars(select(Meter).order_by(Meter.id)))
        assert {m.kind for m in meters} == metered
        now = dt.datetime.now(dt.UTC)
        for at in (now, dt.datetime(now.year, 7, 1, 4, tzinfo=dt.UTC)):
            for meter in meters:
                quote = quote_meter(session, plugins.utilities, meter, at=at, amount=200_000)
                assert quote.units is not None and quote.units > 0, meter.kind
                assert 0 < quote.amount <= 200_000, meter.kind  # units meters keep the rest


@SQLITE
def test_the_lab_wallet_is_seeded_once(
    sessions: sessionmaker[Session], plugins: Plugins, tmp_path: Path
) -> None:
    with sessions() as session, session.begin():
        build_demo(session, plugins.utilities)
    keyed_site(sessions)
    desk = CardDesk(sessions, plugins.utilities, KeyStore(KEK))
    lab = Lab(tmp_path / "lab", sessions, plugins.utilities, desk.keystore)
    summary = seed_lab(lab, desk)
    assert "manager card of manager1" in summary
    cards = {c["uid"]: c for c in lab.cards()}
    assert list(cards) == [*BLANK_UIDS, *CUSTOMER_UIDS, MANAGER_CARD[0]]
    assert all(cards[u]["card_type"] is None for u in BLANK_UIDS)
    assert [cards[u]["customer"]["number"] for u in CUSTOMER_UIDS] == ["E01-000001", "E01-000003"]
    assert cards[MANAGER_CARD[0]]["operator"] == "manager1"
    assert len(lab.meters_of(CUSTOMER_UIDS[0])) == 7

    assert seed_lab(lab, desk) == ""
    # a lost wallet is made again without the cards the database already knows
    fresh = Lab(tmp_path / "lab2", sessions, plugins.utilities, desk.keystore)
    assert seed_lab(fresh, desk) == "lab wallet: blank, blank, blank"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Card)) == 3


@pytest.mark.pcsc
def test_make_demo_serves_the_console_with_a_virtual_counter_reader(tmp_path: Path) -> None:
    """``onecard demo`` as ``make demo`` runs it: pcscd with the virtual readers (a running one is
    reused), the console, and the lab putting a wallet card on the counter reader, which PC/SC
    then sees; SIGTERM takes the card off and stops what the demo started."""
    import http.cookiejar
    import os
    import re
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.parse
    import urllib.request

    from card_fixtures import PCSC_ENABLED

    from onecard.card.pcscd import PcscdService, find_pcscd, find_vpcd_driver, running_pcscd
    from onecard.card.reader import wait_for_card

    if not PCSC_ENABLED:
        pytest.skip("ONECARD_TEST_PCSC=0: PC/SC tests not run")
    if find_pcscd() is None or find_vpcd_driver() is None:
        pytest.fail("this test needs pcscd and vsmartcard-vpcd ('make install')", pytrace=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ONECARD_KEK": KEK.hex()}
    env.pop("ONECARD_DATABASE_URL", None)
    log = (tmp_path / "demo.log").open("w")
    command = [str(Path(sys.executable).parent / "onecard"), "--instance", str(tmp_path / "inst")]
    proc = subprocess.Popen(
        [*command, "demo", "--port", str(port), "--threads", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    jar = http.cookiejar.CookieJar()
    web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def get(path: str) -> str:
        with web.open(base + path, timeout=10) as r:
            return str(r.read().decode())

    def post(path: str, data: dict[str, str], token_from: str) -> None:
        token = re.search(r'name="csrf-token" content="([^"]+)"', get(token_from))
        assert token
        body = urllib.parse.urlencode({"csrf_token": token.group(1), **data}).encode()
        with web.open(base + path, data=body, timeout=20) as r:
            assert r.status == 200  # after the redirect

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get("/healthz")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "demo.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()
                time.sleep(0.2)
        post("/console/login", {"username": "cashier1", "password": "onecard-demo"}, "/console/")
        assert "DE0000C1" in get("/lab/")
        counter = PcscdService(tmp_path / "unused").reader_names()[0]
        post("/lab/cards/DE0000C1/put", {"place": "counter"}, "/lab/")
        assert wait_for_card(counter, present=True, timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()
    output = (tmp_path / "demo.log").read_text()
    assert "open http://127.0.0.1" in output and "demo stopped" in output, output
    started = re.search(r"pcscd pid (\d+)", output)
    if started:  # the demo stops the pcscd it started
        assert int(started.group(1)) not in [pid for pid, _ in running_pcscd()]
    else:  # a reused one stays, without the card
        assert wait_for_card(counter, present=False, timeout=5)


@SQLITE
def test_the_demo_reads_its_remote_meters_from_the_fleet_emulator(
    sessions: sessionmaker[Session], plugins: Plugins, tmp_path: Path
) -> None:
    import time
    from types import SimpleNamespace

    from onecard.config import load_settings
    from onecard.models import RemoteMeter
    from onecard.remote.demo import DemoRemote, ensure_demo_remote

    rt = SimpleNamespace(
        sessions=sessions,
        plugins=plugins,
        utilities=plugins.utilities,
        settings=load_settings({"instance_path": str(tmp_path)}),
    )
    with sessions() as session, session.begin():
        build_demo(session, plugins.utilities)
    assert "3 Modbus meters" in ensure_demo_remote(rt)
    assert ensure_demo_remote(rt) == ""  # made once
    remote = DemoRemote(rt, port=0)
    assert "read every minute" in remote.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sessions() as session:
                read = session.scalars(select(RemoteMeter.last_read_at)).all()
            if len(read) == 3 and all(read):
                break
            time.sleep(0.2)
        assert len(read) == 3 and all(read), "the reading service read the emulated meters"
        with sessions() as session:
            levels = sorted(session.scalars(select(RemoteMeter.alarm_level)))
        assert levels == [0, 1, 2]  # 30, 8 and 3 yuan of credit
    finally:
        remote.stop()
