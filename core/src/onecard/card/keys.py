"""Site keys and per-card key diversification.

A onecard site holds two AES-128 **master keys** per key version: ``card`` (the sector keys of
every card) and ``mac`` (the MACs of the records on the cards). They are stored in the table
``site_keys`` wrapped (AES-GCM) under a **key-encryption key** (KEK) that lives outside the
database: the environment variable ``ONECARD_KEK`` (64 or 32 hexadecimal digits) or the file
``<instance>/kek`` (or the path in ``ONECARD_KEK_FILE``), readable by its owner only.

Every card gets its own keys, diversified from the master keys with the AES-128 CMAC method of
NXP AN10922 (section 2.2, :func:`an10922_diversify`). The diversification input ``M`` is::

    M = purpose (1 byte) || UID (4 or 7 bytes, as the card reports it) || site id (4 bytes)

with the site id big-endian, so ``M`` is 9 bytes for a 4-byte UID and 12 bytes for a 7-byte
UID. The purposes:

====  ======================  ==============================================================
byte  master key              what the diversified key is
====  ======================  ==============================================================
0x01  ``card``                header sector, key B (the office writes the header)
0x02  ``card``                data sectors, key A: the meter's key (reads purchases, writes
                              return records)
0x03  ``card``                data sectors, key B: the office's key
0x10  ``mac``                 the 16-byte AES key of the record MACs (:func:`record_mac`)
====  ======================  ==============================================================

MIFARE Classic sector keys are 6 bytes: :func:`mifare_key` takes the first 6 bytes of the
diversified AES key. Should those be one of the well-known keys (``FFFFFFFFFFFF`` transport,
``A0A1A2A3A4A5`` public MAD key, ``000000000000``), the lowest bit of the last byte is flipped,
so a card of ours never carries a well-known key in a key slot it guards. The header sector's
key A is the public MAD key :data:`HEADER_KEY_A`: anyone can read the header (but not write it)
and tell "a card of another onecard site" from "not a onecard card".

Key material is never logged, printed, put into an exception message or returned by an API:
only key versions and key check values (:func:`kcv`) are. :class:`CardKeys` hides its keys in
its ``repr``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from Crypto.Cipher import AES
from Crypto.Hash import CMAC
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from onecard.config import Settings
from onecard.errors import Conflict, InvalidInput, NotFound, OnecardError
from onecard.models import Installation, SiteKey, utcnow

log = logging.getLogger(__name__)

#: Key A of the header sector: the public MAD key, so anyone may read the header.
HEADER_KEY_A = bytes.fromhex("A0A1A2A3A4A5")
#: The factory (transport) key of MIFARE Classic.
TRANSPORT_KEY = bytes.fromhex("FFFFFFFFFFFF")
#: Sector keys a card of ours never gets (see :func:`mifare_key`).
WELL_KNOWN_KEYS = frozenset({TRANSPORT_KEY, HEADER_KEY_A, bytes(6)})

#: Diversification purposes (the first byte of ``M``).
PURPOSE_HEADER_B = 0x01
PURPOSE_DATA_A = 0x02
PURPOSE_DATA_B = 0x03
PURPOSE_MAC = 0x10

#: The two master keys of a key version (``site_keys.purpose``).
MASTER_PURPOSES = ("card", "mac")

SITE_ID_MAX = 0xFFFFFFFF
UID_LENGTHS = (4, 7)
RECORD_MAC_LENGTH = 8

KEK_ENV = "ONECARD_KEK"
KEK_FILE_ENV = "ONECARD_KEK_FILE"
NOT_INITIALISED = "keys not initialised: run 'onecard keys init'"
NO_KEK = "no key-encryption key: set ONECARD_KEK or run 'onecard keys init'"
WRONG_KEK = "the key-encryption key does not open the site keys (wrong ONECARD_KEK or kek file?)"

_BLOCK = 16
_MASK128 = (1 << 128) - 1


# AN10922 AES-128 diversification ----------------------------------------------------------------


def _dbl(value: int) -> int:
    """Doubling in GF(2^128) as in CMAC subkey generation (NIST SP 800-38B)."""
    shifted = (value << 1) & _MASK128
    return shifted ^ 0x87 if value >> 127 else shifted


class _Diversifier:
    """An AES-128 master key prepared for AN10922 diversification: CMAC subkeys made once.

    Keeps the key only inside the AES key schedule; its ``repr`` shows nothing of it.
    """

    __slots__ = ("_ecb", "_k1", "_k2")

    def __init__(self, master: bytes) -> None:
        if len(master) != _BLOCK:
            raise ValueError(f"the master key must be 16 bytes (AES-128), not {len(master)}")
        self._ecb = AES.new(bytes(master), AES.MODE_ECB)
        l_value = int.from_bytes(self._ecb.encrypt(bytes(_BLOCK)), "big")
        self._k1 = _dbl(l_value)
        self._k2 = _dbl(self._k1)

    def __repr__(self) -> str:
        return "<AN10922 diversifier>"

    def subkeys(self) -> tuple[bytes, bytes]:
        """The CMAC subkeys K1 and K2 (for checking against AN10922's published values)."""
        return self._k1.to_bytes(_BLOCK, "big"), self._k2.to_bytes(_BLOCK, "big")

    def diversify(self, m: bytes) -> bytes:
        if not 1 <= len(m) <= 31:
            raise ValueError(f"the diversification input must be 1 to 31 bytes, not {len(m)}")
        d = b"\x01" + bytes(m)
        if len(d) < 2 * _BLOCK:
            # AN10922 pads to 32 bytes (not to the next block as plain CMAC would): 0x80, zeros.
            d += b"\x80" + bytes(2 * _BLOCK - 1 - len(d))
            subkey = self._k2
        else:
            subkey = self._k1
        first = int.from_bytes(self._ecb.encrypt(d[:_BLOCK]), "big")
        last = int.from_bytes(d[_BLOCK:], "big") ^ subkey ^ first  # CBC chaining, last block
        return self._ecb.encrypt(last.to_bytes(_BLOCK, "big"))


def an10922_diversify(master: bytes, m: bytes) -> bytes:
    """The AES-128 key diversified from ``master`` for the input ``m`` (NXP AN10922 §2.2).

    ``D = 0x01 || M``, padded to 32 bytes with ``0x80`` and zeros when shorter; the last block is
    XORed with the CMAC subkey K2 (padded) or K1 (``M`` of 31 bytes, no padding); the result is
    the last block of AES-CBC (zero IV) over D, i.e. the 16-byte CMAC. For ``M`` of 16 to 31
    bytes this equals a plain AES-CMAC of ``0x01 || M``; for shorter ``M`` it does not.

    ``master`` must be 16 bytes and ``m`` 1 to 31 bytes (``ValueError`` otherwise).
    """
    if len(master) != _BLOCK:
        raise ValueError(f"the master key must be 16 bytes (AES-128), not {len(master)}")
    return _Diversifier(master).diversify(m)


def diversification_input(purpose: int, uid: bytes, site_id: int) -> bytes:
    """``M = purpose || UID || site id (4 bytes, big-endian)``."""
    if not 0 <= purpose <= 0xFF:
        raise ValueError(f"purpose must be one byte, not {purpose}")
    if len(uid) not in UID_LENGTHS:
        raise ValueError(f"a card UID is 4 or 7 bytes, not {len(uid)}")
    if not 1 <= site_id <= SITE_ID_MAX:
        raise ValueError(f"site id must be 1 to {SITE_ID_MAX}, not {site_id}")
    return bytes([purpose]) + bytes(uid) + site_id.to_bytes(4, "big")


def mifare_key(diversified: bytes) -> bytes:
    """The 6-byte MIFARE Classic key of a diversified AES key: its first 6 bytes.

    If those are a well-known key (``FFFFFFFFFFFF``, ``A0A1A2A3A4A5`` or ``000000000000``), the
    lowest bit of the last byte is flipped (giving ``FFFFFFFFFFFE``, ``A0A1A2A3A4A4``,
    ``000000000001``), so the key is never one that anybody can guess.
    """
    if len(diversified) != _BLOCK:
        raise ValueError(f"a diversified key is 16 bytes, not {len(diversified)}")
    key = bytes(diversified[:6])
    if key in WELL_KNOWN_KEYS:
        key = key[:5] + bytes([key[5] ^ 0x01])
    return key


def kcv(key: bytes) -> str:
    """Key check value: the first 3 bytes of AES-ECB(key, 16 zero bytes), 6 upper-case hex digits.

    Not secret: it lets people compare keys without seeing them.
    """
    if len(key) not in (16, 24, 32):
        raise ValueError(f"an AES key is 16, 24 or 32 bytes, not {len(key)}")
    return AES.new(bytes(key), AES.MODE_ECB).encrypt(bytes(_BLOCK))[:3].hex().upper()


def record_mac(mac_key: bytes, data: bytes) -> bytes:
    """The MAC of a card record: AES-CMAC(mac_key, data) truncated to its first 8 bytes."""
    if len(mac_key) != _BLOCK:
        raise ValueError(f"the MAC key must be 16 bytes, not {len(mac_key)}")
    full = CMAC.new(bytes(mac_key), msg=bytes(data), ciphermod=AES).digest()
    return full[:RECORD_MAC_LENGTH]


def verify_record_mac(mac_key: bytes, data: bytes, mac: bytes) -> bool:
    """Whether ``mac`` is the record MAC of ``data`` (compared in constant time)."""
    return secrets.compare_digest(record_mac(mac_key, data), bytes(mac))


@dataclass(frozen=True, repr=False)
class CardKeys:
    """The keys of one card at one key version. Its ``repr`` shows the version only."""

    version: int
    header_b: bytes  # header sector key B (6 bytes)
    data_a: bytes  # data sectors key A, the meter's (6 bytes)
    data_b: bytes  # data sectors key B, the office's (6 bytes)
    mac: bytes  # the AES-128 key of the record MACs (16 bytes)

    def __repr__(self) -> str:
        return f"CardKeys(version={self.version})"

    __str__ = __repr__

    @property
    def header_a(self) -> bytes:
        """The header sector's key A: the public MAD key, the same on every card."""
        return HEADER_KEY_A

    @classmethod
    def derive(
        cls, card_master: bytes, mac_master: bytes, uid: bytes, site_id: int, version: int
    ) -> CardKeys:
        """The keys of the card ``uid`` of site ``site_id``, from the master keys of ``version``."""
        return cls._derive(
            _Diversifier(card_master), _Diversifier(mac_master), uid, site_id, version
        )

    @classmethod
    def _derive(
        cls, card: _Diversifier, mac: _Diversifier, uid: bytes, site_id: int, version: int
    ) -> CardKeys:
        tail = diversification_input(0, uid, site_id)[1:]
        return cls(
            version=version,
            header_b=mifare_key(card.diversify(bytes([PURPOSE_HEADER_B]) + tail)),
            data_a=mifare_key(card.diversify(bytes([PURPOSE_DATA_A]) + tail)),
            data_b=mifare_key(card.diversify(bytes([PURPOSE_DATA_B]) + tail)),
            mac=mac.diversify(bytes([PURPOSE_MAC]) + tail),
        )


# The key-encryption key -------------------------------------------------------------------------


def kek_path(settings: Settings, env: Mapping[str, str] | None = None) -> Path:
    """Where the KEK file is: ``ONECARD_KEK_FILE`` or ``<instance>/kek``."""
    environ = os.environ if env is None else env
    given = environ.get(KEK_FILE_ENV)
    return Path(given).expanduser().resolve() if given else settings.instance_path / "kek"


def kek_source(
    settings: Settings, env: Mapping[str, str] | None = None
) -> Literal["env", "file"] | None:
    """Where :func:`load_kek` takes the KEK from: ``env``, ``file``, or ``None`` (nowhere yet)."""
    environ = os.environ if env is None else env
    if environ.get(KEK_ENV, "").strip():
        return "env"
    return "file" if os.path.lexists(kek_path(settings, environ)) else None


def _parse_kek(text: str | bytes) -> bytes | None:
    try:
        value = (text.decode("ascii") if isinstance(text, bytes) else text).strip()
        return bytes.fromhex(value) if len(value) in (32, 64) else None
    except ValueError:  # not ASCII, not hexadecimal
        return None


def load_kek(settings: Settings, env: Mapping[str, str] | None = None) -> bytes:
    """The key-encryption key (16 or 32 bytes).

    From ``ONECARD_KEK`` (64 or 32 hexadecimal digits), else from the KEK file (:func:`kek_path`),
    which must be a regular file of the current user that nobody else may read or write.
    """
    environ = os.environ if env is None else env
    if environ.get(KEK_ENV, "").strip():
        kek = _parse_kek(environ[KEK_ENV])
        if kek is None:
            raise InvalidInput(f"{KEK_ENV} must be 64 (or 32) hexadecimal digits", field=KEK_ENV)
        return kek
    path = kek_path(settings, environ)
    field = KEK_FILE_ENV if environ.get(KEK_FILE_ENV) else KEK_ENV
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # no hang on a FIFO
    except FileNotFoundError:
        if field == KEK_FILE_ENV:
            raise InvalidInput(
                f"no key-encryption key file at {path} ({KEK_FILE_ENV})", field=KEK_FILE_ENV
            ) from None
        raise InvalidInput(NO_KEK, field=KEK_ENV) from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot open the key-encryption key file {path}: {exc.strerror}", field=field
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(
                f"the key-encryption key file {path} is not a regular file", field=field
            )
        if st.st_uid != os.geteuid():
            raise InvalidInput(
                f"the key-encryption key file {path} is owned by uid {st.st_uid}, not by the "
                f"user running onecard (uid {os.geteuid()}): chown it or run onecard as its owner",
                field=field,
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise InvalidInput(
                f"the key-encryption key file {path} has mode {mode:04o}, but only its owner "
                f"may have access to it: run 'chmod 600 {path}'",
                field=field,
            )
        kek = _parse_kek(os.read(fd, 200))
    finally:
        os.close(fd)
    if kek is None:
        raise InvalidInput(
            f"the key-encryption key file {path} does not hold a key (64 hexadecimal digits)",
            field=field,
        )
    return kek


def create_kek_file(path: Path) -> None:
    """Write a new random 32-byte KEK (hex) to ``path``: mode 0600, never over an existing file."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict(
            f"the key-encryption key file {path} exists already", field=KEK_FILE_ENV
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.info("created the key-encryption key file %s", path)


# Wrapping under the KEK -------------------------------------------------------------------------

_NONCE = 12
_TAG = 16


def _aad(purpose: str, version: int) -> bytes:
    return f"onecard site key {purpose} v{version}".encode()


def _check_kek(kek: bytes) -> None:
    if len(kek) not in (16, 32):
        raise ValueError(f"the key-encryption key must be 16 or 32 bytes, not {len(kek)}")


def wrap_key(kek: bytes, key: bytes, purpose: str, version: int) -> bytes:
    """AES-GCM under the KEK: ``nonce (12) || ciphertext || tag (16)``; AAD names purpose and
    version, so a wrapped key cannot be moved to another row."""
    _check_kek(kek)
    nonce = secrets.token_bytes(_NONCE)
    cipher = AES.new(bytes(kek), AES.MODE_GCM, nonce=nonce, mac_len=_TAG)
    cipher.update(_aad(purpose, version))
    ciphertext, tag = cipher.encrypt_and_digest(bytes(key))
    return nonce + ciphertext + tag


def unwrap_key(kek: bytes, wrapped: bytes, purpose: str, version: int) -> bytes:
    """The key wrapped by :func:`wrap_key`; ``InvalidInput`` naming ONECARD_KEK if it fails."""
    _check_kek(kek)
    if len(wrapped) <= _NONCE + _TAG:
        raise InvalidInput(WRONG_KEK, field=KEK_ENV)
    nonce, body, tag = wrapped[:_NONCE], wrapped[_NONCE:-_TAG], wrapped[-_TAG:]
    cipher = AES.new(bytes(kek), AES.MODE_GCM, nonce=nonce, mac_len=_TAG)
    cipher.update(_aad(purpose, version))
    try:
        return cipher.decrypt_and_verify(body, tag)
    except ValueError:
        raise InvalidInput(WRONG_KEK, field=KEK_ENV) from None


# The key store ----------------------------------------------------------------------------------


def check_site_id(site_id: int) -> int:
    """``site_id`` if it is 1 to 4294967295 (it is written as 4 bytes on every card)."""
    if isinstance(site_id, bool) or not isinstance(site_id, int) or not 1 <= site_id <= SITE_ID_MAX:
        raise InvalidInput(
            f"site id must be a whole number from 1 to {SITE_ID_MAX}", field="site_id"
        )
    return site_id


class KeyStore:
    """The site's master keys in the database, opened with the KEK.

    Functions taking a session never commit: the caller owns the transaction. Unwrapped master
    keys are kept in the instance (per wrapped row), so deriving a card's keys costs one small
    query and four AES-CBC MACs. A key store holds key material: never log or print it.
    """

    def __init__(self, kek: bytes) -> None:
        _check_kek(kek)
        self._kek = bytes(kek)
        self._opened: dict[tuple[str, int, bytes], _Diversifier] = {}

    def __repr__(self) -> str:
        return "<KeyStore>"

    # reading ------------------------------------------------------------------------------------

    @staticmethod
    def installation(session: Session) -> Installation | None:
        return session.get(Installation, 1)

    @staticmethod
    def site_id(session: Session) -> int:
        """The site id written on every card; ``NotFound`` if keys were never initialised."""
        inst = session.get(Installation, 1)
        if inst is None:
            raise NotFound(NOT_INITIALISED)
        return inst.site_id

    @staticmethod
    def current_version(session: Session) -> int:
        """The newest key version: new cards get it, older cards are re-keyed to it."""
        version = session.execute(select(func.max(SiteKey.version))).scalar_one()
        if version is None:
            raise NotFound(NOT_INITIALISED)
        return int(version)

    @staticmethod
    def versions(session: Session) -> list[dict[str, Any]]:
        """Every master key: version, purpose, kcv, created_at, retired_at (no key material)."""
        rows = session.execute(
            select(
                SiteKey.version,
                SiteKey.purpose,
                SiteKey.kcv,
                SiteKey.created_at,
                SiteKey.retired_at,
            ).order_by(SiteKey.version, SiteKey.purpose)
        ).all()
        return [
            {
                "version": r.version,
                "purpose": r.purpose,
                "kcv": r.kcv,
                "created_at": r.created_at,
                "retired_at": r.retired_at,
            }
            for r in rows
        ]

    def _open(self, purpose: str, version: int, wrapped: bytes, stored_kcv: str) -> _Diversifier:
        cache_key = (purpose, version, bytes(wrapped))
        opened = self._opened.get(cache_key)
        if opened is None:
            master = unwrap_key(self._kek, wrapped, purpose, version)
            if kcv(master) != stored_kcv:
                raise OnecardError(
                    f"site key v{version} {purpose}: the stored check value does not match the key"
                )
            opened = self._opened[cache_key] = _Diversifier(master)
            log.debug("opened site key v%d %s", version, purpose)
        return opened

    def _masters(
        self, session: Session, version: int | None
    ) -> tuple[int, int, _Diversifier, _Diversifier]:
        """(version, site id, card master, mac master), in one query."""
        wanted = select(func.max(SiteKey.version)).scalar_subquery() if version is None else version
        rows = session.execute(
            select(
                SiteKey.version,
                SiteKey.purpose,
                SiteKey.wrapped,
                SiteKey.kcv,
                select(Installation.site_id).where(Installation.id == 1).scalar_subquery(),
            ).where(SiteKey.version == wanted)
        ).all()
        if not rows:
            if version is None:
                raise NotFound(NOT_INITIALISED)
            raise NotFound(f"no site keys of version {version}", field="version")
        found = {r.purpose: r for r in rows}
        missing = [p for p in MASTER_PURPOSES if p not in found]
        got_version = int(rows[0].version)
        if missing:
            raise OnecardError(f"site keys v{got_version} lack the {missing[0]} key")
        site_id = rows[0][4]
        if site_id is None:
            raise NotFound(NOT_INITIALISED)
        card, mac = (
            self._open(p, got_version, found[p].wrapped, found[p].kcv) for p in MASTER_PURPOSES
        )
        return got_version, int(site_id), card, mac

    def card_keys(self, session: Session, uid: bytes, version: int | None = None) -> CardKeys:
        """The keys of the card ``uid`` at ``version`` (``None``: the current version)."""
        if len(uid) not in UID_LENGTHS:
            raise InvalidInput(f"a card UID is 4 or 7 bytes, not {len(uid)}", field="uid")
        got_version, site_id, card, mac = self._masters(session, version)
        log.debug(
            "derived the keys of card %s at version %d", bytes(uid).hex().upper(), got_version
        )
        return CardKeys._derive(card, mac, bytes(uid), site_id, got_version)

    def check(self, session: Session) -> int:
        """Open the current master keys (proving the KEK is right); their version."""
        return self._masters(session, None)[0]

    # writing ------------------------------------------------------------------------------------

    def _add_version(self, session: Session, version: int) -> None:
        for purpose in MASTER_PURPOSES:
            master = secrets.token_bytes(_BLOCK)
            session.add(
                SiteKey(
                    version=version,
                    purpose=purpose,
                    wrapped=wrap_key(self._kek, master, purpose, version),
                    kcv=kcv(master),
                )
            )

    def init_site(self, session: Session, site_id: int, name: str = "") -> int:
        """Create the installation row and version 1 of both master keys; returns 1.

        ``Conflict`` if the site's keys exist already.
        """
        check_site_id(site_id)
        if len(name) > 200:
            raise InvalidInput("the site name may have at most 200 characters", field="name")
        existing = session.get(Installation, 1)
        if existing is not None or session.execute(select(SiteKey.id).limit(1)).first():
            where = f" (site id {existing.site_id})" if existing is not None else ""
            raise Conflict(
                f"keys are initialised already{where}: use 'onecard keys rotate' for new keys",
                field="site_id",
            )
        session.add(Installation(id=1, site_id=site_id, name=name))
        self._add_version(session, 1)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(
                "keys were initialised at the same time by someone else", field="site_id"
            ) from None
        log.info("initialised site %d with key version 1", site_id)
        return 1

    def rotate(self, session: Session) -> int:
        """Add a new version of both master keys and retire the older ones; returns it.

        Older versions stay readable: cards still on them are read and re-keyed at their next
        visit. The KEK must open the current keys (so all versions stay under one KEK).
        """
        inst = session.execute(
            select(Installation).where(Installation.id == 1).with_for_update()
        ).scalar_one_or_none()
        if inst is None:
            raise NotFound(NOT_INITIALISED)
        current = self.check(session)
        new = current + 1
        now: dt.datetime = utcnow()
        session.execute(update(SiteKey).where(SiteKey.retired_at.is_(None)).values(retired_at=now))
        self._add_version(session, new)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict("the keys were rotated at the same time by someone else") from None
        log.info("rotated the site keys to version %d", new)
        return new

    @staticmethod
    def kcvs(session: Session, version: int) -> dict[str, str]:
        """``{purpose: kcv}`` of one version."""
        rows = session.execute(
            select(SiteKey.purpose, SiteKey.kcv).where(SiteKey.version == version)
        ).all()
        return {r.purpose: r.kcv for r in rows}
