"""Every worked example in the tariff guide is a test.

A worked example is a fenced ``yaml`` block in ``docs/tariffs.md`` whose
first line is ``# worked example: <id>``: a ``tariff`` (or ``versions``) and ``quotes``, each a
``request`` as ``onecard tariff quote`` takes it and what to ``expect``. Apportionment examples
(``# worked example: apportionment …``) are checked by ``test_apportion.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BUILTIN_PLUGINS

from onecard.money import format_fen
from onecard.plugins import load_plugins
from onecard.pricing import round_fen
from onecard.tariffs import requests as rq
from onecard.tariffs import schedule_from_documents

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```yaml\n(# worked example: (?!apportionment)(.+?)\n.*?)^```", re.M | re.S)


def examples() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in [DOCS / "tariffs.md"]:
        text = path.read_text(encoding="utf-8")
        found += [(path.name, m[2].strip(), yaml.safe_load(m[1])) for m in BLOCK.finditer(text)]
    return found


EXAMPLES = examples()


def test_the_guide_has_worked_examples_for_every_kind() -> None:
    kinds = set()
    for _, _, ex in EXAMPLES:
        docs = ex.get("versions") or [ex["tariff"]]
        kinds.add(docs[0]["kind"].split(".")[0])
    assert {"electric", "water", "heat", "gas", "rent"} <= kinds
    ids = [i for _, i, _ in EXAMPLES]
    assert len(ids) == len(set(ids)), "worked example ids must be unique"


@pytest.fixture(scope="module")
def utilities() -> Any:
    return load_plugins(BUILTIN_PLUGINS).utilities


@pytest.mark.parametrize(("page", "example_id", "example"), EXAMPLES, ids=[e[1] for e in EXAMPLES])
def test_worked_example(
    page: str, example_id: str, example: dict[str, Any], utilities: Any
) -> None:
    docs = example.get("versions") or [example["tariff"]]
    sched = schedule_from_documents(utilities, docs)
    assert example.get("quotes"), f"{page} {example_id}: a worked example needs quotes"
    for i, item in enumerate(example["quotes"]):
        where = f"{page} {example_id} quotes[{i}]"
        quote = rq.run(sched, rq.parse(sched, item["request"]))
        expect = item["expect"]
        assert "amount" in expect, f"{where}: expect an amount"
        assert format_fen(quote.amount) == str(expect["amount"]), where
        if "quantity" in expect:
            assert quote.quantity == rq._decimal(expect["quantity"], "quantity"), where
        if "credit" in expect:
            assert format_fen(quote.credit) == str(expect["credit"]), where
        if "lines" in expect:
            got = [[ln.label, format_fen(round_fen(ln.amount))] for ln in quote.lines]
            assert got == [[str(a), str(b)] for a, b in expect["lines"]], where
