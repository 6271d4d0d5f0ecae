"""The ``embedtune`` command line: one module per command group, each a thin layer over the library.

The options that set library settings are generated from the settings dataclasses
(:class:`~embedtune.training.TrainConfig`, :class:`~embedtune.mining.MiningConfig`,
:class:`~embedtune.evaluate.EvalSettings`, :class:`~embedtune.encoding.EncodeSettings`,
:class:`~embedtune.index.BuildSettings`, ...), and the few flags several commands share (``--model``,
``--index``, ``--split``, ``--overwrite``...) come from one helper each: both in :mod:`embedtune.cli.options`,
so each option is declared once.
"""

from embedtune.cli.app import main
from embedtune.cli.cache import cache
from embedtune.cli.encode import encode
from embedtune.cli.evaluate import eval_command
from embedtune.cli.index import index
from embedtune.cli.mine import mine
from embedtune.cli.search import search
from embedtune.cli.serve import serve
from embedtune.cli.split import split
from embedtune.cli.train import train

for command in (train, mine, index, search, eval_command, encode, split, cache, serve):
    main.add_command(command)

__all__ = ["main"]
