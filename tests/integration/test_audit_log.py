"""Audit events of ShipmentService, captured as the ECS JSON lines the processes write.

The replay test sends the real Olist sample through ``ops.replay`` and the HTTP gateway
(in process) to a ShipmentService on port 0 with a real SQLite file, then compares the
audit events with the database's ``transitions`` table.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envios.shipment.v1 import shipment_pb2 as pb
from envios.shipment.v1 import shipment_pb2_grpc
from google.protobuf import timestamp_pb2
from opentelemetry.sdk.trace import TracerProvider

from gateway.app import GatewayApp
from gateway.config import GatewayConfig
from ops.replay import ReplayOptions, Summary, replay_orders
from ops.timeline import load_orders
from ops.topology import free_ports
from services.common.database import Database
from services.common.logs import AUDIT_LOGGER, TraceContextFilter, ecs_formatter
from services.common.server import GrpcServer
from services.shipment.app import ShipmentApp, ShipmentConfig
from services.shipment.audit import APPLIED, LATE, REJECTED
from services.shipment.domain import Change
from services.shipment.servicer import new_shipment
from services.task.audit import TASK_TRANSITION
from services.task.model import TaskInput
from services.task.store import NewTask, SqliteTaskStore

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "olist-sample" / "orders.csv"
SITE = "secondary"
REPLICA = "shipment-secondary-2"

REQUIRED_FIELDS = (
    "@timestamp",
    "log.level",
    "message",
    "ecs.version",
    "event.kind",
    "event.category",
    "event.action",
    "event.outcome",
    "event.id",
    "envios.shipment.id",
    "envios.transition.from",
    "envios.transition.to",
    "envios.transition.substatus",
    "envios.site",
    "service.name",
    "service.node.name",
)
"""Fields every applied or late transition event carries."""


class JsonLines(logging.Handler):
    """Keep each record as the parsed ECS JSON line that a process would write."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(ecs_formatter("shipment", REPLICA))
        self.addFilter(TraceContextFilter())
        self.documents: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.documents.append(json.loads(self.format(record)))

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if get(doc, "event.action") == action]


def get(document: dict[str, Any], dotted: str) -> Any:
    """Return a field of an ECS document, whether stored nested or under a dotted key."""
    if dotted in document:
        return document[dotted]
    value: Any = document
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass
class Service:
    app: ShipmentApp
    target: str
    database: Path


@pytest.fixture
def audit() -> Iterator[JsonLines]:
    handler = JsonLines()
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    level = audit_logger.level
    audit_logger.addHandler(handler)
    audit_logger.setLevel(logging.INFO)
    yield handler
    audit_logger.removeHandler(handler)
    audit_logger.setLevel(level)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    # The status cache points at a closed port: writes through it are skipped and logged.
    config = ShipmentConfig.from_env(
        {
            "ENVIOS_DATABASE_URL": f"sqlite:///{tmp_path}/envios.db",
            "REDIS_URL": f"redis://127.0.0.1:{free_ports(1)[0]}/0",
            "ENVIOS_DRAIN_S": "0",
            "ENVIOS_SITE": SITE,
            "ENVIOS_REPLICA": REPLICA,
        }
    )
    app = ShipmentApp(config, relay=False)
    server = GrpcServer(config.server, app)
    port = await server.start()
    yield Service(app, f"127.0.0.1:{port}", tmp_path / "envios.db")
    await server.stop()


@pytest.fixture
async def stub(service: Service) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(service.target) as channel:
        yield shipment_pb2_grpc.ShipmentServiceStub(channel)


async def replay_sample(target: str) -> Summary:
    app = GatewayApp(GatewayConfig(upstream_grpc=target))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            return await replay_orders(load_orders(SAMPLE), client, ReplayOptions(no_wait=True))
    finally:
        await app.close()


def stored_transitions(database: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(database) as connection:
        connection.row_factory = sqlite3.Row
        return connection.execute("SELECT * FROM transitions ORDER BY seq").fetchall()


async def test_replay_one_event_per_applied_transition(service: Service, audit: JsonLines) -> None:
    summary = await replay_sample(service.target)
    assert summary.ok, summary.error_samples
    rows = stored_transitions(service.database)
    applied = {(row["shipment_id"], row["event_id"]) for row in rows if row["applied"]}
    events = audit.actions(APPLIED)
    logged = [(get(doc, "envios.shipment.id"), get(doc, "event.id")) for doc in events]
    assert len(logged) == len(applied)
    assert set(logged) == applied
    assert len(applied) == summary.shipments + summary.transitions_applied


async def test_replay_events_are_ecs(service: Service, audit: JsonLines) -> None:
    await replay_sample(service.target)
    rows = stored_transitions(service.database)
    by_event = {(row["shipment_id"], row["event_id"]): row for row in rows}
    events = audit.actions(APPLIED)
    assert events
    for doc in events:
        missing = [name for name in REQUIRED_FIELDS if get(doc, name) is None]
        assert missing == [], doc
        datetime.fromisoformat(get(doc, "@timestamp"))
        assert get(doc, "log.level") == "info"
        assert get(doc, "log.logger") == AUDIT_LOGGER
        assert get(doc, "event.kind") == "event"
        assert get(doc, "event.outcome") == "success"
        assert get(doc, "envios.site") == SITE
        assert get(doc, "service.node.name") == REPLICA
        row = by_event[(get(doc, "envios.shipment.id"), get(doc, "event.id"))]
        assert get(doc, "envios.transition.from") == row["from_status"]
        assert get(doc, "envios.transition.to") == row["to_status"]
        assert get(doc, "envios.transition.substatus") == row["to_substatus"]
        assert get(doc, "envios.transition.late") == bool(row["late"])


async def test_replay_rejections_logged(service: Service, audit: JsonLines) -> None:
    summary = await replay_sample(service.target)
    rejected = audit.actions(REJECTED)
    assert summary.rejected > 0
    assert len(rejected) == summary.rejected
    for doc in rejected:
        assert get(doc, "event.outcome") == "failure"
        assert get(doc, "event.reason") == "INVALID_TRANSITION"
        assert get(doc, "envios.transition.from")
        assert get(doc, "envios.transition.to")


async def test_replay_again_logs_no_transition(service: Service, audit: JsonLines) -> None:
    first = await replay_sample(service.target)
    before = len(audit.actions(APPLIED))
    rows_before = len(stored_transitions(service.database))
    second = await replay_sample(service.target)
    assert second.ok, second.error_samples
    assert len(stored_transitions(service.database)) == rows_before
    assert len(audit.actions(APPLIED)) == before
    assert audit.actions(LATE) == []
    # A rejected change is not stored, so sending it again is rejected and logged again.
    assert len(audit.actions(REJECTED)) == first.rejected + second.rejected


def timestamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


async def test_late_event_logged_as_late(stub: Any, audit: JsonLines) -> None:
    created = pb.Shipment(id="s1", status_time=timestamp(1_700_000_000))
    await stub.CreateShipment(pb.CreateShipmentRequest(shipment=created))
    moved = pb.Shipment(id="s1", status="handling", status_time=timestamp(1_700_000_100))
    await stub.UpdateShipment(pb.UpdateShipmentRequest(shipment=moved))
    old = pb.Shipment(id="s1", status="pending", status_time=timestamp(1_700_000_050))
    await stub.UpdateShipment(pb.UpdateShipmentRequest(shipment=old, request_id="r-late"))
    late = audit.actions(LATE)
    assert len(late) == 1
    assert get(late[0], "event.id") == "r-late"
    assert get(late[0], "envios.transition.from") == "handling"
    assert get(late[0], "envios.transition.to") == "pending"
    assert len(audit.actions(APPLIED)) == 2


async def test_stale_etag_logged_as_rejected(stub: Any, audit: JsonLines) -> None:
    await stub.CreateShipment(pb.CreateShipmentRequest(shipment=pb.Shipment(id="s1")))
    stale = pb.Shipment(id="s1", status="handling", etag='W/"7"')
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateShipment(pb.UpdateShipmentRequest(shipment=stale))
    assert raised.value.code() == grpc.StatusCode.ABORTED
    rejected = audit.actions(REJECTED)
    assert len(rejected) == 1
    assert get(rejected[0], "event.reason") == "ETAG_MISMATCH"
    assert get(rejected[0], "envios.transition.to") == "handling"
    assert len(audit.actions(APPLIED)) == 1


async def test_task_id_in_event(stub: Any, audit: JsonLines) -> None:
    await stub.CreateShipment(pb.CreateShipmentRequest(shipment=pb.Shipment(id="s1")))
    moved = pb.Shipment(id="s1", status="handling", substatus="picking")
    request = pb.UpdateShipmentRequest(shipment=moved, request_id="r1", task_id="task-42")
    await stub.UpdateShipment(request)
    await stub.UpdateShipment(request)
    events = audit.actions(APPLIED)
    assert len(events) == 2
    assert get(events[0], "envios.task.id") is None
    assert get(events[1], "envios.task.id") == "task-42"
    assert get(events[1], "envios.transition.substatus") == "picking"


async def test_trace_id_in_event(service: Service, audit: JsonLines) -> None:
    tracer = TracerProvider().get_tracer("test")
    state = new_shipment(pb.CreateShipmentRequest(shipment=pb.Shipment(id="s1")))
    with tracer.start_as_current_span("update") as span:
        await service.app.store.create(state, "", "")
        await service.app.store.update("s1", Change(status="handling"), "", "", "")
    expected = format(span.get_span_context().trace_id, "032x")
    events = audit.actions(APPLIED)
    assert [get(doc, "trace.id") for doc in events] == [expected, expected]
    assert all(len(get(doc, "span.id")) == 16 for doc in events)


async def test_task_transitions_logged(tmp_path: Path, audit: JsonLines) -> None:
    database = Database(f"sqlite:///{tmp_path}/envios.db")
    store = SqliteTaskStore(database, site=SITE)
    work = TaskInput(shipment_ids=(), target_status="", work_s=0.0)
    try:
        task, created = await store.submit(NewTask("simulate", work, "r1", "f1"))
        assert created
        await store.submit(NewTask("simulate", work, "r1", "f1"))
        await store.start_attempt(task.id, "worker-secondary-1")
        await store.finish(task.id, "SUCCEEDED")
        await store.finish(task.id, "FAILED", 9, "too late")
        await store.cancel(task.id)
    finally:
        await database.close()
    events = audit.actions(TASK_TRANSITION)
    moves = [
        (get(doc, "envios.transition.from"), get(doc, "envios.transition.to")) for doc in events
    ]
    assert moves == [("", "QUEUED"), ("QUEUED", "RUNNING"), ("RUNNING", "SUCCEEDED")]
    assert {get(doc, "envios.task.id") for doc in events} == {task.id}
    assert len({get(doc, "event.id") for doc in events}) == 3
    assert get(events[1], "envios.task.worker") == "worker-secondary-1"
    assert get(events[2], "envios.site") == SITE
