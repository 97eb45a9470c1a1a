"""Stress profile: more concurrent callers than the gateways accept, with no think time.

Each gateway takes at most ``gateway.max_concurrent_requests`` (500) requests at once;
Envoy queues a bounded number more and rejects the rest at once. A rejected caller must
get HTTP 429 or 503 with a ``google.rpc.Status`` JSON body, quickly, never a hang. Such
a response is recorded as a failure named after its status and gRPC code, so Locust's
failure table counts them; a body that is not JSON is recorded as ``... NOT JSON``.

    .venv/bin/locust -f loadtest/stress.py --headless -u 1500 -r 500 -t 40s \
        --host http://127.0.0.1:8080 --stop-timeout 10
"""

from __future__ import annotations

from locust import FastHttpUser, constant, task

REJECTED = (429, 503)


class StressCaller(FastHttpUser):
    """A caller that repeats a cheap read with no pause, so every user is one request in flight."""

    wait_time = constant(0)
    network_timeout = 30.0
    connection_timeout = 10.0

    @task
    def overview(self) -> None:
        with self.client.get(
            "/api/status", name="GET /api/status", catch_response=True
        ) as response:
            if response.status_code == 200:
                response.success()
                return
            try:
                code = response.json().get("code")
            except ValueError:
                code = None
            if response.status_code in REJECTED and isinstance(code, int):
                response.failure(f"{response.status_code} JSON code {code}")
            else:
                response.failure(f"{response.status_code} NOT JSON")
