"""The terminal front end: the ``danmaku`` command (``main``), one module per stage,
and ``console`` (Rich output, progress bars). The only package that prints."""
