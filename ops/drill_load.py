"""Paced, bounded load for failover drills: reads and idempotent writes over HTTP and gRPC.

The load is open-loop: request ``i`` starts at ``i / rate`` seconds whatever happened to
earlier ones, so an outage shows up as failures or latency rather than as fewer requests.
Every request is recorded with its start time, latency and outcome, which gives exact
per-second accounting. Writes carry an idempotency key (``requestId`` over HTTP, the
``request_id`` field plus the ``idempotency-key`` metadata over gRPC), so Envoy may retry
them; ``verify_writes`` checks afterwards that each accepted write was applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from envios.shipment.v1 import shipment_pb2, shipment_pb2_grpc
from envios.status.v1 import status_pb2, status_pb2_grpc

from ops.envoy_policy import IDEMPOTENCY_HEADER
from ops.health import GRPC_CHANNEL_OPTIONS

logger = logging.getLogger(__name__)

OPERATIONS = (
    "http:create",
    "grpc:get",
    "http:get",
    "grpc:create",
    "http:status",
    "http:patch",
    "grpc:status",
    "http:get",
)
"""Request mix, cycled in this order: 2 creates, 1 transition and 5 reads in 8 requests."""

TRANSITION = "handling"
"""Status that ``http:patch`` moves a pending shipment to."""


@dataclass(frozen=True)
class LoadConfig:
    """How much load to send and how long each request may take."""

    rate_per_s: float = 50.0
    """Requests started per second."""
    timeout_s: float = 10.0
    """Deadline of one request; a request that exceeds it counts as failed (``timeout``)."""
    max_in_flight: int = 2000
    """Requests running at once; a request that would exceed it fails at once (``shed``)."""
    max_duration_s: float = 600.0
    """Maximum length of the load in seconds, even when no caller stops it."""


@dataclass(frozen=True)
class Outcome:
    """One request of the load."""

    start_s: float
    """Start time in seconds since the load began."""
    latency_s: float
    operation: str
    """One of ``OPERATIONS``."""
    code: str
    """``OK``, a gRPC code name, ``timeout``, ``transport``, ``shed``, or an HTTP status
    (with ``-not-json`` when the body is not a ``google.rpc.Status`` JSON object)."""

    @property
    def ok(self) -> bool:
        return self.code == "OK"


@dataclass
class WriteLog:
    """Writes the service accepted, to check afterwards."""

    created: list[str] = field(default_factory=list)
    transitioned: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    """Created shipments not yet moved by ``http:patch``."""


class DrillLoad:
    """Sends the drill's requests through Envoy's front (HTTP) and gRPC listeners."""

    def __init__(self, front_url: str, grpc_target: str, config: LoadConfig) -> None:
        self.front_url = front_url
        self.grpc_target = grpc_target
        self.config = config
        self.outcomes: list[Outcome] = []
        self.writes = WriteLog()
        self._run_id = uuid.uuid4().hex[:8]
        self._sequence = 0
        self._in_flight = 0
        self._started = 0.0

    async def run(self, stop: asyncio.Event) -> list[Outcome]:
        """Send requests at the configured rate until ``stop`` is set or the bound passes.

        Waits for the requests still running (each ends by its deadline) and returns every
        outcome in start order.
        """
        limits = httpx.Limits(max_connections=self.config.max_in_flight)
        async with (
            httpx.AsyncClient(base_url=self.front_url, limits=limits, trust_env=False) as http,
            grpc.aio.insecure_channel(self.grpc_target, options=GRPC_CHANNEL_OPTIONS) as channel,
        ):
            client = _Clients(http, channel, self.config.timeout_s)
            tasks = await self._pace(client, stop)
            await asyncio.gather(*tasks)
        self.outcomes.sort(key=lambda outcome: outcome.start_s)
        return self.outcomes

    async def _pace(self, client: _Clients, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        interval_s = 1.0 / self.config.rate_per_s
        self._started = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        index = 0
        while not stop.is_set():
            due = self._started + index * interval_s
            if due - self._started > self.config.max_duration_s:
                logger.warning("load stopped at its bound of %.0f s", self.config.max_duration_s)
                break
            await _sleep_until(due, stop)
            if stop.is_set():
                break
            operation = OPERATIONS[index % len(OPERATIONS)]
            tasks.append(asyncio.create_task(self._one(client, operation)))
            index += 1
        return tasks

    def elapsed_s(self) -> float:
        """Return the seconds since the load began (0 before it begins)."""
        return time.monotonic() - self._started if self._started else 0.0

    async def _one(self, client: _Clients, operation: str) -> None:
        start = time.monotonic()
        if self._in_flight >= self.config.max_in_flight:
            self._record(operation, start, "shed")
            return
        self._in_flight += 1
        try:
            code = await self._send(client, operation)
        finally:
            self._in_flight -= 1
        self._record(operation, start, code)

    def _record(self, operation: str, start: float, code: str) -> None:
        latency_s = time.monotonic() - start
        self.outcomes.append(Outcome(start - self._started, latency_s, operation, code))

    async def _send(self, client: _Clients, operation: str) -> str:
        try:
            return await self._dispatch(client, operation)
        except grpc.aio.AioRpcError as error:
            return (
                "timeout"
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                else error.code().name
            )
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError:
            return "transport"

    async def _dispatch(self, client: _Clients, operation: str) -> str:
        if operation in ("http:create", "grpc:create"):
            return await self._create(client, operation)
        if operation == "http:patch":
            return await self._patch(client)
        shipment_id = self._known_shipment()
        if shipment_id is None:
            return await client.http_code("GET", "/api/status")
        readers: dict[str, Callable[[str], Awaitable[str]]] = {
            "http:get": lambda sid: client.http_code("GET", f"/v1/shipments/{sid}"),
            "http:status": lambda sid: client.http_code("GET", f"/api/status/shipments/{sid}"),
            "grpc:get": client.grpc_get,
            "grpc:status": client.grpc_status,
        }
        return await readers[operation](shipment_id)

    async def _create(self, client: _Clients, operation: str) -> str:
        self._sequence += 1
        shipment_id = f"drill-{self._run_id}-{self._sequence}"
        key = f"create-{shipment_id}"
        if operation == "http:create":
            code = await client.http_code(
                "POST", "/v1/shipments", params={"requestId": key}, json={"id": shipment_id}
            )
        else:
            code = await client.grpc_create(shipment_id, key)
        if code == "OK":
            self.writes.created.append(shipment_id)
            self.writes.pending.append(shipment_id)
        return code

    async def _patch(self, client: _Clients) -> str:
        if not self.writes.pending:
            return await client.http_code("GET", "/api/status")
        shipment_id = self.writes.pending.pop(0)
        code = await client.http_code(
            "PATCH",
            f"/shippings/{shipment_id}",
            params={"requestId": f"patch-{shipment_id}"},
            json={"status": TRANSITION},
        )
        if code == "OK":
            self.writes.transitioned.append(shipment_id)
        return code

    def _known_shipment(self) -> str | None:
        created = self.writes.created
        return created[self._sequence % len(created)] if created else None


class _Clients:
    """The HTTP client and gRPC stubs of one load run, each call bounded by ``timeout_s``."""

    def __init__(self, http: httpx.AsyncClient, channel: grpc.aio.Channel, timeout_s: float):
        self.http = http
        self.shipments = shipment_pb2_grpc.ShipmentServiceStub(channel)
        self.status = status_pb2_grpc.StatusServiceStub(channel)
        self.timeout_s = timeout_s

    async def http_code(self, method: str, path: str, **kwargs: Any) -> str:
        response = await self.http.request(method, path, timeout=self.timeout_s, **kwargs)
        if response.status_code == 200:
            return "OK"
        return str(response.status_code) + ("" if _is_status_json(response) else "-not-json")

    async def grpc_create(self, shipment_id: str, key: str) -> str:
        request = shipment_pb2.CreateShipmentRequest(
            shipment=shipment_pb2.Shipment(id=shipment_id), request_id=key
        )
        metadata = ((IDEMPOTENCY_HEADER, key),)
        await self.shipments.CreateShipment(request, timeout=self.timeout_s, metadata=metadata)
        return "OK"

    async def grpc_get(self, shipment_id: str) -> str:
        request = shipment_pb2.GetShipmentRequest(id=shipment_id)
        await self.shipments.GetShipment(request, timeout=self.timeout_s)
        return "OK"

    async def grpc_status(self, shipment_id: str) -> str:
        request = status_pb2.GetShipmentStatusRequest(shipment_id=shipment_id)
        await self.status.GetShipmentStatus(request, timeout=self.timeout_s)
        return "OK"


def _is_status_json(response: httpx.Response) -> bool:
    """Tell whether an error response has a ``google.rpc.Status`` JSON body."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("code"), int)


async def _sleep_until(deadline: float, stop: asyncio.Event) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


@dataclass
class WriteCheck:
    """Result of ``verify_writes``: problems found, by kind, with the shipment ids."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    """Accepted creates that cannot be read back."""
    duplicated: list[str] = field(default_factory=list)
    """Shipments whose history contains an accepted write more than once."""
    unapplied: list[str] = field(default_factory=list)
    """Accepted transitions that are not in the history."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unapplied)


async def verify_writes(front_url: str, writes: WriteLog, concurrency: int = 20) -> WriteCheck:
    """Read every shipment the load created and check each accepted write is there once."""
    result = WriteCheck()
    transitioned = set(writes.transitioned)
    semaphore = asyncio.Semaphore(concurrency)

    async def check(http: httpx.AsyncClient, shipment_id: str) -> None:
        async with semaphore:
            response = await http.get(f"/v1/shipments/{shipment_id}", timeout=30.0)
        result.checked += 1
        if response.status_code != 200:
            result.missing.append(shipment_id)
            return
        targets = [event.get("toStatus") for event in response.json().get("history", [])]
        expected = {"pending": 1, TRANSITION: 1 if shipment_id in transitioned else 0}
        for status, count in expected.items():
            if targets.count(status) > count:
                result.duplicated.append(shipment_id)
            elif targets.count(status) < count:
                result.unapplied.append(shipment_id)

    async with httpx.AsyncClient(base_url=front_url, trust_env=False) as http:
        await asyncio.gather(*(check(http, shipment_id) for shipment_id in writes.created))
    return result
