"""TFRecord shards of ``tf.train.Example`` bytes, built directly from numpy batches.

Google's layout (``input_ids``, ``input_mask``, ... ``next_sentence_labels``) in
protobuf's wire format, framed as TFRecord (length, masked CRC32C, data,
masked CRC32C). ``tests/pretrain/test_tfrecord.py`` parses the bytes back with
TensorFlow and compares every record with the ``tf.train.Example`` TensorFlow
builds. Measured (``bench/tfrecord.py``): 61 k instances/s against 7.6 k/s for
``tf.train.Example`` + ``tf.io.TFRecordWriter`` in one process, 8.1x; the
bytes differ from TensorFlow's only in the order of the feature map.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from danmaku.pretrain.instances.masking import Batch


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL_VARINT = [_varint(i) for i in range(1 << 14)]


def _vlen(value: int) -> bytes:
    return _SMALL_VARINT[value] if value < 16384 else _varint(value)


def _packed_varints(matrix: np.ndarray) -> tuple[bytes, list[int]]:
    """Protobuf varint bytes of every value of a non-negative [n, k] matrix, row-major,
    and the byte offset where each row starts (n + 1 offsets; values < 2**28)."""
    v = np.ascontiguousarray(matrix, dtype=np.uint32)
    if v.size and int(v.max()) >= 1 << 28:
        raise ValueError("feature value out of range for the packed writer")
    width = 1 if not v.size else 1 + (int(v.max()) >= 1 << 7) + (int(v.max()) >= 1 << 14) \
        + (int(v.max()) >= 1 << 21)
    nbytes = np.ones(v.shape, np.uint8)
    for k in range(1, width):
        nbytes += v >= (1 << (7 * k))
    planes = np.empty(v.shape + (width,), np.uint8)
    for k in range(width):
        planes[..., k] = ((v >> (7 * k)) & 0x7F) | ((nbytes > k + 1) << 7)
    keep = np.arange(width, dtype=np.uint8) < nbytes[..., None]
    offsets = np.zeros(len(v) + 1, np.int64)
    np.cumsum(nbytes.sum(axis=1, dtype=np.int64), out=offsets[1:])
    return planes[keep].tobytes(), offsets.tolist()


def _entry_prefix(key: str, kind: int, payload_len: int) -> bytes:
    """Map-entry bytes of ``feature[key]`` up to its packed payload (kind 3: int64, 2: float)."""
    inner = b"\x0a" + _vlen(payload_len)  # (Int64List|FloatList).value, packed
    feature = bytes([kind << 3 | 2]) + _vlen(len(inner) + payload_len) + inner
    key_b = key.encode()
    entry = b"\x0a" + _vlen(len(key_b)) + key_b + b"\x12" + _vlen(len(feature) + payload_len) + feature
    return b"\x0a" + _vlen(len(entry) + payload_len) + entry


class _Prefixes(dict):
    """Entry prefixes of one int64 feature, by payload length (memoised)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def __missing__(self, length: int) -> bytes:
        value = self[length] = _entry_prefix(self.key, 3, length)
        return value


_PREFIXES = {key: _Prefixes(key) for key in ("input_ids", "masked_lm_positions", "masked_lm_ids")}


def serialize_batch(batch: Batch) -> list[bytes]:
    """``tf.train.Example`` bytes for every instance of ``batch``."""
    n, seq = batch.input_ids.shape
    pred = batch.masked_lm_positions.shape[1]
    ids_raw, ids_off = _packed_varints(batch.input_ids)
    lm_raw, lm_off = _packed_varints(batch.masked_lm_ids)
    pos_raw, pos_off = _packed_varints(batch.masked_lm_positions)
    mask_raw = np.ascontiguousarray(batch.input_mask, dtype=np.uint8).tobytes()
    seg_raw = np.ascontiguousarray(batch.segment_ids, dtype=np.uint8).tobytes()
    w_raw = np.ascontiguousarray(batch.masked_lm_weights, dtype="<f4").tobytes()
    labels = batch.next_sentence_labels.astype(np.uint8).tolist()
    fixed_mask = _entry_prefix("input_mask", 3, seq)
    fixed_seg = _entry_prefix("segment_ids", 3, seq)
    fixed_w = _entry_prefix("masked_lm_weights", 2, 4 * pred)
    label_entries = [_entry_prefix("next_sentence_labels", 3, 1) + bytes([v]) for v in (0, 1)]
    p_ids, p_pos, p_lm = (_PREFIXES[k] for k in ("input_ids", "masked_lm_positions", "masked_lm_ids"))
    out = []
    for k in range(n):
        i0, i1, l0, l1 = ids_off[k], ids_off[k + 1], lm_off[k], lm_off[k + 1]
        q0, q1 = pos_off[k], pos_off[k + 1]
        body = b"".join((
            p_ids[i1 - i0], ids_raw[i0:i1],
            fixed_mask, mask_raw[k * seq:(k + 1) * seq],
            fixed_seg, seg_raw[k * seq:(k + 1) * seq],
            p_pos[q1 - q0], pos_raw[q0:q1],
            p_lm[l1 - l0], lm_raw[l0:l1],
            fixed_w, w_raw[k * 4 * pred:(k + 1) * 4 * pred],
            label_entries[labels[k]],
        ))
        out.append(b"\x0a" + _vlen(len(body)) + body)
    return out


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TFRecordWriter:
    """Appends records in TFRecord framing (length, masked CRC32C, data, masked CRC32C).

    Written to ``path + ".tmp"`` and renamed on ``close()``, so a finished shard
    is never half written.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._handle = open(self.tmp, "wb")  # noqa: SIM115
        self.records = 0

    def write_many(self, records: Iterable[bytes]) -> None:
        parts = []
        for data in records:
            header = struct.pack("<Q", len(data))
            parts += (header, struct.pack("<I", _masked_crc(header)), data,
                      struct.pack("<I", _masked_crc(data)))
            self.records += 1
        self._handle.write(b"".join(parts))

    def close(self) -> None:
        self._handle.close()
        os.replace(self.tmp, self.path)
