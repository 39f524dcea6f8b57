"""Stored tariffs: versions, scheduling, the API and the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import ACTOR, BUILTIN_PLUGINS, build_world
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from onecard import operators as ops
from onecard import tariffs
from onecard.cli import cli
from onecard.errors import InvalidInput
from onecard.models import AuditEvent, Meter, Tariff
from onecard.plugins import Plugins
from onecard.runtime import Runtime
from onecard.tariffs import meters as tm
from onecard.web import EXTENSION, create_app

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "tariffs" / "examples"
SH = dt.timezone(dt.timedelta(hours=8))


def heat_doc(**change: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "heat-two-part.yaml").read_text())
    body = change.pop("body", {})
    return {**doc, **change, "body": {**doc["body"], **body}}


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Tariff)) or 0


def test_versions_are_kept_and_a_change_is_scheduled(
    sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    u = plugins.utilities
    now = dt.datetime(2026, 11, 21, 9, 0, tzinfo=SH)
    with sessions() as s, s.begin():
        first = tariffs.add_version(s, ACTOR, u, heat_doc(), now=now)
        assert (first.version, first.model) == (1, "two_part")
        # a later version may not take effect in the past ...
        with pytest.raises(InvalidInput, match="in the past") as err:
            tariffs.add_version(s, ACTOR, u, heat_doc(effective_from="2026-11-01"), now=now)
        assert err.value.field == "effective_from"
        # ... but a scheduled one may, and is kept beside the first
        later = heat_doc(effective_from="2027-11-15T00:00:00+08:00", body={"basic_rate": "13"})
        second = tariffs.add_version(s, ACTOR, u, later, now=now)
        assert second.version == 2
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "tariff.version")).all()
        assert [e.objects for e in events] == [
            ["tariff:heat/residential/v1"],
            ["tariff:heat/residential/v2"],
        ]
    with sessions() as s:
        sched = tariffs.schedule(s, u, "heat", "residential")
        assert sched.at(now).version == 1
        assert sched.at(dt.datetime(2027, 11, 15, tzinfo=SH)).version == 2
        # the 2027/28 season's basic fee: 80 m² at 13, the new version's price
        q = tariffs.quote_fixed(
            sched,
            on=dt.date(2027, 12, 1),
            position=tariffs.Position(context={"heated_area": tariffs.engine.Decimal("80")}),
        )
        assert q.amount == 104000 and q.versions == [2]


def test_a_refused_document_stores_nothing_and_the_tariff_in_force_stays(
    sessions: sessionmaker[Session], plugins: Plugins
) -> None:
    u = plugins.utilities
    with sessions() as s, s.begin():
        tariffs.add_version(s, ACTOR, u, heat_doc())
    with sessions() as s, s.begin(), pytest.raises(InvalidInput) as err:
        tariffs.add_version(
            s, ACTOR, u, heat_doc(effective_from="2030-01-01", body={"heat_price": "-0.16"})
        )
    assert err.value.field == "body.heat_price"
    with sessions() as s:
        assert count(s) == 1
        assert tariffs.schedule(s, u, "heat", "residential").versions[-1].version == 1


# The API -----------------------------------------------------------------------------------------


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    flask_app = create_app(
        {"database_url": db_url, "instance_path": tmp_path / "instance"}, plugins=BUILTIN_PLUGINS
    )
    rt: Runtime = flask_app.extensions[EXTENSION]
    with rt.sessions() as s, s.begin():
        build_world(s, rt.plugins)
        for name, role, office in [
            ("boss", "administrator", None),
            ("east", "cashier", "E01"),
            ("west", "cashier", "W01"),
        ]:
            ops.create_operator(
                s, ACTOR, username=name, password=f"{name}-pass-1", roles=[(role, office)]
            )
    yield flask_app
    rt.close()


def client_for(app: Flask, who: str) -> FlaskClient:
    client = app.test_client()
    r = client.post("/api/v1/session", json={"username": who, "password": f"{who}-pass-1"})
    assert r.status_code == 200, r.json
    return client


def test_api_stores_lists_and_quotes(app: Flask) -> None:
    boss, east, west = (client_for(app, w) for w in ("boss", "east", "west"))
    doc = heat_doc()
    doc["effective_from"] = "2025-10-01T00:00:00+08:00"
    assert east.post("/api/v1/tariffs", json=doc).status_code == 403
    r = boss.post("/api/v1/tariffs", json=doc)
    assert r.status_code == 201 and r.json["version"] == 1, r.json
    bad = heat_doc(effective_from="2030-01-01", body={"season": {"start": "11-15", "end": "11-15"}})
    r = boss.post("/api/v1/tariffs", json=bad)
    assert r.status_code == 422 and r.json["field"].startswith("body.season"), r.json
    listed = east.get("/api/v1/tariffs?kind=heat").json["tariffs"]
    assert [(t["version"], t["state"]) for t in listed] == [(1, "in force")]
    assert boss.post("/api/v1/tariffs/check", json=bad).status_code == 422

    q = east.post(
        "/api/v1/tariffs/heat/residential/quote",
        json={"units": "10", "fixed_due": True, "heated_area": "85.5", "at": "2026-12-01T10:00"},
    )
    assert q.status_code == 200, q.json
    assert q.json["amount"] == "1470.45"  # 85.5 m² x 12 + 10 GJ x 0.16 x 277.78
    assert [ln["item"] for ln in q.json["lines"]] == ["fixed", "energy"]
    r = east.post("/api/v1/tariffs/heat/residential/quote", json={"units": "-1"})
    assert r.status_code == 422 and r.json["field"] == "units"
    r = east.post("/api/v1/tariffs/heat/residential/quote", json={"units": "1", "colour": "red"})
    assert r.status_code == 422 and r.json["field"] == "colour"

    # the world's customer (office E01) has heat meter H0001 on 80 m² heated
    r = east.post("/api/v1/meters/heat:H0001/quote", json={"amount": "1000.00"})
    assert r.status_code == 200, r.json
    assert r.json["direction"] == "money" and r.json["lines"][0]["item"] == "fixed"
    assert r.json["amount_fen"] + r.json["credit_fen"] == 100000
    assert west.post("/api/v1/meters/H0001/quote", json={"amount": "1"}).status_code == 404
    r = east.post("/api/v1/meters/H0001/quote", json={"amount": "1", "used_this_period": "5"})
    assert r.status_code == 422 and r.json["field"] == "used_this_period"

    r = east.put("/api/v1/meters/H0001/tariff", json={"tariff": "nope"})
    assert r.status_code == 404 and "known: residential" in r.json["message"]
    r = east.put("/api/v1/meters/H0001/tariff", json={"tariff": "residential"})
    assert r.status_code == 200 and r.json["tariff"] == "residential"


# The command line --------------------------------------------------------------------------------


@pytest.fixture
def run(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(
            cli,
            ["--instance", str(tmp_path / "inst"), "--database-url", db_url, *args],
            input=input,
        )

    r = invoke("init", "--password-stdin", input="admin-pass-1\n")
    assert r.exit_code == 0, r.output
    return invoke


def test_cli_load_list_show_quote(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("tariff", "load", str(EXAMPLES / "heat-two-part.yaml"))
    assert r.exit_code == 0, r.output
    assert "loaded heat/residential v1 (two_part)" in r.output
    r = run("tariff", "list", "--json")
    assert [(t["name"], t["state"]) for t in json.loads(r.output)] == [("residential", "in force")]
    r = run("tariff", "show", "heat", "residential")
    assert r.exit_code == 0 and "basic_rate" in r.output
    r = run(
        "tariff",
        "quote",
        "--kind",
        "heat",
        "--tariff",
        "residential",
        "--units",
        "1000",
        "--unit",
        "kWh",
        "--at",
        "2026-12-01T10:00",
    )
    assert r.exit_code == 0, r.output
    assert "160.00" in r.output  # 1000 kWh = 3.600 GJ (rounded to 0.001 GJ) at 44.4448
    r = run(
        "tariff",
        "quote",
        "--kind",
        "heat",
        "--tariff",
        "residential",
        "--amount",
        "100",
        "--at",
        "2026-12-01T10:00",
        "--json",
    )
    out = json.loads(r.output)
    assert (
        out["direction"] == "money" and out["quantity"] == "2.250" and out["credit_fen"] == 0
    )  # 2.250 GJ: 100.0008, rounded 100.00


def test_cli_refuses_a_bad_file_and_stores_none_of_a_batch(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(heat_doc(name="other", body={"basic_rate": "-1"})))
    r = run("tariff", "load", str(EXAMPLES / "heat-two-part.yaml"), str(bad))
    assert r.exit_code == 1
    assert "bad.yaml: body.basic_rate: must not be negative" in r.output
    r = run("tariff", "list", "--json")
    assert json.loads(r.output) == []
    (tmp_path / "broken.yaml").write_text("kind: [unclosed")
    r = run("tariff", "check", str(tmp_path / "broken.yaml"))
    assert r.exit_code == 1 and "not valid yaml" in r.output
    r = run("tariff", "quote", "--kind", "heat", "--tariff", "nope", "--units", "1")
    assert r.exit_code == 1 and "heat has no tariff 'nope'" in r.output


def test_a_meter_uses_its_named_tariff_or_the_only_one(
    sessions: sessionmaker[Session], plugins: Plugins, world: Any
) -> None:
    u = plugins.utilities
    with sessions() as s, s.begin():
        meter = s.scalar(select(Meter).where(Meter.serial == "H0001"))
        assert meter is not None
        with pytest.raises(Exception, match="has no tariff yet"):
            tm.tariff_name(s, meter)
        tariffs.add_version(s, ACTOR, u, heat_doc())
        assert tm.tariff_name(s, meter) == "residential"
        tariffs.add_version(s, ACTOR, u, heat_doc(name="commercial"))
        with pytest.raises(Exception, match="several tariffs"):
            tm.tariff_name(s, meter)
        tm.assign(s, u, meter, "commercial")
        assert tm.tariff_name(s, meter) == "commercial"
