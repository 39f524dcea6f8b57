"""The console's login, language, CSRF, session expiry, lockout and the catalog."""

from __future__ import annotations

from flask import Flask

from .conftest import PASSWORDS, csrf_of, login, post


def test_browser_goes_to_console_program_gets_json(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/").json["console"] == "/console/"
    r = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 302 and r.location.endswith("/console/")
    r = client.get("/console/")
    assert r.status_code == 302 and "/console/login" in r.location


def test_login_page_is_chinese_by_default_and_switches(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    assert "登录营业柜台" in page and 'lang="zh-CN"' in page
    client.get("/console/language/en")
    page = client.get("/console/login").get_data(as_text=True)
    assert "Log in to the counter" in page and 'lang="en"' in page


def test_login_logout_and_next(app: Flask) -> None:
    client = app.test_client()
    token = csrf_of(client)
    r = client.post(
        "/console/login?next=/console/admin/",
        data={"username": "east", "password": PASSWORDS["east"], "csrf_token": token},
    )
    assert r.status_code == 302 and r.location.endswith("/console/admin/")
    assert client.get("/console/").status_code == 200
    r = post(client, "/console/logout")
    assert r.status_code == 302
    assert client.get("/console/").status_code == 302


def test_login_refuses_offsite_next(app: Flask) -> None:
    client = app.test_client()
    token = csrf_of(client)
    r = client.post(
        "/console/login?next=//evil.example/",
        data={"username": "east", "password": PASSWORDS["east"], "csrf_token": token},
    )
    assert r.location.endswith("/console/")


def test_wrong_password_shown_next_to_field_then_lockout(app: Flask) -> None:
    client = app.test_client()
    client.get("/console/language/en")
    token = csrf_of(client)
    for _ in range(5):
        r = client.post(
            "/console/login",
            data={"username": "east", "password": "nope-nope", "csrf_token": token},
        )
        assert r.status_code == 422
        assert 'id="password-error"' in r.get_data(as_text=True)
    r = client.post(
        "/console/login",
        data={"username": "east", "password": PASSWORDS["east"], "csrf_token": token},
    )
    assert r.status_code == 422
    assert "locked" in r.get_data(as_text=True)


def test_empty_login_names_both_fields(app: Flask) -> None:
    client = app.test_client()
    client.get("/console/language/en")
    token = csrf_of(client)
    r = client.post("/console/login", data={"username": "", "password": "", "csrf_token": token})
    body = r.get_data(as_text=True)
    assert r.status_code == 422
    assert 'id="username-error"' in body and 'id="password-error"' in body


def test_post_without_csrf_is_refused(app: Flask) -> None:
    client = login(app, "east")
    r = client.post("/console/logout", data={})
    assert r.status_code == 400
    assert "expired" in r.get_data(as_text=True)
    assert client.get("/console/").status_code == 200  # still logged in


def test_idle_session_expires(app: Flask) -> None:
    client = login(app, "east")
    with client.session_transaction() as s:
        s["seen"] = s["seen"] - 31 * 60
    r = client.get("/console/")
    assert r.status_code == 302 and "/console/login" in r.location
    page = client.get(r.location).get_data(as_text=True)
    assert "session has expired" in page


def test_catalog_complete_and_built() -> None:
    from onecard.console.catalog import problems

    assert problems() == []
