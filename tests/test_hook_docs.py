"""Every hook has a documentation section and a test; every hookspec a one-line docstring."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from onecard import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(
    name for name, fn in vars(hookspecs).items() if name.startswith("onecard_") and callable(fn)
)


def test_there_are_hooks() -> None:
    assert "onecard_register_utilities" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook: str) -> None:
    docs = (ROOT / "docs" / "plugin_hooks.md").read_text()
    section = re.search(rf"^## {hook}\n(.*?)(?=^## |\Z)", docs, re.M | re.S)
    assert section, f"docs/plugin_hooks.md has no '## {hook}' section"
    signature = f"def {hook}{inspect.signature(getattr(hookspecs, hook))}".replace("'", "")
    assert signature in section.group(1), f"the {hook} section does not show {signature}"
    assert "@hookimpl" in section.group(1), f"the {hook} section has no example"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook: str) -> None:
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    assert any(hook in p.read_text() for p in tests), f"no test mentions {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hookspec_has_a_one_line_imperative_docstring(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert doc and "\n" not in doc and doc.endswith("."), doc
    assert not doc.split()[0].endswith("s"), f"say '{doc.split()[0][:-1]}', not '{doc.split()[0]}'"
