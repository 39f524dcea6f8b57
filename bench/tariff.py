"""Quotes per second for the tiered time-of-use electricity model, against a closed-form baseline.

What it measures
----------------
One tiered time-of-use document: an annual ladder of three tiers, each with prices for four bands
(sharp, peak, flat, valley) over a day of eight windows. The same random requests (a position in
the year's ladder, a quantity that often crosses a tier, a time of day) are priced two ways in the
same run:

engine
    ``onecard.tariffs.quote_units`` on the schedule the core compiles from the document, through
    the electric plugin's ``tiered_tou`` model: the version in force, the ladder period, the
    itemized lines (tier x band), one rounding.
baseline
    a minimal closed-form function written for this one tariff: the band looked up in a table of
    the 1,440 minutes of the day, the tier walk, ``sum(quantity x price)``, one rounding.

Three request shapes are timed, and the engine's and baseline's answers must agree to the fen on
every request (the benchmark fails otherwise):

point
    units -> money at one instant (the counter's quote)
day
    units -> money spread evenly over 24 hours from the instant (the quantity shared among the
    bands by their hours)
money
    money -> units at one instant (how many kWh does 100 yuan buy); the baseline inverts its
    closed form tier by tier, the engine searches with its own monotone price function

Run
---
    .venv/bin/python bench/tariff.py            # about 15 s
    .venv/bin/python bench/tariff.py --quick    # a smoke run, about 3 s

The last line is ``RESULT name=value ...``: the quote rates of both paths and their ratios
(engine / baseline; 1.0 would mean the engine costs nothing over the bare arithmetic).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from collections.abc import Callable, Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

import onecard_electric
from onecard.plugins import load_plugins
from onecard.tariffs import Position, quote_money, quote_units, schedule_from_documents

TZ = dt.timezone(dt.timedelta(hours=8))
WINDOWS = {
    "valley": ["23:00-07:00"],
    "flat": ["07:00-08:00", "11:00-13:00", "22:00-23:00"],
    "peak": ["08:00-11:00", "13:00-19:00", "21:00-22:00"],
    "sharp": ["19:00-21:00"],
}
TIERS: list[tuple[Decimal | None, dict[str, Decimal]]] = [
    (
        Decimal(2880),
        {
            "sharp": Decimal("1.0983"),
            "peak": Decimal("0.8983"),
            "flat": Decimal("0.5883"),
            "valley": Decimal("0.2983"),
        },
    ),
    (
        Decimal(4800),
        {
            "sharp": Decimal("1.1483"),
            "peak": Decimal("0.9483"),
            "flat": Decimal("0.6383"),
            "valley": Decimal("0.3483"),
        },
    ),
    (
        None,
        {
            "sharp": Decimal("1.3983"),
            "peak": Decimal("1.1983"),
            "flat": Decimal("0.8883"),
            "valley": Decimal("0.5983"),
        },
    ),
]
DOCUMENT: dict[str, Any] = {
    "kind": "electric",
    "name": "bench",
    "model": "tiered_tou",
    "effective_from": "2020-01-01T00:00:00+08:00",
    "body": {
        "reset": "annual",
        "bands": {b: {} for b in WINDOWS},
        "timetables": [{"windows": WINDOWS}],
        "tiers": [
            {
                "upto": None if upto is None else str(upto),
                "prices": {b: str(p) for b, p in prices.items()},
            }
            for upto, prices in TIERS
        ],
    },
}
HUNDREDTH = Decimal("0.01")


# The baseline: closed form for this one tariff --------------------------------------------------


def _minutes(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


BAND_AT: list[str] = [""] * 1440
for _band, _spans in WINDOWS.items():
    for _span in _spans:
        _a, _b = (_minutes(x) for x in _span.split("-"))
        _m = _a
        while _m != _b:
            BAND_AT[_m] = _band
            _m = (_m + 1) % 1440
DAY_SHARE = {b: Decimal(BAND_AT.count(b)) / 1440 for b in WINDOWS}
DAY_PRICE = [sum(DAY_SHARE[b] * prices[b] for b in WINDOWS) for _, prices in TIERS]


def baseline_point(used: Decimal, quantity: Decimal, at: dt.datetime) -> int:
    band = BAND_AT[at.hour * 60 + at.minute]
    total = Decimal(0)
    lower = Decimal(0)
    for upto, prices in TIERS:
        hi = upto if upto is not None else used + quantity
        take = min(hi, used + quantity) - max(lower, used)
        if take > 0:
            total += take * prices[band]
        if upto is not None:
            lower = upto
    return int(total.quantize(HUNDREDTH, ROUND_HALF_UP) * 100)


def baseline_day(used: Decimal, quantity: Decimal) -> int:
    total = Decimal(0)
    lower = Decimal(0)
    for i, (upto, _) in enumerate(TIERS):
        hi = upto if upto is not None else used + quantity
        take = min(hi, used + quantity) - max(lower, used)
        if take > 0:
            total += take * DAY_PRICE[i]
        if upto is not None:
            lower = upto
    return int(total.quantize(HUNDREDTH, ROUND_HALF_UP) * 100)


def baseline_money(used: Decimal, fen: int, at: dt.datetime) -> int:
    """Most 0.01 kWh whose rounded price ``fen`` covers: invert tier by tier, then adjust."""
    band = BAND_AT[at.hour * 60 + at.minute]
    budget = Decimal(fen) / 100 + Decimal("0.005")  # what rounds half-up to at most fen
    quantity = Decimal(0)
    position = used
    lower = Decimal(0)
    for upto, prices in TIERS:
        price = prices[band]
        if upto is not None and position >= upto:
            lower = upto
            continue
        room = None if upto is None else upto - max(position, lower)
        cost = None if room is None else room * price
        if cost is not None and cost < budget:
            budget -= cost
            quantity += room  # type: ignore[operator]
            position = upto  # type: ignore[assignment]
            lower = upto  # type: ignore[assignment]
            continue
        quantity += (budget / price).quantize(HUNDREDTH, ROUND_FLOOR)
        break
    units = int(quantity * 100)
    # the half-fen edge: the exact cost must round to at most fen
    while baseline_point(used, Decimal(units) / 100, at) > fen:
        units -= 1
    return units


# The run ----------------------------------------------------------------------------------------


def requests(n: int, seed: int) -> list[tuple[int, int, dt.datetime, int]]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        used = rnd.choice(
            [
                0,
                rnd.randrange(0, 600000),
                rnd.randrange(250000, 300000),
                rnd.randrange(460000, 500000),
            ]
        )
        units = rnd.randrange(1, 60000)
        at = dt.datetime(
            2026,
            rnd.randrange(1, 13),
            rnd.randrange(1, 29),
            rnd.randrange(24),
            rnd.randrange(60),
            tzinfo=TZ,
        )
        fen = rnd.randrange(100, 50000)
        out.append((used, units, at, fen))
    return out


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        fn()
        done += 1
    return done / (time.perf_counter() - start), done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="per path and request shape")
    parser.add_argument("--requests", type=int, default=2000, help="distinct random requests")
    parser.add_argument("--quick", action="store_true", help="0.4 s per path and shape")
    args = parser.parse_args(argv)
    seconds = 0.4 if args.quick else args.seconds
    schedule = schedule_from_documents(load_plugins([onecard_electric]).utilities, [DOCUMENT])
    reqs = requests(args.requests, seed=7)

    # the two paths must agree on every request before anything is timed
    for used, units, at, fen in reqs:
        pos = Position(used=used)
        u, q = Decimal(used) / 100, Decimal(units) / 100
        e = quote_units(schedule, units=units, at=at, position=pos).amount
        assert e == baseline_point(u, q, at), ("point", used, units, at, e)
        e = quote_units(schedule, units=units, at=at, until=at + dt.timedelta(days=1), position=pos)
        if e.period and e.period[1] > at + dt.timedelta(days=1):  # no year end inside the day
            assert e.amount == baseline_day(u, q), ("day", used, units, at, e.amount)
        m = quote_money(schedule, amount=fen, at=at, position=pos).units
        assert m == baseline_money(u, fen, at), ("money", used, fen, at, m)
    print(f"{len(reqs)} requests: engine and baseline agree to the fen on every shape", flush=True)

    def cycle(fn: Callable[[tuple[int, int, dt.datetime, int]], object]) -> Callable[[], object]:
        it = iter(())  # type: ignore[var-annotated]

        def step() -> object:
            nonlocal it
            try:
                r = next(it)
            except StopIteration:
                it = iter(reqs)
                r = next(it)
            return fn(r)

        return step

    shapes: dict[str, tuple[Callable[..., object], Callable[..., object]]] = {
        "point": (
            lambda r: quote_units(schedule, units=r[1], at=r[2], position=Position(used=r[0])),
            lambda r: baseline_point(Decimal(r[0]) / 100, Decimal(r[1]) / 100, r[2]),
        ),
        "day": (
            lambda r: quote_units(
                schedule,
                units=r[1],
                at=r[2],
                until=r[2] + dt.timedelta(days=1),
                position=Position(used=r[0]),
            ),
            lambda r: baseline_day(Decimal(r[0]) / 100, Decimal(r[1]) / 100),
        ),
        "money": (
            lambda r: quote_money(schedule, amount=r[3], at=r[2], position=Position(used=r[0])),
            lambda r: baseline_money(Decimal(r[0]) / 100, r[3], r[2]),
        ),
    }
    result = []
    for name, (engine, base) in shapes.items():
        e_rate, _ = rate(cycle(engine), seconds)
        b_rate, _ = rate(cycle(base), seconds)
        ratio = e_rate / b_rate
        print(
            f"{name:>6}: engine {e_rate:9.0f} quotes/s   baseline {b_rate:9.0f} quotes/s   "
            f"engine/baseline {ratio:.3f}",
            flush=True,
        )
        result += [
            f"{name}_engine_qps={e_rate:.0f}",
            f"{name}_baseline_qps={b_rate:.0f}",
            f"{name}_ratio={ratio:.3f}",
        ]
    print("RESULT " + " ".join(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
