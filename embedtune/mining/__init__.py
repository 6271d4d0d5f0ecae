"""Hard-negative mining: (query, positive) pairs in, (query, positive, negative_1..n, scores) rows out.

Three failure modes of the usual recipes are designed out here:

* **Memory.** Queries are retrieved a block at a time through :mod:`embedtune.retrieval` (a bf16
  matrix product and top-k for embedders, a sparse product for BM25), so no query x corpus score
  matrix exists; memory is the corpus vectors plus ``chunk_size x max_rank`` candidates, whatever
  the number of queries.
* **False negatives.** A candidate is never a known positive of its query (any of them, with several
  positives, and those of any query id asked in the same normalised words), nor a document whose
  normalised text equals a positive's; the positive-aware filters
  (absolute margin, relative margin = NV-Retriever's TopK-PercPos, maximum score) drop candidates
  that score too close to the row's own positive, which is what most unlabelled positives do.
* **Self-duplicates.** Two copies of one text are never both negatives of a row.
* **Lost pairs.** A row short of negatives is searched deeper, then padded or kept as a plain pair in a
  way every loss trains correctly on (``short_rows``); it is dropped only when the user asks.

``config`` (settings and input), ``selection`` (the rules, :func:`mine`), ``short_rows`` (rows short
of negatives), ``report`` (counts, histograms) and ``run`` (a BEIR split to a file). Mining writes
rows that training reads; it knows nothing of training (:mod:`embedtune.workflows` chains the two).
"""

from embedtune.mining.config import SAMPLINGS, SHORT_ROWS, MiningConfig, MiningInput, load_mining_input
from embedtune.mining.report import MiningReport, pairs_path, plot_histograms, report_paths
from embedtune.mining.run import RETRIEVERS, mine_to_file, write_mined
from embedtune.mining.selection import FILTER_RULES, REPEATED_TEXT, mine, normalise_text
from embedtune.mining.short_rows import MinedRows

__all__ = [
    "FILTER_RULES",
    "REPEATED_TEXT",
    "RETRIEVERS",
    "SAMPLINGS",
    "SHORT_ROWS",
    "MinedRows",
    "MiningConfig",
    "MiningInput",
    "MiningReport",
    "load_mining_input",
    "mine",
    "mine_to_file",
    "normalise_text",
    "pairs_path",
    "plot_histograms",
    "report_paths",
    "write_mined",
]
