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
    """CPU model, core count and the vector units that decide the precisions, for stamping results
    (timings only compare within one machine; "AMD EPYC" alone names CPUs with and without bf16)."""
    from embedtune.encoding.precision import cpu_flags

    units = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs ({' '.join(units) or 'no AVX2'})"


def save_results(name: str, summary: dict, markdown: str) -> None:
    """Write ``results/NAME.json`` (the numbers) and ``results/NAME.md`` (the table), and print the table."""
    import json

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


def provenance() -> dict[str, str]:
    """The commit of this checkout (``+dirty`` with uncommitted changes) and the versions that set the speed
    and the numbers, stamped on a result beside :func:`machine`."""
    import subprocess
    from importlib.metadata import version

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "embedtune"], cwd=root, capture_output=True, text=True
        )
        head = commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        head = "unknown"
    names = ("torch", "sentence-transformers", "transformers", "numpy")
    return {"commit": head or "unknown", **{name: version(name) for name in names}}
