"""The gas slot of the one-card. Declared as data; the core encodes and decodes it.

Amounts are money (fen). A gas meter shuts its valve at exhaustion and never runs into overdraft,
so the slot has no overdraft parameter.
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
            {"name": "price", "offset": 14, "type": "uint", "length": 4, "scale": 2},
            {"name": "alarm1", "offset": 18, "type": "uint", "length": 4, "scale": 2},
            {"name": "alarm2", "offset": 22, "type": "uint", "length": 4, "scale": 2},
            ["time", 26, "time", 4],
            ["mac", 40, "bytes", 8],
        ],
    },
    "return": {
        "blocks": 2,
        "fields": [
            ["meter_serial", 0, "bcd", 6],
            ["last_seq", 6, "uint", 4],
            ["cumulative", 10, "uint", 4],  # 0.01 m³
            ["remaining", 14, "int", 4],  # fen
            ["status", 18, "uint", 1],
            ["time", 19, "time", 4],
            ["mac", 24, "bytes", 8],
        ],
    },
    "params": {
        "price": {"default": "2.61", "minimum": "0.01", "maximum": "1000", "unit": "yuan/m³"},
        "alarm1": {"default": "20", "maximum": "10000", "unit": "yuan"},
        "alarm2": {"default": "5", "maximum": "10000", "unit": "yuan"},
    },
}

LAYOUT = SlotLayout.from_dict(SLOT)
