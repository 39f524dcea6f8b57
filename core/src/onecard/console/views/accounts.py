"""Account changes: transfer, replace a meter, suspend and resume, close (placeholder)."""

from __future__ import annotations

from onecard.console import kit

bp = kit.console_blueprint("accounts", __name__, "/console/customers")
