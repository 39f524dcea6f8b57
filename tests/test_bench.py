"""The benchmarks stay runnable: each imports (they run under `make bench`, not here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = sorted((Path(__file__).resolve().parents[1] / "bench").glob("*.py"))


@pytest.mark.parametrize("path", BENCH, ids=[p.name for p in BENCH])
def test_benchmark_imports_and_has_a_main(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
    assert "RESULT" in path.read_text(), f"{path.name} prints no RESULT line"


def test_reading_benchmark_quick_run() -> None:
    """bench/reading.py --quick: the emulator process, the bare loop, the service cycle, the
    9600-baud bus and the ledger check, end to end (about 5 s)."""
    import subprocess

    path = Path(__file__).resolve().parents[1] / "bench" / "reading.py"
    done = subprocess.run(
        [sys.executable, str(path), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), done.stdout
    result = dict(item.split("=", 1) for item in last.split()[1:])
    assert result["meters"] == "400" and result["priced"] == "400", last
    assert result["ledger_ok"] == "yes", last
    assert float(result["wire_ceiling_per_bus"]) == pytest.approx(24.0)
    assert 5 < float(result["emulated_bus_9600"]) < 40, last
    for name in ("bare_cpu_ms", "service_cpu_ms", "emulator_cpu_ms"):  # both processes measured
        assert float(result[name]) > 0, last
