"""embedtune: fine-tune BERT-style encoders into sentence embedders and retrieve with them.

The package reads as its pipeline: :mod:`embedtune.data` -> :mod:`embedtune.mining` ->
:mod:`embedtune.training` -> :mod:`embedtune.index` (build, update, search) -> :mod:`embedtune.evaluate`,
every ranking going through :mod:`embedtune.retrieval`; :mod:`embedtune.workflows` chains two stages
(mine with the base model, then train) and :mod:`embedtune.cli` is a thin layer over them. Lower
layers never import higher ones (``tests/test_layout.py`` holds the order). Importing it changes
nothing in the process (the command line, not the library, works offline by default).
"""

__version__ = "0.1.0"
