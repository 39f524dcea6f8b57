"""Card profiles: which utility kinds a one-card carries, as data in the database.

The built-in profiles ``four``, ``six`` and ``eight`` (numbers 1-3) come with migration 0002; an
office defines its own with :func:`create_profile` (numbers from 100). A profile's slots are placed
on the card by :func:`onecard.card.layout.allocate` using each kind's slot layout, so whether a
profile fits depends on the loaded plugins: :func:`check_profiles` runs at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard import audit
from onecard.audit import Actor
from onecard.card.layout import CardMap, SlotLayout, allocate, place_from_starts
from onecard.errors import Conflict, InvalidInput, NotFound, PluginError
from onecard.models import CardProfile
from onecard.utility import UtilityRegistry

FIRST_OFFICE_NUMBER = 100
_CODE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Profile:
    number: int
    code: str
    names: Mapping[str, str]
    card_size: str
    slots: tuple[tuple[str, str], ...]  # (kind, label)
    office_id: int | None
    builtin: bool

    @classmethod
    def of(cls, row: CardProfile) -> Profile:
        return cls(
            number=row.number,
            code=row.code,
            names=dict(row.names),
            card_size=row.card_size,
            slots=tuple((s["kind"], s.get("label") or s["kind"]) for s in row.slots),
            office_id=row.office_id,
            builtin=row.builtin,
        )

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.slots]

    def describe(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "code": self.code,
            "names": dict(self.names),
            "card_size": self.card_size,
            "slots": [{"kind": k, "label": label} for k, label in self.slots],
            "office_id": self.office_id,
            "builtin": self.builtin,
        }


def _layouts(profile: Profile, utilities: UtilityRegistry) -> list[tuple[str, str, SlotLayout]]:
    out = []
    for kind_code, label in profile.slots:
        if kind_code not in utilities:
            raise InvalidInput(
                f"card profile {profile.code!r} needs utility kind {kind_code!r}, which no loaded "
                "plugin provides",
                field="profile",
            )
        layout = utilities.get(kind_code).card_layout
        if not isinstance(layout, SlotLayout):
            raise InvalidInput(
                f"card profile {profile.code!r}: utility kind {kind_code!r} has no card slot "
                "layout (its meters are not card meters)",
                field="profile",
            )
        out.append((kind_code, label, layout))
    return out


def card_map(profile: Profile, utilities: UtilityRegistry) -> CardMap:
    """Where each slot of ``profile`` lies on a new card."""
    return allocate(profile.code, profile.card_size, _layouts(profile, utilities))


def card_map_from_starts(
    profile: Profile, utilities: UtilityRegistry, starts: Sequence[int]
) -> CardMap:
    """The map of an issued card, from the slot starts its header lists."""
    if len(starts) != len(profile.slots):
        raise InvalidInput(
            f"the card lists {len(starts)} slots; profile {profile.code!r} has "
            f"{len(profile.slots)}",
            field="profile",
        )
    return place_from_starts(profile.code, profile.card_size, _layouts(profile, utilities), starts)


def list_profiles(session: Session, office_ids: Sequence[int] | None = None) -> list[Profile]:
    """All profiles, or those usable in the given offices (built-ins and theirs)."""
    rows = session.scalars(select(CardProfile).order_by(CardProfile.number)).all()
    return [
        Profile.of(r)
        for r in rows
        if office_ids is None or r.office_id is None or r.office_id in office_ids
    ]


def get_profile(session: Session, ref: str | int) -> Profile:
    column = CardProfile.number if isinstance(ref, int) else CardProfile.code
    row = session.scalar(select(CardProfile).where(column == ref))
    if row is None:
        known = ", ".join(p.code for p in list_profiles(session))
        raise NotFound(f"no card profile {ref!r} (known: {known})", field="profile")
    return Profile.of(row)


def create_profile(
    session: Session,
    utilities: UtilityRegistry,
    actor: Actor,
    *,
    code: str,
    names: Mapping[str, str],
    slots: Sequence[Mapping[str, Any] | str],
    card_size: str = "1k",
    office_id: int | None = None,
) -> Profile:
    """Define a profile; it must fit its card with the loaded plugins' slot layouts."""
    if not isinstance(code, str) or not _CODE.match(code):
        raise InvalidInput(
            "code must be 1-32 lower-case letters, digits, '-' or '_', starting with a letter",
            field="code",
        )
    if card_size not in ("1k", "4k"):
        raise InvalidInput(f"card_size must be '1k' or '4k', not {card_size!r}", field="card_size")
    if not names.get("zh-CN") and not names.get("en"):
        raise InvalidInput("a profile needs a name (zh-CN or en)", field="names")
    if session.scalar(select(CardProfile.id).where(CardProfile.code == code)) is not None:
        raise Conflict(f"card profile {code!r} exists already", field="code")
    parsed: list[dict[str, str]] = []
    for i, slot in enumerate(slots):
        entry = {"kind": slot} if isinstance(slot, str) else dict(slot)
        kind = entry.get("kind")
        if not isinstance(kind, str) or not kind:
            raise InvalidInput(f"slot {i + 1} needs a utility kind", field="slots")
        parsed.append({"kind": kind, "label": str(entry.get("label") or kind)})
    labels = [s["label"] for s in parsed]
    if len(set(labels)) != len(labels):
        for s in parsed:  # repeated kinds get numbered labels, as in the built-in 'eight'
            same = [p for p in parsed if p["kind"] == s["kind"]]
            if len(same) > 1 and s["label"] == s["kind"]:
                s["label"] = f"{s['kind']}.{same.index(s) + 1}"
        labels = [s["label"] for s in parsed]
        if len(set(labels)) != len(labels):
            raise InvalidInput("slot labels must be unique", field="slots")
    number = max(
        FIRST_OFFICE_NUMBER,
        (session.scalar(select(func.max(CardProfile.number))) or 0) + 1,
    )
    if number > 0xFFFF:
        raise Conflict("no profile numbers left", field="code")
    profile = Profile(
        number=number,
        code=code,
        names=dict(names),
        card_size=card_size,
        slots=tuple((s["kind"], s["label"]) for s in parsed),
        office_id=office_id,
        builtin=False,
    )
    card_map(profile, utilities)  # fits the card, or InvalidInput naming why
    row = CardProfile(
        number=number,
        code=code,
        names=dict(names),
        card_size=card_size,
        slots=parsed,
        office_id=office_id,
        builtin=False,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor,
        "card_profile.create",
        [f"card_profile:{code}"],
        detail={"slots": labels, "card_size": card_size},
        office_id=office_id,
    )
    return profile


@dataclass(frozen=True)
class ProfileCheck:
    usable: list[str]
    unavailable: dict[str, str]  # code -> why (a kind no loaded plugin provides)


def check_profiles(session: Session, utilities: UtilityRegistry) -> ProfileCheck:
    """The start-up check: every profile fits its card and no two slots overlap.

    A profile naming a kind that no loaded plugin provides is only unavailable (a plugin may be
    disabled on purpose); a profile that no longer fits its card is a :class:`PluginError`,
    because a plugin's slot layout grew under cards already defined.
    """
    usable, unavailable = [], {}
    for profile in list_profiles(session):
        missing = [k for k in profile.kinds() if k not in utilities]
        no_layout = [
            k
            for k in profile.kinds()
            if k in utilities and not isinstance(utilities.get(k).card_layout, SlotLayout)
        ]
        if missing or no_layout:
            unavailable[profile.code] = (
                f"kinds not loaded: {', '.join(missing)}"
                if missing
                else f"kinds without a SlotLayout card layout: {', '.join(no_layout)}"
            )
            continue
        try:
            card_map(profile, utilities)
        except InvalidInput as exc:
            raise PluginError(f"card profile {profile.code!r} does not fit: {exc.message}") from exc
        usable.append(profile.code)
    return ProfileCheck(usable, unavailable)
