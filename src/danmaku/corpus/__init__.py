"""The danmaku store (models, importers) and the corpus export."""
