"""Fixtures of the crawl tests: the catalog of the Bilibili stand-in and the stand-in itself."""

from __future__ import annotations

import pytest

from tests.support.mockbili import Catalog, MockBilibili


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_fixture()


@pytest.fixture
def mock(catalog: Catalog):
    """The stand-in, listing two videos per page (so a listing takes several signed pages)."""
    with MockBilibili(catalog, space_page_size=2) as server:
        yield server
