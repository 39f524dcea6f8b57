"""The water slot of the one-card (cold, hot, recycled and purified water share one layout).

Declared as data; the core encodes and decodes it. Amounts are money (fen). A water meter closes
its valve when credit runs out: the return record's relay flag means "valve closed".
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
            {"name": "overdraft", "offset": 26, "type": "uint", "length": 4, "scale": 2},
            ["time", 30, "time", 4],
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
}

#: Default card meter parameters per water kind (price in yuan/m³, alarms and overdraft in yuan).
DEFAULTS = {
    "water.cold": "3.45",
    "water.hot": "25.00",
    "water.recycled": "1.00",
    "water.purified": "8.00",
}


def layout(kind: str) -> SlotLayout:
    spec = dict(SLOT)
    spec["params"] = {
        "price": {
            "default": DEFAULTS[kind],
            "minimum": "0.01",
            "maximum": "1000",
            "unit": "yuan/m³",
        },
        "alarm1": {"default": "20", "maximum": "10000", "unit": "yuan"},
        "alarm2": {"default": "5", "maximum": "10000", "unit": "yuan"},
        "overdraft": {"default": "0", "maximum": "1000", "unit": "yuan"},
    }
    return SlotLayout.from_dict(spec)
