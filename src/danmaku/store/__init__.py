"""The store: SQLAlchemy models, the engine and its migrations, and every write.

``db`` opens a store (SQLite file or ``DANMAKU_DATABASE_URL``) and migrates it
(``migrations/``, alembic); ``models`` are the tables; ``writes`` is the one
module that writes to them (importers, crawler, live recorder); ``stats`` reads
figures back.
"""
