"""A onecard card on a reader: keyed reads and writes of the header, slots and tool payloads.

:class:`CardIO` knows the card map and the keys but nothing of the database: the office service
(``onecard.card.service``) and the meter emulator build on it. Reads and writes are grouped by
sector so that each sector costs one authentication, and each key one load.

Access rights on our cards (key A / key B per sector, conditions per block):

===============  =============  ==========  ===================================================
sectors          key A          key B       blocks
===============  =============  ==========  ===================================================
0, 1 (header)    public         header_b    read A|B, write B
slot sectors     data_a         data_b      purchase: read A|B, write B; return: read/write A|B;
                 (the meter's)  (office's)  unused: B only
===============  =============  ==========  ===================================================

Every trailer uses condition 011: key B writes keys and access bits, and is never readable.
In the 16-block sectors of a 4K card, access is per group of five blocks; a group takes the most
open condition any of its blocks needs.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onecard.card import mifare
from onecard.card.keys import HEADER_KEY_A, CardKeys, record_mac
from onecard.card.layout import (
    HEADER,
    CardMap,
    Header,
    PlacedSlot,
    RecordLayout,
    header_blocks,
    slot_bytes,
    split_blocks,
)
from onecard.card.mifare import BLOCK_SIZE, DEFAULT_KEY, Geometry
from onecard.card.reader import KeyType, MifareReader
from onecard.errors import (
    CardTampered,
    ForeignSiteCard,
    InvalidInput,
    NotOurCard,
    ReaderError,
    WrongKey,
)
from onecard.models import utcnow

HEADER_MAC_PREFIX = b"OCHDR"

# Block roles -> access condition.
ROLE_CONDITION = {
    "header": mifare.DATA_READ_AB_WRITE_B,
    "purchase": mifare.DATA_READ_AB_WRITE_B,
    "return": mifare.DATA_ANY,
    "tool": mifare.DATA_ANY,
    "unused": mifare.DATA_B_ONLY,
}
_OPENNESS = ["unused", "header", "purchase", "return", "tool"]


def record_mac_input(uid: bytes, start_block: int, signed: bytes) -> bytes:
    return uid + bytes([start_block]) + signed


def seal(
    layout: RecordLayout, values: Mapping[str, Any], uid: bytes, start: int, mac_key: bytes
) -> bytes:
    """Encode a record and put its MAC in."""
    raw = layout.encode(values)
    mac = record_mac(mac_key, record_mac_input(uid, start, layout.signed_part(raw)))
    return layout.with_mac(raw, mac)


def check_seal(layout: RecordLayout, data: bytes, uid: bytes, start: int, mac_key: bytes) -> bool:
    """Whether the record's MAC verifies (compared as bytes: an edited record may not decode)."""
    expected = record_mac(mac_key, record_mac_input(uid, start, layout.signed_part(data)))
    mac = layout.by_name["mac"]
    return hmac.compare_digest(bytes(data[mac.offset : mac.end]), expected)


def safe_decode(layout: RecordLayout, data: bytes) -> dict[str, Any] | None:
    """The record's values, or None when its bytes do not even decode (an edited BCD digit)."""
    try:
        return layout.decode(data)
    except InvalidInput:
        return None


def is_blank(data: bytes) -> bool:
    return not any(data)


@dataclass(frozen=True)
class SectorKeys:
    key_a: bytes
    key_b: bytes


def sector_keys(geo: Geometry, sector: int, keys: CardKeys) -> SectorKeys:
    if sector <= 1:
        return SectorKeys(HEADER_KEY_A, keys.header_b)
    return SectorKeys(keys.data_a, keys.data_b)


def trailers(geo: Geometry, keys: CardKeys, roles: Mapping[int, str]) -> dict[int, bytes]:
    """The trailer of every sector for a card keyed with ``keys`` and blocks in ``roles``."""
    out = {}
    for sector in range(geo.sectors):
        first = geo.first_block(sector)
        count = geo.blocks_in_sector(sector)
        groups = ["unused", "unused", "unused"]
        default = "header" if sector <= 1 else "unused"
        for i in range(count - 1):
            role = roles.get(first + i, default)
            g = mifare.access_group(i, count)
            if _OPENNESS.index(role) > _OPENNESS.index(groups[g]):
                groups[g] = role
        conditions = (
            ROLE_CONDITION[groups[0]],
            ROLE_CONDITION[groups[1]],
            ROLE_CONDITION[groups[2]],
            mifare.TRAILER_B_MANAGES,
        )
        sk = sector_keys(geo, sector, keys)
        out[geo.trailer_block(sector)] = mifare.make_trailer(sk.key_a, conditions, sk.key_b)
    return out


def block_roles(card_map: CardMap | None, tool_blocks: Iterable[int] = ()) -> dict[int, str]:
    roles: dict[int, str] = {}
    if card_map is not None:
        for slot in card_map.slots:
            roles.update(dict.fromkeys(slot.purchase_blocks, "purchase"))
            roles.update(dict.fromkeys(slot.return_blocks, "return"))
    roles.update(dict.fromkeys(tool_blocks, "tool"))
    return roles


class CardIO:
    """The card on ``reader``, for a site whose keys ``keys_for(uid, version)`` derives."""

    def __init__(
        self,
        reader: MifareReader,
        keys_for: Callable[[bytes, int | None], CardKeys],
        site_id: int,
    ) -> None:
        self.reader = reader
        self.keys_for = keys_for
        self.site_id = site_id
        self.uid = reader.uid()
        self.geometry: Geometry = mifare.GEOMETRY_1K

    # Reading ---------------------------------------------------------------------------------

    def read_header_raw(self) -> bytes | None:
        """The header bytes read with the public key A, or None if that key does not open it."""
        blocks = header_blocks(self.geometry)
        try:
            data = self.read_blocks(blocks, "A", HEADER_KEY_A)
        except WrongKey:
            return None
        return slot_bytes(blocks, data)

    def read_header(self) -> tuple[Header, CardKeys]:
        """The checked header of a card of this site, and the keys of its key version."""
        raw = self.read_header_raw()
        if raw is None:
            raise NotOurCard(
                "this card carries no onecard header (blank, or another system's card)",
                uid=self.uid.hex().upper(),
            )
        header = Header.decode(raw)
        if header is None:
            raise NotOurCard(
                "this card carries no onecard header (blank, or another system's card)",
                uid=self.uid.hex().upper(),
            )
        if header.site_id != self.site_id:
            raise ForeignSiteCard(
                f"this card belongs to site {header.site_id}, not to this site ({self.site_id})",
                uid=self.uid.hex().upper(),
                site_id=header.site_id,
            )
        keys = self.keys_for(self.uid, header.key_version)
        if not self.header_mac_ok(raw, keys):
            raise CardTampered(
                "the card header's MAC does not match this card: it was copied from another card "
                "(a clone) or edited",
                uid=self.uid.hex().upper(),
            )
        return header, keys

    def header_mac_ok(self, raw: bytes, keys: CardKeys) -> bool:
        mac = record_mac(keys.mac, HEADER_MAC_PREFIX + self.uid + HEADER.signed_part(raw))
        return bool(HEADER.decode(raw)["mac"] == mac)

    def read_blocks(self, blocks: Sequence[int], key_type: KeyType, key: bytes) -> dict[int, bytes]:
        out = {}
        for block in sorted(blocks, key=lambda b: (self.geometry.sector_of(b), b)):
            self.reader.ensure_auth(block, key_type, key)
            out[block] = self.reader.read_block(block)
        return out

    def write_blocks(self, data: Mapping[int, bytes], key_type: KeyType, key: bytes) -> None:
        for block in sorted(data, key=lambda b: (self.geometry.sector_of(b), b)):
            self.reader.ensure_auth(block, key_type, key)
            self.reader.write_block(block, data[block])

    def read_slots(
        self, card_map: CardMap, keys: CardKeys, slots: Iterable[PlacedSlot], *, purchase: bool
    ) -> dict[int, dict[str, Any]]:
        """Decode the return records (and the purchase records if asked) of ``slots``.

        Each result carries ``return`` and maybe ``purchase`` values (None when the bytes do not
        decode), plus ``return_ok`` and ``purchase_ok`` (the MAC verifies) and ``return_blank``
        (the meter never wrote it).
        """
        wanted = list(slots)
        blocks: list[int] = []
        for slot in wanted:
            blocks += slot.return_blocks
            if purchase:
                blocks += slot.purchase_blocks
        read = self.read_blocks(blocks, "B", keys.data_b)
        out: dict[int, dict[str, Any]] = {}
        for slot in wanted:
            item: dict[str, Any] = {}
            rdata = slot_bytes(slot.return_blocks, read)
            layout = slot.layout
            item["return_blank"] = is_blank(rdata)
            item["return_raw"] = rdata
            item["return"] = None if item["return_blank"] else safe_decode(layout.returned, rdata)
            item["return_ok"] = item["return"] is not None and check_seal(
                layout.returned, rdata, self.uid, slot.return_blocks[0], keys.mac
            )
            if purchase:
                pdata = slot_bytes(slot.purchase_blocks, read)
                item["purchase_raw"] = pdata
                item["purchase"] = safe_decode(layout.purchase, pdata)
                item["purchase_ok"] = item["purchase"] is not None and check_seal(
                    layout.purchase, pdata, self.uid, slot.start_block, keys.mac
                )
            out[slot.index] = item
        return out

    # Writing ---------------------------------------------------------------------------------

    def seal_purchase(self, slot: PlacedSlot, values: Mapping[str, Any], keys: CardKeys) -> bytes:
        return seal(slot.layout.purchase, values, self.uid, slot.start_block, keys.mac)

    def write_purchases(
        self, keys: CardKeys, records: Mapping[int, bytes], card_map: CardMap
    ) -> list[int]:
        """Write sealed purchase records (slot index -> bytes) and read each block back.

        Sector by sector, from the highest down (the sector a preceding read of the return
        records ended in needs no new authentication), each sector's blocks are written and then
        read back under the same authentication. Returns the blocks that did not read back.
        """
        data: dict[int, bytes] = {}
        for index, raw in records.items():
            data.update(split_blocks(raw, card_map.slot(index).purchase_blocks))
        by_sector: dict[int, list[int]] = {}
        for block in sorted(data):
            by_sector.setdefault(self.geometry.sector_of(block), []).append(block)
        bad = []
        for sector in sorted(by_sector, reverse=True):
            blocks = by_sector[sector]
            for block in blocks:
                self.reader.ensure_auth(block, "B", keys.data_b)
                self.reader.write_block(block, data[block])
            bad += [b for b in blocks if self.reader.read_block(b) != data[b]]
        return bad

    def verify(self, written: Mapping[int, bytes], key_type: KeyType, key: bytes) -> list[int]:
        """Read back what was written; the blocks that differ."""
        read = self.read_blocks(list(written), key_type, key)
        return [b for b, data in written.items() if read[b] != data]

    def format(
        self,
        header: Header,
        keys: CardKeys,
        *,
        card_map: CardMap | None,
        initial: Mapping[int, bytes],
        tool_blocks: Sequence[int] = (),
        old_keys: CardKeys | None = None,
    ) -> None:
        """Key a card for this site and write its header and first records.

        The card is blank (transport keys FFFFFFFFFFFF) or ours under ``old_keys`` (a re-key).
        Every sector is first opened without writing anything: a card of the wrong size or of
        another system is refused untouched. A sector already keyed with the new keys (an
        earlier attempt that was pulled half-way) is accepted, so an interrupted issue or re-key
        can simply be run again. Data blocks are written before each trailer, and the header
        last (the old header stays readable until then), so a card pulled half-way is never a
        valid card with missing slots.
        """
        geo = self.geometry
        roles = block_roles(card_map, tool_blocks)
        new_trailers = trailers(geo, keys, roles)

        def candidates(sector: int) -> list[tuple[KeyType, bytes]]:
            found: list[tuple[KeyType, bytes]] = []
            if old_keys is not None:
                found.append(("B", sector_keys(geo, sector, old_keys).key_b))
            found.append(("A", DEFAULT_KEY))
            found.append(("B", sector_keys(geo, sector, keys).key_b))
            return found

        opens: dict[int, tuple[KeyType, bytes]] = {}
        for sector in range(geo.sectors):
            for key_type, key in candidates(sector):
                try:
                    self.reader.ensure_auth(geo.trailer_block(sector), key_type, key)
                except (WrongKey, ReaderError):
                    continue
                opens[sector] = (key_type, key)
                break
            else:
                raise InvalidInput(
                    f"sector {sector} of this card opens with neither the transport key nor this "
                    f"site's keys: not a blank {geo.size.upper()} card (nothing was written)",
                    field="card",
                )
        blanks = {b: bytes(BLOCK_SIZE) for s in range(2, geo.sectors) for b in geo.data_blocks(s)}
        blanks.update(initial)
        header_data = split_blocks(seal_header(header, self.uid, keys), header_blocks(geo))
        for sector in range(geo.sectors):
            key_type, key = opens[sector]
            sector_data = {b: blanks[b] for b in geo.data_blocks(sector) if b in blanks}
            for block, data in sector_data.items():
                self.reader.ensure_auth(block, key_type, key)
                self.reader.write_block(block, data)
            trailer = geo.trailer_block(sector)
            self.reader.ensure_auth(trailer, key_type, key)
            self.reader.write_block(trailer, new_trailers[trailer])
        self.write_blocks(header_data, "B", keys.header_b)
        bad = self.verify(header_data, "A", HEADER_KEY_A)
        if bad:
            raise CardTampered(f"the header did not read back as written (blocks {bad})")


def seal_header(header: Header, uid: bytes, keys: CardKeys) -> bytes:
    raw = header.encode()
    mac = record_mac(keys.mac, HEADER_MAC_PREFIX + uid + HEADER.signed_part(raw))
    return HEADER.with_mac(raw, mac)


def now_utc() -> dt.datetime:
    """Now, to the second: what a card's 4-byte time fields can hold."""
    return utcnow().replace(microsecond=0)


def sale_apdu_budget(card_map: CardMap, slots: Iterable[PlacedSlot]) -> tuple[int, int]:
    """The fewest APDUs a sale to ``slots`` can take, and the verify reads onecard adds.

    A sale must read the UID and the header (public key A: one load, one authentication,
    three reads), load the office's data key B, read every sold slot's return record (to see
    whether the meter loaded the last purchase) and write every purchase record; each sector
    costs one authentication per pass, and the write pass may start in the sector where the
    read pass ended. onecard reads each written block back once, under the same authentication.
    """
    geo = card_map.geometry
    chosen = list(slots)
    returns = [b for s in chosen for b in s.return_blocks]
    purchases = [b for s in chosen for b in s.purchase_blocks]
    read_sectors = {geo.sector_of(b) for b in returns}
    write_sectors = {geo.sector_of(b) for b in purchases}
    shared = 1 if max(read_sectors) == max(write_sectors) else 0
    minimum = (
        1  # UID
        + 2  # load the public key A, authenticate the header sector
        + len(header_blocks(geo))
        + 1  # load data key B
        + len(read_sectors)
        + len(write_sectors)
        - shared
        + len(returns)
        + len(purchases)
    )
    return minimum, len(purchases)
