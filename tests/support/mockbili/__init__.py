"""A mock Bilibili for the crawler's tests and benchmark (see ``server.py``)."""

from tests.support.mockbili.catalog import Catalog
from tests.support.mockbili.server import Fault, MockBilibili

__all__ = ["Catalog", "Fault", "MockBilibili"]
