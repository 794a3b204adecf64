"""A TensorBoard scalar writer without TensorFlow (or any dependency).

TensorBoard reads `events.out.tfevents.*` files: TFRecord framing
(length, masked CRC-32C of the length, payload, masked CRC-32C of the
payload) around serialized `Event` protocol buffers. Scalars need only
  Event   {1: wall_time double, 2: step int64, 3: file_version string,
           5: summary Summary}
  Summary {1: repeated Value}
  Value   {1: tag string, 2: simple_value float}
so this file encodes those few fields by hand. The test reads the file back
with TensorBoard's own event reader.
"""
from __future__ import annotations

import os
import socket
import struct
import time


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
  return _varint(number << 3 | wire_type) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
  return _field(number, 2, _varint(len(data)) + data)


def _event(step: int, *, file_version: str | None = None,
           scalars: dict[str, float] | None = None) -> bytes:
  msg = _field(1, 1, struct.pack("<d", time.time())) + _field(
      2, 0, _varint(step & 0xFFFFFFFFFFFFFFFF))
  if file_version is not None:
    msg += _bytes_field(3, file_version.encode())
  if scalars:
    values = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode()) +
                     _field(2, 5, struct.pack("<f", float(value))))
        for tag, value in scalars.items())
    msg += _bytes_field(5, values)
  return msg


class SummaryWriter:
  """`scalars(step, {tag: value})` appends to one event file in `logdir`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time())}."
            f"{socket.gethostname()}.{os.getpid()}")
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, "ab")  # pylint: disable=consider-using-with
    self._write(_event(0, file_version="brain.Event:2"))

  def _write(self, record: bytes) -> None:
    length = struct.pack("<Q", len(record))
    self._file.write(length + struct.pack("<I", _masked_crc(length)) + record
                     + struct.pack("<I", _masked_crc(record)))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    self._write(_event(step, scalars=values))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()
