"""Site keys and per-card key diversification (onecard.card.keys, ``onecard keys``)."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from Crypto.Cipher import AES
from Crypto.Hash import CMAC
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from onecard.card.keys import (
    HEADER_KEY_A,
    NO_KEK,
    NOT_INITIALISED,
    WRONG_KEK,
    CardKeys,
    KeyStore,
    _Diversifier,
    an10922_diversify,
    create_kek_file,
    diversification_input,
    kcv,
    kek_source,
    load_kek,
    mifare_key,
    record_mac,
    unwrap_key,
    verify_record_mac,
    wrap_key,
)
from onecard.cli import cli
from onecard.config import Settings
from onecard.db import create_db_engine, session_factory
from onecard.errors import Conflict, InvalidInput, NotFound
from onecard.models import AuditEvent, SiteKey

# NXP AN10922 "Symmetric key diversifications", §2.2.1 "AES-128 key diversification example".
# Checked against public copies of the vector, e.g. EsupPortail/esup-nfc-tag-server,
# src/test/java/org/esupportail/nfctag/service/desfire/DesfireDiversificationTest.java (master
# key, M, K1, K2 and the diversified key), and a pycryptodome script of the same example whose
# step-13 block (padded D, last block XORed with K2) is AN10922_D_STEP13 below.
AN10922_MASTER = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
AN10922_M = bytes.fromhex("04782E21801D803042F54E585020416275")  # UID || AID || SysId
AN10922_KEY = bytes.fromhex("A8DD63A3B89D54B37CA802473FDA9175")
AN10922_K1 = bytes.fromhex("FBC9F75C9413C041DFEE452D3F0706D1")
AN10922_K2 = bytes.fromhex("F793EEB928278083BFDC8A5A7E0E0D25")
AN10922_D_STEP13 = bytes.fromhex("0104782E21801D803042F54E5850204195E66EB928278083BFDC8A5A7E0E0D25")

UID7 = bytes.fromhex("04782E21801D80")
UID4 = bytes.fromhex("DEADBEEF")
KEK_HEX = "3F" * 32
OTHER_KEK_HEX = "A5" * 32


def settings_for(tmp_path: Path) -> Settings:
    return Settings(instance_path=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")


# AN10922 ----------------------------------------------------------------------------------------


def test_an10922_published_vector() -> None:
    assert an10922_diversify(AN10922_MASTER, AN10922_M) == AN10922_KEY
    assert _Diversifier(AN10922_MASTER).subkeys() == (AN10922_K1, AN10922_K2)
    cbc = AES.new(AN10922_MASTER, AES.MODE_CBC, iv=bytes(16)).encrypt(AN10922_D_STEP13)
    assert cbc[-16:] == AN10922_KEY


def _reference(master: bytes, m: bytes) -> bytes:
    """AN10922 spelled out: 0x01 || M padded to 32 bytes, last block XOR K1/K2, AES-CBC."""
    k1, k2 = _Diversifier(master).subkeys()
    d = b"\x01" + m
    if len(d) < 32:
        d = d + b"\x80" + bytes(31 - len(d))
        sub = k2
    else:
        sub = k1
    d = d[:16] + bytes(a ^ b for a, b in zip(d[16:], sub, strict=True))
    return AES.new(master, AES.MODE_CBC, iv=bytes(16)).encrypt(d)[-16:]


@pytest.mark.parametrize("length", range(1, 32))
def test_an10922_pads_to_32_bytes(length: int) -> None:
    m = bytes(range(0x30, 0x30 + length))
    got = an10922_diversify(AN10922_MASTER, m)
    assert got == _reference(AN10922_MASTER, m)
    plain_cmac = CMAC.new(AN10922_MASTER, msg=b"\x01" + m, ciphermod=AES).digest()
    # Plain CMAC pads to the next block only: it agrees from M of 16 bytes on, not below.
    assert (got == plain_cmac) == (length >= 16)


def test_an10922_refuses_bad_lengths() -> None:
    for master in (bytes(15), bytes(17), bytes(32)):
        with pytest.raises(ValueError, match="master key must be 16 bytes"):
            an10922_diversify(master, b"x")
    for m in (b"", bytes(32)):
        with pytest.raises(ValueError, match="1 to 31 bytes"):
            an10922_diversify(AN10922_MASTER, m)


# onecard's diversification inputs ---------------------------------------------------------------


def test_diversification_inputs_for_7_and_4_byte_uids() -> None:
    m7 = diversification_input(0x02, UID7, 0x01020304)
    assert m7 == bytes.fromhex("0204782E21801D8001020304") and len(m7) == 12
    m4 = diversification_input(0x10, UID4, 7)
    assert m4 == bytes.fromhex("10DEADBEEF00000007") and len(m4) == 9
    for bad_uid in (b"", bytes(5), bytes(10)):
        with pytest.raises(ValueError, match="4 or 7 bytes"):
            diversification_input(1, bad_uid, 7)
    for bad_site in (0, 2**32):
        with pytest.raises(ValueError, match="site id"):
            diversification_input(1, UID4, bad_site)


@pytest.mark.parametrize("uid", [UID7, UID4], ids=["uid7", "uid4"])
def test_card_keys_follow_the_documented_layout(uid: bytes) -> None:
    card_master, mac_master = bytes(range(16)), bytes(range(16, 32))
    site = 0xA1B2C3D4
    keys = CardKeys.derive(card_master, mac_master, uid, site, version=3)
    tail = uid + site.to_bytes(4, "big")

    def div(master: bytes, purpose: int) -> bytes:
        return an10922_diversify(master, bytes([purpose]) + tail)

    assert keys.version == 3
    assert keys.header_b == div(card_master, 0x01)[:6]
    assert keys.data_a == div(card_master, 0x02)[:6]
    assert keys.data_b == div(card_master, 0x03)[:6]
    assert keys.mac == div(mac_master, 0x10)
    assert keys.header_a == HEADER_KEY_A
    assert len({keys.header_b, keys.data_a, keys.data_b}) == 3
    # Another card, another site: other keys.
    other_uid = bytes([uid[0] ^ 1]) + uid[1:]
    assert CardKeys.derive(card_master, mac_master, other_uid, site, 3).data_a != keys.data_a
    assert CardKeys.derive(card_master, mac_master, uid, site + 1, 3).data_a != keys.data_a


def test_mifare_key_avoids_well_known_keys() -> None:
    tail = bytes(range(10))
    assert mifare_key(bytes.fromhex("112233445566") + tail) == bytes.fromhex("112233445566")
    assert mifare_key(bytes.fromhex("FFFFFFFFFFFF") + tail) == bytes.fromhex("FFFFFFFFFFFE")
    assert mifare_key(bytes.fromhex("A0A1A2A3A4A5") + tail) == bytes.fromhex("A0A1A2A3A4A4")
    assert mifare_key(bytes.fromhex("000000000000") + tail) == bytes.fromhex("000000000001")
    # Neighbours of the well-known keys stay as they are.
    assert mifare_key(bytes.fromhex("FFFFFFFFFFFE") + tail) == bytes.fromhex("FFFFFFFFFFFE")
    with pytest.raises(ValueError):
        mifare_key(bytes(6))


def test_card_keys_repr_hides_the_keys() -> None:
    keys = CardKeys.derive(bytes(range(16)), bytes(range(16, 32)), UID7, 99, version=5)
    for text in (repr(keys), str(keys), f"{keys}", f"{keys!r}", repr([keys]), repr({"k": keys})):
        assert text.count("CardKeys(version=5)") == 1
        for secret in (keys.header_b, keys.data_a, keys.data_b, keys.mac):
            assert secret.hex() not in text.lower()
            assert repr(secret) not in text


def test_record_mac_and_kcv() -> None:
    # RFC 4493 example 2: AES-CMAC of one block, truncated to 8 bytes.
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    data = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert record_mac(key, data) == bytes.fromhex("070a16b46b4d4144")
    assert verify_record_mac(key, data, bytes.fromhex("070a16b46b4d4144"))
    assert not verify_record_mac(key, data + b"\x00", bytes.fromhex("070a16b46b4d4144"))
    assert not verify_record_mac(key, data, bytes.fromhex("070a16b46b4d4145"))
    # AES-128(0^16, 0^16) = 66E94BD4EF8A2C3B884CFA59CA342B2E
    assert kcv(bytes(16)) == "66E94B"
    assert len(kcv(bytes(32))) == 6
    with pytest.raises(ValueError):
        record_mac(bytes(6), data)


# The key-encryption key -------------------------------------------------------------------------


def test_kek_from_the_environment(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    assert load_kek(s, {"ONECARD_KEK": "ab" * 32}) == bytes([0xAB]) * 32
    assert load_kek(s, {"ONECARD_KEK": " " + "Cd" * 16 + "\n"}) == bytes([0xCD]) * 16
    assert kek_source(s, {"ONECARD_KEK": "ab" * 32}) == "env"
    for bad in ("ab" * 24, "ab" * 31 + "a", "zz" * 32, "secret-passphrase"):
        with pytest.raises(InvalidInput) as info:
            load_kek(s, {"ONECARD_KEK": bad})
        assert info.value.field == "ONECARD_KEK"
        assert "ONECARD_KEK" in info.value.message
        assert bad not in info.value.message


def test_kek_file_modes(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    path = tmp_path / "kek"
    with pytest.raises(InvalidInput) as info:
        load_kek(s, {})
    assert info.value.message == NO_KEK and info.value.field == "ONECARD_KEK"
    assert kek_source(s, {}) is None

    create_kek_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kek_source(s, {}) == "file"
    kek = load_kek(s, {})
    assert len(kek) == 32 and path.read_text().strip() == kek.hex()
    with pytest.raises(Conflict):
        create_kek_file(path)
    assert load_kek(s, {}) == kek  # not replaced

    for mode in (0o644, 0o640, 0o604, 0o620, 0o700 | 0o004):
        path.chmod(mode)
        with pytest.raises(InvalidInput) as info:
            load_kek(s, {})
        message = info.value.message
        assert str(path) in message and f"{mode:04o}" in message and "chmod 600" in message
        assert kek.hex() not in message
    path.chmod(0o400)
    assert load_kek(s, {}) == kek

    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(InvalidInput, match="does not hold a key"):
        load_kek(s, {})
    path.write_bytes(b"\xff\xfe" * 32)
    with pytest.raises(InvalidInput, match="does not hold a key"):
        load_kek(s, {})


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_kek_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    create_kek_file(path)
    os.chown(path, 54321, -1)
    with pytest.raises(InvalidInput) as info:
        load_kek(settings_for(tmp_path), {})
    assert "owned by uid 54321" in info.value.message and str(path) in info.value.message


def test_kek_file_elsewhere(tmp_path: Path) -> None:
    s = settings_for(tmp_path / "instance")
    path = tmp_path / "secrets" / "site.kek"
    env = {"ONECARD_KEK_FILE": str(path)}
    with pytest.raises(InvalidInput) as info:
        load_kek(s, env)
    assert str(path) in info.value.message and info.value.field == "ONECARD_KEK_FILE"
    create_kek_file(path)
    assert len(load_kek(s, env)) == 32
    # ONECARD_KEK wins over the file.
    assert load_kek(s, {**env, "ONECARD_KEK": KEK_HEX}) == bytes.fromhex(KEK_HEX)
    # A directory is not a key file.
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(InvalidInput, match="not a regular file"):
        load_kek(s, {"ONECARD_KEK_FILE": str(tmp_path / "dir")})


def test_wrap_and_unwrap() -> None:
    kek, master = bytes.fromhex(KEK_HEX), bytes(range(16))
    wrapped = wrap_key(kek, master, "card", 1)
    assert len(wrapped) == 12 + 16 + 16 and master not in wrapped
    assert wrap_key(kek, master, "card", 1) != wrapped  # a fresh nonce every time
    assert unwrap_key(kek, wrapped, "card", 1) == master
    assert unwrap_key(bytes(16), wrap_key(bytes(16), master, "mac", 2), "mac", 2) == master
    for args in (
        (bytes.fromhex(OTHER_KEK_HEX), wrapped, "card", 1),  # wrong KEK
        (kek, wrapped, "mac", 1),  # moved to another purpose
        (kek, wrapped, "card", 2),  # moved to another version
        (kek, wrapped[:-1] + bytes([wrapped[-1] ^ 1]), "card", 1),  # tampered
        (kek, wrapped[:20], "card", 1),  # truncated
    ):
        with pytest.raises(InvalidInput) as info:
            unwrap_key(*args)  # type: ignore[arg-type]
        assert info.value.message == WRONG_KEK and info.value.field == "ONECARD_KEK"


# KeyStore, on SQLite and PostgreSQL -------------------------------------------------------------


def _masters(session: Session, kek: bytes, version: int) -> tuple[bytes, bytes]:
    rows = {
        r.purpose: unwrap_key(kek, r.wrapped, r.purpose, version)
        for r in session.scalars(select(SiteKey).where(SiteKey.version == version))
    }
    return rows["card"], rows["mac"]


def test_keystore_before_init(sessions: sessionmaker[Session]) -> None:
    store = KeyStore(bytes.fromhex(KEK_HEX))
    with sessions() as session:
        for call in (
            lambda: store.site_id(session),
            lambda: store.current_version(session),
            lambda: store.card_keys(session, UID4),
            lambda: store.rotate(session),
        ):
            with pytest.raises(NotFound) as info:
                call()
            assert info.value.message == NOT_INITIALISED
        assert store.versions(session) == []


def test_keystore_init_rotate_and_card_keys(sessions: sessionmaker[Session]) -> None:
    kek = bytes.fromhex(KEK_HEX)
    store = KeyStore(kek)
    with sessions() as session, session.begin():
        for bad in (0, -1, 2**32, True):
            with pytest.raises(InvalidInput) as info:
                store.init_site(session, bad, "x")
            assert info.value.field == "site_id"
        assert store.init_site(session, 4_000_000_000, "East site") == 1
    with sessions() as session, pytest.raises(Conflict, match="initialised already"):
        store.init_site(session, 5, "again")
    with sessions() as session:
        assert store.site_id(session) == 4_000_000_000
        assert store.current_version(session) == 1
        listed = store.versions(session)
        assert [(r["version"], r["purpose"], r["retired_at"]) for r in listed] == [
            (1, "card", None),
            (1, "mac", None),
        ]
        card1, mac1 = _masters(session, kek, 1)
        assert [r["kcv"] for r in listed] == [kcv(card1), kcv(mac1)]
        assert all(
            set(r) == {"version", "purpose", "kcv", "created_at", "retired_at"} for r in listed
        )
        k7 = store.card_keys(session, UID7)
        assert k7 == CardKeys.derive(card1, mac1, UID7, 4_000_000_000, 1)
        assert store.card_keys(session, UID4, version=1) == CardKeys.derive(
            card1, mac1, UID4, 4_000_000_000, 1
        )
        with pytest.raises(InvalidInput) as info:
            store.card_keys(session, bytes(5))
        assert info.value.field == "uid"

    with sessions() as session, session.begin():
        assert store.rotate(session) == 2
    with sessions() as session:
        assert store.current_version(session) == 2
        listed = store.versions(session)
        assert [(r["version"], r["retired_at"] is None) for r in listed] == [
            (1, False),
            (1, False),
            (2, True),
            (2, True),
        ]
        card2, mac2 = _masters(session, kek, 2)
        assert card2 != card1 and mac2 != mac1
        # A new store (another process) with the same KEK derives the same keys.
        fresh = KeyStore(kek)
        assert fresh.card_keys(session, UID7) == CardKeys.derive(
            card2, mac2, UID7, 4_000_000_000, 2
        )
        assert fresh.card_keys(session, UID7).version == 2
        assert fresh.card_keys(session, UID7, version=1) == k7  # old cards stay readable
        with pytest.raises(NotFound) as nf:
            fresh.card_keys(session, UID7, version=3)
        assert "version 3" in nf.value.message and nf.value.field == "version"

    # The wrong KEK opens nothing and rotates nothing.
    wrong = KeyStore(bytes.fromhex(OTHER_KEK_HEX))
    with sessions() as session, session.begin():
        with pytest.raises(InvalidInput, match="does not open the site keys"):
            wrong.card_keys(session, UID7)
        with pytest.raises(InvalidInput, match="does not open the site keys"):
            wrong.rotate(session)
    with sessions() as session:
        assert store.current_version(session) == 2


def test_card_keys_are_cheap_after_the_first(sessions: sessionmaker[Session]) -> None:
    store = KeyStore(bytes.fromhex(KEK_HEX))
    with sessions() as session, session.begin():
        store.init_site(session, 7, "")
    with sessions() as session:
        store.card_keys(session, UID7)
        n = 200
        start = time.perf_counter()
        for _ in range(n):
            store.card_keys(session, UID7)
        per_call = (time.perf_counter() - start) / n
    # Measured: about 0.1-0.3 ms per call (one query); the bound leaves room for slow machines.
    assert per_call < 0.005, f"{per_call * 1000:.3f} ms per card_keys"


# The command line -------------------------------------------------------------------------------


@pytest.fixture
def keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ONECARD_KEK", "ONECARD_KEK_FILE"):
        monkeypatch.delenv(name, raising=False)


Run = Callable[..., Result]


@pytest.fixture
def run(db_url: str, tmp_path: Path, keys_env: None) -> Run:
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(
            cli, ["--instance", str(tmp_path / "inst"), "--database-url", db_url, *args], env=env
        )

    return invoke


@pytest.fixture
def db_sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def one_line_error(r: Result) -> str:
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1, r.output
    return r.output


def test_cli_keys_with_a_kek_file(
    run: Run, tmp_path: Path, db_sessions: sessionmaker[Session]
) -> None:
    kek_file = tmp_path / "inst" / "kek"
    r = run("keys", "status")
    assert r.exit_code == 0 and NOT_INITIALISED in r.output
    assert NOT_INITIALISED in one_line_error(run("keys", "rotate"))
    assert NOT_INITIALISED in one_line_error(run("keys", "list"))
    assert "site id must be" in one_line_error(run("keys", "init", "--site-id", "0"))
    assert not kek_file.exists()

    r = run("keys", "init", "--site-id", "4242", "--name", "东区")
    assert r.exit_code == 0, r.output
    assert f"created the key-encryption key file {kek_file}" in r.output
    assert "back it up" in r.output and "separately from the database" in r.output
    assert "site 4242 initialised: key version 1" in r.output
    assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600

    again = run("keys", "init", "--site-id", "4243")
    assert "initialised already (site id 4242)" in one_line_error(again)

    status = json.loads(run("keys", "status", "--json").output)
    assert status == {
        "initialised": True,
        "site_id": 4242,
        "name": "东区",
        "current_version": 1,
        "kek_source": "file",
        "kek_path": str(kek_file),
        "kek_opens_keys": True,
        "problem": None,
    }
    r = run("keys", "rotate")
    assert r.exit_code == 0, r.output
    assert "rotated to version 2" in r.output and "next visit" in r.output
    listed = json.loads(run("keys", "list", "--json").output)
    assert [(x["version"], x["purpose"], x["retired_at"] is None) for x in listed] == [
        (1, "card", False),
        (1, "mac", False),
        (2, "card", True),
        (2, "mac", True),
    ]
    text = run("keys", "list").output
    assert all(x["kcv"] in text for x in listed)
    text = run("keys", "status").output
    assert "site 4242 (东区)" in text and "current key version: 2" in text

    with db_sessions() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("keys.%")).order_by(AuditEvent.id)
        ).all()
        assert [(e.action, e.objects) for e in events] == [
            ("keys.init", ["site:4242", "site_keys:v1"]),
            ("keys.rotate", ["site:4242", "site_keys:v2"]),
        ]
        assert events[1].detail["kcv"] == {x["purpose"]: x["kcv"] for x in listed[2:]}

    # A key file others may read is refused, with the fix.
    kek_file.chmod(0o644)
    assert "chmod 600" in one_line_error(run("keys", "rotate"))
    status = json.loads(run("keys", "status", "--json").output)
    assert status["kek_opens_keys"] is False and "0644" in status["problem"]
    kek_file.chmod(0o600)
    # The wrong KEK rotates nothing.
    wrong = run("keys", "rotate", env={"ONECARD_KEK": OTHER_KEK_HEX})
    assert "does not open the site keys" in one_line_error(wrong)
    assert json.loads(run("keys", "status", "--json").output)["current_version"] == 2


def test_cli_keys_with_the_kek_in_the_environment(run: Run, tmp_path: Path) -> None:
    env = {"ONECARD_KEK": KEK_HEX}
    r = run("keys", "init", "--site-id", "9", env=env)
    assert r.exit_code == 0, r.output
    assert "created" not in r.output and not (tmp_path / "inst" / "kek").exists()
    status = json.loads(run("keys", "status", "--json", env=env).output)
    assert status["kek_source"] == "env" and status["kek_opens_keys"] is True
    # Without the KEK the keys are there but cannot be opened; rotate says what to do.
    status = json.loads(run("keys", "status", "--json").output)
    assert status["kek_source"] is None and status["kek_opens_keys"] is False
    assert "set ONECARD_KEK" in one_line_error(run("keys", "rotate"))
    assert "ONECARD_KEK" in one_line_error(run("keys", "rotate", env={"ONECARD_KEK": "12"}))


# No key material anywhere -----------------------------------------------------------------------


def _forms(secret: bytes) -> list[str]:
    return [secret.hex(), secret.hex().upper(), repr(secret)]


def test_no_key_material_in_output_or_logs(
    run: Run,
    tmp_path: Path,
    db_sessions: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def cli_run(*args: str, env: dict[str, str] | None = None) -> Result:
        r = run(*args, env=env)
        seen.append(r.output)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            seen.append(repr(r.exception))
        return r

    assert cli_run("keys", "init", "--site-id", "77", "--name", "leak test").exit_code == 0
    assert cli_run("keys", "rotate").exit_code == 0
    for args in (("list",), ("list", "--json"), ("status",), ("status", "--json")):
        assert cli_run("keys", *args).exit_code == 0
    cli_run("keys", "init", "--site-id", "78")  # refused
    cli_run("keys", "rotate", env={"ONECARD_KEK": OTHER_KEK_HEX})  # wrong KEK
    cli_run("keys", "status", env={"ONECARD_KEK": OTHER_KEK_HEX})

    settings = settings_for(tmp_path / "inst")
    kek = load_kek(settings, {})
    store = KeyStore(kek)
    secrets_: list[bytes] = [kek]
    with db_sessions() as session:
        for version in (1, 2):
            secrets_.extend(_masters(session, kek, version))
            for uid in (UID4, UID7):
                keys = store.card_keys(session, uid, version=version)
                secrets_.extend([keys.header_b, keys.data_a, keys.data_b, keys.mac])
                seen.extend([repr(keys), str(keys), repr(store)])
        try:
            KeyStore(bytes.fromhex(OTHER_KEK_HEX)).card_keys(session, UID7)
        except InvalidInput as exc:
            seen.append(str(exc))
        audit = session.scalars(select(AuditEvent)).all()
        seen.extend(json.dumps(e.detail) + " ".join(e.objects) for e in audit)
    seen.append(caplog.text)
    seen.extend(r.getMessage() for r in caplog.records)

    assert any("opened site key" in r.getMessage() for r in caplog.records)  # DEBUG was on
    haystack = "\n".join(seen)
    assert "site 77 initialised" in haystack
    for secret in secrets_:
        for form in _forms(secret):
            assert form not in haystack
    assert os.environ.get("ONECARD_KEK") is None
