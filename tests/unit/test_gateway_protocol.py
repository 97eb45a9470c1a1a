"""Coalesced writes of the gateway's HTTP protocol."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.protocol import CoalescingTransport


class RecordingTransport:
    """A test transport that stores every write it receives."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else None


def _wrap() -> tuple[RecordingTransport, CoalescingTransport]:
    inner = RecordingTransport()
    return inner, CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_head_and_body_sent_together():
    inner, transport = _wrap()

    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"{}")
    assert inner.writes == []
    assert transport.get_write_buffer_size() == 21
    await asyncio.sleep(0)

    assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]


async def test_writes_of_later_iterations_sent_apart():
    inner, transport = _wrap()

    transport.write(b"first")
    await asyncio.sleep(0)
    transport.writelines([b"second", b"", b"third"])
    await asyncio.sleep(0)

    assert inner.writes == [b"first", b"secondthird"]


async def test_close_flushes_first():
    inner, transport = _wrap()

    transport.write(b"last response")
    transport.close()

    assert inner.writes == [b"last response"]
    assert inner.closed


async def test_abort_drops_buffered_data():
    inner, transport = _wrap()

    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)

    assert inner.writes == []
    assert inner.aborted


async def test_other_attributes_delegated():
    _, transport = _wrap()

    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert not transport.is_closing()
