"""Errors that onecard raises on purpose.

Every error carries a machine-readable ``code``, a human ``message`` and, where the problem lies
in one input field, the name of that ``field``. The web layer turns them into JSON 4xx answers and
the command line into a message and a non-zero exit.
"""

from __future__ import annotations

from typing import Any


class OnecardError(Exception):
    """Base class: an error the user can act on."""

    status = 400
    code = "error"

    def __init__(self, message: str, *, field: str | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.detail:
            body["detail"] = self.detail
        return body


class InvalidInput(OnecardError):
    """An input value is malformed or out of range."""

    status = 422
    code = "invalid_input"


class NotFound(OnecardError):
    """A referenced object does not exist."""

    status = 404
    code = "not_found"


class Conflict(OnecardError):
    """The request conflicts with what is stored (a duplicate, a state that forbids it)."""

    status = 409
    code = "conflict"


class PermissionDenied(OnecardError):
    """The operator lacks the permission or the office scope for this action."""

    status = 403
    code = "permission_denied"


class AuthenticationFailed(OnecardError):
    """Login failed, the account is locked, or no operator is logged in."""

    status = 401
    code = "authentication_failed"


class PluginError(OnecardError):
    """A plugin could not be loaded or registered something invalid."""

    status = 500
    code = "plugin_error"


# Ledger errors ----------------------------------------------------------------------------------


class LedgerError(OnecardError):
    """Base class for refusals of the ledger."""

    code = "ledger_error"


class UnbalancedTransaction(LedgerError):
    """The postings of a transaction do not sum to zero."""

    status = 422
    code = "unbalanced_transaction"


class UnknownAccount(LedgerError):
    """A posting names a ledger account that does not exist."""

    status = 404
    code = "unknown_account"


class InsufficientFunds(LedgerError):
    """The transaction would take an account below its allowed limit."""

    status = 409
    code = "insufficient_funds"


class IdempotencyConflict(LedgerError):
    """An idempotency key was reused for a different request."""

    status = 409
    code = "idempotency_conflict"


class AlreadyReversed(LedgerError):
    """The transaction has been reversed already."""

    status = 409
    code = "already_reversed"


# Card errors ------------------------------------------------------------------------------------


class CardError(OnecardError):
    """Base class: the card or the reader refused, or the card is not what it must be."""

    status = 409
    code = "card_error"


class NoReader(CardError):
    """No card reader (or not the named one) is connected."""

    status = 503
    code = "no_reader"


class NoCard(CardError):
    """The reader is there but holds no card."""

    code = "no_card"


class CardRemoved(CardError):
    """The card left the reader during an operation; what was written is not known."""

    code = "card_removed"


class ReaderError(CardError):
    """The reader answered an APDU with an unexpected status word."""

    code = "reader_error"


class WrongKey(CardError):
    """The card refused authentication: its keys are not the ones this site derives for it."""

    code = "wrong_key"


class NotOurCard(CardError):
    """The card carries no onecard header (blank, or another system's card)."""

    code = "not_our_card"


class ForeignSiteCard(CardError):
    """The card was issued by another onecard site."""

    code = "foreign_site"


class CardTampered(CardError):
    """A record's MAC does not match: the card was edited, cloned to another UID, or forged."""

    code = "card_tampered"


class CardRefused(CardError):
    """The card is known but may not be used (lost, blacklisted, retired, wrong type)."""

    code = "card_refused"
