"""Build and check the console's Chinese catalog: ``python -m onecard.console.catalog [--check]``.

Translations are kept in parts, one ``.po`` file per console area under
``translations/zh/parts/``; this merges them into ``translations/zh/LC_MESSAGES/messages.po``
and compiles ``messages.mo`` (both shipped in the package). ``--check`` changes nothing and fails
when a message of the code or templates has no translation, or the built files are stale.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).parent
PARTS = HERE / "translations" / "zh" / "parts"
OUT = HERE / "translations" / "zh" / "LC_MESSAGES"
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2.ext:babel_extract")]
KEYWORDS = {
    "_": None,
    "_l": None,
    "N_": None,
    "gettext": None,
    "lazy_gettext": None,
    "ngettext": (1, 2),
}


def extracted() -> dict[str, list[str]]:
    """Every message id in the console's code and templates, with where it is used."""
    found: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(HERE),
        METHODS,
        keywords=KEYWORDS,
        options_map={"templates/**.html": {"trimmed": "true"}},
    ):
        ids = message if isinstance(message, tuple) else (message,)
        for msgid in ids:
            if msgid:
                found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


def merged() -> Catalog:
    """The parts as one catalog; a message translated twice must read the same in each part."""
    # a fixed date: the compiled catalog's header must not change with the clock (--check)
    catalog = Catalog(
        locale="zh_CN",
        project="onecard",
        charset="utf-8",
        creation_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    catalog.fuzzy = False
    seen: dict[str, tuple[str, str]] = {}
    for part in sorted(PARTS.glob("*.po")):
        with part.open("rb") as fh:
            for message in read_po(fh, locale="zh_CN"):
                if not message.id:
                    continue
                key = message.id if isinstance(message.id, str) else message.id[0]
                string = message.string or ""
                text = string if isinstance(string, str) else string[0]
                if key in seen and seen[key][1] != text:
                    raise SystemExit(
                        f"{part.name}: {key!r} is translated differently in {seen[key][0]}"
                    )
                seen[key] = (part.name, text)
                if catalog.get(message.id) is None:
                    catalog.add(message.id, message.string)
    return catalog


def render(catalog: Catalog) -> tuple[bytes, bytes]:
    po, mo = io.BytesIO(), io.BytesIO()
    write_po(po, catalog, omit_header=True, sort_output=True, width=100)
    write_mo(mo, catalog)
    return po.getvalue(), mo.getvalue()


def problems() -> list[str]:
    """What is untranslated or stale (empty when all is well)."""
    catalog = merged()
    out = []
    for msgid, where in sorted(extracted().items()):
        found = catalog.get(msgid)
        if found is None or not found.string:
            out.append(f"no Chinese for {msgid!r} (used at {', '.join(where[:2])})")
    po, mo = render(catalog)
    for name, data in (("messages.po", po), ("messages.mo", mo)):
        path = OUT / name
        if not path.exists() or path.read_bytes() != data:
            out.append(f"{name} is stale: run python -m onecard.console.catalog (make i18n)")
    return out


def build() -> None:
    po, mo = render(merged())
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "messages.po").write_bytes(po)
    (OUT / "messages.mo").write_bytes(mo)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--check" not in args:
        build()
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
