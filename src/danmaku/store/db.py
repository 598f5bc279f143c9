"""Where the store lives and how to open it.

The URL comes from ``--db``, else ``DANMAKU_DATABASE_URL``, else ``./danmaku.sqlite``. A bare
path is taken as a SQLite file. Opening a store upgrades it to the newest alembic
revision, so no command ever meets an empty or outdated schema.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

DEFAULT_URL = "sqlite:///danmaku.sqlite"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def resolve_url(db: str | None = None) -> str:
    """Turn ``--db`` / ``DANMAKU_DATABASE_URL`` / a file path into a SQLAlchemy URL."""
    raw = db or os.environ.get("DANMAKU_DATABASE_URL") or DEFAULT_URL
    if "://" not in raw:
        raw = f"sqlite:///{raw}"
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL as it may be printed: never a password in a log or a summary."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets `danmaku db stats` read while an import writes; NORMAL sync is still
    # crash-safe in WAL mode (a commit survives a killed process).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


class StoreUnavailable(RuntimeError):
    """The store cannot be opened (unreachable server, bad credentials, unwritable file)."""


def make_engine(db: str | None = None, *, upgrade: bool = True) -> Engine:
    """Open the store (creating and migrating it when needed).

    ``StoreUnavailable`` says which store (password hidden) and why, in one line.
    """
    url = resolve_url(db)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if upgrade:
        from sqlalchemy.exc import DBAPIError, OperationalError

        try:
            upgrade_to_head(engine)
        except (OperationalError, DBAPIError) as error:
            engine.dispose()
            reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
            raise StoreUnavailable(f"cannot open the store {redact(url)}: {reason}") from None
    return engine


def alembic_config(engine: Engine):
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").exists():
        raise RuntimeError(f"the store's migrations are missing from {MIGRATIONS_DIR}: reinstall danmaku")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def upgrade_to_head(engine: Engine) -> bool:
    """Apply pending migrations; returns True if anything was applied."""
    if current_revision(engine) == head_revision(engine):
        return False
    from alembic import command

    command.upgrade(alembic_config(engine), "head")
    return True

