"""The console in headless Chromium: the login page, both languages, the keyboard-only login."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import PASSWORDS, browser_login, screenshot

pytestmark = [pytest.mark.pcsc, pytest.mark.browser]


def test_login_with_keyboard_in_chinese_then_english(page: Any) -> None:
    page.goto("/")
    assert "/console/login" in page.url
    assert page.locator("h1").inner_text() == "登录营业柜台"
    screenshot(page, "login-zh")
    # keyboard only: the username field has focus; Tab to the password; Enter submits
    page.keyboard.type("east")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORDS["east"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/")
    assert "工作台" in page.inner_text("nav")
    page.click("text=English")
    assert "Dashboard" in page.inner_text("nav")


def test_wrong_password_message_next_to_field(page: Any) -> None:
    page.goto("/console/language/en?next=/console/login")
    page.fill("#username", "east")
    page.fill("#password", "wrong-password")
    page.click("button[type=submit]")
    assert page.locator("#password-error").inner_text() == "Wrong username or password."
    browser_login(page, "east")
