"""Receipts as PDF, and reprints (placeholder)."""

from __future__ import annotations

from onecard.console import kit

bp = kit.console_blueprint("receipts", __name__, "/console/receipts")
