"""One small real uploader task and one tiny random BERT, shared by the fine-tuning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.embed_models import write_google_model
from tests.support.task_data import real_task


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    return real_task(tmp_path_factory.mktemp("real_task"), max_per_class=400)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_google_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
