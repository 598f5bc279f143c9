"""Shared fixtures: stores on SQLite and on a real PostgreSQL, paths to sample data.

PostgreSQL tests use ``DANMAKU_TEST_POSTGRES_URL`` (``.ci/run`` starts a throwaway
cluster and sets it). Without it they skip -- unless ``DANMAKU_REQUIRE_SERVICES=1``
(set in CI), where a missing server is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# triton's C library (loaded by torch/transformers, the tests' numeric oracle)
# segfaults when it loads after TensorFlow's; load it first so one pytest process
# can use both, whatever order the test modules import them in.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
# For subprocesses: this checkout's package (src/) and the test helpers (tests.support).
PYTHONPATH = os.pathsep.join([str(REPO / "src"), str(REPO)])


def require_service(env_var: str, what: str) -> str:
    value = os.environ.get(env_var)
    if value:
        return value
    if os.environ.get("DANMAKU_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required in CI but {env_var} is not set")
    pytest.skip(f"{what} not available (set {env_var})")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    return require_service("DANMAKU_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    server = make_url(postgres_server_url).set(drivername="postgresql+psycopg")
    name = f"danmakutest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'danmaku.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_service("DANMAKU_TEST_REDIS_URL", "Redis")


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small real uploader task (tests/tasks and tests/finetune share it: built once)."""
    from tests.support.task_data import real_task

    return real_task(tmp_path_factory.mktemp("real_task"), max_per_class=400)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny random BERT in Google's format, shared like ``task_dir``."""
    from tests.support.embed_models import write_google_model

    return write_google_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
