"""The ``onecard`` command: init, operators, customers, sales, verify, demo; errors exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from onecard.cli import cli

ADMIN_PASSWORD = "admin-pass-1\n"


@pytest.fixture
def run(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(
            cli,
            ["--instance", str(tmp_path / "inst"), "--database-url", db_url, *args],
            input=input,
        )

    return invoke


@pytest.fixture
def initialised(run):  # type: ignore[no-untyped-def]
    r = run("init", "--password-stdin", input=ADMIN_PASSWORD)
    assert r.exit_code == 0, r.output
    assert "administrator admin" in r.output
    r = run("office", "add", "E01", "东区营业厅", "--parent", "HQ")
    assert r.exit_code == 0, r.output
    return run


def test_init_is_idempotent_and_needs_a_password(run) -> None:  # type: ignore[no-untyped-def]
    r = run("init", "--password-stdin", input="short\n")
    assert r.exit_code == 1 and "password must have at least 8 characters" in r.output
    assert run("init", "--password-stdin", input=ADMIN_PASSWORD).exit_code == 0
    again = run("init", "--password-stdin", input=ADMIN_PASSWORD)
    assert again.exit_code == 0 and "already initialised" in again.output


def test_commands_before_init_say_what_to_do(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    r = CliRunner().invoke(cli, ["--database-url", empty, "customer", "show", "X"])
    assert r.exit_code == 1 and "run 'onecard init' first" in r.output


def test_operators_customers_and_sales(initialised) -> None:  # type: ignore[no-untyped-def]
    run = initialised
    r = run(
        "operator",
        "add",
        "li.na",
        "--role",
        "cashier@E01",
        "--password-stdin",
        input="cashier-pass-1\n",
    )
    assert r.exit_code == 0, r.output
    listed = json.loads(run("operator", "list", "--json").output)
    assert {
        "username": "li.na",
        "full_name": "",
        "active": True,
        "roles": ["cashier@E01"],
    } in listed

    r = run(
        "customer",
        "open",
        "--office",
        "E01",
        "--name",
        "王芳",
        "--phone",
        "13800000001",
        "--building",
        "1号楼",
        "--unit",
        "101",
        "--floor-area",
        "88.50",
        "--meter",
        "electric:E0001",
        "--meter",
        "water.cold:W0001:LXSY-15",
        "--json",
    )
    assert r.exit_code == 0, r.output
    number = json.loads(r.output)["number"]
    assert number == "E01-000001"

    r = run("ledger", "sale", "--meter", "E0001", "--amount", "100.50", "--key", "cli-1")
    assert r.exit_code == 0, r.output
    assert "sold 100.50 yuan" in r.output
    r = run("ledger", "sale", "--meter", "E0001", "--amount", "100.50", "--key", "cli-1")
    assert r.exit_code == 0 and "already posted (nothing new credited)" in r.output

    shown = run("customer", "show", number)
    assert "E0001" in shown.output and "balance 100.50 yuan" in shown.output
    data = json.loads(run("customer", "show", number, "--json").output)
    assert [m["balance_fen"] for m in data["meters"]] == [10050, 0]

    r = run("ledger", "reverse", "1", "--reason", "operator_error")
    assert r.exit_code == 0 and "reversed by #2" in r.output
    assert "0.00 yuan" in run("ledger", "balance", "wallet:meter:1").output
    r = run("ledger", "verify")
    assert r.exit_code == 0 and r.output.startswith("ledger OK: 2 transactions")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amount", "-5"], "amount must be positive"),
        (["--amount", "12.345"], "amount has more than two decimals"),
        (["--amount", "abc"], "amount must be an amount in yuan"),
        (["--amount", "0"], "amount must be positive"),
        (["--amount", "NaN"], "amount must be a finite amount"),
        (["--amount", "1e12"], "amount is too large"),
        (["--amount", "10", "--fee", "-1"], "fee must be positive"),
        (["--amount", "10", "--meter", "NOPE"], "no meter with serial 'NOPE' [meter]"),
        (
            ["--amount", "10", "--wallet", "wallet:meter:77", "--meter", ""],
            "no ledger account 'wallet:meter:77' [wallet]",
        ),
    ],
)
def test_bad_sales_exit_non_zero_with_a_clear_message(
    initialised, args: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    run = initialised
    run("customer", "open", "--office", "E01", "--name", "A", "--meter", "electric:E0001")
    base = ["ledger", "sale", "--meter", "E0001"]
    r = run(*base, *args)
    assert r.exit_code == 1, r.output
    assert message in r.output
    assert run("ledger", "verify").output.startswith("ledger OK: 0 transactions")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--meter", "steam:S1"], "unknown utility kind 'steam'"),
        (["--meter", "electric"], "is not KIND:SERIAL"),
        (["--floor-area", "lots"], "floor_area must be a number"),
        (["--category", "royal"], "category must be one of"),
        (["--office", "NOPE"], "no office with code 'NOPE'"),
    ],
)
def test_bad_account_openings_exit_non_zero(initialised, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    run = initialised
    r = run("customer", "open", "--office", "E01", "--name", "A", *args)
    assert r.exit_code == 1 and message in r.output, r.output
    assert json.loads(run("office", "list", "--json").output)[0]["code"] == "E01"
    assert run("customer", "show", "E01-000001").exit_code == 1


def test_operator_unlock(initialised, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from onecard import operators as ops
    from onecard.db import create_db_engine, session_factory
    from onecard.models import utcnow

    run = initialised
    run(
        "operator",
        "add",
        "li.na",
        "--role",
        "cashier@E01",
        "--password-stdin",
        input="cashier-pass-1\n",
    )
    engine = create_db_engine(db_url)
    with session_factory(engine)() as s:
        for _ in range(ops.MAX_FAILED_LOGINS):
            with pytest.raises(Exception, match="wrong username"):
                ops.authenticate(s, "li.na", "nope")
        s.commit()
        assert ops.get_operator(s, "li.na").locked_until is not None
    r = run("operator", "unlock", "li.na")
    assert r.exit_code == 0 and "unlocked" in r.output
    with session_factory(engine)() as s:
        assert ops.authenticate(s, "li.na", "cashier-pass-1", now=utcnow()).failed_logins == 0
    assert run("operator", "unlock", "ghost").exit_code == 1
    engine.dispose()


def test_a_database_without_an_operator_is_not_served(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["--database-url", url, "db", "upgrade"]).exit_code == 0
    r = runner.invoke(cli, ["--database-url", url, "serve", "--port", "1"])
    assert r.exit_code == 1 and "no operator yet" in r.output


def test_looking_at_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    r = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{missing}", "office", "list"])
    assert r.exit_code == 1 and "no database at" in r.output
    r = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{missing}", "db", "current"])
    assert r.exit_code == 1 and "no database at" in r.output
    assert not missing.exists()


def test_demo_builds_once_and_verifies(run) -> None:  # type: ignore[no-untyped-def]
    r = run("demo", "--no-serve")
    assert r.exit_code == 0, r.output
    assert "12 customers" in r.output
    again = run("demo", "--no-serve")
    assert "already present" in again.output
    assert run("ledger", "verify").exit_code == 0
