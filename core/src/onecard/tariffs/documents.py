"""Tariff documents: the envelope every tariff shares, validation, versions, and loading files.

A tariff document names its utility ``kind``, its ``name`` (meters refer to it by name), its
``model`` (a tariff model the kind's plugin attached), when it takes effect, its time zone, and
either one ``body`` for every customer category or ``categories`` with a body per category. The
model validates the body. Every accepted document is a new version; nothing is ever overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from marshmallow import Schema, ValidationError, fields, validates
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from onecard.audit import Actor, record
from onecard.errors import InvalidInput, NotFound, OnecardError
from onecard.models import Tariff, utcnow
from onecard.tariffs.engine import Schedule, Version
from onecard.tariffs.fields import load
from onecard.utility import UtilityRegistry

DEFAULT_TIMEZONE = "Asia/Shanghai"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_CATEGORY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class EnvelopeSchema(Schema):
    kind = fields.String(required=True)
    name = fields.String(required=True)
    model = fields.String(required=True)
    effective_from = fields.Raw(required=True)
    timezone = fields.String(load_default=DEFAULT_TIMEZONE)
    title = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    note = fields.String(load_default="")
    body = fields.Dict(load_default=None, allow_none=True)
    categories = fields.Dict(keys=fields.String(), values=fields.Raw(), load_default=None)

    @validates("name")
    def _name(self, value: str, **_: Any) -> None:
        if not _NAME.match(value):
            raise ValidationError(
                "must be 1 to 64 lower-case letters, digits, '.', '_' or '-', like 'residential'"
            )

    @validates("timezone")
    def _timezone(self, value: str, **_: Any) -> None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"unknown time zone {value!r}") from None

    @validates("note")
    def _note(self, value: str, **_: Any) -> None:
        if len(value) > 500:
            raise ValidationError("must be at most 500 characters")


def parse_time(value: Any, tz: ZoneInfo, field: str) -> dt.datetime:
    """An ISO time (a date means its midnight); without an offset it is read in ``tz``."""
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime.combine(value, dt.time(0))
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(
                f"{field}: {value!r} is not a time like 2026-12-01T00:00:00+08:00", field=field
            ) from None
    else:
        raise InvalidInput(f"{field}: must be a time like 2026-12-01T00:00:00+08:00", field=field)
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.astimezone(dt.UTC)


def validate_document(utilities: UtilityRegistry, raw: Any) -> dict[str, Any]:
    """Check a whole document; return it normalised (JSON-able, bodies as the model keeps them)."""
    doc = load(EnvelopeSchema(), raw)
    kind = utilities.get(doc["kind"])  # NotFound(field="kind") for an unknown kind
    if doc["model"] not in kind.tariffs:
        known = ", ".join(kind.tariffs.names()) or "none"
        raise InvalidInput(
            f"model: {kind.code} has no tariff model {doc['model']!r} (known: {known})",
            field="model",
        )
    model = kind.tariffs.get(doc["model"])
    tz = ZoneInfo(doc["timezone"])
    when = parse_time(doc["effective_from"], tz, "effective_from")
    if (doc["body"] is None) == (doc["categories"] is None):
        raise InvalidInput(
            "body: give either body (one price table) or categories (one per customer category)",
            field="body",
        )
    out: dict[str, Any] = {
        "kind": kind.code,
        "name": doc["name"],
        "model": model.name,
        "effective_from": when.isoformat(),
        "timezone": doc["timezone"],
        "title": doc["title"],
        "note": doc["note"],
    }
    if doc["body"] is not None:
        out["body"] = _body(model, doc["body"], "body")
    else:
        if not doc["categories"]:
            raise InvalidInput("categories: name at least one category", field="categories")
        cats = {}
        for cat, body in doc["categories"].items():
            if not _CATEGORY.match(cat):
                raise InvalidInput(
                    f"categories.{cat}: a category is lower-case letters, digits and _",
                    field=f"categories.{cat}",
                )
            cats[cat] = _body(model, body, f"categories.{cat}")
        out["categories"] = cats
    return out


def _body(model: Any, body: Any, path: str) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidInput(f"{path}: must be a mapping of the model's fields", field=path)
    try:
        normalised: dict[str, Any] = model.validate(body)
    except OnecardError as exc:
        # the model names fields inside the body; put the body's path in front
        inner = exc.field or ""
        where = f"{path}.{inner}" if inner else path
        message = exc.message
        if inner and message.startswith(inner):
            message = message[len(inner) :].lstrip(": ")
        raise InvalidInput(f"{where}: {message}", field=where) from None
    return normalised


def read_file(path: str | Path) -> Any:
    """A tariff document from a YAML or JSON file (JSON is YAML, but a ``.json`` file is read as
    JSON so its errors say so)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"file: cannot read {p}: {exc.strerror}", field="file") from None
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(
            f"file: {p} is not valid {p.suffix.lstrip('.') or 'YAML'}: {exc}", field="file"
        ) from None


def add_version(
    session: Session,
    actor: Actor,
    utilities: UtilityRegistry,
    raw: Any,
    *,
    allow_past: bool = False,
    now: dt.datetime | None = None,
) -> Tariff:
    """Validate a document and store it as the next version of its tariff (the caller commits).

    The first version of a tariff may take effect at any time. A later one must not take effect
    in the past (prices already charged stay as they were), unless ``allow_past``.
    """
    doc = validate_document(utilities, raw)
    when = dt.datetime.fromisoformat(doc["effective_from"])
    latest = session.scalar(
        select(func.max(Tariff.version)).where(
            Tariff.kind == doc["kind"], Tariff.name == doc["name"]
        )
    )
    now = now or utcnow()
    if latest and when < now and not allow_past:
        raise InvalidInput(
            f"effective_from: {when.isoformat()} is in the past; a price change takes effect now "
            "or later (prices already charged stay as they were)",
            field="effective_from",
        )
    row = Tariff(
        kind=doc["kind"],
        name=doc["name"],
        version=(latest or 0) + 1,
        model=doc["model"],
        effective_from=when,
        document=doc,
        note=doc["note"],
        created_by_id=actor.operator_id,
    )
    session.add(row)
    session.flush()
    record(
        session,
        actor,
        "tariff.version",
        [f"tariff:{row.kind}/{row.name}/v{row.version}"],
        detail={"model": row.model, "effective_from": when.isoformat(), "note": row.note},
    )
    return row


def list_tariffs(session: Session, kind: str | None = None) -> list[Tariff]:
    q = select(Tariff).order_by(Tariff.kind, Tariff.name, Tariff.version)
    if kind:
        q = q.where(Tariff.kind == kind)
    return list(session.scalars(q))


def tariff_names(session: Session, kind: str) -> list[str]:
    return list(
        session.scalars(
            select(Tariff.name).where(Tariff.kind == kind).distinct().order_by(Tariff.name)
        )
    )


_compiled: dict[tuple[Any, ...], Version] = {}


def compile_version(utilities: UtilityRegistry, row: Tariff) -> Version:
    """A stored version, compiled once per process (versions never change).

    The cache key is the row's identity with its creation time, so two databases served by one
    process (tests, several instances) never share a compiled version."""
    key = (id(utilities), row.id, row.kind, row.name, row.version, row.created_at)
    if row.id is not None and row.id > 0 and key in _compiled:
        return _compiled[key]
    kind = utilities.get(row.kind)
    if row.model not in kind.tariffs:
        raise NotFound(
            f"tariff {row.kind}/{row.name} v{row.version} uses model {row.model!r}, which no "
            "loaded plugin provides",
            field="model",
        )
    model = kind.tariffs.get(row.model)
    doc = row.document
    if "categories" in doc:
        bodies: dict[str | None, Any] = {c: model.compile(b) for c, b in doc["categories"].items()}
    else:
        bodies = {None: model.compile(doc["body"])}
    version = Version(
        kind=row.kind,
        name=row.name,
        version=row.version,
        model=model,
        effective_from=row.effective_from,
        tz=ZoneInfo(doc.get("timezone", DEFAULT_TIMEZONE)),
        bodies=bodies,
        document=doc,
        id=row.id,
    )
    if row.id is not None and row.id > 0:
        _compiled[key] = version
    return version


def schedule(session: Session, utilities: UtilityRegistry, kind: str, name: str) -> Schedule:
    """Every version of tariff ``kind``/``name``, compiled, ready to quote."""
    rows = list(
        session.scalars(
            select(Tariff).where(Tariff.kind == kind, Tariff.name == name).order_by(Tariff.version)
        )
    )
    if not rows:
        known = ", ".join(tariff_names(session, kind)) or "none"
        raise NotFound(f"{kind} has no tariff {name!r} (known: {known})", field="tariff")
    return Schedule(
        kind=utilities.get(kind),
        name=name,
        versions=[compile_version(utilities, r) for r in rows],
    )


def schedule_from_documents(utilities: UtilityRegistry, documents: list[Any]) -> Schedule:
    """A schedule from documents not stored (tests, benchmarks, ``tariff quote --file``)."""
    versions = []
    for i, raw in enumerate(documents, start=1):
        doc = validate_document(utilities, raw)
        row = Tariff(
            id=-i,
            kind=doc["kind"],
            name=doc["name"],
            version=i,
            model=doc["model"],
            effective_from=dt.datetime.fromisoformat(doc["effective_from"]),
            document=doc,
        )
        versions.append(compile_version(utilities, row))
    names = {(v.kind, v.name) for v in versions}
    if len(names) != 1:
        raise InvalidInput(
            "documents: all versions must be of one kind and name", field="documents"
        )
    kind, name = names.pop()
    return Schedule(kind=utilities.get(kind), name=name, versions=versions)


def describe_versions(
    session: Session,
    utilities: UtilityRegistry,
    rows: list[Tariff],
    *,
    now: dt.datetime | None = None,
    documents: bool = False,
) -> list[dict[str, Any]]:
    """Versions as plain data, each marked ``in force``, ``scheduled`` or ``past`` at ``now``."""
    now = now or utcnow()
    current: dict[tuple[str, str], int | None] = {}
    out = []
    for row in rows:
        key = (row.kind, row.name)
        if key not in current:
            try:
                current[key] = schedule(session, utilities, row.kind, row.name).at(now).version
            except NotFound:
                current[key] = None
        if row.version == current[key]:
            state = "in force"
        else:
            state = "scheduled" if row.effective_from > now else "past"
        item: dict[str, Any] = {
            "kind": row.kind,
            "name": row.name,
            "version": row.version,
            "model": row.model,
            "effective_from": row.effective_from.isoformat(),
            "note": row.note,
            "state": state,
        }
        if documents:
            item["document"] = row.document
        out.append(item)
    return out
