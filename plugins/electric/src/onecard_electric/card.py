"""The electric slot of the one-card: what the office writes and what the meter writes back.

Declared as data; the core encodes and decodes it. Amounts are money (fen); the meter converts at
the price carried with each purchase.
"""

from __future__ import annotations

from onecard.card.layout import SlotLayout

SLOT = {
    "amount": "money",
    "purchase": {
        "blocks": 3,
        "fields": [
            ["meter_serial", 0, "bcd", 6],
            ["seq", 6, "uint", 4],
            ["amount", 10, "uint", 4],  # fen
            {"name": "price", "offset": 14, "type": "uint", "length": 4, "scale": 4},
            {"name": "alarm1", "offset": 18, "type": "uint", "length": 4, "scale": 2},
            {"name": "alarm2", "offset": 22, "type": "uint", "length": 4, "scale": 2},
            {"name": "overdraft", "offset": 26, "type": "uint", "length": 4, "scale": 2},
            {"name": "max_load", "offset": 30, "type": "uint", "length": 2, "scale": 1},
            ["time", 32, "time", 4],
            ["mac", 40, "bytes", 8],
        ],
    },
    "return": {
        "blocks": 2,
        "fields": [
            ["meter_serial", 0, "bcd", 6],
            ["last_seq", 6, "uint", 4],
            ["cumulative", 10, "uint", 4],  # 0.01 kWh
            ["remaining", 14, "int", 4],  # fen, negative in overdraft
            ["status", 18, "uint", 1],
            {"name": "peak_power", "offset": 19, "type": "uint", "length": 1, "scale": 1},  # kW
            ["time", 20, "time", 4],
            ["mac", 24, "bytes", 8],
        ],
    },
    "params": {
        "price": {"default": "0.5483", "minimum": "0.0001", "maximum": "100", "unit": "yuan/kWh"},
        "alarm1": {"default": "20", "maximum": "10000", "unit": "yuan"},
        "alarm2": {"default": "5", "maximum": "10000", "unit": "yuan"},
        "overdraft": {"default": "0", "maximum": "1000", "unit": "yuan"},
        "max_load": {"default": "10", "minimum": "0.1", "maximum": "6553.5", "unit": "kW"},
    },
}

LAYOUT = SlotLayout.from_dict(SLOT)
