"""Settings: defaults < instance file < environment < explicit overrides."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from onecard.config import load_settings
from onecard.errors import InvalidInput


def test_defaults_put_sqlite_in_the_instance_folder(tmp_path: Path) -> None:
    s = load_settings({"instance_path": tmp_path}, env={})
    assert s.database_url == f"sqlite:///{tmp_path / 'onecard.db'}"
    assert s.session_minutes == 30 and s.is_sqlite


def test_precedence(tmp_path: Path) -> None:
    (tmp_path / "onecard.toml").write_text(
        'database_url = "sqlite:///from-file.db"\nsession_minutes = 10\n'
    )
    assert (
        load_settings({"instance_path": tmp_path}, env={}).database_url == "sqlite:///from-file.db"
    )
    env = {"ONECARD_DATABASE_URL": "postgresql+psycopg://x@h/db", "ONECARD_SESSION_MINUTES": "5"}
    s = load_settings({"instance_path": tmp_path}, env=env)
    assert s.database_url == "postgresql+psycopg://x@h/db" and s.session_minutes == 5
    s = load_settings({"instance_path": tmp_path, "database_url": "sqlite:///given.db"}, env=env)
    assert s.database_url == "sqlite:///given.db"
    assert (
        load_settings(
            {"instance_path": tmp_path}, env={"ONECARD_INSTANCE_PATH": "/elsewhere"}
        ).instance_path
        == tmp_path
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 'red'\n", "unknown settings colour"),
        ("database_url = \n", "onecard.toml"),
        ("session_minutes = 0\n", "at least 1"),
    ],
)
def test_bad_instance_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "onecard.toml").write_text(text)
    with pytest.raises(InvalidInput, match=message):
        load_settings({"instance_path": tmp_path}, env={})


def test_secret_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    s = load_settings({"instance_path": tmp_path / "new"}, env={})
    key = s.ensure_secret_key()
    assert len(key) == 64 and s.ensure_secret_key() == key
    mode = stat.S_IMODE((tmp_path / "new" / "secret_key").stat().st_mode)
    assert mode == 0o600
