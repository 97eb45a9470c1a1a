"""The /metrics endpoint of a process whose address is taken when it starts."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from services.common.metrics import MetricsConfig, start_process_metrics


def test_metrics_served_once_address_freed() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    address = f"127.0.0.1:{holder.getsockname()[1]}"
    config = MetricsConfig(address=address, service="shipment", site="primary", replica="r-1")

    start_process_metrics(config)
    holder.close()
    body = b""
    deadline = time.monotonic() + 10.0
    while not body and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=1.0) as response:
                body = response.read()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)

    assert b"envios_build_info" in body
