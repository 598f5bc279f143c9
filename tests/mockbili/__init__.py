"""A mock Bilibili for the crawler's tests and benchmark (see ``server.py``)."""

from tests.mockbili.catalog import Catalog
from tests.mockbili.server import Fault, MockBilibili

__all__ = ["Catalog", "Fault", "MockBilibili"]
