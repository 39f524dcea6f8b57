"""The built-in ``sms`` channel and the generic HTTP SMS connector ``http``.

The channel sends the message's body (its subject when the body is empty) to a phone number through
the connector named by the setting ``sms_connector``. The ``http`` connector POSTs the request
body built from ``sms_template`` to ``sms_url``, with ``Authorization: Bearer <sms_token>``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from onecard.notify.registry import Message, NotifierRegistry, NotifyError, SmsConnector

if TYPE_CHECKING:
    from onecard.config import Settings

PHONE = re.compile(r"^\+?[0-9]{5,20}$")
PLACEHOLDER = re.compile(r"\{(phone|text)\}")
SNIPPET = 200  # characters of a gateway's answer quoted in an error


class SmsChannel:
    """The ``sms`` channel: a phone number and a text, handed to the configured connector."""

    name = "sms"

    def __init__(self, settings: Settings, connectors: NotifierRegistry) -> None:
        self.connector: SmsConnector = connectors.sms_connector(settings.sms_connector, settings)

    def send(self, message: Message) -> None:
        phone = re.sub(r"[\s-]", "", message.recipient)
        if not PHONE.match(phone):
            raise NotifyError(f"not a phone number: {message.recipient!r}", field="recipient")
        text = message.body.strip() or message.subject.strip()
        if not text:
            raise NotifyError("the message is empty", field="body")
        self.connector.send(phone, text)


def fill(template: Any, values: dict[str, str]) -> Any:
    """``template`` with ``{phone}`` and ``{text}`` replaced inside every string (keys too)."""
    if isinstance(template, str):
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    if isinstance(template, dict):
        return {fill(k, values): fill(v, values) for k, v in template.items()}
    return template


def parse_template(raw: str) -> dict[str, Any]:
    """The ``sms_template`` setting as a JSON object, or a :class:`NotifyError` naming it."""
    try:
        template = json.loads(raw)
    except ValueError as exc:
        raise NotifyError(f"sms_template is not valid JSON: {exc}", field="sms_template") from exc
    if not isinstance(template, dict):
        raise NotifyError("sms_template must be a JSON object", field="sms_template")
    return template


class HttpSmsConnector:
    """A generic HTTP SMS gateway: POST JSON or a form, bearer token, success by status (and an
    optional field of the JSON answer)."""

    name = "http"

    def __init__(self, settings: Settings) -> None:
        if not settings.sms_url:
            raise NotifyError("sms_url is not set: SMS cannot be sent", field="sms_url")
        parts = urllib.parse.urlsplit(settings.sms_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotifyError(
                f"sms_url must be an http:// or https:// URL, not {settings.sms_url!r}",
                field="sms_url",
            )
        self.url = settings.sms_url
        # shown in errors: no query string or user info, which may hold secrets
        self.shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        self.shown += parts.path
        self.token = settings.sms_token
        self.format = settings.sms_format
        self.template = parse_template(settings.sms_template)
        self.ok_field = settings.sms_ok_field
        self.ok_value = settings.sms_ok_value
        self.timeout = settings.notify_timeout
        if self.format == "form" and any(
            isinstance(v, dict | list) for v in self.template.values()
        ):
            raise NotifyError(
                "sms_template must be flat (no nested objects or lists) with sms_format = form",
                field="sms_template",
            )

    def request(self, phone: str, text: str) -> urllib.request.Request:
        """The HTTP request for one message."""
        body = fill(self.template, {"phone": phone, "text": text})
        headers = {"Accept": "application/json", "User-Agent": "onecard"}
        if self.format == "form":
            data = urllib.parse.urlencode(
                {k: "" if v is None else str(v) for k, v in body.items()}
            ).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        else:
            data = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return urllib.request.Request(self.url, data=data, headers=headers, method="POST")

    def send(self, phone: str, text: str) -> None:
        try:
            with urllib.request.urlopen(self.request(phone, text), timeout=self.timeout) as answer:
                status = answer.status
                raw = answer.read(64 * 1024)
        except urllib.error.HTTPError as exc:
            detail = _snippet(exc.read(SNIPPET * 4)) if exc.fp is not None else ""
            raise NotifyError(
                f"the SMS gateway {self.shown} answered HTTP {exc.code} {exc.reason}"
                + (f": {detail}" if detail else "")
            ) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._timeout() from exc
            raise NotifyError(f"cannot reach the SMS gateway {self.shown}: {exc.reason}") from exc
        except TimeoutError as exc:
            raise self._timeout() from exc
        except OSError as exc:
            raise NotifyError(f"the SMS gateway {self.shown} failed: {exc}") from exc
        if not 200 <= status < 300:
            raise NotifyError(f"the SMS gateway {self.shown} answered HTTP {status}")
        if self.ok_field:
            self._check_answer(raw)

    def _timeout(self) -> NotifyError:
        return NotifyError(f"the SMS gateway {self.shown} did not answer within {self.timeout:g} s")

    def _check_answer(self, raw: bytes) -> None:
        field = self.ok_field or ""
        try:
            value: Any = json.loads(raw)
        except ValueError:
            raise NotifyError(
                f"the SMS gateway {self.shown} did not answer JSON (needed for sms_ok_field "
                f"{field}): {_snippet(raw)}"
            ) from None
        for part in field.split("."):
            if not isinstance(value, dict) or part not in value:
                raise NotifyError(f"the SMS gateway's answer has no field {field}: {_snippet(raw)}")
            value = value[part]
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        if shown != self.ok_value:
            raise NotifyError(
                f"the SMS gateway refused the message: {field} is {shown!r}, not "
                f"{self.ok_value!r}: {_snippet(raw)}"
            )


def _snippet(raw: bytes) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text if len(text) <= SNIPPET else text[:SNIPPET] + "..."
