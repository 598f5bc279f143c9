"""An ``.npy`` file that grows row by row, valid (and resumable) after every chunk.

``danmaku embed encode`` streams: input of any length, memory flat. numpy can only
write an array it holds, so we write the ``.npy`` header ourselves with room to
spare, append float32 rows, and rewrite the row count in place after each chunk.
If the job dies, the file on disk is a valid array of every row whose header
update made it; ``resume=True`` cuts off anything after that and continues.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

_MAGIC = b"\x93NUMPY\x01\x00"
_HEADER_BYTES = 256  # magic + length + dict, padded; a multiple of 64 like numpy's own


def _header(shape: tuple[int, ...]) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
    room = _HEADER_BYTES - len(_MAGIC) - 2
    text = text.ljust(room - 1) + "\n"
    if len(text) != room:
        raise ValueError(f"shape {shape} does not fit the reserved .npy header")
    return _MAGIC + struct.pack("<H", room) + text.encode("latin1")


def read_shape(path: Path) -> tuple[tuple[int, ...], int]:
    """Shape and data offset of an existing ``.npy`` (float32, C order required)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"{path}: unsupported .npy version {version}")
        offset = handle.tell()
    if dtype != np.dtype("<f4") or fortran:
        raise ValueError(f"{path} is not a float32 C-order array")
    return tuple(shape), offset


class NpyAppender:
    """Append ``[k, *row_shape]`` float32 blocks to ``path``.

    Args:
        path: the ``.npy`` to write.
        row_shape: shape of one row (``(768,)``, or ``(32, 768)`` token-level).
        resume: keep the rows already in ``path`` (which must have ``row_shape``)
            and append after them; otherwise start a new file.
    """

    def __init__(self, path: str | Path, row_shape: tuple[int, ...], *, resume: bool = False) -> None:
        self.path = Path(path)
        self.row_shape = tuple(row_shape)
        self.row_bytes = int(np.prod(self.row_shape)) * 4
        self.rows = 0
        if resume and self.path.exists():
            shape, offset = read_shape(self.path)
            if shape[1:] != self.row_shape:
                raise ValueError(
                    f"{self.path} holds rows of shape {shape[1:]}, this run makes {self.row_shape}: "
                    "use the same pooling/layers/max-seq-len, or start over without --resume"
                )
            self.rows = shape[0]
            if offset != _HEADER_BYTES:
                raise ValueError(f"{self.path} was not written by danmaku embed encode: cannot resume it")
            self._handle = open(self.path, "r+b")  # noqa: SIM115
            self._handle.truncate(_HEADER_BYTES + self.rows * self.row_bytes)
            self._handle.seek(0, os.SEEK_END)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "w+b")  # noqa: SIM115
            self._handle.write(_header((0, *self.row_shape)))
        self._handle.flush()

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype="<f4")
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {block.shape[1:]} do not match {self.row_shape}")
        self._handle.seek(0, os.SEEK_END)
        self._handle.write(block.tobytes())
        self._handle.flush()
        self.rows += block.shape[0]
        self._handle.seek(0)
        self._handle.write(_header((self.rows, *self.row_shape)))
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
