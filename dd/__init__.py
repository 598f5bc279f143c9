"""dd: Bilibili vtuber danmaku -> corpus -> domain-adapted Chinese BERT -> embeddings."""

__version__ = "0.1.0"
