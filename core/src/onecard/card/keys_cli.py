"""``onecard keys``: the site's master keys (init, rotate, list, status). Never prints key material.

Only key versions and key check values (KCVs) are printed; the key-encryption key (KEK) is read
from ``ONECARD_KEK`` or the KEK file (see :mod:`onecard.card.keys`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from onecard.audit import record
from onecard.card.keys import (
    NOT_INITIALISED,
    KeyStore,
    check_site_id,
    create_kek_file,
    kek_path,
    kek_source,
    load_kek,
)
from onecard.errors import Conflict, OnecardError

# onecard.cli imports this module, so the helpers of onecard.cli (state, actor, emit) are
# imported inside the commands.


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _short(value: str | None) -> str:
    """An ISO time as ``2025-03-01 08:30:00Z`` (UTC) for the text output."""
    if value is None:
        return "-"
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _kcv_text(kcvs: dict[str, str]) -> str:
    return ", ".join(f"{purpose} {value}" for purpose, value in sorted(kcvs.items()))


@click.group("keys")
def keys() -> None:
    """Site keys: the master keys every card's keys are derived from."""


@keys.command("init")
@click.option(
    "--site-id",
    type=int,
    required=True,
    help="This site's id (1 to 4294967295), written on every card it issues.",
)
@click.option("--name", default="", help="A name for this site.")
def keys_init(site_id: int, name: str) -> None:
    """Create the site's master keys (version 1).

    Without ONECARD_KEK and without a KEK file, a new KEK file is made first (mode 0600): back
    it up separately from the database.
    """
    from onecard.cli import actor, state

    st = state()
    settings = st.runtime().settings
    check_site_id(site_id)
    with st.session() as session:
        inst = KeyStore.installation(session)
        if inst is not None:
            raise Conflict(
                f"keys are initialised already (site id {inst.site_id}): "
                "use 'onecard keys rotate' for new keys",
                field="site_id",
            )
        created = None
        if kek_source(settings) is None:
            created = kek_path(settings)
            create_kek_file(created)
        store = KeyStore(load_kek(settings))
        version = store.init_site(session, site_id, name)
        kcvs = store.kcvs(session, version)
        record(
            session,
            actor(),
            "keys.init",
            [f"site:{site_id}", f"site_keys:v{version}"],
            detail={"site_id": site_id, "version": version, "kcv": kcvs},
        )
    if created is not None:
        click.echo(
            f"created the key-encryption key file {created} (mode 0600): back it up now, "
            "separately from the database; without it the site keys cannot be opened"
        )
    click.echo(f"site {site_id} initialised: key version {version}, check values {_kcv_text(kcvs)}")


@keys.command("rotate")
def keys_rotate() -> None:
    """Make a new version of the master keys.

    Cards are re-keyed to it at their next visit; older versions stay readable until then.
    """
    from onecard.cli import actor, state

    st = state()
    settings = st.runtime().settings
    with st.session() as session:
        site_id = KeyStore.site_id(session)
        store = KeyStore(load_kek(settings))
        version = store.rotate(session)
        kcvs = store.kcvs(session, version)
        record(
            session,
            actor(),
            "keys.rotate",
            [f"site:{site_id}", f"site_keys:v{version}"],
            detail={"site_id": site_id, "version": version, "kcv": kcvs},
        )
    click.echo(
        f"site keys rotated to version {version}, check values {_kcv_text(kcvs)}; "
        "cards are re-keyed at their next visit, older versions stay readable until then"
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(as_json: bool) -> None:
    """List the key versions and their check values.

    Shows no key material: only versions, purposes, key check values (KCV) and times.
    """
    from onecard.cli import emit, state

    with state().session() as session:
        KeyStore.site_id(session)
        rows = [
            {**r, "created_at": _iso(r["created_at"]), "retired_at": _iso(r["retired_at"])}
            for r in KeyStore.versions(session)
        ]

    def text(items: list[dict[str, Any]]) -> str:
        lines = [f"{'version':<8} {'purpose':<8} {'kcv':<7} {'created':<21} retired"]
        lines.extend(
            f"{r['version']:<8} {r['purpose']:<8} {r['kcv']:<7} {_short(r['created_at']):<21} "
            f"{_short(r['retired_at'])}"
            for r in items
        )
        return "\n".join(lines)

    emit(rows, as_json, text)


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_status(as_json: bool) -> None:
    """Show the site id, key version and KEK.

    Where the key-encryption key comes from (ONECARD_KEK or the KEK file) and whether it opens
    the site keys.
    """
    from onecard.cli import emit, state

    st = state()
    settings = st.runtime().settings
    source = kek_source(settings)
    with st.session() as session:
        inst = KeyStore.installation(session)
        out: dict[str, Any] = {
            "initialised": inst is not None,
            "site_id": inst.site_id if inst is not None else None,
            "name": inst.name if inst is not None else None,
            "current_version": KeyStore.current_version(session) if inst is not None else None,
            "kek_source": source,
            "kek_path": str(kek_path(settings)) if source == "file" else None,
            "kek_opens_keys": None,
            "problem": None,
        }
        if inst is None:
            out["problem"] = NOT_INITIALISED
        elif source is None:
            out["kek_opens_keys"] = False
            out["problem"] = "no key-encryption key: set ONECARD_KEK or restore the kek file"
        else:
            try:
                KeyStore(load_kek(settings)).check(session)
                out["kek_opens_keys"] = True
            except OnecardError as exc:
                out["kek_opens_keys"] = False
                out["problem"] = exc.message

    def text(o: dict[str, Any]) -> str:
        kek = {"env": "ONECARD_KEK", "file": f"file {o['kek_path']}", None: "none"}[o["kek_source"]]
        if not o["initialised"]:
            return f"{o['problem']}\nkey-encryption key: {kek}"
        lines = [
            f"site {o['site_id']}" + (f" ({o['name']})" if o["name"] else ""),
            f"current key version: {o['current_version']}",
            f"key-encryption key: {kek}" + (", opens the site keys" if o["kek_opens_keys"] else ""),
        ]
        if o["problem"]:
            lines.append(f"problem: {o['problem']}")
        return "\n".join(lines)

    emit(out, as_json, text)
