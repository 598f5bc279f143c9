"""One corpus text file being written: documents in, bytes, sha256 and counts out."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


class CorpusFile:
    """One output text file: documents in, bytes + sha256 + counts out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "wb")  # noqa: SIM115 -- closed in close()
        self._sha = hashlib.sha256()
        self._parts: list[str] = []
        self._size = 0
        self.bytes = 0
        self.documents = 0
        self.lines = 0
        self.characters = 0

    def start_document(self) -> None:
        if self.documents:
            self._parts.append("\n")
        self.documents += 1

    def add_lines(self, lines: list[str]) -> None:
        self._parts.append("\n".join(lines))
        self._parts.append("\n")
        self.lines += len(lines)
        n = sum(map(len, lines))
        self.characters += n
        self._size += n
        if self._size > 1 << 20:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            data = "".join(self._parts).encode("utf-8")
            self._parts.clear()
            self._size = 0
            self._write(data)

    def close(self) -> str:
        """Flush, fsync, close; returns the sha256."""
        self.flush()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return self._sha.hexdigest()

    def append_part(self, path: Path, documents: int, lines: int, characters: int) -> None:
        """Append a part written by a worker (its documents, in order), hashing as it goes."""
        if not documents:
            return
        self.flush()
        if self.documents:
            self._write(b"\n")
        with open(path, "rb") as part:
            while block := part.read(1 << 22):
                self._write(block)
        self.documents += documents
        self.lines += lines
        self.characters += characters

    def _write(self, data: bytes) -> None:
        self._sha.update(data)
        self._handle.write(data)
        self.bytes += len(data)

    def abort(self) -> None:
        self._handle.close()

    def summary(self, sha256: str | None = None) -> dict[str, Any]:
        return {"sha256": sha256, "bytes": self.bytes, "documents": self.documents,
                "danmaku": self.lines, "characters": self.characters}
