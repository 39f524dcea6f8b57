"""Tariffs: versioned price documents, validated by the models plugins attach, and quoting.

The facade: :func:`add_version` stores a document, :func:`schedule` loads a tariff's versions,
:func:`quote_units`, :func:`quote_money` and :func:`quote_fixed` price against them, and
:mod:`onecard.tariffs.meters` finds a meter's tariff and position. Models live in plugins; the
arithmetic they share is in :mod:`onecard.pricing`.
"""

from onecard.tariffs.documents import (
    add_version,
    list_tariffs,
    read_file,
    schedule,
    schedule_from_documents,
    validate_document,
)
from onecard.tariffs.engine import (
    Position,
    Quote,
    Schedule,
    Version,
    quote_fixed,
    quote_money,
    quote_units,
)

__all__ = [
    "Position",
    "Quote",
    "Schedule",
    "Version",
    "add_version",
    "list_tariffs",
    "quote_fixed",
    "quote_money",
    "quote_units",
    "read_file",
    "schedule",
    "schedule_from_documents",
    "validate_document",
]
