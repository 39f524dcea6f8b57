"""The heat slot of the one-card. Declared as data; the core encodes and decodes it.

Heat is bought as a volume of heat: the purchase carries units (0.001 GJ), and alarm levels and
overdraft are in GJ. The basic fee by heated area is billed at the office, not on the card.
The meter reports supply and return water temperatures and the water volume that flowed (m³)
with its use, so its return record takes three blocks.
"""

from __future__ import annotations

from onecard.card.layout import SlotLayout

SLOT = {
    "amount": "units",
    "purchase": {
        "blocks": 3,
        "fields": [
            ["meter_serial", 0, "bcd", 6],
            ["seq", 6, "uint", 4],
            ["amount", 10, "uint", 4],  # 0.001 GJ
            {"name": "price", "offset": 14, "type": "uint", "length": 4, "scale": 2},
            {"name": "alarm1", "offset": 18, "type": "uint", "length": 4, "scale": 3},
            {"name": "alarm2", "offset": 22, "type": "uint", "length": 4, "scale": 3},
            {"name": "overdraft", "offset": 26, "type": "uint", "length": 4, "scale": 3},
            ["time", 30, "time", 4],
            ["mac", 40, "bytes", 8],
        ],
    },
    "return": {
        "blocks": 3,
        "fields": [
            ["meter_serial", 0, "bcd", 6],
            ["last_seq", 6, "uint", 4],
            ["cumulative", 10, "uint", 4],  # 0.001 GJ
            ["remaining", 14, "int", 4],  # 0.001 GJ
            ["status", 18, "uint", 1],
            {"name": "supply_temp", "offset": 19, "type": "int", "length": 2, "scale": 1},
            {"name": "return_temp", "offset": 21, "type": "int", "length": 2, "scale": 1},
            {"name": "flow_volume", "offset": 23, "type": "uint", "length": 4, "scale": 2},
            ["time", 27, "time", 4],
            ["mac", 40, "bytes", 8],
        ],
    },
    "params": {
        "price": {"default": "38.00", "minimum": "0.01", "maximum": "1000", "unit": "yuan/GJ"},
        "alarm1": {"default": "1", "maximum": "1000", "unit": "GJ"},
        "alarm2": {"default": "0.2", "maximum": "1000", "unit": "GJ"},
        "overdraft": {"default": "0", "maximum": "100", "unit": "GJ"},
    },
}

LAYOUT = SlotLayout.from_dict(SLOT)
