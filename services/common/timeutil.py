"""Conversions between protobuf Timestamps and integer microseconds since the epoch."""

from __future__ import annotations

from google.protobuf import timestamp_pb2


def to_us(timestamp: timestamp_pb2.Timestamp) -> int:
    return timestamp.seconds * 1_000_000 + timestamp.nanos // 1000


def from_us(micros: int) -> timestamp_pb2.Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=rest * 1000)
