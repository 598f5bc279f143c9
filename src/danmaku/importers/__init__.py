"""Importers: public data sets -> the store, idempotent and crash-safe."""
