"""The package reads as its pipeline: no import cycle, no module imports a later stage, no import side effects.

Run alone as the layering check: ``.venv/bin/python -m pytest tests/test_layout.py -q``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "embedtune"

# The pipeline's stages, bottom first. A module may import its own stage's group and lower stages only;
# two groups of one stage (index and training, mining and evaluate) do not import each other.
STAGES: list[set[str]] = [
    {"errors"},
    {"settings", "io", "text"},
    {"plots"},
    {"ranking"},
    {"data", "models", "metrics", "bm25"},
    {"training_data"},
    {"splits"},
    {"encoding"},
    {"index", "training"},
    {"retrieval"},
    {"mining", "evaluate"},
    {"workflows"},
    {"serve"},
    {"cli"},
    {"__main__"},
]


def _group(module: str) -> str:
    """``embedtune.index.build`` -> ``index``; the package face ``embedtune`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _stage(group: str) -> int:
    return next(i for i, groups in enumerate(STAGES) if group in groups)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["embedtune", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    """Every embedtune module ``module`` imports, at the top or inside functions (both bind the layers)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {t for t in targets if t.startswith("embedtune.")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {
        m: {r for t in _imports(m, p) if (r := resolve(t)) and r != m and r != "embedtune"} for m, p in modules.items()
    }


def test_every_module_belongs_to_a_stage():
    unknown = sorted({_group(m) for m in _modules()} - {""} - set().union(*STAGES))
    assert not unknown, f"modules outside the pipeline's stages: {unknown} (add them to STAGES)"


def test_no_module_imports_a_later_stage_or_a_sibling_stage():
    wrong = []
    for module, targets in _graph().items():
        group = _group(module)
        if not group:
            continue
        for target in targets:
            other = _group(target)
            later = _stage(other) > _stage(group)
            sibling = _stage(other) == _stage(group) and other != group
            if later or sibling:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the pipeline order:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    visiting, done, cycles = set(), set(), []

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(" -> ".join([*trail[trail.index(node) :], node]))
            return
        visiting.add(node)
        for nxt in sorted(graph[node]):
            if not nxt.startswith(node + "."):  # a package face re-exporting its own modules is no cycle
                visit(nxt, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


# Calls that pick the best entries of scores. Only embedtune/ranking.py makes them, so that there is one exact
# top-k (one tie rule, one way of scoring a candidate). An ANN index's own ``.search`` is the index, not a top-k.
TOP_K_CALLS = {"argpartition", "topk", "knn", "knn_gpu"}


def _top_k_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        on_numpy = isinstance(func, ast.Attribute) and getattr(func.value, "id", "") in ("np", "numpy")
        if name in TOP_K_CALLS or (name == "partition" and on_numpy):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(func)}")
    return found


def test_only_ranking_takes_a_top_k_of_scores():
    calls = [c for m, path in _modules().items() if m != "embedtune.ranking" for c in _top_k_calls(path)]
    listing = "\n".join(calls)
    assert not calls, f"top-k outside embedtune/ranking.py (use ranking.top_k or ranking.ExactTopK):\n{listing}"


# One searcher: the calls that rank a built index (its vectors, its BM25 side, their fusion, a rerank of the
# result) are made by retrieval/searcher.py alone, so search, serve, eval, calibration and mining cannot rank
# it in two ways. The index layer's own knob calibration measures its ANN recall on query vectors.
INDEX_RANKING_CALLS = {
    "search_vectors": {"embedtune.retrieval.searcher", "embedtune.index.knobs"},
    "fuse": {"embedtune.retrieval.searcher"},
    "rerank_head": {"embedtune.retrieval.searcher", "embedtune.retrieval.rerank"},
}


def _index_ranking_calls(module: str, path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        lexical = name == "search" and isinstance(func, ast.Attribute) and "lexical" in ast.unparse(func.value)
        allowed = INDEX_RANKING_CALLS.get(name, {"embedtune.retrieval.searcher"} if lexical else None)
        if allowed is not None and module not in allowed:
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(func)}")
    return found


def test_only_the_searcher_ranks_a_built_index():
    calls = [c for m, path in _modules().items() for c in _index_ranking_calls(m, path)]
    listing = "\n".join(calls)
    assert not calls, f"an index ranked outside embedtune/retrieval/searcher.py (use Searcher):\n{listing}"
    assert not (PACKAGE / "index" / "search.py").exists()  # ranking is retrieval's, not the index's


def test_importing_the_library_changes_nothing_in_the_process():
    code = (
        "import os, pkgutil, importlib; before = dict(os.environ); import embedtune; "
        "mods = [m.name for m in pkgutil.walk_packages(embedtune.__path__, 'embedtune.') "
        "if not m.name.startswith('embedtune.cli')]; [importlib.import_module(m) for m in mods]; "
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); print(len(mods))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 10
