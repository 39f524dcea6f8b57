"""Errors as JSON: ``{"error": code, "message": "...", "field": "..."}`` with a 4xx status."""

from __future__ import annotations

from typing import Any

from flask import Flask, g, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from onecard.errors import OnecardError


def _first_message(messages: Any, prefix: str = "") -> tuple[str, str]:
    """The first (field path, message) in marshmallow's nested error dict."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            return _first_message(value, path)
    if isinstance(messages, list) and messages:
        if all(isinstance(m, str) for m in messages):
            return prefix, " ".join(messages)
        return _first_message(messages[0], prefix)
    return prefix, str(messages)


def _rollback() -> None:
    db = g.pop("db", None)
    if db is not None:
        db.rollback()
        db.close()


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(OnecardError)
    def onecard_error(exc: OnecardError) -> ResponseReturnValue:
        _rollback()
        return jsonify(exc.to_dict()), exc.status

    @app.errorhandler(ValidationError)
    def validation_error(exc: ValidationError) -> ResponseReturnValue:
        _rollback()
        field, message = _first_message(exc.messages)
        if field == "_schema":
            field = ""
        body = {
            "error": "invalid_input",
            "message": f"{field}: {message}" if field else message,
            "field": field or None,
            "errors": exc.messages,
        }
        return jsonify(body), 422

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        _rollback()
        name = (exc.name or "error").lower().replace(" ", "_")
        return jsonify({"error": name, "message": exc.description}), exc.code or 500
