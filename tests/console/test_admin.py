"""Administration pages: operators and roles, offices, tariffs, card profiles, the audit log.

Every refused form shows its error next to the field (``id="<field>-error"``, status 422) and
stores nothing; an auditor or a cashier posting is refused (403) and changes nothing."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import World
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard import operators as ops
from onecard.audit import Actor, record
from onecard.models import (
    AuditEvent,
    CardProfile,
    Office,
    Operator,
    OperatorRole,
    Role,
    Tariff,
)
from onecard.runtime import Runtime
from onecard.web import EXTENSION

from .conftest import csrf_of, login, post

EXAMPLES = Path(__file__).parents[2] / "docs" / "tariffs" / "examples"


def _session(app: Flask) -> Session:
    rt: Runtime = app.extensions[EXTENSION]
    return rt.sessions()


def counts(app: Flask) -> dict[str, int]:
    """How many rows every table an admin form writes holds (a refused form changes none)."""
    with _session(app) as s:
        return {
            m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0)
            for m in (AuditEvent, CardProfile, Office, Operator, OperatorRole, Role, Tariff)
        }


def refused(r: Any, field: str, *words: str) -> str:
    page: str = r.get_data(as_text=True)
    assert r.status_code == 422, page[-2000:]
    found = re.search(
        rf'<p class="error" id="{re.escape(field)}-error" role="alert">(.*?)</p>', page, re.S
    )
    assert found, f"no error next to {field}: {re.findall(r'id=.([a-z_0-9]+)-error', page)}"
    for word in words:
        assert word in found.group(1), found.group(1)
    return found.group(1)


def operator_form(**over: str) -> dict[str, str]:
    form = {
        "username": "newbie",
        "full_name": "New Bie",
        "password": "newbie-pass-1",
        "password2": "newbie-pass-1",
        "role": "cashier",
        "office": "E01",
    }
    form.update(over)
    return form


# Operators --------------------------------------------------------------------------------------


def test_operators_list_shows_roles_state_and_last_login(app: Flask) -> None:
    client = login(app, "boss")
    page = client.get("/console/admin/operators").get_data(as_text=True)
    row = re.search(r'<tr data-operator="east">(.*?)</tr>', page, re.S)
    assert row and "cashier · E01" in row.group(1) and "active" in row.group(1)
    assert "every office" in page  # boss: administrator everywhere
    assert 'name="username"' in page  # the form to create one


def test_create_operator(app: Flask) -> None:
    client = login(app, "boss")
    r = post(client, "/console/admin/operators", operator_form())
    assert r.status_code == 302 and r.location.endswith("/console/admin/operators/newbie")
    with _session(app) as s:
        op = ops.get_operator(s, "newbie")
        assert op.full_name == "New Bie"
        assert [(a.role.name, a.office.code if a.office else None) for a in op.assignments] == [
            ("cashier", "E01")
        ]
    login_ok = app.test_client()
    token = csrf_of(login_ok)
    r = login_ok.post(
        "/console/login",
        data={"username": "newbie", "password": "newbie-pass-1", "csrf_token": token},
    )
    assert r.status_code == 302


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"username": ""}, "username", ("Required",)),
        ({"username": "x" * 65}, "username", ("64",)),
        ({"username": "Bad Name"}, "username", ("lower-case",)),
        ({"username": "east"}, "username", ("exists already",)),
        ({"password": "short", "password2": "short"}, "password", ("8",)),
        ({"password": ""}, "password", ("Required",)),
        ({"password2": "another-pass-1"}, "password2", ("differ",)),
        ({"office": "NOPE"}, "office", ("No such office",)),
        ({"role": ""}, "role", ("Choose the role",)),
        ({"role": "emperor"}, "role", ("emperor",)),
        ({"full_name": "y" * 201}, "full_name", ("200",)),
    ],
)
def test_create_operator_refused_next_to_field(
    app: Flask, over: dict[str, str], field: str, words: tuple[str, ...]
) -> None:
    client = login(app, "boss")
    before = counts(app)
    r = post(client, "/console/admin/operators", operator_form(**over))
    refused(r, field, *words)
    assert counts(app) == before
    assert 'value="newbie-pass-1"' not in r.get_data(as_text=True)  # passwords never echoed


def test_grant_revoke_unlock_deactivate_reactivate(app: Flask) -> None:
    client = login(app, "boss")
    r = post(client, "/console/admin/operators/east/roles", {"role": "manager", "office": "W01"})
    assert r.status_code == 302
    r = post(client, "/console/admin/operators/east/roles", {"role": "manager", "office": "W01"})
    refused(r, "role", "already")
    r = post(client, "/console/admin/operators/east/roles", {"role": "", "office": "W01"})
    refused(r, "role", "Required")
    with _session(app) as s:
        east = ops.get_operator(s, "east")
        added = next(a for a in east.assignments if a.role.name == "manager")
        assert added.office is not None and added.office.code == "W01"
        added_id = added.id
        east.locked_until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
        s.commit()
    page = client.get("/console/admin/operators/east").get_data(as_text=True)
    assert "locked until" in page
    assert post(client, f"/console/admin/operators/east/roles/{added_id}/remove").status_code == 302
    assert post(client, "/console/admin/operators/east/unlock").status_code == 302
    assert post(client, "/console/admin/operators/east/active", {"active": "0"}).status_code == 302
    with _session(app) as s:
        east = ops.get_operator(s, "east")
        assert [a.role.name for a in east.assignments] == ["cashier"]
        assert east.locked_until is None and not east.is_active
        actions = list(
            s.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.actor == "boss", AuditEvent.action.like("operator.%"))
                .order_by(AuditEvent.id)
            )
        )
        assert actions == [
            "operator.login",
            "operator.role_grant",
            "operator.role_revoke",
            "operator.unlock",
            "operator.deactivate",
        ]
    # the deactivated cashier's session ends at once
    page = client.get("/console/admin/operators/east").get_data(as_text=True)
    assert "inactive" in page
    r = post(client, "/console/admin/operators/east/active", {"active": "1"})
    assert r.status_code == 302
    with _session(app) as s:
        assert ops.get_operator(s, "east").is_active


def test_cannot_deactivate_or_unrole_oneself(app: Flask) -> None:
    client = login(app, "boss")
    before = counts(app)
    r = post(client, "/console/admin/operators/boss/active", {"active": "0"})
    assert r.status_code == 422 and "yourself" in r.get_data(as_text=True)
    with _session(app) as s:
        own = ops.get_operator(s, "boss").assignments[0].id
    r = post(client, f"/console/admin/operators/boss/roles/{own}/remove")
    assert r.status_code == 422 and "yourself" in r.get_data(as_text=True)
    assert counts(app) == before


def test_auditor_reads_but_every_post_is_refused(app: Flask, world: World) -> None:
    client = login(app, "audit")
    page = client.get("/console/admin/operators").get_data(as_text=True)
    assert 'data-operator="east"' in page and 'name="username"' not in page
    page = client.get("/console/admin/operators/east").get_data(as_text=True)
    assert 'method="post" action="/console/admin/operators' not in page
    for path in ("/console/admin/roles", "/console/admin/offices", "/console/admin/profiles"):
        page = client.get(path).get_data(as_text=True)
        assert 'method="post" novalidate' not in page, path
    assert client.get("/console/admin/tariffs/schedule").status_code == 403
    before = counts(app)
    for path, data in [
        ("/console/admin/operators", operator_form()),
        ("/console/admin/operators/east/roles", {"role": "manager", "office": "E01"}),
        ("/console/admin/operators/east/unlock", {}),
        ("/console/admin/operators/east/active", {"active": "0"}),
        ("/console/admin/roles", {"name": "sneaky", "permissions": "audit.view"}),
        ("/console/admin/offices", {"code": "X1", "name": "X", "timezone": "UTC", "parent": ""}),
        ("/console/admin/profiles", {"code": "mine", "name_en": "M", "slots": "electric"}),
        ("/console/admin/tariffs/schedule", {"document": "kind: electric"}),
    ]:
        r = post(client, path, data)
        assert r.status_code == 403, (path, r.status_code)
    assert counts(app) == before


def test_cashier_sees_no_admin_forms_and_is_refused(app: Flask) -> None:
    client = login(app, "east")
    page = client.get("/console/admin/").get_data(as_text=True)
    assert "/console/admin/offices" in page and "/console/admin/audit" not in page
    assert client.get("/console/admin/operators").status_code == 403
    assert client.get("/console/admin/audit").status_code == 403
    page = client.get("/console/admin/offices").get_data(as_text=True)
    assert 'name="code"' not in page
    before = counts(app)
    r = post(client, "/console/admin/offices", {"code": "X1", "name": "X", "timezone": "UTC"})
    assert r.status_code == 403
    r = post(client, "/console/admin/operators", operator_form())
    assert r.status_code == 403
    assert counts(app) == before


def test_scoped_operator_manager_stays_in_their_offices(app: Flask) -> None:
    with _session(app) as s, s.begin():
        from onecard import admin_ops

        admin_ops.create_role(
            s, Actor("test"), name="office-admin", permissions=["operator.manage", "office.manage"]
        )
        ops.create_operator(
            s,
            Actor("test"),
            username="eadmin",
            password="eadmin-pass-1",
            roles=[("office-admin", "E01")],
        )
    from .conftest import PASSWORDS

    PASSWORDS["eadmin"] = "eadmin-pass-1"
    try:
        client = login(app, "eadmin")
        page = client.get("/console/admin/operators").get_data(as_text=True)
        assert 'data-operator="east"' in page and 'data-operator="west"' not in page
        before = counts(app)
        r = post(client, "/console/admin/operators", operator_form(office="W01"))
        refused(r, "office", "may not")
        r = post(client, "/console/admin/operators", operator_form(office=""))
        refused(r, "office", "Required")
        assert post(client, "/console/admin/operators/boss/unlock").status_code == 403
        assert client.get("/console/admin/operators/west").status_code == 404
        r = post(client, "/console/admin/offices", {"code": "E02", "name": "E2", "timezone": "UTC"})
        refused(r, "parent", "Required")
        assert counts(app) == before
        r = post(
            client,
            "/console/admin/offices",
            {"code": "E02", "name": "E2", "timezone": "UTC", "parent": "E01"},
        )
        assert r.status_code == 302
        assert post(client, "/console/admin/operators", operator_form()).status_code == 302
    finally:
        PASSWORDS.pop("eadmin")


def test_roles_list_and_custom_role(app: Flask) -> None:
    client = login(app, "boss")
    page = client.get("/console/admin/roles").get_data(as_text=True)
    assert 'data-role="auditor"' in page and "see the audit trail and verify the ledger" in page
    zh = login(app, "boss", lang="zh_CN").get("/console/admin/roles").get_data(as_text=True)
    assert "查看审计记录并校验账本" in zh
    before = counts(app)
    r = post(client, "/console/admin/roles", {"name": "reader", "description": "reads"})
    refused(r, "permissions", "at least one")
    r = post(client, "/console/admin/roles", {"name": "cashier", "permissions": "report.view"})
    refused(r, "name", "exists already")
    r = post(client, "/console/admin/roles", {"name": "", "permissions": "report.view"})
    refused(r, "name", "Required")
    r = post(client, "/console/admin/roles", {"name": "reader", "permissions": "no.such"})
    refused(r, "permissions", "unknown permission")
    assert counts(app) == before
    r = client.post(
        "/console/admin/roles",
        data={
            "csrf_token": csrf_of(client, "/console/"),
            "name": "reader",
            "permissions": ["report.view", "customer.view"],
        },
    )
    assert r.status_code == 302
    with _session(app) as s:
        role = s.scalar(select(Role).where(Role.name == "reader"))
        assert role and sorted(p.permission for p in role.permissions) == [
            "customer.view",
            "report.view",
        ]


# Offices ----------------------------------------------------------------------------------------


def test_offices_tree_and_create(app: Flask) -> None:
    client = login(app, "boss")
    page = client.get("/console/admin/offices").get_data(as_text=True)
    assert page.index('data-office="GRP"') < page.index('data-office="E01"')
    assert "Asia/Shanghai" in page
    r = post(
        client,
        "/console/admin/offices",
        {"code": "K01", "name": "Kashgar", "parent": "GRP", "timezone": "Asia/Urumqi"},
    )
    assert r.status_code == 302
    with _session(app) as s:
        office = s.scalar(select(Office).where(Office.code == "K01"))
        assert office and office.timezone == "Asia/Urumqi" and office.parent_id is not None


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"code": ""}, "code", ("Required",)),
        ({"code": "E01"}, "code", ("exists already",)),
        ({"code": "bad code!"}, "code", ("letters",)),
        ({"code": "C" * 33}, "code", ("32",)),
        ({"name": ""}, "name", ("Required",)),
        ({"name": "n" * 201}, "name", ("200",)),
        ({"timezone": "Mars/Olympus"}, "timezone", ("Mars/Olympus",)),
        ({"timezone": ""}, "timezone", ("Required",)),
        ({"parent": "NOPE"}, "parent", ("No such office",)),
    ],
)
def test_create_office_refused_next_to_field(
    app: Flask, over: dict[str, str], field: str, words: tuple[str, ...]
) -> None:
    client = login(app, "boss")
    before = counts(app)
    data = {"code": "N01", "name": "North", "parent": "GRP", "timezone": "Asia/Shanghai", **over}
    refused(post(client, "/console/admin/offices", data), field, *words)
    assert counts(app) == before


# Tariffs ----------------------------------------------------------------------------------------


def _doc(path: str = "electric-residential.yaml") -> str:
    return (EXAMPLES / path).read_text(encoding="utf-8")


def test_schedule_tariff_then_versions_and_document(app: Flask) -> None:
    client = login(app, "boss")
    r = post(client, "/console/admin/tariffs/schedule", {"document": _doc()})
    assert r.status_code == 302 and r.location.endswith(
        "/console/admin/tariffs/electric/residential"
    )
    future = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    second = _doc().replace('"2024-01-01T00:00:00+08:00"', f'"{future}T00:00:00+08:00"')
    assert post(client, "/console/admin/tariffs/schedule", {"document": second}).status_code == 302
    page = client.get("/console/admin/tariffs").get_data(as_text=True)
    assert 'data-tariff="residential"' in page and "v1" in page and "v2" in page
    page = client.get("/console/admin/tariffs/electric/residential").get_data(as_text=True)
    assert 'data-version="2" data-state="scheduled"' in page
    assert 'data-version="1" data-state="in force"' in page
    page = client.get("/console/admin/tariffs/electric/residential/v1").get_data(as_text=True)
    assert "tiers:" in page and "0.4883" in page
    assert client.get("/console/admin/tariffs/electric/nothing").status_code == 404
    # a cashier reads tariffs, without the scheduling button
    page = login(app, "east").get("/console/admin/tariffs").get_data(as_text=True)
    assert 'data-tariff="residential"' in page and "/tariffs/schedule" not in page
    # the schedule form starts from the latest version
    page = client.get("/console/admin/tariffs/schedule?kind=electric&name=residential").get_data(
        as_text=True
    )
    assert "tiers:" in page


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ("", ("Paste",)),
        ("kind: [electric", ("YAML", "line")),
        ("- just\n- a list", ("document must be a mapping",)),
        (_doc().replace('price: "0.5383"', 'price: "cheap"'), ("body.tiers",)),
        (_doc().replace("model: tiered", "model: nonsense"), ("model", "nonsense")),
        (_doc().replace("kind: electric", "kind: plutonium"), ("plutonium",)),
        (_doc().replace("timezone: Asia/Shanghai", "timezone: Mars/Base"), ("timezone",)),
    ],
)
def test_bad_tariff_document_refused_next_to_textarea(
    app: Flask, document: str, words: tuple[str, ...]
) -> None:
    client = login(app, "boss")
    before = counts(app)
    refused(
        post(client, "/console/admin/tariffs/schedule", {"document": document}), "document", *words
    )
    assert counts(app) == before


def test_past_effective_date_refused_unless_allowed(app: Flask) -> None:
    client = login(app, "boss")
    assert post(client, "/console/admin/tariffs/schedule", {"document": _doc()}).status_code == 302
    before = counts(app)
    past = _doc().replace("2024-01-01T00:00:00", "2025-01-01T00:00:00")
    r = post(client, "/console/admin/tariffs/schedule", {"document": past})
    refused(r, "document", "effective_from", "past")
    assert counts(app) == before
    r = post(client, "/console/admin/tariffs/schedule", {"document": past, "allow_past": "1"})
    assert r.status_code == 302


def test_tariff_upload(app: Flask) -> None:
    client = login(app, "boss")
    token = csrf_of(client, "/console/")
    r = client.post(
        "/console/admin/tariffs/schedule",
        data={
            "csrf_token": token,
            "document": "",
            "file": (io.BytesIO(_doc("water-cold-residential.yaml").encode()), "water.yaml"),
        },
        content_type="multipart/form-data",
    )
    assert r.status_code == 302 and "water.cold/residential" in r.location


# Card profiles ----------------------------------------------------------------------------------


def test_card_profiles_list_and_create(app: Flask) -> None:
    client = login(app, "boss")
    page = client.get("/console/admin/profiles").get_data(as_text=True)
    for code in ("four", "six", "eight"):
        assert f'data-profile="{code}"' in page
    before = counts(app)
    for data, field, word in [
        ({"code": "", "name_en": "X", "slots": "electric"}, "code", "Required"),
        ({"code": "Bad!", "name_en": "X", "slots": "electric"}, "code", "lower-case"),
        ({"code": "four", "name_en": "X", "slots": "electric"}, "code", "exists"),
        ({"code": "mine", "slots": "electric"}, "name_zh", "Chinese or English"),
        ({"code": "mine", "name_en": "X", "slots": ""}, "slots", "Required"),
        (
            {"code": "mine", "name_en": "X", "slots": "electric, unobtainium"},
            "slots",
            "unobtainium",
        ),
    ]:
        refused(post(client, "/console/admin/profiles", {"card_size": "1k", **data}), field, word)
    assert counts(app) == before
    r = post(
        client,
        "/console/admin/profiles",
        {
            "code": "ew",
            "name_zh": "电水卡",
            "name_en": "EW",
            "card_size": "1k",
            "slots": "electric, water.cold",
        },
    )
    assert r.status_code == 302
    page = client.get("/console/admin/profiles").get_data(as_text=True)
    assert 'data-profile="ew"' in page


# The audit log ----------------------------------------------------------------------------------


def _events(page: str) -> list[str]:
    return re.findall(r'data-event="\d+" data-action="([^"]+)"', page)


def test_audit_filters_and_paging(app: Flask, world: World) -> None:
    t0 = dt.datetime(2026, 3, 9, 16, 30, tzinfo=dt.UTC)  # 00:30 on the 10th in Shanghai
    with _session(app) as s, s.begin():
        for i in range(60):
            s.add(
                AuditEvent(
                    at=t0 + dt.timedelta(minutes=i),
                    actor="west",
                    action="sale.test",
                    objects=[f"thing:{i}"],
                    detail={"i": i},
                    office_id=world.other_office_id,
                    remote_addr="10.0.0.9",
                )
            )
        s.add(
            AuditEvent(
                at=t0 - dt.timedelta(hours=1),  # 23:30 on the 9th in Shanghai
                actor="east",
                action="customer.note",
                objects=[f"customer:{world.customer_id}"],
                office_id=world.office_id,
                customer_id=world.customer_id,
            )
        )
    client = login(app, "audit")
    page = client.get("/console/admin/audit?operator=west&action=sale.test").get_data(as_text=True)
    assert _events(page) == ["sale.test"] * 50 and "thing:59" in page and "thing:9," not in page
    assert "10.0.0.9" in page and "W01" in page
    older = client.get("/console/admin/audit?operator=west&action=sale.test&page=2")
    assert _events(older.get_data(as_text=True)) == ["sale.test"] * 10
    page = client.get("/console/admin/audit?action=sale.*").get_data(as_text=True)
    assert set(_events(page)) == {"sale.test"}
    page = client.get(f"/console/admin/audit?customer={world.customer_number}").get_data(
        as_text=True
    )
    assert "customer.note" in _events(page) and "sale.test" not in _events(page)
    page = client.get("/console/admin/audit?since=2026-03-10&until=2026-03-10").get_data(
        as_text=True
    )
    assert "customer.note" not in _events(page) and len(_events(page)) == 50
    r = client.get("/console/admin/audit?since=2026-03-09&until=2026-03-09&operator=east")
    assert _events(r.get_data(as_text=True)) == ["customer.note"]
    r = client.get("/console/admin/audit?since=tomorrow")
    refused(r, "since", "2026-03-10")
    r = client.get("/console/admin/audit?customer=NOPE")
    refused(r, "customer", "No such customer")
    r = client.get("/console/admin/audit?since=2026-03-10&until=2026-03-01")
    refused(r, "until", "before")


def test_audit_scope_hides_other_offices(app: Flask, world: World) -> None:
    with _session(app) as s, s.begin():
        ops.create_operator(
            s,
            Actor("test"),
            username="eaudit",
            password="eaudit-pass-1",
            roles=[("auditor", "E01")],
        )
        record(s, Actor("west"), "west.thing", office_id=world.other_office_id)
        record(s, Actor("east"), "east.thing", office_id=world.office_id)
        record(s, Actor("boss"), "global.thing")
    from .conftest import PASSWORDS

    PASSWORDS["eaudit"] = "eaudit-pass-1"
    try:
        page = login(app, "eaudit").get("/console/admin/audit").get_data(as_text=True)
    finally:
        PASSWORDS.pop("eaudit")
    actions = _events(page)
    assert "east.thing" in actions and "global.thing" in actions and "west.thing" not in actions


def test_admin_index_in_chinese(app: Flask) -> None:
    client: FlaskClient = login(app, "boss", lang="zh_CN")
    page = client.get("/console/admin/").get_data(as_text=True)
    assert "操作员与角色" in page and "审计日志" in page and "卡片方案" in page
