"""``danmaku embed serve`` as a real child process, for the tests that need its signals and memory.

The server prints "serving on http://HOST:PORT" on stderr once it listens
(``--port 0``: the OS picks the port); ``ServeProcess.url`` waits for it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import PYTHONPATH, REPO


class ServeProcess:
    """The child, its stderr lines as they come, and an event set when it listens."""

    def __init__(self, model_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "danmaku", "embed", "serve", "-m", str(model_dir), "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if "serving on" in line:
                self.ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def url(self, timeout: float = 180) -> str:
        """The base URL, once the server listens (the output so far if it does not)."""
        assert self.ready.wait(timeout), self.output
        return re.search(r"http://[0-9.]+:\d+", self.output).group()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
