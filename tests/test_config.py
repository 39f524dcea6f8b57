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


def test_remote_alarm_defaults_are_settings(tmp_path: Path) -> None:
    from onecard.remote.notices import policy_of

    s = load_settings({"instance_path": tmp_path}, env={})
    assert (s.alarm1_fen, s.alarm2_fen, s.stale_after) == (2000, 500, 3)
    (tmp_path / "onecard.toml").write_text('alarm1 = "50"\nalarm2 = "12.50"\nstale_after = 5\n')
    s = load_settings({"instance_path": tmp_path}, env={})
    assert (s.alarm1_fen, s.alarm2_fen, s.stale_after) == (5000, 1250, 5)
    s = load_settings({"instance_path": tmp_path}, env={"ONECARD_ALARM2": "0"})
    assert s.alarm2_fen == 0  # alarm 2 when the credit is gone
    policy = policy_of(s)
    assert (policy.alarm1, policy.alarm2, policy.stale_after) == (5000, 0, 5)


@pytest.mark.parametrize(
    ("env", "field", "message"),
    [
        ({"ONECARD_ALARM1": "twenty"}, "alarm1", "amount in yuan"),
        ({"ONECARD_ALARM1": "-5"}, "alarm1", "positive"),
        ({"ONECARD_ALARM2": "1.234"}, "alarm2", "two decimals"),
        ({"ONECARD_ALARM1": "10", "ONECARD_ALARM2": "15"}, "alarm2", "not be above alarm1"),
        ({"ONECARD_ALARM2": "30"}, "alarm2", "not be above alarm1"),  # the default alarm1: 20
        ({"ONECARD_STALE_AFTER": "0"}, "stale_after", "from 1 to 1000"),
        ({"ONECARD_STALE_AFTER": "often"}, "stale_after", "from 1 to 1000"),
    ],
)
def test_bad_alarm_settings_are_named(
    tmp_path: Path, env: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as refused:
        load_settings({"instance_path": tmp_path}, env=env)
    assert refused.value.field == field
