"""danmaku: Bilibili vtuber danmaku -> corpus -> domain-adapted Chinese BERT -> embeddings.

Packages in reading order, following one danmaku from the web to a vector:
``crawl`` and ``importers`` (into the ``store``) -> ``corpus`` (the store ->
versioned text files, filtered by ``text``) -> ``pretrain`` (instances, BERT
training, checkpoints) -> ``embed`` (vectors, picture, service). ``demo`` runs
them all on the sample data; ``cli`` is the terminal front end and the only
package that prints.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("danmaku")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
