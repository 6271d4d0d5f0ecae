"""embedtune: fine-tune BERT-style encoders into sentence embedders and retrieve with them.

The package reads as its pipeline: :mod:`embedtune.data` -> :mod:`embedtune.mining` ->
:mod:`embedtune.training` -> :mod:`embedtune.index` -> :mod:`embedtune.retrieval` ->
:mod:`embedtune.evaluate`, with :mod:`embedtune.cli` a thin layer over them. Importing it changes
nothing in the process (the command line, not the library, works offline by default).
"""

__version__ = "0.1.0"
