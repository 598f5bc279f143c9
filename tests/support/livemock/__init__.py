"""A mock of Bilibili's live chat for the recorder's tests and benchmark (see ``server.py``)."""

from tests.support.livemock.script import Drop, Frame, MockRoom, Sent, build_room
from tests.support.livemock.server import Gate, LiveMock

__all__ = ["Drop", "Frame", "Gate", "LiveMock", "MockRoom", "Sent", "build_room"]
