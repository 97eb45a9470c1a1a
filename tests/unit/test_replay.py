"""Unit tests of ops.replay against an in-memory shipment server behind httpx.MockTransport."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.replay import ReplayOptions, Summary, add_arguments, default_url, replay_orders, run
from ops.timeline import ALLOWED_NEXT, Order, load_orders, timeline

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "olist-sample" / "orders.csv"
FAST = ReplayOptions(no_wait=True, backoff_s=0.0, concurrency=8)


def error_body(code: int, reason: str, message: str) -> dict[str, Any]:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}
    return {"code": code, "message": message, "details": [{**info, "metadata": {}}]}


@dataclass
class FakeShipmentServer:
    """A tiny in-memory version of the shipment rules, reached through the HTTP routes."""

    faults: dict[str, list[int | type[httpx.TransportError]]] = field(default_factory=dict)
    """Responses to give, in order, to the next attempts of a request id or path."""
    mark_late: bool = True
    shipments: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, httpx.Response] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.url.params.get("request_id") or request.url.path
        self.attempts.append(key)
        if self.faults.get(key):
            fault = self.faults[key].pop(0)
            if isinstance(fault, int):
                return httpx.Response(fault, json=error_body(14, "UNAVAILABLE", "injected"))
            raise fault("injected", request=request)
        if key in self.answers:
            return self.answers[key]
        response = self.route(request)
        if request.method != "GET":
            self.answers[key] = response
        return response

    def route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/shipments":
            return self.create(json.loads(request.content))
        shipment_id = path.rsplit("/", 1)[-1]
        if shipment_id not in self.shipments:
            return httpx.Response(404, json=error_body(5, "SHIPMENT_NOT_FOUND", "not found"))
        if request.method == "PATCH" and path.startswith("/shippings/"):
            body = json.loads(request.content)
            return self.update(shipment_id, body, request.url.params["request_id"])
        return httpx.Response(200, json=self.shipments[shipment_id])

    def create(self, body: dict[str, Any]) -> httpx.Response:
        if body["id"] in self.shipments:
            return httpx.Response(409, json=error_body(6, "SHIPMENT_EXISTS", "exists"))
        shipment = {"id": body["id"], "status": "pending", "statusTime": body["statusTime"]}
        self.shipments[body["id"]] = {**shipment, "history": []}
        return httpx.Response(200, json=self.shipments[body["id"]])

    def update(self, shipment_id: str, body: dict[str, Any], event_id: str) -> httpx.Response:
        shipment = self.shipments[shipment_id]
        status, moment = body["status"], body["statusTime"]
        if status not in ALLOWED_NEXT.get(shipment["status"], ()):
            error = error_body(9, "INVALID_TRANSITION", f"{shipment['status']} -> {status}")
            return httpx.Response(400, json=error)
        entry: dict[str, Any] = {"eventId": event_id, "fromStatus": shipment["status"]}
        entry |= {"toStatus": status, "occurredAt": moment, "applied": True}
        if self.mark_late and moment < shipment["statusTime"]:
            entry["late"] = True
        shipment["history"].append(entry)
        shipment.update(status=status, statusTime=moment)
        return httpx.Response(200, json=shipment)


def replay(
    server: FakeShipmentServer, orders: list[Order], options: ReplayOptions = FAST
) -> Summary:
    async def main() -> Summary:
        transport = httpx.MockTransport(server)
        async with httpx.AsyncClient(base_url="http://envoy.test", transport=transport) as client:
            return await replay_orders(orders, client, options)

    return asyncio.run(main())


@pytest.fixture(scope="module")
def orders() -> list[Order]:
    return load_orders(SAMPLE)


def first(orders: list[Order], match: Callable[[Order], bool]) -> Order:
    return next(row for row in orders if match(row))


def test_replay_sample_counts(orders: list[Order]) -> None:
    server = FakeShipmentServer()
    summary = replay(server, orders)
    assert summary.ok
    assert summary.shipments == 200
    assert summary.created == 200
    assert summary.rejected == 2
    assert summary.late_events == 16
    assert summary.transitions_applied == summary.expected_applied
    assert summary.errors == 0
    assert summary.mismatches == 0
    assert summary.retries == 0
    statuses = [shipment["status"] for shipment in server.shipments.values()]
    assert statuses.count("delivered") == 98
    assert statuses.count("shipped") == 41


def test_replay_repeat_changes_nothing(orders: list[Order]) -> None:
    server = FakeShipmentServer()
    first_summary = replay(server, orders[:40])
    stored = json.dumps(server.shipments, sort_keys=True)
    second_summary = replay(server, orders[:40])
    assert json.dumps(server.shipments, sort_keys=True) == stored
    assert second_summary.transitions_applied == first_summary.transitions_applied
    assert second_summary.rejected == first_summary.rejected
    assert second_summary.ok


def test_replay_counts_from_responses(orders: list[Order]) -> None:
    summary = replay(FakeShipmentServer(mark_late=False), orders)
    assert summary.expected_late == 16
    assert summary.late_events == 0
    assert summary.ok


def test_replay_retries_503(orders: list[Order]) -> None:
    row = orders[0]
    key = f"replay-{row.order_id}-pending"
    server = FakeShipmentServer(faults={key: [503, 503]})
    summary = replay(server, [row])
    assert summary.retries == 2
    assert summary.errors == 0
    assert server.attempts.count(key) == 3
    assert summary.ok


def test_replay_retries_connect_error(orders: list[Order]) -> None:
    row = first(orders, lambda r: r.status == "delivered")
    key = f"replay-{row.order_id}-shipped"
    server = FakeShipmentServer(faults={key: [httpx.ConnectError, httpx.ReadTimeout]})
    summary = replay(server, [row])
    assert summary.retries == 2
    assert summary.ok
    assert server.shipments[row.order_id]["status"] == "delivered"


def test_replay_retries_bounded(orders: list[Order]) -> None:
    row = first(orders, lambda r: r.status == "delivered")
    key = f"replay-{row.order_id}-handling"
    server = FakeShipmentServer(faults={key: [503] * 10})
    summary = replay(server, [row], ReplayOptions(no_wait=True, backoff_s=0.0, retries=2))
    assert server.attempts.count(key) == 3
    assert summary.retries == 2
    assert summary.errors == 1
    assert summary.skipped == 3
    assert summary.unverified == 1
    assert not summary.ok
    assert "HTTP 503" in summary.error_samples[0]


def test_replay_500_not_retried(orders: list[Order]) -> None:
    row = orders[0]
    key = f"replay-{row.order_id}-pending"
    server = FakeShipmentServer(faults={key: [500]})
    summary = replay(server, [row])
    assert server.attempts.count(key) == 1
    assert summary.errors == 1
    assert summary.created == 0
    assert not summary.ok


def test_replay_conflict_is_error(orders: list[Order]) -> None:
    row = orders[0]
    server = FakeShipmentServer()
    server.create({"id": row.order_id, "statusTime": "2018-01-01T00:00:00Z"})
    summary = replay(server, [row])
    assert summary.errors == 1
    assert "HTTP 409" in summary.error_samples[0]


def test_replay_mismatch_detected(orders: list[Order]) -> None:
    row = first(orders, lambda r: r.status == "invoiced")
    server = FakeShipmentServer()
    path = f"/v1/shipments/{row.order_id}"
    summary = replay(server, [row])
    assert summary.mismatches == 0
    server.shipments[row.order_id]["status"] = "shipped"
    summary = replay(server, [row])
    assert server.attempts.count(path) == 2
    assert summary.mismatches == 1
    assert "expected 'handling'" in summary.mismatch_samples[0]
    assert not summary.ok


class HtmlReadServer(FakeShipmentServer):
    def route(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, text="<html>maintenance</html>")
        return super().route(request)


def test_replay_non_json_read_is_error(orders: list[Order]) -> None:
    summary = replay(HtmlReadServer(), orders[:2])
    assert summary.errors == 2
    assert "not a JSON object" in summary.error_samples[0]
    assert summary.mismatches == 0


def test_replay_scheduled_speed(orders: list[Order]) -> None:
    rows = orders[:5]
    times = [event.occurred_at for row in rows for event in timeline(row)]
    span_s = (max(times) - min(times)).total_seconds()
    options = ReplayOptions(speed=span_s / 0.2, backoff_s=0.0)
    summary = replay(FakeShipmentServer(), rows, options)
    assert summary.ok
    assert summary.created == 5
    assert summary.duration_s >= 0.19


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_run_json_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse([str(SAMPLE), "--no-wait", "--json", "--limit", "30", "--url", "http://e.test"])
    code = run(args, transport=httpx.MockTransport(FakeShipmentServer()))
    output = json.loads(capsys.readouterr().out)
    assert code == 0
    assert output["shipments"] == 30
    assert output["errors"] == 0


def test_run_errors_exit_one(capsys: pytest.CaptureFixture[str], orders: list[Order]) -> None:
    server = FakeShipmentServer(faults={f"replay-{orders[0].order_id}-pending": [500]})
    args = parse([str(SAMPLE), "--no-wait", "--limit", "3", "--url", "http://e.test"])
    code = run(args, transport=httpx.MockTransport(server))
    output = capsys.readouterr().out
    assert code == 1
    assert "errors               1" in output
    assert "error: POST /v1/shipments" in output


def test_run_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = run(parse([str(tmp_path / "none.csv"), "--url", "http://e.test"]))
    assert code == 2
    assert "cannot read" in capsys.readouterr().err


def test_arguments_validated() -> None:
    with pytest.raises(SystemExit):
        parse([str(SAMPLE), "--concurrency", "0"])
    with pytest.raises(SystemExit):
        parse([str(SAMPLE), "--speed", "10", "--no-wait"])


def test_summary_ok_flag() -> None:
    summary = Summary(shipments=1)
    assert summary.ok
    summary.add_mismatch("x")
    assert not summary.ok


def test_default_url_from_topology(tmp_path: Path) -> None:
    topology = Path(__file__).resolve().parents[2] / "envoy" / "topology.toml"
    text = topology.read_text(encoding="utf-8").replace("front_port = 8080", "front_port = 18080")
    (tmp_path / "topology.toml").write_text(text, encoding="utf-8")
    environ = {"ENVIOS_TOPOLOGY": str(tmp_path / "topology.toml")}
    assert default_url(environ) == "http://127.0.0.1:18080"


def test_default_url_fallback(tmp_path: Path) -> None:
    environ = {"ENVIOS_TOPOLOGY": str(tmp_path / "missing.toml")}
    assert default_url(environ) == "http://127.0.0.1:8080"
