"""Realistic shipment traffic through the HTTP facade (Envoy's front listener).

Each simulated client creates shipments, moves them through the state machine with
PATCH, reads their status, and now and then submits a concurrent task that moves a
shipment and polls the task until it ends. Every write carries an idempotency key
(``requestId``), as a production client should, so Envoy may retry it safely.

Run headless against the local stack (``scripts/up`` or ``envios up`` first):

    .venv/bin/locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host http://127.0.0.1:8080
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from locust import FastHttpUser, between, task

NEXT_STATUS = {
    "pending": "handling",
    "handling": "ready_to_ship",
    "ready_to_ship": "shipped",
    "shipped": "delivered",
}
"""The usual path of a shipment; ``delivered`` is final."""

TASK_POLLS = 20
TASK_POLL_INTERVAL_S = 0.25


class ShipmentClient(FastHttpUser):
    """A client system that creates and updates shipments and reads their status."""

    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        self.statuses: dict[str, str] = {}
        self.prefix = "lt-" + uuid.uuid4().hex[:10]
        self.sequence = 0
        self.create()

    def new_id(self) -> str:
        self.sequence += 1
        return f"{self.prefix}-{self.sequence}"

    @task(2)
    def create(self) -> None:
        shipment_id = self.new_id()
        params = {"requestId": f"create-{shipment_id}"}
        with self.client.post(
            "/v1/shipments", params=params, json={"id": shipment_id}, name="POST /v1/shipments"
        ) as response:
            if response.status_code == 200:
                self.statuses[shipment_id] = "pending"

    @task(3)
    def transition(self) -> None:
        movable = [sid for sid, status in self.statuses.items() if status in NEXT_STATUS]
        if not movable:
            self.create()
            return
        shipment_id = movable[0]
        target = NEXT_STATUS[self.statuses[shipment_id]]
        params = {"requestId": f"{target}-{shipment_id}"}
        with self.client.patch(
            f"/shippings/{shipment_id}",
            params=params,
            json={"status": target},
            name="PATCH /shippings/{id}",
        ) as response:
            if response.status_code == 200:
                self.statuses[shipment_id] = target

    @task(5)
    def read_status(self) -> None:
        shipment_id = self.any_shipment()
        if shipment_id is not None:
            self.client.get(
                f"/api/status/shipments/{shipment_id}", name="GET /api/status/shipments/{id}"
            )

    @task(1)
    def read_shipment(self) -> None:
        shipment_id = self.any_shipment()
        if shipment_id is not None:
            self.client.get(f"/v1/shipments/{shipment_id}", name="GET /v1/shipments/{id}")

    @task(1)
    def overview(self) -> None:
        self.client.get("/api/status", name="GET /api/status")

    @task(1)
    def concurrent_task(self) -> None:
        """Submit a task that moves a new shipment to handling, then poll it until it ends."""
        shipment_id = self.new_id()
        self.client.post("/v1/shipments", json={"id": shipment_id}, name="POST /v1/shipments")
        body = {
            "type": "transition",
            "shipmentIds": [shipment_id],
            "targetStatus": "handling",
            "workDuration": "0.5s",
        }
        params = {"requestId": f"task-{shipment_id}"}
        with self.client.post(
            "/api/tarea-concurrente", params=params, json=body, name="POST /api/tarea-concurrente"
        ) as response:
            if response.status_code != 200:
                return
            task_id = response.json()["id"]
        self.statuses[shipment_id] = "handling"
        self.poll_task(task_id)

    def poll_task(self, task_id: str) -> None:
        for _ in range(TASK_POLLS):
            response = self.client.get(
                f"/api/status/tasks/{task_id}", name="GET /api/status/tasks/{id}"
            )
            state: Any = response.json().get("state") if response.status_code == 200 else None
            if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
                return
            # Locust patches time.sleep to yield to the other simulated users.
            time.sleep(TASK_POLL_INTERVAL_S)

    def any_shipment(self) -> str | None:
        if not self.statuses:
            return None
        ids = list(self.statuses)
        self.sequence += 1
        return ids[self.sequence % len(ids)]
