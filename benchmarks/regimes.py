"""Defaults across regimes: ``embedtune train`` (and ``--mine``) against a plain sentence-transformers script.

The regimes are built from the bundled Debian set (data/debian), as a new user's data would look:

* ``small``: 800 training queries sampled (seeded) from Debian train, qrels for train and test only
  (no dev split), the full corpus, scored on Debian test;
* ``small-long``: the same, with long documents: the corpus is cut into groups of three
  descriptions of one archive section, each group concatenated in a seeded order into one document
  (relevant to the queries of all three), so that what a query asks about is often past the first
  128 tokens and truncation matters;
* ``full``: all of Debian train (with its dev split) at a time budget: both sides train for the
  steps that budget buys (``--budget``; the length rule does not apply);

and two regimes from text other than Debian's package descriptions, shipped in data/ (:data:`EXTERNAL`;
train and test splits, no dev split, long documents): ``perlfaq`` (perl's FAQ: question -> answer) and
``python-docs`` (the Python 3.11 manual: section title -> section); every model is also scored
zero-shot on data/stsb-retrieval (with ``ignore_own_id``), to show what general similarity training
costs.

**Time to quality.** Every system is a process of its own, timed from start to exit, wall and CPU
seconds (:func:`_timed`); the :data:`TIMED` systems (the defaults, and schedule or batching options)
run through timed_train.py, which keeps a snapshot of the model at each dev evaluation, and
:func:`time_to_quality` scores the snapshots on test: when the run first held a model at the script's
final test nDCG@10, in seconds from the process's start and as a share of the script's wall time. The
report adds a table of wall and CPU time by stage, and regimes_time.png (test nDCG@10 against wall
minutes). Run the systems one at a time for these timings: side by side they slow each other.

Systems, trained in the same run on the same training pairs: ``base`` (all-MiniLM-L6-v2 untouched),
``st-plain`` (benchmarks/st_plain.py: MNRL, 3 epochs, lr 2e-5, batch 32, 256 tokens, NO_DUPLICATES),
``embedtune`` (``embedtune train --data DIR`` with its defaults) and ``embedtune-mine`` (the same
with ``--mine``: one mined negative a row); on request (``--system``) the options measured one at a
time against the defaults (:data:`VARIANTS`: corpus pairs, query noise, layer-wise learning-rate
decay, difficulty weights, five mined negatives a row) and, with ``--quick``, ``embedtune-multi``:
the regime's data and held-apart STS-B paraphrase pairs as two datasets of one run
(:func:`sts_pairs`). Test nDCG@10 is pytrec_eval's (:mod:`embedtune.metrics`, through
:func:`embedtune.evaluate.evaluate`). Results: results/regimes.json, the report regimes.md and the
chart regimes.png, rewritten by every run that scores.

``--quick`` shrinks a regime: a corpus of the train and test queries' relevant documents filled up
to 3,000, 300 test queries (the 800 training queries stay), and STS-B cut the same way (300
queries, 2,000 sentences). ``--steps N`` caps every trained system at N steps: a smoke run of the
script itself, whose numbers mean nothing (the report marks it).

    python benchmarks/regimes.py --quick --regime small
    python benchmarks/regimes.py --quick --regime perlfaq --system base --system st-plain --system embedtune
    python benchmarks/regimes.py --regime small --regime small-long --score-precision bf16
    python benchmarks/regimes.py --regime full --budget 200 --score-precision bf16

A large regime trains sooner as ``--train-only`` runs side by side (one thread each), then one
``--reuse`` run scores them together:

    OMP_NUM_THREADS=1 python benchmarks/regimes.py --regime small --train-only --system embedtune-mine &
    OMP_NUM_THREADS=1 python benchmarks/regimes.py --regime small --train-only --system embedtune --system st-plain
    wait; python benchmarks/regimes.py --regime small --reuse --score-precision bf16
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine, provenance  # noqa: E402

ROOT = HERE.parent
DEBIAN = ROOT / "data" / "debian"
STSB = ROOT / "data" / "stsb-retrieval"
WORK = ROOT / "models" / "bench-regimes"
# Regimes from other text than Debian's package descriptions, shipped in data/ (see data/README.md):
# train and test qrels, no dev split; small enough to use whole, so --quick changes nothing for them.
EXTERNAL = {"perlfaq": ROOT / "data" / "perlfaq", "python-docs": ROOT / "data" / "python-docs"}
REGIMES = ("small", "small-long", "full", *EXTERNAL)
SYSTEMS = ("base", "st-plain", "embedtune", "embedtune-mine")
# Options measured one at a time against the defaults: system name -> extra `embedtune train` flags.
VARIANTS: dict[str, tuple[str, ...]] = {
    "embedtune-corpus": ("--corpus-pairs", "1"),  # as many corpus pairs (sentence -> rest) as labelled ones
    "embedtune-noise": ("--query-noise", "0.2"),
    "embedtune-llrd": ("--layer-lr-decay", "0.8"),
    "embedtune-difficulty": ("--weight-by", "difficulty"),
    "embedtune-mine5": ("--mine", "--num-negatives", "5"),  # --mine's default until session 9
}
# Systems trained through benchmarks/timed_train.py (a model snapshot at every dev evaluation, so their test
# score along the run is measured): the defaults, and schedule/batching options -> TrainConfig settings.
# Rows of earlier runs keep their curves under other names (embedtune-10pass: the defaults of session 13, at
# most 10 passes; embedtune-4pass: --epochs 4 with those defaults), so the report reads curves from any row.
TIMED: dict[str, dict[str, object]] = {
    "embedtune": {},
    "embedtune-buckets": {"length_window": 8},  # batches of similar length: less padding
}
MULTI = "embedtune-multi"  # the regime's data and a second dataset in one run (sts_pairs), mixed proportionally
RECORD = "bench_regimes.json"  # what a trained system's folder keeps for --reuse
TRAIN_QUERIES = 800
QUICK_CORPUS = 3000
QUICK_TEST = 300
QUICK_STSB = 2000
GROUP = 3  # descriptions per long document
PEER_EPOCHS, PEER_BATCH, PEER_LENGTH = 3, 32, 256
KEYS = ("ndcg@10", "recall@10", "mrr@10", "recall@100")


def _read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _qrels(split: str) -> dict[str, set[str]]:
    qrels: dict[str, set[str]] = defaultdict(set)
    lines = (DEBIAN / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        query, doc, _ = line.split("\t")
        qrels[query].add(doc)
    return qrels


def _write_beir(folder: Path, corpus: list[dict], queries: dict[str, str], qrels: dict[str, dict[str, set]]) -> None:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": d["_id"], "title": "", "text": d["text"]}) + "\n" for d in corpus)
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, t in sorted(queries.items()))
    for split, pairs in qrels.items():
        rows = [f"{q}\t{d}\t1\n" for q in sorted(pairs) for d in sorted(pairs[q])]
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))


def _publish(folder: Path, write: Callable[[Path], None]) -> Path:
    """``write`` the folder into a temporary sibling, then rename it into place: an interrupted run leaves
    no half-written folder that a later run would take as built, and runs side by side (``--train-only``)
    never read one. When another run published it first, its copy (the same seeded content) is kept."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp)
    return folder


def build(regime: str, quick: bool, seed: int = 42) -> Path:
    """Write the regime's BEIR folder under WORK and return it (an EXTERNAL regime's is its data folder)."""
    if regime in EXTERNAL:
        return EXTERNAL[regime]
    folder = WORK / f"{regime}{'-quick' if quick else ''}" / "data"
    if (folder / "qrels" / "test.tsv").is_file():
        return folder
    rng = random.Random(seed)
    corpus, queries = _read(DEBIAN / "corpus.jsonl.gz"), _read(DEBIAN / "queries.jsonl.gz")
    train, test = _qrels("train"), _qrels("test")
    splits = {"train": train, "test": test}
    if regime != "full":
        splits["train"] = {q: train[q] for q in rng.sample(sorted(train), TRAIN_QUERIES)}
    else:
        splits["dev"] = _qrels("dev")
    if quick:
        splits["test"] = {q: test[q] for q in rng.sample(sorted(test), QUICK_TEST)}
        if "dev" in splits:
            splits["dev"] = {q: splits["dev"][q] for q in rng.sample(sorted(splits["dev"]), QUICK_TEST)}
        needed = {d for pairs in splits.values() for docs in pairs.values() for d in docs}
        others = sorted(d["_id"] for d in corpus if d["_id"] not in needed)
        keep = needed | set(rng.sample(others, max(0, QUICK_CORPUS - len(needed))))
        corpus = [d for d in corpus if d["_id"] in keep]
    if regime == "small-long":
        corpus, splits = _long_documents(corpus, splits, rng)
    wanted = {q for pairs in splits.values() for q in pairs}
    texts = {q["_id"]: q["text"] for q in queries if q["_id"] in wanted}
    return _publish(folder, lambda out: _write_beir(out, corpus, texts, splits))


def _long_documents(corpus: list[dict], splits: dict, rng: random.Random) -> tuple[list[dict], dict]:
    """Groups of GROUP descriptions of one section, concatenated in a seeded order; qrels follow their members."""
    by_section: dict[str, list[dict]] = defaultdict(list)
    for doc in corpus:
        by_section[doc["metadata"].get("section", "")].append(doc)
    merged, owner = [], {}
    for section in sorted(by_section):
        docs = by_section[section]
        rng.shuffle(docs)
        for start in range(0, len(docs), GROUP):
            members = docs[start : start + GROUP]
            doc_id = f"g{len(merged)}"
            merged.append({"_id": doc_id, "text": "\n\n".join(d["text"] for d in members)})
            owner |= {d["_id"]: doc_id for d in members}
    regrouped = {
        split: {q: {owner[d] for d in docs if d in owner} for q, docs in pairs.items()}
        for split, pairs in splits.items()
    }
    return merged, regrouped


def stsb(quick: bool, seed: int = 42) -> Path:
    """data/stsb-retrieval, or for ``quick`` a seeded cut of it: QUICK_TEST queries, QUICK_STSB sentences."""
    if not quick:
        return STSB
    folder = WORK / "stsb-quick"
    if (folder / "qrels" / "test.tsv").is_file():
        return folder
    rng = random.Random(seed)
    qrels: dict[str, dict[str, str]] = defaultdict(dict)
    for line in (STSB / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query, doc, grade = line.split("\t")
        qrels[query][doc] = grade
    qrels = {q: qrels[q] for q in rng.sample(sorted(qrels), QUICK_TEST)}
    corpus = _read(STSB / "corpus.jsonl.gz")
    needed = {d for docs in qrels.values() for d in docs} | set(qrels)  # a query is a corpus sentence too
    others = sorted(d["_id"] for d in corpus if d["_id"] not in needed)
    keep = needed | set(rng.sample(others, max(0, QUICK_STSB - len(needed))))
    texts = {q["_id"]: q["text"] for q in _read(STSB / "queries.jsonl.gz") if q["_id"] in qrels}

    def write(out: Path) -> None:
        (out / "qrels").mkdir(parents=True, exist_ok=True)
        with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
            f.writelines(
                json.dumps({"_id": d["_id"], "title": "", "text": d["text"]}) + "\n" for d in corpus if d["_id"] in keep
            )
        with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, t in sorted(texts.items()))
        rows = [f"{q}\t{d}\t{g}\n" for q in sorted(qrels) for d, g in sorted(qrels[q].items())]
        (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))

    return _publish(folder, write)


def sts_pairs(quick: bool) -> Path:
    """The multi-dataset row's second dataset: general paraphrase pairs, as a user mixes in to keep
    general quality. They are the STS-B pairs scored 4 or more (grade 2+ in data/stsb-retrieval) that
    touch no sentence of the quick STS-B cut, so the zero-shot row still scores unseen sentences; the
    full STS-B split has nothing left over, hence ``--quick`` only."""
    if not quick:
        raise SystemExit(f"{MULTI} needs --quick: its second dataset is the STS-B pairs the quick cut leaves out")
    path = WORK / "stsb-pairs.jsonl"
    if path.is_file():
        return path
    with open(stsb(quick) / "corpus.jsonl", encoding="utf-8") as f:
        held = {json.loads(line)["_id"] for line in f}
    texts = {d["_id"]: d["text"] for d in _read(STSB / "corpus.jsonl.gz")}
    pairs: set[tuple[str, str]] = set()
    for line in (STSB / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query, doc, grade = line.split("\t")
        if int(grade) >= 2 and query not in held and doc not in held:
            pairs.add((min(query, doc), max(query, doc)))  # the split holds most pairs both ways: once is enough
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"query": texts[a], "positive": texts[b]}) + "\n" for a, b in sorted(pairs))
    tmp.rename(path)
    return path


def _flags(system: str, quick: bool) -> tuple[str, ...]:
    """What an embedtune system adds to ``embedtune train``'s defaults."""
    if system == MULTI:
        return ("--data", str(sts_pairs(quick)))
    return ("--mine",) if system == "embedtune-mine" else VARIANTS.get(system, ())


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _timed(cmd: list[str]) -> tuple[str, float, float]:
    """Run ``cmd`` as a process of its own: its stdout, wall seconds, and CPU seconds (user + system, with
    its children), everything it does from start to exit included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, check=True, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done.stdout, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def train_embedtune(data: Path, output: Path, system: str, quick: bool, max_steps: int | None) -> dict:
    """``embedtune train`` with its defaults plus the system's options: steps, wall and CPU time, stages, choices.

    The :data:`TIMED` systems run through benchmarks/timed_train.py (the same run, plus a model snapshot
    at each dev evaluation, whose saving time is taken out), so that the test score along the run can
    be measured (:func:`time_to_quality`); the others through the CLI with :func:`_flags`.
    """
    if system in TIMED:
        cmd = [sys.executable, str(HERE / "timed_train.py"), "--data", str(data), "-o", str(output)]
        cmd += [f"--set={name}={json.dumps(value)}" for name, value in TIMED[system].items()]
    else:
        cmd = [sys.executable, "-m", "embedtune", "train", "--data", str(data), "-o", str(output), "--overwrite"]
        cmd += ["--json", *_flags(system, quick)]
    cmd += ["--max-steps", str(max_steps)] if max_steps else []
    out, wall, cpu = _timed(cmd)
    result = json.loads(out.strip().splitlines()[-1])
    choices = {name: c["value"] if isinstance(c, dict) else c for name, c in result["choices"].items()}
    saving = sum(s["save_s"] for s in result.get("snapshots", []))
    row = {"steps": result["steps"], "wall_s": round(wall - saving, 1), "cpu_s": round(cpu - saving, 1)}
    timings = dict(result.get("timings") or {})
    if timings:  # what the run's own clock does not see: interpreter start, imports, mining (--mine)
        timings["training"] = round(timings.get("training", 0) - saving, 1)  # snapshots are taken in training
        timings["startup"] = round(wall - saving - (timings.pop("total") - saving), 1)
    row |= {"choices": choices, "timings": timings}
    if "snapshots" in result:
        row["snapshots"] = _snapshot_times(result, row["timings"].get("startup", 0.0))
    return row


def _snapshot_times(result: dict, startup: float) -> list[dict]:
    """Each snapshot with the seconds from the process's start at which the run had that model, less the
    snapshots' own saving time."""
    spent, out = 0.0, []
    curve = {point["step"]: point for point in result["dev_curve"]}
    for snap in result["snapshots"]:
        spent += snap["save_s"]
        point = curve[snap["step"]]
        out.append(
            {"step": snap["step"], "path": snap["path"], "seconds": round(startup + point["seconds"] - spent, 1)}
            | {"dev": point["metric"]}
        )
    return out


def train_peer(data: Path, output: Path, max_steps: int | None) -> dict:
    """The plain script (benchmarks/st_plain.py, a process of its own): 3 epochs (or ``max_steps``) of MNRL at
    batch 32, lr 2e-5, 256 tokens."""
    from embedtune.training_data import load_training_data

    rows = len(load_training_data(data).dataset)
    steps = max_steps or PEER_EPOCHS * math.ceil(rows / PEER_BATCH)
    cmd = [sys.executable, str(HERE / "st_plain.py"), "--output", str(output), "--max-steps", str(steps)]
    _, wall, cpu = _timed([*cmd, "--data", str(data), "--max-seq-length", str(PEER_LENGTH)])
    return {"steps": steps, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def time_to_quality(rows: dict[str, dict], peer: dict | None, data: Path, precision: str) -> None:
    """Score each :data:`TIMED` system's snapshots on test; say when it first had the script's final test nDCG@10.

    ``peer`` is the script's row (of this run, or stored by an earlier one on the same machine). Adds to
    the row: ``curve`` (step, seconds, dev metric, test nDCG@10 per snapshot) and ``to_script_quality_s``
    (None if never), and ``to_script_quality_x``: that time over the script's wall.
    """
    for system in TIMED:
        _time_to_quality(rows.get(system), peer, data, precision)


def _stored_row(regime: str, quick: bool, cap: int | None, system: str) -> dict | None:
    """``system``'s row of the stored run of this regime, if any (results/regimes.json)."""
    path = RESULTS / "regimes.json"
    stored = json.loads(path.read_text()) if path.is_file() else []
    runs = [r for r in stored if (r["regime"], r["quick"], r.get("smoke_steps")) == (regime, quick, cap)]
    return runs[0]["rows"].get(system) if runs else None


def _time_to_quality(ours: dict | None, peer: dict | None, data: Path, precision: str) -> None:
    if not ours or not peer or not ours.get("snapshots"):
        return
    models = {f"step-{s['step']}": s["path"] for s in ours["snapshots"] if Path(s["path"]).is_dir()}
    tests = score(models, data, ignore_own_id=False, precision=precision) if models else {}
    ours["curve"] = [
        {k: v for k, v in s.items() if k != "path"} | {"test": tests[f"step-{s['step']}"]["ndcg@10"]}
        for s in ours["snapshots"]
        if f"step-{s['step']}" in tests
    ]
    target = peer["test"]["ndcg@10"]
    reached = [p["seconds"] for p in ours["curve"] if p["test"] >= target]
    if not reached and ours["test"]["ndcg@10"] >= target:
        reached = [ours["wall_s"]]
    ours["to_script_quality_s"] = reached[0] if reached else None
    ours["to_script_quality_x"] = round(reached[0] / peer["wall_s"], 3) if reached and peer.get("wall_s") else None


def score(models: dict[str, str], data: Path, ignore_own_id: bool, precision: str) -> dict[str, dict[str, float]]:
    """Each model's test metrics on ``data`` (pytrec_eval, exact search over the whole corpus)."""
    from embedtune.encoding import EncodeSettings
    from embedtune.evaluate import EvalSettings, evaluate

    settings = EvalSettings(ignore_own_id=ignore_own_id, show_progress=False)
    # one precision on torch whatever the machine's auto: rows scored in different runs (--reuse, one --system)
    # compare; fp32 unless a large regime's run asks for bf16 (--score-precision), which all its rows then share
    encoding = EncodeSettings(cache=False, precision=precision, backend="torch")
    results = evaluate(data, "test", models=list(models.values()), settings=settings, encoding=encoding)
    return {name: {k: r.metrics[k] for k in KEYS if k in r.metrics} for name, r in zip(models, results, strict=True)}


def run_regime(
    regime: str,
    quick: bool,
    systems: tuple[str, ...],
    budget: float | None,
    cap: int | None,
    reuse: bool,
    precision: str = "fp32",
    train_only: bool = False,
) -> dict | None:
    """Train ``systems`` on the regime (``reuse``: keep a system already trained there), score them all.

    ``train_only`` stops before scoring (None): runs of one system each can then train side by side,
    and one ``--reuse`` run scores them together.
    """
    data = build(regime, quick)
    work = WORK / f"{regime}{'-quick' if quick else ''}"
    steps = cap or (_budget_steps(budget) if regime == "full" else None)
    trained: dict[str, dict] = {}
    models = {"base": "default"} if "base" in systems else {}  # an option's run keeps the stored base row
    for system in systems:
        if system == "base":
            continue
        output = work / system
        models[system] = str(output)
        if reuse and (output / RECORD).is_file():
            print(f"[{regime}] reusing {system} ({output})", flush=True)
            trained[system] = json.loads((output / RECORD).read_text())
            continue
        print(f"[{regime}] training {system} ...", flush=True)
        if system == "st-plain":
            trained[system] = train_peer(data, output, steps)
        else:
            trained[system] = train_embedtune(data, output, system, quick, steps)
        (output / RECORD).write_text(json.dumps(trained[system]) + "\n")
    if train_only:
        return None
    print(f"[{regime}] scoring {', '.join(models)} ...", flush=True)
    test = score(models, data, ignore_own_id=False, precision=precision)
    zero_shot = score(models, stsb(quick), ignore_own_id=True, precision=precision)
    rows = {s: {**trained.get(s, {}), "test": test[s], "stsb": zero_shot[s]} for s in models}
    time_to_quality(rows, rows.get("st-plain") or _stored_row(regime, quick, cap, "st-plain"), data, precision)
    return {
        "regime": regime,
        "quick": quick,
        "smoke_steps": cap,
        "budget_s": budget if regime == "full" else None,
        "scored_in": precision,
        "cpu": machine(),
        **provenance(),
        "documents": _count_lines(data / "corpus.jsonl"),
        "rows": rows,
    }


def _count_lines(path: Path) -> int:
    if path.is_file():
        return sum(1 for _ in open(path, encoding="utf-8"))
    with gzip.open(path.with_suffix(".jsonl.gz"), "rt", encoding="utf-8") as f:
        return sum(1 for _ in f)


def _budget_steps(budget: float | None) -> int:
    """Steps of 32 pairs the budget buys at the plain script's measured rate (results/train_throughput.json)."""
    if budget is None:
        raise SystemExit("regime 'full' needs --budget SECONDS")
    rates = json.loads((RESULTS / "train_throughput.json").read_text())["variants"]
    return max(1, int(budget * rates["st-plain"]["pairs_per_s"] / PEER_BATCH))


def report(runs: list[dict]) -> str:
    """The markdown of every stored run: per regime, test and zero-shot metrics and what embedtune chose."""
    lines = [
        "# Defaults across regimes: embedtune train vs a plain sentence-transformers script",
        "",
        "Built and run by `benchmarks/regimes.py` (see its docstring for the regimes). Test nDCG@10 etc. by "
        f"pytrec_eval, exact search; STS-B zero-shot with ignore_own_id. {machine()}.",
        "",
        "![test nDCG@10 per regime](regimes.png)",
        "",
    ]
    for run in runs:
        name = f"{run['regime']}{' (quick)' if run['quick'] else ''}"
        if run.get("smoke_steps"):
            name += f" (SMOKE RUN, {run['smoke_steps']} steps per system: numbers meaningless)"
        budget = f", {run['budget_s']:.0f} s training budget per side" if run.get("budget_s") else ""
        scored = f", scored in {run['scored_in']}" if run.get("scored_in", "fp32") != "fp32" else ""
        lines += [f"## {name}: {run['documents']:,} documents{budget}{scored}", ""]
        if run.get("note"):
            lines += [run["note"], ""]
        lines += ["| system | steps | wall s | " + " | ".join(KEYS) + " | STS-B ndcg@10 |"]
        lines += ["|---|---|---|" + "---|" * len(KEYS) + "---|"]
        for system, row in run["rows"].items():
            cells = " | ".join(f"{row['test'].get(k, float('nan')):.4f}" for k in KEYS)
            lines.append(
                f"| {system} | {row.get('steps', 0)} | {row.get('wall_s', 0):.0f} | {cells} | "
                f"{row['stsb']['ndcg@10']:.4f} |"
            )
        for system, row in run["rows"].items():
            if row.get("choices"):
                chosen = ", ".join(f"{k}={v}" for k, v in row["choices"].items() if k != "dev")
                lines.append(f"\n{system} chose: {chosen}; dev: {row['choices'].get('dev')}")
        lines.append("")
    lines += time_report(runs)
    done = {(r["regime"], r["quick"]) for r in runs if not r.get("smoke_steps")}
    missing = [f"{r}{' --quick' if q else ''}" for r in REGIMES for q in (True, False) if (r, q) not in done]
    if missing:
        lines += [f"Not yet run: {', '.join(missing)} (commands in the docstring of benchmarks/regimes.py).", ""]
    return "\n".join(lines)


STAGES = ("startup", "setup", "baseline", "training", "dev evaluations", "writing")


def time_report(runs: list[dict]) -> list[str]:
    """The time-to-quality table: per regime and system, wall and CPU time of the whole process, embedtune's
    stages, test nDCG@10, and when embedtune first had the script's final test nDCG@10."""
    timed = [r for r in runs if any("cpu_s" in row for row in r["rows"].values())]
    if not timed:
        return []
    lines = [
        "## Time to quality",
        "",
        "Every system ran as a process of its own, one at a time; wall and CPU seconds are the whole process "
        "(interpreter start, imports, data checks, mining, baseline, training, dev evaluations, writing). "
        "embedtune's stages are its own clock (startup = what runs before it: interpreter, imports, --mine's "
        "mining). 'reaches' is the first moment embedtune's run held a model (a snapshot at a dev evaluation, "
        "scored on test afterwards) at or above the script's final test nDCG@10, and that time over the "
        "script's wall time. Chart: regimes_time.png.",
        "",
        "| regime | system | CPU | wall s | CPU s | " + " | ".join(STAGES) + " | dev share | test ndcg@10 | reaches |",
        "|---|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|",
    ]
    for run in timed:
        name = f"{run['regime']}{' (quick)' if run['quick'] else ''}"
        for system, row in run["rows"].items():
            if "cpu_s" not in row:
                continue
            t = row.get("timings", {})
            stages = " | ".join(f"{t[k]:.0f}" if k in t else "" for k in STAGES)
            dev = (t.get("baseline", 0) + t.get("dev evaluations", 0)) / row["wall_s"] if t else None
            reach = row.get("to_script_quality_s")
            reaches = f"{reach:.0f} s ({row['to_script_quality_x']:.2f}x)" if reach is not None else ""
            if "to_script_quality_s" in row and reach is None:
                reaches = "never"
            lines.append(
                f"| {name} | {system} | {run.get('cpu', '')} | {row['wall_s']:.0f} | {row['cpu_s']:.0f} | {stages} | "
                f"{'' if dev is None else f'{dev:.0%}'} | {row['test']['ndcg@10']:.4f} | {reaches} |"
            )
    for run in timed:
        for system, row in run["rows"].items():
            curve = row.get("curve")
            if curve:
                points = ", ".join(f"step {p['step']} at {p['seconds']:.0f} s: {p['test']:.4f}" for p in curve)
                lines.append(f"\n{run['regime']}: {system}'s test nDCG@10 along the run: {points}")
    return [*lines, ""]


def plot_time(runs: list[dict], path: Path) -> Path | None:
    """Test nDCG@10 against wall time, a panel per regime: embedtune's run (its snapshots, then the kept
    model at the end) and the script's end point, on one axis."""
    timed = [r for r in runs if any(row.get("curve") for row in r["rows"].values())]
    if not timed:
        return None
    from embedtune.plots import figure, save_png

    with figure(1, len(timed), figsize=(4.5 * len(timed), 3.8), squeeze=False) as (fig, axes):
        for ax, run in zip(axes[0], timed, strict=True):
            peer = run["rows"].get("st-plain")
            base = run["rows"].get("base", {}).get("test", {}).get("ndcg@10")
            for system, ours in run["rows"].items():
                if not ours.get("curve"):
                    continue
                xs = [0] + [p["seconds"] / 60 for p in ours["curve"]] + [ours["wall_s"] / 60]
                ys = [base if base is not None else float("nan")]
                ys += [p["test"] for p in ours["curve"]] + [ours["test"]["ndcg@10"]]
                ax.plot(xs, ys, marker="o", label="embedtune defaults" if system == "embedtune" else system)
            if peer:
                ax.plot([peer["wall_s"] / 60], [peer["test"]["ndcg@10"]], marker="s", ls="", label="plain ST script")
                ax.axhline(peer["test"]["ndcg@10"], ls=":", color="grey")
            ax.set_title(f"{run['regime']}{' (quick)' if run['quick'] else ''}")
            ax.set_xlabel("wall minutes (whole process)")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=7)  # the systems differ per regime (options run on some)
        axes[0][0].set_ylabel("test nDCG@10")
        fig.tight_layout()
        return save_png(fig, path)


def plot(runs: list[dict], path: Path) -> Path:
    """Test nDCG@10 of the four main systems, a group of bars per regime: full-size runs left, quick cuts right."""
    import numpy as np

    from embedtune.plots import figure, save_png

    def order(run: dict) -> int:
        return REGIMES.index(run["regime"])

    panels = [
        (title, sorted((r for r in runs if r["quick"] == quick and not r.get("smoke_steps")), key=order))
        for title, quick in (("full size", False), ("--quick cuts", True))
    ]
    with figure(1, 2, figsize=(11, 4), sharey=True) as (fig, axes):
        for ax, (title, chosen) in zip(axes, panels, strict=True):
            width = 0.8 / len(SYSTEMS)
            for i, system in enumerate(SYSTEMS):
                values = [r["rows"].get(system, {}).get("test", {}).get("ndcg@10", np.nan) for r in chosen]
                ax.bar(np.arange(len(chosen)) + (i - (len(SYSTEMS) - 1) / 2) * width, values, width, label=system)
            ax.set_xticks(np.arange(len(chosen)), [r["regime"] for r in chosen])
            ax.set_title(title)
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("test nDCG@10 (pytrec_eval)")
        fig.suptitle("embedtune train defaults and --mine against a plain sentence-transformers script")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(SYSTEMS), frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        return save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", action="append", choices=REGIMES, help="repeatable (default: all)")
    parser.add_argument(
        "--system",
        action="append",
        choices=(*SYSTEMS, *VARIANTS, *TIMED, MULTI),
        help=f"repeatable (default: {', '.join(SYSTEMS)}); the base model is scored only when named",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep a system already trained in this regime instead of training again"
    )
    parser.add_argument("--quick", action="store_true", help="a smaller corpus and test set (see the docstring)")
    parser.add_argument("--budget", type=float, default=None, help="regime full: seconds of training per side")
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="train (and keep for --reuse) without scoring or writing results: runs side by side, scored later",
    )
    parser.add_argument("--steps", type=int, default=None, help="cap every system at N steps (a smoke run)")
    parser.add_argument(
        "--score-precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="precision every row is scored in (bf16: a large regime in half the time; its rows compare only "
        "with rows scored in bf16)",
    )
    args = parser.parse_args()
    path = RESULTS / "regimes.json"
    stored: list[dict] = []
    for regime in args.regime or REGIMES:
        systems = tuple(args.system or SYSTEMS)
        run = run_regime(
            regime, args.quick, systems, args.budget, args.steps, args.reuse, args.score_precision, args.train_only
        )
        if run is None:
            continue
        stored = json.loads(path.read_text()) if path.is_file() else []  # read now: another run may have written
        key = (regime, args.quick, args.steps)
        earlier = [r for r in stored if (r["regime"], r["quick"], r.get("smoke_steps")) == key]
        if earlier:  # systems not run this time keep their earlier rows, and the run its note
            run["rows"] = {**earlier[0]["rows"], **run["rows"]}
            run.setdefault("note", earlier[0].get("note"))
        stored = [r for r in stored if (r["regime"], r["quick"], r.get("smoke_steps")) != key] + [run]
        path.write_text(json.dumps(stored, indent=2) + "\n")
        (RESULTS / "regimes.md").write_text(report(stored))
        plot(stored, RESULTS / "regimes.png")
        plot_time(stored, RESULTS / "regimes_time.png")
    if stored:  # nothing when every regime ran --train-only
        print(report(stored))


if __name__ == "__main__":
    main()
