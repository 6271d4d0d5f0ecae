"""The ``embedtune`` command line: one module per command group, each a thin layer over the library.

The options of ``train``, ``mine`` and ``index build`` are generated from the settings of
:class:`~embedtune.training.TrainConfig`, :class:`~embedtune.mining.MiningConfig`,
:class:`~embedtune.encoding.EncodeSettings` and :class:`~embedtune.index.BuildSettings`
(:mod:`embedtune.cli.options`), so each is declared once.
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
