"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model(default: str = "unknown CPU") -> str:
    """The CPU's model name from /proc/cpuinfo (``default`` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def machine() -> str:
    """CPU model and core count, for stamping results (timings only compare within one machine)."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs"


def save_results(name: str, summary: dict, markdown: str) -> None:
    """Write ``results/NAME.json`` (the numbers) and ``results/NAME.md`` (the table), and print the table."""
    import json

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
